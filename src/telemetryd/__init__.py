"""telemetryd: monitoring daemon for school networks."""

__version__ = "0.1.0"

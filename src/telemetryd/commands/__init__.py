"""One-off commands: `telemetryd probe` and `speedtest` (probe.py), `telemetryd demo` (demo.py)."""

"""Fixtures of the probe tests (the ISAPI simulator and its clock live in `isapi_sim`)."""

from tests.probes.isapi_sim import clock, sim

__all__ = ["clock", "sim"]

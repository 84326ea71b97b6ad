"""The throwaway PostgreSQL 15 of the tests (shared with the demo: telemetryd.sim.postgres)."""

from telemetryd.sim.postgres import PG_BIN, PG_PACKAGE, PgServer, free_port, started_server

__all__ = ["PG_BIN", "PG_PACKAGE", "PgServer", "free_port", "started_server"]

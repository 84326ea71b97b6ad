"""History in PostgreSQL: schema migrations, an on-disk spool and the batch writer (issue 6)."""

from telemetryd.store.migrate import check, migrate
from telemetryd.store.records import HistoryEvent, LinkSample, MonitoringGap, SpeedTestRecord, idempotency_key, to_row
from telemetryd.store.spool import Spool, SpoolEntry
from telemetryd.store.writer import HistoryWriter, WriterStats

__all__ = [
    "HistoryEvent",
    "HistoryWriter",
    "LinkSample",
    "MonitoringGap",
    "SpeedTestRecord",
    "Spool",
    "SpoolEntry",
    "WriterStats",
    "check",
    "idempotency_key",
    "migrate",
    "to_row",
]

"""History in PostgreSQL: schema migrations, an on-disk spool and the batch writer (issue 6)."""

from telemetryd.history.migrate import check, migrate
from telemetryd.history.records import HistoryEvent, LinkSample, MonitoringGap, SpeedTestRecord, idempotency_key, to_row
from telemetryd.history.spool import Spool, SpoolEntry
from telemetryd.history.writer import HistoryWriter, WriterStats

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

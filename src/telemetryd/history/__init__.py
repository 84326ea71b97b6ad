"""History in PostgreSQL: schema migrations, an on-disk spool and the batch writer (issue 6)."""

from telemetryd.history.migrate import check, migrate
from telemetryd.history.records import (
    AlarmEventRecord,
    HistoryEvent,
    LinkSample,
    MonitoringGap,
    SpeedTestRecord,
    alarm_records,
    idempotency_key,
    to_row,
)
from telemetryd.history.spool import Spool, SpoolEntry
from telemetryd.history.writer import HistoryWriter, WriterStats

__all__ = [
    "AlarmEventRecord",
    "HistoryEvent",
    "HistoryWriter",
    "LinkSample",
    "MonitoringGap",
    "SpeedTestRecord",
    "Spool",
    "SpoolEntry",
    "WriterStats",
    "alarm_records",
    "check",
    "idempotency_key",
    "migrate",
    "to_row",
]

"""The history writer's health: database up, queue and spool, rows by fate, batches, write latency."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from telemetryd.export.families import flag, histogram_family
from telemetryd.history.recorder import History


class HistoryCollector(Collector):
    """Absent when history is not configured; the writer's own counters otherwise."""

    def __init__(self, history: History | None) -> None:
        self.history = history

    def collect(self) -> Iterator[Metric]:
        """Yield the history families."""
        history = self.history
        if history is None or history.writer is None:
            return
        writer = history.writer
        stats = writer.stats
        yield GaugeMetricFamily(
            "telemetryd_history_db_up",
            "1 when the history writer is connected to PostgreSQL and the schema is current.",
            value=flag(stats.db_up),
        )
        yield GaugeMetricFamily(
            "telemetryd_history_schema_pending_migrations",
            "Migrations the history database lacks; nothing is written until `telemetryd db migrate`.",
            value=len(stats.schema_pending),
        )
        yield GaugeMetricFamily(
            "telemetryd_history_queue_rows", "History rows waiting in memory.", value=writer.queue_depth
        )
        yield GaugeMetricFamily(
            "telemetryd_history_spool_bytes", "History waiting on disk for PostgreSQL.", value=writer.spool_bytes
        )
        yield GaugeMetricFamily(
            "telemetryd_history_spool_max_bytes",
            "The spool's cap (history.spool_max_bytes); rows beyond it are dropped and counted.",
            value=history.spool_max_bytes,
        )
        for name, doc, value in (
            ("rows_written", "Rows committed to PostgreSQL (live and replayed).", stats.rows_written),
            ("rows_replayed", "Rows written from the spool after an outage.", stats.rows_replayed),
            ("rows_spooled", "Rows written to the spool while PostgreSQL was unreachable.", stats.rows_spooled),
            ("rows_dropped", "Rows lost because the spool was full: SLA evidence lost.", writer.rows_dropped),
            ("rows_rejected", "Rows PostgreSQL refused as bad data (a bug; logged).", stats.rows_rejected),
            ("batches_written", "Batches committed to PostgreSQL.", stats.batches_written),
            ("write_failures", "Failed connects and batch writes.", stats.write_failures),
            ("chain_links", "Hash-chain links sealed (one per batch with new rows).", stats.chain_links),
        ):
            yield CounterMetricFamily(f"telemetryd_history_{name}", doc, value=value)
        if stats.last_write_seconds is not None:
            yield GaugeMetricFamily(
                "telemetryd_history_last_write_duration_seconds",
                "How long the last committed batch took.",
                value=stats.last_write_seconds,
            )
        yield histogram_family(
            "telemetryd_history_write_duration_seconds",
            "Time to write one batch (COPY, insert, chain seal, commit).",
            stats.latency,
        )

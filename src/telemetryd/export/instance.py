"""The daemon's own facts: build, shard, ICMP socket, reloads, event-loop lag, inventory size."""

from __future__ import annotations

import platform
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric

from telemetryd import __version__
from telemetryd.config.settings import Shard
from telemetryd.export.families import RosterCollector, flag, histogram_family
from telemetryd.heap import CollectorClock
from telemetryd.histogram import Histogram
from telemetryd.probes.icmp import Pinger
from telemetryd.reachability.state import Roster, State


@dataclass(slots=True)
class InstanceStatus:
    """What the daemon knows about itself; it updates these fields, the collector and the status page read them."""

    started_at: float
    shard: Shard
    icmp_mode: str = "none"
    last_reload_ok: bool = True
    last_reload_success: float = 0.0
    loop_lag: Histogram = field(default_factory=Histogram)
    collector: CollectorClock | None = None
    """The garbage collector's timing, once the daemon tuned it (`heap.tune`)."""


class InstanceCollector(RosterCollector):
    """telemetryd_build, _shard, _icmp_socket, reload gauges, loop lag and inventory counts."""

    def __init__(self, instance: InstanceStatus, state: State, pinger: Pinger | None) -> None:
        super().__init__(state)
        self.instance = instance
        self.pinger = pinger

    def families(self, roster: Roster) -> Iterator[Metric]:
        """Yield the instance's families (inventory counts from `roster`)."""
        instance = self.instance
        build = InfoMetricFamily("telemetryd_build", "Version of the running daemon.")
        build.add_metric([], {"version": __version__, "python": platform.python_version()})
        yield build
        shard = InfoMetricFamily("telemetryd_shard", "Which share of the inventory this instance watches.")
        shard.add_metric([], {"shard": str(instance.shard.index), "shards": str(instance.shard.count)})
        yield shard
        icmp = InfoMetricFamily("telemetryd_icmp_socket", "Kind of the shared ICMP socket: dgram, raw or none.")
        icmp.add_metric([], {"mode": instance.icmp_mode})
        yield icmp
        if self.pinger is not None:
            yield CounterMetricFamily(
                "telemetryd_icmp_replies_unmatched",
                "ICMP replies that matched no request in flight: late (after their timeout), duplicated or foreign.",
                value=self.pinger.replies_unmatched,
            )
        yield histogram_family(
            "telemetryd_event_loop_lag_seconds",
            "How late a 0.5 s timer fires: event-loop saturation.",
            instance.loop_lag,
        )
        if instance.collector is not None:
            yield from _collector_families(instance.collector)
        inventory = roster.inventory
        yield GaugeMetricFamily(
            "telemetryd_inventory_schools", "Schools this instance watches (its shard).", value=len(inventory.schools)
        )
        devices = GaugeMetricFamily(
            "telemetryd_inventory_devices", "Devices this instance watches, by kind.", labels=["kind"]
        )
        for kind, count in roster.kind_totals().items():
            devices.add_metric([kind.value], count)
        yield devices
        yield GaugeMetricFamily(
            "telemetryd_config_last_reload_successful",
            "1 when the last configuration load succeeded.",
            value=flag(instance.last_reload_ok),
        )
        yield GaugeMetricFamily(
            "telemetryd_config_last_reload_success_timestamp_seconds",
            "When the configuration was last loaded successfully (Unix time).",
            value=instance.last_reload_success,
        )
        yield GaugeMetricFamily(
            "telemetryd_start_time_seconds", "When the daemon started (Unix time).", value=instance.started_at
        )


def _collector_families(clock: CollectorClock) -> Iterator[Metric]:
    seconds = CounterMetricFamily(
        "telemetryd_gc_seconds",
        "Time the garbage collector stopped the process, by generation (rate() it: the share of a core).",
        labels=["generation"],
    )
    passes = CounterMetricFamily(
        "telemetryd_gc_passes", "Garbage collector passes by generation.", labels=["generation"]
    )
    for generation, (spent, count) in enumerate(zip(clock.seconds, clock.passes, strict=True)):
        seconds.add_metric([str(generation)], spent)
        passes.add_metric([str(generation)], count)
    yield seconds
    yield passes
    yield GaugeMetricFamily(
        "telemetryd_gc_longest_pause_seconds", "The longest single collector pass since start.", value=clock.longest
    )
    yield GaugeMetricFamily(
        "telemetryd_gc_frozen_objects",
        "Objects frozen out of the collector's sight (the loaded inventory, state and schedule).",
        value=clock.frozen,
    )

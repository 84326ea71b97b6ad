"""Schools and the scheduler: roll-ups, contracts, probe runs, skipped slots, deadlines, lag (devices: devices.py)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)

from telemetryd.export.families import MBIT_BYTES, RosterCollector, histogram_family
from telemetryd.histogram import Histogram
from telemetryd.model import DeviceKind
from telemetryd.reachability.scheduler import Scheduler
from telemetryd.reachability.state import Roster, State


class SchoolCollector(RosterCollector):
    """Per school: inventory facts, location, contract, devices up/down by kind."""

    def families(self, roster: Roster) -> Iterator[Metric]:
        """Yield the school families from one roster."""
        info = InfoMetricFamily("telemetryd_school", "School inventory facts.", labels=["school", "name", "district"])
        latitude = GaugeMetricFamily("telemetryd_school_latitude_degrees", "School latitude.", labels=["school"])
        longitude = GaugeMetricFamily("telemetryd_school_longitude_degrees", "School longitude.", labels=["school"])
        contract = GaugeMetricFamily(
            "telemetryd_school_contract_bytes_per_second",
            "Contracted link speed of the school (Mbit/s x 125000).",
            labels=["school"],
        )
        segment_contract = GaugeMetricFamily(
            "telemetryd_segment_contract_bytes_per_second",
            "Contracted allocation of one segment of the school's link (alarm, video, education).",
            labels=["school", "segment"],
        )
        kind_labels = ["school", "kind"]
        total = GaugeMetricFamily("telemetryd_school_devices", "Devices of a kind at the school.", labels=kind_labels)
        up = GaugeMetricFamily("telemetryd_school_devices_up", "Devices of a kind that are up.", labels=kind_labels)
        down = GaugeMetricFamily(
            "telemetryd_school_devices_down", "Devices of a kind that are down.", labels=kind_labels
        )
        for summary in roster.school_summaries():
            school = summary.school
            info.add_metric([school.id, school.name, school.district], {})
            if school.latitude is not None and school.longitude is not None:
                latitude.add_metric([school.id], school.latitude)
                longitude.add_metric([school.id], school.longitude)
            contract.add_metric([school.id], school.contract.total_mbps * MBIT_BYTES)
            for segment, mbps in school.contract.segments_mbps:
                segment_contract.add_metric([school.id, segment.value], mbps * MBIT_BYTES)
            for kind in DeviceKind:
                count = summary.count(kind)
                if count.total:
                    total.add_metric([school.id, kind.value], count.total)
                    up.add_metric([school.id, kind.value], count.up)
                    down.add_metric([school.id, kind.value], count.down)
        yield from (info, latitude, longitude, contract, segment_contract, total, up, down)


class SchedulerCollector(RosterCollector):
    """The scheduler's own health: runs by result, skipped slots, deadlines, crashes, lag, jobs in flight."""

    def __init__(self, scheduler: Scheduler, state: State) -> None:
        super().__init__(state)
        self.scheduler = scheduler

    def families(self, roster: Roster) -> Iterator[Metric]:
        """Yield the scheduler families (protocols in use from `roster`)."""
        scheduler = self.scheduler
        stats = scheduler.stats
        runs = CounterMetricFamily(
            "telemetryd_probes",
            "Probe runs by protocol and result (ok or the failure reason).",
            labels=["probe", "result"],
        )
        for (protocol, result), count in sorted(dict(stats.runs).items()):
            runs.add_metric([protocol, result], count)
        yield runs
        skipped = CounterMetricFamily(
            "telemetryd_probe_slots_skipped",
            "Scheduled runs skipped because the previous run was still going.",
            labels=["probe"],
        )
        # Every protocol in use gets a series from the start, so rate() and panels show 0, not "no data".
        inventory = roster.inventory
        protocols = {p.protocol for d in inventory.devices_by_id.values() for p in d.probes}
        skipped_now = dict(stats.skipped)
        for protocol in sorted(protocols | set(skipped_now)):
            skipped.add_metric([protocol], skipped_now.get(protocol, 0))
        yield skipped
        deadlines = CounterMetricFamily(
            "telemetryd_probe_deadlines",
            "Runs cancelled because they overstayed their timeout plus slack (a hung prober), by protocol.",
            labels=["probe"],
        )
        deadlines_now = dict(stats.deadlines)
        for protocol in sorted(protocols | set(deadlines_now)):
            deadlines.add_metric([protocol], deadlines_now.get(protocol, 0))
        yield deadlines
        yield CounterMetricFamily(
            "telemetryd_probe_errors",
            "Prober or handler crashes (bugs), caught at the task boundary.",
            value=stats.errors,
        )
        yield _per_protocol(
            "telemetryd_probe_duration_seconds", "Seconds per probe run, failed runs too, by protocol.", stats.durations
        )
        yield _per_protocol(
            "telemetryd_probe_rtt_seconds",
            "Round trip of answered runs by protocol: mean ICMP echo RTT, or TCP connect time.",
            stats.round_trips,
        )
        yield histogram_family(
            "telemetryd_schedule_lag_seconds", "How late probes started against their scheduled time.", stats.lag
        )
        yield GaugeMetricFamily(
            "telemetryd_schedule_last_lag_seconds", "Lag of the most recently dispatched probe.", value=stats.last_lag
        )
        yield GaugeMetricFamily("telemetryd_probes_in_flight", "Probe tasks running now.", value=scheduler.in_flight)
        yield GaugeMetricFamily(
            "telemetryd_scheduled_probes", "(device, probe) pairs on a schedule.", value=scheduler.job_count
        )


def _per_protocol(name: str, doc: str, histograms: dict[str, Histogram]) -> HistogramMetricFamily:
    """One histogram per protocol, labelled ``probe`` as `telemetryd_probes_total` is."""
    family = HistogramMetricFamily(name, doc, labels=["probe"])
    for protocol, histogram in sorted(dict(histograms).items()):
        family.add_metric([protocol], histogram.cumulative(), histogram.total)
    return family

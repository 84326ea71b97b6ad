"""Schools (encoded by hand) and the scheduler: roll-ups, contracts, probe runs, skipped slots, deadlines, lag."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import cast

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from telemetryd.export.families import MBIT_BYTES, Family, RosterCollector, escape, histogram_family
from telemetryd.histogram import Histogram
from telemetryd.model import DeviceKind
from telemetryd.reachability.scheduler import Scheduler
from telemetryd.reachability.state import Roster, State

SCHOOL_INFO = Family("telemetryd_school", "info", "School inventory facts.")
LATITUDE = Family("telemetryd_school_latitude_degrees", "gauge", "School latitude.")
LONGITUDE = Family("telemetryd_school_longitude_degrees", "gauge", "School longitude.")
CONTRACT = Family(
    "telemetryd_school_contract_bytes_per_second", "gauge", "Contracted link speed of the school (Mbit/s x 125000)."
)
SEGMENT_CONTRACT = Family(
    "telemetryd_segment_contract_bytes_per_second",
    "gauge",
    "Contracted allocation of one segment of the school's link (alarm, video, education).",
)
DEVICES = Family("telemetryd_school_devices", "gauge", "Devices of a kind at the school.")
DEVICES_UP = Family("telemetryd_school_devices_up", "gauge", "Devices of a kind that are up.")
DEVICES_DOWN = Family("telemetryd_school_devices_down", "gauge", "Devices of a kind that are down.")
SCHOOL_FACTS = (SCHOOL_INFO, LATITUDE, LONGITUDE, CONTRACT, SEGMENT_CONTRACT)
SCHOOL_FAMILIES = (*SCHOOL_FACTS, DEVICES, DEVICES_UP, DEVICES_DOWN)
_number = cast(Callable[[float], str], floatToGoString)


@dataclass(frozen=True, slots=True)
class _SchoolLines:
    """One roster's school lines that change only on reload, and the label sets of its roll-ups."""

    roster: Roster
    facts: tuple[str, ...]
    """The samples of each of `SCHOOL_FACTS`, one string per family."""
    kinds: tuple[tuple[str, DeviceKind, str], ...]
    """(school id, kind, ``{kind="…",school="…"}``) per kind present at a school, in inventory order."""


def _school_lines(roster: Roster) -> _SchoolLines:
    info, latitude, longitude, contract, segment_contract = [], [], [], [], []
    kinds: list[tuple[str, DeviceKind, str]] = []
    for school in roster.inventory.schools:
        sid = escape(school.id)
        info.append(
            f'{SCHOOL_INFO.sample}{{district="{escape(school.district)}",name="{escape(school.name)}",school="{sid}"}}'
            " 1.0\n"
        )
        if school.latitude is not None and school.longitude is not None:
            latitude.append(f'{LATITUDE.sample}{{school="{sid}"}} {_number(school.latitude)}\n')
            longitude.append(f'{LONGITUDE.sample}{{school="{sid}"}} {_number(school.longitude)}\n')
        contract.append(f'{CONTRACT.sample}{{school="{sid}"}} {_number(school.contract.total_mbps * MBIT_BYTES)}\n')
        for segment, mbps in school.contract.segments_mbps:
            segment_contract.append(
                f'{SEGMENT_CONTRACT.sample}{{school="{sid}",segment="{escape(segment.value)}"}} '
                f"{_number(mbps * MBIT_BYTES)}\n"
            )
        present = roster.tally(school.id)
        for kind in DeviceKind:
            if kind in present:
                kinds.append((school.id, kind, f'{{kind="{kind.value}",school="{sid}"}}'))
    facts = tuple("".join(lines) for lines in (info, latitude, longitude, contract, segment_contract))
    return _SchoolLines(roster, facts, tuple(kinds))


class SchoolExposition:
    """Per school: inventory facts, location, contract, devices up/down by kind, encoded by hand.

    At 100,000 devices there are ~3,000 schools and ~57,000 of these samples. The facts change
    only on reload and are encoded once per roster; the roll-ups are read from the roster's
    tally (`Roster.tally`, kept by `State.apply`), not counted device by device.
    """

    def __init__(self) -> None:
        self._lines: _SchoolLines | None = None

    def render(self, roster: Roster, *, openmetrics: bool = False) -> bytes:
        """The eight school families of `roster`."""
        lines = self._lines
        if lines is None or lines.roster is not roster:
            lines = self._lines = _school_lines(roster)
        facts = zip(SCHOOL_FACTS, lines.facts, strict=True)
        out = [family.header(openmetrics=openmetrics) + body for family, body in facts]
        total: list[str] = [DEVICES.header(openmetrics=openmetrics)]
        up: list[str] = [DEVICES_UP.header(openmetrics=openmetrics)]
        down: list[str] = [DEVICES_DOWN.header(openmetrics=openmetrics)]
        total_name, up_name, down_name = DEVICES.sample, DEVICES_UP.sample, DEVICES_DOWN.sample
        for school_id, kind, labels in lines.kinds:
            counts = roster.tally(school_id)[kind]
            # Counts are small integers, which Go's format prints as "35.0": the same bytes, no float formatting.
            total.append(f"{total_name}{labels} {counts[0]}.0\n")
            up.append(f"{up_name}{labels} {counts[1]}.0\n")
            down.append(f"{down_name}{labels} {counts[2]}.0\n")
        return "".join(out + total + up + down).encode()


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
        protocols = roster.protocols()
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

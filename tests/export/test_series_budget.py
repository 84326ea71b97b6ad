"""The series budget: what one device of each kind costs in a scrape with its default probes (README, Metrics)."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from telemetryd.config import load_config
from telemetryd.daemon import Daemon
from telemetryd.export.app import Exposition
from telemetryd.export.devices import SERIES_BUDGET
from telemetryd.model import Health, ProbeResult
from tests.helpers import school, write_config

OK = ProbeResult(True, 0.004, rtt=0.001, loss=0.0, sent=3, received=3)
LOSSY = ProbeResult(True, 0.6, rtt=0.08, loss=1 / 3, sent=3, received=2)
DOWN = ProbeResult(False, 2.0, "timeout", "no echo reply to 3 requests", loss=1.0, sent=3)


def _schools() -> list[dict[str, Any]]:
    """One school of every kind with default probes; one camera records on the NVR."""
    devices = [
        {"id": "router", "kind": "router", "host": "127.0.1.1"},
        {"id": "nvr", "kind": "nvr", "host": "127.0.1.2"},
        {"id": "cam-1", "kind": "camera", "host": "127.0.1.11", "nvr": {"device": "nvr", "channel": 1}},
        {"id": "cam-2", "kind": "camera", "host": "127.0.1.12"},
        {"id": "panel", "kind": "alarm_panel", "host": "127.0.1.20"},
    ]
    return [school("s1", devices)]


@pytest.fixture
def daemon(tmp_path: Path) -> Daemon:
    """A daemon over the one-school inventory, not started: results are applied by hand."""
    return Daemon(load_config(write_config(tmp_path, _schools())))


def _series_per_device(exposition: Exposition) -> dict[str, int]:
    counts: collections.Counter[str] = collections.Counter()
    for family in text_string_to_metric_families(exposition.render().decode()):
        for sample in family.samples:
            if "device" in sample.labels:
                counts[sample.labels["device"]] += 1
    return dict(counts)


def _apply(daemon: Daemon, result_of: dict[str, ProbeResult], rounds: int = 3) -> None:
    for round_no in range(rounds):
        for device_id, state in daemon.state.devices.items():
            for probe in state.probes:
                daemon.state.apply(device_id, probe, result_of.get(device_id, OK), 1.7e9 + round_no)


@pytest.mark.parametrize(
    "scenario",
    [
        {},
        {"cam-2": DOWN},
        {"nvr": DOWN, "cam-1": DOWN},
        {"router": LOSSY},
        {"router": DOWN, "cam-1": DOWN, "cam-2": DOWN, "nvr": DOWN, "panel": DOWN},
    ],
    ids=["all-up", "camera-down", "nvr-and-its-camera-down", "lossy-link", "school-dark"],
)
def test_no_device_exceeds_its_kinds_budget(daemon: Daemon, scenario: dict[str, ProbeResult]) -> None:
    """Up, down, lossy or dark: a camera costs at most 5 series, the other kinds their budget."""
    exposition = Exposition(daemon.export_sources())
    before = _series_per_device(exposition)
    assert set(before) == {"router", "nvr", "cam-1", "cam-2", "panel"}  # device_info before any result
    _apply(daemon, scenario)
    after = _series_per_device(exposition)
    for device_id, state in daemon.state.devices.items():
        assert after[device_id] <= SERIES_BUDGET[state.device.kind], (device_id, after)
    if not scenario:  # all up: the budget is what each kind really costs, not a loose ceiling
        assert after == {d: SERIES_BUDGET[s.device.kind] for d, s in daemon.state.devices.items()}


def test_the_verdict_is_one_series_that_moves(daemon: Daemon) -> None:
    """A camera going down replaces its verdict series: camera_down 1, and no ok series left behind."""
    exposition = Exposition(daemon.export_sources())

    def verdicts() -> dict[str, str]:
        out: dict[str, str] = {}
        for family in text_string_to_metric_families(exposition.render().decode()):
            for sample in family.samples:
                if sample.name == "telemetryd_camera_verdict":
                    assert sample.labels["device"] not in out, "two verdict series for one camera"
                    assert sample.value == 1.0
                    out[sample.labels["device"]] = f"{sample.labels['verdict']} {sample.labels['reason']}".strip()
        return out

    assert verdicts() == {"cam-1": "unknown not_probed", "cam-2": "unknown not_probed"}
    _apply(daemon, {})
    # Up, but no NVR check result (cam-1) and no NVR at all (cam-2): no recording evidence, so not "ok".
    assert verdicts() == {"cam-1": "unknown nvr_not_checked", "cam-2": "unknown no_nvr"}
    _apply(daemon, {"cam-2": DOWN})
    assert daemon.state.devices["cam-2"].health is Health.DOWN
    assert verdicts() == {"cam-1": "unknown nvr_not_checked", "cam-2": "camera_down"}


def test_durations_and_round_trips_are_histograms_per_protocol(daemon: Daemon) -> None:
    """What was a gauge per (device, probe) is one histogram per protocol, fed by the scheduler's results."""
    stats = daemon.scheduler.stats
    for result in (OK, LOSSY, DOWN):
        stats.observe("icmp", result)
    stats.observe("tcp", OK)
    families = {
        f.name: f for f in text_string_to_metric_families(Exposition(daemon.export_sources()).render().decode())
    }
    duration = families["telemetryd_probe_duration_seconds"]
    assert duration.type == "histogram"
    counts = {s.labels["probe"]: s.value for s in duration.samples if s.name.endswith("_count")}
    assert counts == {"icmp": 3.0, "tcp": 1.0}
    rtt = families["telemetryd_probe_rtt_seconds"]
    rtt_counts = {s.labels["probe"]: s.value for s in rtt.samples if s.name.endswith("_count")}
    assert rtt_counts == {"icmp": 2.0, "tcp": 1.0}  # the timed-out run has no round trip
    assert not any("device" in s.labels for s in (*duration.samples, *rtt.samples))

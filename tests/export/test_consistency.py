"""Exporter under reloads: a scrape rendered off the loop never fails and never mixes two generations."""

from __future__ import annotations

import collections
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from telemetryd.alarm.receiver import SiaReceiver
from telemetryd.config import load_config
from telemetryd.daemon import Daemon
from telemetryd.export.app import Exposition
from telemetryd.model import Direction, ProbeResult, SpeedResult
from telemetryd.probes.isapi import AuthState, AxProStatus, IsapiHealth
from telemetryd.probes.isapi import xml as isapi_xml
from tests.helpers import school, write_config

STORM_SECONDS = 2.0
"""The storm lasts at least this long, and on until MIN_RENDERS renders and MIN_RELOADS reloads (a slow CI machine)."""
STORM_MAX_SECONDS = 60.0
MIN_RENDERS = 50
MIN_RELOADS = 10
OK = ProbeResult(True, 0.002, rtt=0.001, loss=0.0, sent=3, received=3)
DOWN = ProbeResult(False, 2.0, "timeout", "no echo reply to 3 requests", loss=1.0, sent=3)
Sample = tuple[str, dict[str, str], float]


def _device(device_id: str, kind: str, host: str, **extra: Any) -> dict[str, Any]:
    return {"id": device_id, "kind": kind, "host": host, **extra}


def big() -> list[dict[str, Any]]:
    """Generation A: s1 has an NVR with isapi and 4 cameras, s2 a supervised AX PRO, s3 just a router."""
    nvr = _device("s1-nvr", "nvr", "127.0.1.2", credentials="hik", probes=["icmp", "isapi"])
    cameras = [
        _device(f"s1-cam-{i}", "camera", f"127.0.1.{10 + i}", nvr={"device": "s1-nvr", "channel": i})
        for i in range(1, 5)
    ]
    panel = _device(
        "s2-alarm", "alarm_panel", "127.0.2.2", credentials="hik", probes=["icmp", "axpro"], sia={"account": "2001"}
    )
    return [
        school("s1", [_device("s1-router", "router", "127.0.1.1"), nvr, *cameras]),
        school("s2", [_device("s2-router", "router", "127.0.2.1"), panel]),
        school("s3", [_device("s3-router", "router", "127.0.3.1")]),
    ]


def small() -> list[dict[str, Any]]:
    """Generation B (8 devices, A has 9): s1 shrinks, its NVR loses isapi; s2 swaps its panel for cameras; s3 -> s4."""
    return [
        school(
            "s1",
            [
                _device("s1-router", "router", "127.0.1.1"),
                _device("s1-nvr", "nvr", "127.0.1.2", probes=["icmp"]),
                _device("s1-cam-1", "camera", "127.0.1.11"),
            ],
        ),
        school(
            "s2",
            [_device("s2-router", "router", "127.0.2.1")]
            + [_device(f"s2-cam-{i}", "camera", f"127.0.2.{10 + i}") for i in range(1, 3)],
        ),
        school("s4", [_device("s4-router", "router", "127.0.4.1"), _device("s4-cam-1", "camera", "127.0.4.11")]),
    ]


NVR_HEALTH = IsapiHealth(
    ok=True,
    duration=0.4,
    auth=AuthState.OK,
    identity=isapi_xml.DeviceIdentity("DS-7608NI-K2", "V4.30.085", "SN-0001", "NVR", "aa:bb:cc:dd:ee:01"),
    status=isapi_xml.DeviceStatus(uptime=86_400),
    clock_drift=-1.5,
    channels=tuple(isapi_xml.Channel(i, i % 2 == 1) for i in range(1, 5)),
    disks=(isapi_xml.Disk(1, "ok", 1_907_729, 204_800), isapi_xml.Disk(2, "error", 1_907_729, 0)),
    recording=((1, True), (3, False)),
)
AXPRO = AxProStatus(
    ok=True,
    duration=0.3,
    auth=AuthState.OK,
    subsystems=(isapi_xml.AxProSubsystem(1, "Main", "away"),),
    zones=(isapi_xml.AxProZone(1, "Door", "online"), isapi_xml.AxProZone(2, "PIR", "offline", tamper=True)),
)


def _apply_results(daemon: Daemon, round_no: int) -> None:
    """What the loop does between reloads: results for every device, findings, counters growing new keys."""
    now = 1_700_000_000.0 + round_no
    for device_id, device_state in daemon.state.devices.items():
        for probe in device_state.probes:
            if probe.startswith("isapi"):
                result = NVR_HEALTH.probe_result()
            elif probe.startswith("axpro"):
                result = AXPRO.probe_result()
            else:
                result = DOWN if (round_no + len(device_id)) % 3 == 0 else OK
            daemon.state.apply(device_id, probe, result, now)
    stats = daemon.scheduler.stats
    stats.runs[("icmp", "ok")] += 1
    stats.runs[("tcp", f"reason-{round_no}")] += 1  # a fresh key: the dict grows while a render copies it
    stats.skipped[f"proto-{round_no % 5}"] += 1
    stats.lag.observe(0.001 * (round_no % 7))
    assert daemon.sia is not None
    counts = daemon.sia.counts
    counts.dropped[("tcp", f"why-{round_no % 11}")] += 1
    counts.events[f"class-{round_no % 13}"] += 1
    counts.frames[("udp", "ack", f"r{round_no % 17}")] += 1
    download = SpeedResult(True, Direction.DOWNLOAD, 90.0 + round_no % 9, 1_000_000, 1.0, 4, stable=True)
    upload = SpeedResult(True, Direction.UPLOAD, 80.0, 1_000_000, 1.0, 4)
    daemon.links.record_speedtest("s1", download, upload, now=float(round_no), wall=now)


@dataclass
class Storm:
    """What the render thread saw while the main thread reloaded."""

    text: list[str] = field(default_factory=list)
    openmetrics: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    reloads: int = 0


def _daemon(tmp_path: Path) -> Daemon:
    daemon = Daemon(load_config(write_config(tmp_path, big())))
    daemon.sia = SiaReceiver(daemon.supervision)  # not started: only its counts are read
    return daemon


@pytest.fixture(scope="module")
def storm(tmp_path_factory: pytest.TempPathFactory) -> Storm:
    """Render both encodings in a thread for ~2 s, with a tiny switch interval, while reloading A <-> B."""
    tmp_path = tmp_path_factory.mktemp("storm")
    daemon = _daemon(tmp_path)
    registry = Exposition(daemon.export_sources())
    seen = Storm()
    stop = threading.Event()

    def render() -> None:
        while not stop.is_set():
            try:
                seen.text.append(registry.render().decode())
                seen.openmetrics.append(registry.render(openmetrics=True).decode())
            except Exception as exc:  # the test reports whatever a scrape raised
                seen.errors.append(f"{type(exc).__name__}: {exc}")

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    thread = threading.Thread(target=render, name="render", daemon=True)
    try:
        thread.start()
        started = time.monotonic()
        while time.monotonic() - started < STORM_SECONDS or (
            (len(seen.text) <= MIN_RENDERS or seen.reloads <= MIN_RELOADS)
            and time.monotonic() - started < STORM_MAX_SECONDS
        ):
            seen.reloads += 1
            write_config(tmp_path, small() if seen.reloads % 2 else big())
            assert daemon.reload(), "the test's own config must load"
            _apply_results(daemon, seen.reloads)
    finally:
        stop.set()
        thread.join(30)
        sys.setswitchinterval(interval)
    assert not thread.is_alive()
    return seen


def _samples(text: str) -> list[Sample]:
    return [(s.name, s.labels, s.value) for family in text_string_to_metric_families(text) for s in family.samples]


def _schools(samples: list[Sample], name: str) -> collections.Counter[str]:
    """Per school: the sum of `name`'s values (for *_info series: how many there are)."""
    out: collections.Counter[str] = collections.Counter()
    for metric, labels, value in samples:
        if metric == name:
            out[labels["school"]] += int(value)
    return out


def test_scrapes_never_fail_during_reloads(storm: Storm) -> None:
    """Across many reloads, every render succeeds, parses in both formats and is consistent within each collector."""
    assert storm.errors == []
    assert len(storm.text) > MIN_RENDERS, f"only {len(storm.text)} renders in {STORM_MAX_SECONDS} s"
    assert storm.reloads > MIN_RELOADS
    for body in storm.openmetrics:
        assert body.endswith("# EOF\n")
        assert list(parse_openmetrics(body))
    last_runs: dict[tuple[str, str], float] = {}
    sizes = set()
    for body in storm.text:
        samples = _samples(body)
        names = {name for name, _, _ in samples}
        assert {"telemetryd_device_info", "telemetryd_school_devices", "telemetryd_school_info"} <= names
        # DeviceCollector alone: every device_up/probe_up series belongs to a listed device.
        listed = {
            (labels["school"], labels["device"]) for name, labels, _ in samples if name == "telemetryd_device_info"
        }
        for name, labels, _ in samples:
            if name in ("telemetryd_device_up", "telemetryd_probe_up", "telemetryd_camera_verdict"):
                assert (labels["school"], labels["device"]) in listed, (name, labels)
        # SchoolExposition alone: up + down never exceed the total of a (school, kind).
        totals = {
            (labels["school"], labels["kind"]): value
            for name, labels, value in samples
            if name == "telemetryd_school_devices"
        }
        up_down: collections.Counter[tuple[str, str]] = collections.Counter()
        for name, labels, value in samples:
            if name in ("telemetryd_school_devices_up", "telemetryd_school_devices_down"):
                up_down[(labels["school"], labels["kind"])] += int(value)
        assert all(up_down[key] <= total for key, total in totals.items()), (totals, up_down)
        assert set(up_down) <= set(totals)
        # Counters only grow from one scrape to the next, even while their dict grows new keys.
        for name, labels, value in samples:
            if name == "telemetryd_probes_total":
                key = (labels["probe"], labels["result"])
                assert value >= last_runs.get(key, 0.0), (key, value, last_runs[key])
                last_runs[key] = value
        sizes.add(len(listed))
    assert len(last_runs) > 10, "the probe-run counters grew new keys during the storm"
    assert sizes == {9, 8}, f"both generations (9 and 8 devices) and nothing else: {sizes}"


def test_every_scrape_counts_the_devices_it_lists(storm: Storm) -> None:
    """In every body of the storm, each school's telemetryd_school_devices total equals its device_info series."""
    mixed = []
    for body in storm.text:
        samples = _samples(body)
        listed = _schools(samples, "telemetryd_device_info")
        counted = _schools(samples, "telemetryd_school_devices")
        if listed != counted:
            mixed.append((dict(listed), dict(counted)))
    assert not mixed, f"{len(mixed)} of {len(storm.text)} scrapes mixed two rosters, e.g. {mixed[0]}"


def _body_with_reload_inside(daemon: Daemon, tmp_path: Path) -> str:
    """One scrape's body, with a reload (to generation B) right after the device families are rendered."""
    exposition = Exposition(daemon.export_sources())
    render_devices = exposition.devices.render

    def devices_then_reload(roster: Any, *, openmetrics: bool = False) -> bytes:
        body = render_devices(roster, openmetrics=openmetrics)
        write_config(tmp_path, small())
        assert daemon.reload()
        return body

    exposition.devices.render = devices_then_reload  # type: ignore[method-assign]
    return exposition.render().decode()


def test_a_scrape_straddling_a_reload_reads_one_roster(tmp_path: Path) -> None:
    """A reload landing between two collectors of one scrape does not show up as two inventories in one body."""
    daemon = _daemon(tmp_path)
    samples = _samples(_body_with_reload_inside(daemon, tmp_path))
    assert daemon.state.inventory.device_count != _schools(samples, "telemetryd_device_info").total()
    assert _schools(samples, "telemetryd_device_info") == _schools(samples, "telemetryd_school_devices")
    schools_listed = sum(1 for name, _, _ in samples if name == "telemetryd_school_info")
    (inventory_schools,) = (value for name, _, value in samples if name == "telemetryd_inventory_schools")
    assert inventory_schools == schools_listed

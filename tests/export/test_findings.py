"""Exporter: typed probe findings (ISAPI health, AX PRO status) and the counters the code keeps, across reloads."""

from __future__ import annotations

import collections
import dataclasses
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from telemetryd.alarm import dc09
from telemetryd.alarm.receiver import SiaReceiver
from telemetryd.config import load_config
from telemetryd.daemon import Daemon
from telemetryd.export.app import Exposition
from telemetryd.history.recorder import History
from telemetryd.history.spool import Spool
from telemetryd.history.writer import HistoryWriter
from telemetryd.model import ProbeResult
from telemetryd.probes.icmp import Pinger
from telemetryd.probes.isapi import AuthState, AxProStatus, IsapiHealth
from telemetryd.probes.isapi import xml as isapi_xml
from tests.conftest import require_binary, require_root
from tests.helpers import school, write_config

NOW = 1_700_000_000.0
OK = ProbeResult(True, 0.002, rtt=0.001, loss=0.0, sent=3, received=3)
HARDWARE = ("telemetryd_device_hardware_info", "telemetryd_nvr_disk_healthy", "telemetryd_nvr_channel_up")

Labels = frozenset[tuple[str, str]]


# ---------------------------------------------------------------- builders


def _nvr(*probes: str) -> dict[str, Any]:
    return {"id": "s1-nvr", "kind": "nvr", "host": "127.0.1.2", "credentials": "hik", "probes": list(probes)}


def _cameras(n: int, *, on_nvr: bool = True) -> list[dict[str, Any]]:
    return [
        {
            "id": f"s1-cam-{i}",
            "kind": "camera",
            "host": f"127.0.1.{10 + i}",
            **({"nvr": {"device": "s1-nvr", "channel": i}} if on_nvr else {}),
        }
        for i in range(1, n + 1)
    ]


def _panel() -> dict[str, Any]:
    return {
        "id": "s1-alarm",
        "kind": "alarm_panel",
        "host": "127.0.1.3",
        "credentials": "hik",
        "probes": ["icmp", "axpro"],
        "sia": {"account": "1001"},
    }


def _write(tmp_path: Path, s1_devices: list[dict[str, Any]], **settings: Any) -> Path:
    router = {"id": "s1-router", "kind": "router", "host": "127.0.1.1"}
    return write_config(
        tmp_path,
        [
            school("s1", [router, *s1_devices]),
            school("s2", [{"id": "s2-router", "kind": "router", "host": "127.0.2.1"}]),
        ],
        **settings,
    )


def _daemon(tmp_path: Path, s1_devices: list[dict[str, Any]], **settings: Any) -> Daemon:
    return Daemon(load_config(_write(tmp_path, s1_devices, **settings)))


def _reload(daemon: Daemon, tmp_path: Path, s1_devices: list[dict[str, Any]]) -> None:
    _write(tmp_path, s1_devices)
    assert daemon.reload(), "the test's own config must load"


def nvr_health(serial: str = "SN-0001", *, channel_2_online: bool = False) -> IsapiHealth:
    """An NVR check: identity, NTP clock, two channels, a healthy, a failed and an empty disk bay, recording on 1."""
    return IsapiHealth(
        ok=True,
        duration=0.4,
        auth=AuthState.OK,
        identity=isapi_xml.DeviceIdentity("DS-7608NI-K2", "V4.30.085", serial, "NVR", "aa:bb:cc:dd:ee:01"),
        status=isapi_xml.DeviceStatus(uptime=86_400),
        time=isapi_xml.DeviceTime("NTP", None),
        clock_drift=0.5,
        channels=(isapi_xml.Channel(1, True), isapi_xml.Channel(2, channel_2_online, "offline")),
        disks=(
            isapi_xml.Disk(1, "ok", 1_907_729, 204_800),
            isapi_xml.Disk(2, "error", 1_907_729, 0),
            isapi_xml.Disk(3, "notexist"),
        ),
        recording=((1, True),),
    )


def axpro_status() -> AxProStatus:
    """A panel with an armed, a disarmed-in-alarm and a stay-armed area, and zones in every fault state."""
    area, zone = isapi_xml.AxProSubsystem, isapi_xml.AxProZone
    return AxProStatus(
        ok=True,
        duration=0.3,
        auth=AuthState.OK,
        subsystems=(area(1, "Main", "away"), area(2, "Office", "disarm", alarm=True), area(3, "Gym", "stay")),
        zones=(
            zone(1, "Door", "online"),
            zone(2, "Hall PIR", "offline"),
            zone(3, "Window", "breakDown", tamper=True),
            zone(4, "Lab PIR", "heartbeatAbnormal"),
            zone(5, "Gate", "trigger", alarm=True, armed=True),
            zone(6, "Store", "online", tamper=True, alarm=True),
        ),
    )


# ---------------------------------------------------------------- reading the exposition


def samples(text: str) -> list[tuple[str, Labels, float]]:
    """Every sample of a text exposition as (name, labels, value), in order, duplicates kept."""
    return [
        (s.name, frozenset(s.labels.items()), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def scrape(registry: Any) -> dict[tuple[str, Labels], float]:
    """One scrape as {(name, labels): value}; fails on a duplicate sample."""
    found = samples(registry.render().decode())
    keys = [(name, labels) for name, labels, _ in found]
    dupes = [key for key, n in collections.Counter(keys).items() if n > 1]
    assert not dupes, f"duplicate samples: {dupes}"
    return {(name, labels): value for name, labels, value in found}


def get(scraped: dict[tuple[str, Labels], float], metric: str, /, **labels: str) -> float:
    """The value of one sample; KeyError when absent."""
    return scraped[(metric, frozenset(labels.items()))]


def names_for(scraped: dict[tuple[str, Labels], float], device: str) -> set[str]:
    """Names of the samples labelled device=`device`."""
    return {name for name, labels in scraped if ("device", device) in labels}


# ---------------------------------------------------------------- ISAPI findings


def test_isapi_findings_follow_the_probe_and_the_device_across_reloads(tmp_path: Path) -> None:
    """Hardware/disk/channel series go when a reload drops the NVR's isapi probe; all its series go with the NVR."""
    daemon = _daemon(tmp_path, [_nvr("icmp", "isapi"), *_cameras(2)])
    registry = Exposition(daemon.export_sources())
    daemon.state.apply("s1-nvr", "icmp", OK, NOW)
    daemon.state.apply("s1-nvr", "isapi:80", nvr_health().probe_result(), NOW)
    before = scrape(registry)
    nvr = {"school": "s1", "device": "s1-nvr"}
    hardware = {**nvr, "kind": "nvr", "model": "DS-7608NI-K2", "firmware": "V4.30.085", "serial": "SN-0001"}
    assert get(before, "telemetryd_device_hardware_info", **hardware) == 1.0
    assert get(before, "telemetryd_nvr_disk_healthy", **nvr, disk="1") == 1.0
    assert get(before, "telemetryd_nvr_disk_healthy", **nvr, disk="2") == 0.0
    assert ("telemetryd_nvr_disk_healthy", frozenset({**nvr, "disk": "3"}.items())) not in before  # empty bay
    assert get(before, "telemetryd_nvr_disk_capacity_bytes", **nvr, disk="1") == 1_907_729 * 1024 * 1024
    assert get(before, "telemetryd_nvr_channel_up", **nvr, channel="1") == 1.0
    assert get(before, "telemetryd_nvr_channel_up", **nvr, channel="2") == 0.0
    assert get(before, "telemetryd_nvr_channel_recording", **nvr, channel="1") == 1.0
    assert get(before, "telemetryd_device_time_ntp", **nvr, kind="nvr") == 1.0

    _reload(daemon, tmp_path, [_nvr("icmp"), *_cameras(2)])
    probe_gone = scrape(registry)
    isapi_families = {
        "telemetryd_device_hardware_info",
        "telemetryd_isapi_auth_ok",
        "telemetryd_device_clock_drift_seconds",
        "telemetryd_device_time_ntp",
        "telemetryd_device_uptime_seconds",
        "telemetryd_nvr_channel_up",
        "telemetryd_nvr_channel_recording",
        "telemetryd_nvr_disk_healthy",
        "telemetryd_nvr_disk_capacity_bytes",
        "telemetryd_nvr_disk_free_bytes",
    }
    assert names_for(before, "s1-nvr") >= isapi_families
    assert not names_for(probe_gone, "s1-nvr") & isapi_families
    assert get(probe_gone, "telemetryd_device_info", **nvr, kind="nvr", host="127.0.1.2") == 1.0
    assert get(probe_gone, "telemetryd_probe_up", **nvr, kind="nvr", probe="icmp") == 1.0

    _reload(daemon, tmp_path, _cameras(2, on_nvr=False))
    device_gone = scrape(registry)
    assert names_for(device_gone, "s1-nvr") == set()
    assert not any("s1-nvr" in value for _, labels in device_gone for _, value in labels)
    assert get(device_gone, "telemetryd_school_devices", school="s1", kind="camera") == 2.0
    assert ("telemetryd_school_devices", frozenset({"school": "s1", "kind": "nvr"}.items())) not in device_gone


def test_two_isapi_probes_on_one_device_export_one_set_of_series(tmp_path: Path) -> None:
    """An NVR checked over isapi:80 and isapi:8080, both with findings, exports each ISAPI series once."""
    daemon = _daemon(tmp_path, [_nvr("icmp", "isapi", "isapi:8080"), *_cameras(2)])
    registry = Exposition(daemon.export_sources())
    daemon.state.apply("s1-nvr", "isapi:80", nvr_health().probe_result(), NOW)
    daemon.state.apply("s1-nvr", "isapi:8080", nvr_health("SN-0002", channel_2_online=True).probe_result(), NOW + 1)
    scraped = scrape(registry)  # asserts no duplicate (name, labels)
    hardware = [labels for name, labels in scraped if name == "telemetryd_device_hardware_info"]
    assert len(hardware) == 1, hardware
    channels = sorted(dict(labels)["channel"] for name, labels in scraped if name == "telemetryd_nvr_channel_up")
    assert channels == ["1", "2"]
    disks = sorted(dict(labels)["disk"] for name, labels in scraped if name == "telemetryd_nvr_disk_healthy")
    assert disks == ["1", "2"]
    verdicts = [labels for name, labels in scraped if name == "telemetryd_camera_verdict"]
    assert len(verdicts) == 2  # two cameras, one verdict series each
    # Both probes still export their own reachability.
    probes = {dict(labels)["probe"] for name, labels in scraped if name == "telemetryd_probe_up"}
    assert probes == {"isapi:80", "isapi:8080"}


def test_dvr_inputs_unsupported_checks_and_unknown_verdicts_are_exported(tmp_path: Path) -> None:
    """A DVR's NO VIDEO input is 0, what it lacks is listed, and its cameras read unknown without a channel view."""
    daemon = _daemon(tmp_path, [_nvr("icmp", "isapi"), *_cameras(2)])
    registry = Exposition(daemon.export_sources())
    dvr = dataclasses.replace(
        nvr_health(),
        channels=(),
        recording=(),
        inputs=(isapi_xml.VideoInput(1, True, "1920*1080P25", "Hall"), isapi_xml.VideoInput(3, True, "NO VIDEO")),
        unsupported=("channels", "working_status"),
    )
    for device in ("s1-nvr", "s1-cam-1", "s1-cam-2"):
        daemon.state.apply(device, "icmp", OK, NOW)
    daemon.state.apply("s1-nvr", "isapi:80", dvr.probe_result(), NOW)
    scraped = scrape(registry)
    nvr = {"school": "s1", "device": "s1-nvr"}
    assert get(scraped, "telemetryd_dvr_input_video", **nvr, input="1") == 1.0
    assert get(scraped, "telemetryd_dvr_input_video", **nvr, input="3") == 0.0
    lacks = {dict(labels)["check"] for name, labels in scraped if name == "telemetryd_isapi_check_unsupported"}
    assert lacks == {"channels", "working_status"}
    verdicts = {
        dict(labels)["device"]: (dict(labels)["verdict"], dict(labels)["reason"])
        for name, labels in scraped
        if name == "telemetryd_camera_verdict"
    }
    # Channel 1 is a live input without a recording match; channel 2 is neither an IP channel nor an input.
    assert verdicts == {
        "s1-cam-1": ("unknown", "no_recording_evidence"),
        "s1-cam-2": ("unknown", "nvr_cannot_report_channel"),
    }
    daemon.state.apply("s1-nvr", "isapi:80", dataclasses.replace(dvr, auth=AuthState.AUTH_FAILED).probe_result(), NOW)
    verdicts = {
        dict(labels)["device"]: dict(labels)["reason"]
        for name, labels in scrape(registry)
        if name == "telemetryd_camera_verdict"
    }
    assert verdicts == {"s1-cam-1": "nvr_auth_failed", "s1-cam-2": "nvr_auth_failed"}


# ---------------------------------------------------------------- AX PRO


def test_axpro_areas_and_zones_are_exported(tmp_path: Path) -> None:
    """Each AX PRO area exports armed/alarm and each zone reporting/tamper/alarm, with the panel's 0/1 values."""
    daemon = _daemon(tmp_path, [_panel()])
    registry = Exposition(daemon.export_sources())
    daemon.state.apply("s1-alarm", "axpro:80", axpro_status().probe_result(), NOW)
    scraped = scrape(registry)
    panel = {"school": "s1", "device": "s1-alarm"}
    areas = {
        area: (
            get(scraped, "telemetryd_axpro_area_armed", **panel, area=area),
            get(scraped, "telemetryd_axpro_area_alarm", **panel, area=area),
        )
        for area in ("1", "2", "3")
    }
    assert areas == {"1": (1.0, 0.0), "2": (0.0, 1.0), "3": (1.0, 0.0)}
    zones = {
        zone: tuple(
            get(scraped, f"telemetryd_axpro_zone_{what}", **panel, zone=zone)
            for what in ("reporting", "tamper", "alarm")
        )
        for zone in ("1", "2", "3", "4", "5", "6")
    }
    assert zones == {
        "1": (1.0, 0.0, 0.0),
        "2": (0.0, 0.0, 0.0),
        "3": (0.0, 1.0, 0.0),
        "4": (0.0, 0.0, 0.0),
        "5": (1.0, 0.0, 1.0),
        "6": (1.0, 1.0, 1.0),
    }
    assert sum(name.startswith("telemetryd_axpro_zone_") for name, _ in scraped) == 3 * 6

    _reload(daemon, tmp_path, [{**_panel(), "probes": ["icmp"]}])
    assert not any(name.startswith("telemetryd_axpro_") for name, _ in scrape(registry))


# ---------------------------------------------------------------- counters


async def test_icmp_unmatched_replies_are_exported(tmp_path: Path) -> None:
    """The shared ICMP socket's count of unmatched replies is exported as a counter."""
    try:
        pinger = Pinger.open()
    except PermissionError:
        require_root("opening the ICMP socket")
        raise
    try:
        daemon = _daemon(tmp_path, [])
        registry = Exposition(daemon.export_sources())
        assert ("telemetryd_icmp_replies_unmatched_total", frozenset()) not in scrape(registry)
        daemon.ctx.provide(pinger)
        registry = Exposition(daemon.export_sources())
        pinger.replies_unmatched += 3
        assert get(scrape(registry), "telemetryd_icmp_replies_unmatched_total") == 3.0
        pinger.replies_unmatched += 1
        assert get(scrape(registry), "telemetryd_icmp_replies_unmatched_total") == 4.0
    finally:
        pinger.close()


def _receiver(daemon: Daemon) -> SiaReceiver:
    """A receiver (no sockets) on the daemon's supervision, fed an alarm+restoral frame, a trouble and a NULL."""
    daemon.reload()  # configures supervision for the inventory's panels, as start-up does
    at = datetime(2026, 2, 10, 8, 30, tzinfo=UTC)
    receiver = SiaReceiver(daemon.supervision, wall_clock=lambda: at)
    daemon.sia = receiver
    peer = "127.0.0.1:40000"
    frame = dc09.format_message("SIA-DCS", 1, prefix="0", account="1001", data="#1001|Nri1/BA01/BR02", at=at)
    receiver.handle(dc09.build_frame(frame), "tcp", peer)
    frame = dc09.format_message("SIA-DCS", 2, prefix="0", account="1001", data="#1001|NYT", at=at)
    receiver.handle(dc09.build_frame(frame), "udp", peer)
    receiver.handle(dc09.build_null(3, prefix="0", account="1001", at=at), "tcp", peer)
    receiver.handle(b"\nnot a frame\r", "tcp", peer)
    return receiver


def test_receiver_counters_are_exported(tmp_path: Path) -> None:
    """Frames by verdict, dropped connections by transport and why, and events by class come from the receiver."""
    daemon = _daemon(tmp_path, [_panel()])
    receiver = _receiver(daemon)
    receiver.counts.dropped[("tcp", "idle")] += 2
    receiver.counts.dropped[("udp", "oversize")] += 1
    registry = Exposition(daemon.export_sources())
    scraped = scrape(registry)
    assert get(scraped, "telemetryd_sia_connections_dropped_total", transport="tcp", why="idle") == 2.0
    assert get(scraped, "telemetryd_sia_connections_dropped_total", transport="udp", why="oversize") == 1.0
    events = {
        dict(labels)["class"]: v for (name, labels), v in scraped.items() if name == "telemetryd_alarm_events_total"
    }
    assert events == dict(receiver.counts.events)
    assert events["alarm"] == 1.0 and events["restoral"] == 1.0 and events["trouble"] == 1.0
    frames = {
        (dict(labels)["transport"], dict(labels)["verdict"]): v
        for (name, labels), v in scraped.items()
        if name == "telemetryd_sia_frames_total"
    }
    assert sum(v for (transport, verdict), v in frames.items() if verdict == "ack") == 3.0
    assert sum(frames.values()) == 4.0
    receiver.counts.dropped[("tcp", "too_many")] += 5
    assert get(scrape(registry), "telemetryd_sia_connections_dropped_total", transport="tcp", why="too_many") == 5.0
    heartbeat = get(scraped, "telemetryd_alarm_panel_heartbeat_age_seconds", school="s1", device="s1-alarm")
    assert 0.0 <= heartbeat < 60.0


def _history(daemon: Daemon, tmp_path: Path) -> History:
    """A History whose writer exists but never started (no database needed)."""
    history = History(daemon.config.settings, None)
    history.writer = HistoryWriter(
        "postgresql://telemetryd@127.0.0.1:1/telemetryd", Spool(tmp_path / "spool" / "spool")
    )
    daemon.history = history
    return history


def test_history_writer_counters_are_exported(tmp_path: Path) -> None:
    """Batches and rows written by the history writer are exported as counters; no writer means no family."""
    daemon = _daemon(
        tmp_path, [], history={"dsn": "postgresql://telemetryd@127.0.0.1:1/telemetryd", "spool_directory": "spool"}
    )
    assert not any(name.startswith("telemetryd_history_") for name, _ in scrape(Exposition(daemon.export_sources())))
    history = _history(daemon, tmp_path)
    assert history.writer is not None
    stats = history.writer.stats
    stats.batches_written, stats.rows_written, stats.db_up = 4, 250, True
    scraped = scrape(Exposition(daemon.export_sources()))
    assert get(scraped, "telemetryd_history_batches_written_total") == 4.0
    assert get(scraped, "telemetryd_history_rows_written_total") == 250.0
    assert get(scraped, "telemetryd_history_db_up") == 1.0
    assert get(scraped, "telemetryd_history_spool_max_bytes") == float(history.spool_max_bytes)


# ---------------------------------------------------------------- promtool


def test_promtool_accepts_the_whole_exposition(tmp_path: Path) -> None:
    """`promtool check metrics` finds nothing to say about an exposition with findings, receiver, history, pinger."""
    promtool = require_binary("promtool", "prometheus")
    daemon = _daemon(
        tmp_path,
        [_nvr("icmp", "isapi", "isapi:8080"), *_cameras(2), _panel()],
        history={"dsn": "postgresql://telemetryd@127.0.0.1:1/telemetryd", "spool_directory": "spool"},
    )
    for device in ("s1-router", "s1-nvr", "s1-cam-1", "s1-alarm"):
        daemon.state.apply(device, "icmp", OK, NOW)
    daemon.state.apply("s1-nvr", "isapi:80", nvr_health().probe_result(), NOW)
    daemon.state.apply("s1-nvr", "isapi:8080", nvr_health("SN-0002").probe_result(), NOW)
    daemon.state.apply("s1-alarm", "axpro:80", axpro_status().probe_result(), NOW)
    daemon.scheduler.stats.runs[("isapi", "ok")] += 2
    receiver = _receiver(daemon)
    receiver.counts.dropped[("tcp", "idle")] += 1
    _history(daemon, tmp_path).writer.stats.batches_written = 1  # type: ignore[union-attr]
    # A stand-in for the ICMP socket: the collector reads only its counter.
    sources = dataclasses.replace(daemon.export_sources(), pinger=SimpleNamespace(replies_unmatched=2, mode="raw"))
    text = Exposition(sources).render()
    found = {name for name, _, _ in samples(text.decode())}
    assert {*HARDWARE, "telemetryd_axpro_zone_alarm", "telemetryd_alarm_events_total"} <= found
    assert {"telemetryd_icmp_replies_unmatched_total", "telemetryd_history_batches_written_total"} <= found
    proc = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, check=False)
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
    assert proc.stdout.strip() == b"" and proc.stderr.strip() == b"", proc.stdout.decode() + proc.stderr.decode()

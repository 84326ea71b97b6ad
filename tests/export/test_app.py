"""Exporter: metric families over State, promtool-clean output, status page and JSON."""

from __future__ import annotations

import dataclasses
import gzip
import subprocess
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from telemetryd.daemon import Daemon
from telemetryd.export.app import Exposition, create_app
from telemetryd.heap import CollectorClock
from telemetryd.model import (
    DeviceKind,
    Direction,
    InterfaceCounters,
    ProbeResult,
    SnmpSample,
    SnmpTarget,
    SpeedResult,
)
from tests.conftest import require_binary
from tests.helpers import loopback_config

OK = ProbeResult(True, 0.002, rtt=0.0011, loss=0.0, sent=3, received=3)
DOWN = ProbeResult(False, 2.5, "timeout", "no echo reply to 3 requests", loss=1.0, sent=3)
REFUSED = ProbeResult(False, 0.001, "refused", "port 554 refused the connection")


def _daemon(tmp_path: Path) -> Daemon:
    daemon = Daemon(loopback_config(tmp_path))
    daemon.state.apply("s1-router", "icmp", OK, 1_700_000_000.0)
    daemon.state.apply("s1-cam-1", "icmp", OK, 1_700_000_000.0)
    daemon.state.apply("s1-cam-1", "tcp:554", REFUSED, 1_700_000_001.0)
    daemon.state.apply("s1-alarm", "icmp", DOWN, 1_700_000_002.0)
    daemon.scheduler.stats.runs[("icmp", "ok")] += 2
    daemon.scheduler.stats.runs[("icmp", "timeout")] += 1
    daemon.scheduler.stats.lag.observe(0.002)
    _link_data(daemon)
    return daemon


def _link_data(daemon: Daemon) -> None:
    """s1 measured at 19 Mbps twice (below contract), its router polled twice; s2 never tested."""
    schools = [
        dataclasses.replace(
            s,
            devices=tuple(
                dataclasses.replace(d, snmp=SnmpTarget((("wan", "wan0"), ("alarm", "alarm0"))))
                if d.kind is DeviceKind.ROUTER
                else d
                for d in s.devices
            ),
        )
        for s in daemon.config.inventory.schools
    ]
    links = daemon.links
    links.snmp_interval = 60
    links.sync(schools)
    for now in (0.0, 200.0):
        links.record_speedtest(
            "s1",
            SpeedResult(True, Direction.DOWNLOAD, 19.0, 5_000_000, 2.1, 4, stable=True),
            SpeedResult(True, Direction.UPLOAD, 18.5, 4_900_000, 2.2, 4),
            now=now,
            wall=1_700_000_000.0 + now,
        )
    for at, octets in ((0.0, 0), (60.0, 150_000_000)):  # 20 Mbit/s on both interfaces
        links.record_snmp(
            "s1",
            SnmpSample(
                True,
                at,
                0.01,
                uptime_ticks=int(at * 100) + 100,
                interfaces=tuple(
                    (role, InterfaceCounters(name, i, octets // 2, octets, 64, speed_mbps=1000, oper_up=True))
                    for i, (role, name) in enumerate((("wan", "wan0"), ("alarm", "alarm0")), start=1)
                ),
            ),
        )


def _app(daemon: Daemon) -> web.Application:
    return create_app(daemon.export_sources(), health_problems=daemon.health_problems, ready=lambda: daemon.ready)


def test_link_metrics_follow_link_state(tmp_path: Path) -> None:
    """Speed, ratio to contract, the below-contract flag, raw counters and segment rates are exported."""
    samples = _samples(Exposition(_daemon(tmp_path).export_sources()).render().decode())
    assert _get(samples, "telemetryd_speedtest_bytes_per_second", school="s1", direction="download") == 19e6 / 8
    assert (
        abs(_get(samples, "telemetryd_speedtest_contract_ratio", school="s1", direction="upload") - 18.5 / 150) < 1e-9
    )
    assert _get(samples, "telemetryd_school_below_contract", school="s1") == 1.0
    assert _get(samples, "telemetryd_school_below_contract", school="s2") == 0.0
    assert _get(samples, "telemetryd_school_link_compliance", school="s1", verdict="below_contract") == 1.0
    assert _get(samples, "telemetryd_school_link_compliance", school="s2", verdict="unknown") == 1.0
    assert _get(samples, "telemetryd_speedtests_total", school="s1", result="ok") == 2.0
    assert _get(samples, "telemetryd_speedtest_transferred_bytes_total", school="s1", direction="download") == 10e6
    alarm = {"school": "s1", "device": "s1-router", "segment": "alarm"}
    assert _get(samples, "telemetryd_interface_octets_total", **alarm, direction="out") == 150_000_000
    assert _get(samples, "telemetryd_snmp_up", school="s1", device="s1-router") == 1.0
    out = _get(samples, "telemetryd_segment_throughput_bytes_per_second", school="s1", segment="alarm", direction="out")
    assert out == 150_000_000 / 60
    assert _get(samples, "telemetryd_segment_utilisation_ratio", school="s1", segment="alarm") == 1.0
    assert _get(samples, "telemetryd_segment_utilisation_ratio", school="s1", segment="wan") == 20 / 150
    assert not any(
        name.startswith("telemetryd_speedtest_bytes") and ("school", "s2") in labels for name, labels in samples
    )


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _get(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], metric: str, /, **labels: str) -> float:
    return samples[(metric, frozenset(labels.items()))]


def test_device_metrics_follow_state(tmp_path: Path) -> None:
    """Device and probe up and the router's link RTT reflect State; unknown devices export no up sample."""
    samples = _samples(Exposition(_daemon(tmp_path).export_sources()).render().decode())
    cam = {"school": "s1", "device": "s1-cam-1", "kind": "camera"}
    assert _get(samples, "telemetryd_device_up", **cam) == 0.0
    assert _get(samples, "telemetryd_probe_up", **cam, probe="icmp") == 1.0
    assert _get(samples, "telemetryd_probe_up", **cam, probe="tcp:554") == 0.0
    alarm = {"school": "s1", "device": "s1-alarm", "kind": "alarm_panel"}
    assert _get(samples, "telemetryd_device_up", **alarm) == 0.0
    assert _get(samples, "telemetryd_probe_up", **alarm, probe="icmp") == 0.0
    router = {"school": "s1", "device": "s1-router", "kind": "router"}
    assert _get(samples, "telemetryd_device_up", **router) == 1.0
    assert _get(samples, "telemetryd_school_link_rtt_seconds", school="s1", device="s1-router") == 0.0011
    assert _get(samples, "telemetryd_school_link_loss_ratio", school="s1", device="s1-router") == 0.0
    assert not any(
        name.startswith("telemetryd_school_link_") and ("device", "s1-cam-1") in labels for name, labels in samples
    )
    assert not any(name == "telemetryd_device_up" and ("device", "s2-router") in labels for name, labels in samples)


def test_school_and_contract_metrics(tmp_path: Path) -> None:
    """Schools export info, location, contract in bytes/s per segment, and roll-ups by kind."""
    samples = _samples(Exposition(_daemon(tmp_path).export_sources()).render().decode())
    assert _get(samples, "telemetryd_school_info", school="s1", name="School s1", district="Abay") == 1.0
    assert _get(samples, "telemetryd_school_contract_bytes_per_second", school="s1") == 150e6 / 8
    assert _get(samples, "telemetryd_segment_contract_bytes_per_second", school="s1", segment="alarm") == 20e6 / 8
    assert _get(samples, "telemetryd_segment_contract_bytes_per_second", school="s1", segment="video") == 30e6 / 8
    assert _get(samples, "telemetryd_school_latitude_degrees", school="s1") == 42.3
    assert _get(samples, "telemetryd_school_devices", school="s1", kind="camera") == 1.0
    assert _get(samples, "telemetryd_school_devices_down", school="s1", kind="camera") == 1.0
    assert _get(samples, "telemetryd_school_devices_up", school="s1", kind="router") == 1.0


def test_daemon_health_metrics(tmp_path: Path) -> None:
    """The daemon's own health: probes by result, lag histogram, inventory size, reload status."""
    samples = _samples(Exposition(_daemon(tmp_path).export_sources()).render().decode())
    assert _get(samples, "telemetryd_probes_total", probe="icmp", result="timeout") == 1.0
    assert _get(samples, "telemetryd_schedule_lag_seconds_count") == 1.0
    assert _get(samples, "telemetryd_inventory_devices", kind="camera") == 1.0
    assert _get(samples, "telemetryd_inventory_schools") == 2.0
    assert _get(samples, "telemetryd_config_last_reload_successful") == 1.0


def test_removed_device_vanishes_without_stale_series(tmp_path: Path) -> None:
    """After a reload drops a device, the next scrape has no series for it."""
    daemon = _daemon(tmp_path)
    registry = Exposition(daemon.export_sources())
    assert "s1-alarm" in registry.render().decode()
    inventory = daemon.config.inventory
    smaller = type(inventory).build(
        [
            type(s)(s.id, s.name, s.district, s.contract, tuple(d for d in s.devices if d.id != "s1-alarm"))
            for s in inventory.schools
        ]
    )
    daemon.state.sync(smaller)
    assert "s1-alarm" not in registry.render().decode()


def test_promtool_check_metrics_is_clean(tmp_path: Path) -> None:
    """`promtool check metrics` reports nothing on the exporter's output."""
    promtool = require_binary("promtool", "prometheus")
    text = Exposition(_daemon(tmp_path).export_sources()).render()
    proc = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, check=False)
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
    assert proc.stdout.strip() == b"" and proc.stderr.strip() == b""


async def test_http_endpoints(tmp_path: Path) -> None:
    """/metrics, /healthz, /-/ready, /api/v1/status and / answer with the state, HTML-escaped."""
    daemon = _daemon(tmp_path)
    daemon.ready = True
    async with TestClient(
        TestServer(
            create_app(daemon.export_sources(), health_problems=daemon.health_problems, ready=lambda: daemon.ready)
        )
    ) as client:
        metrics = await client.get("/metrics")
        assert metrics.status == 200 and "telemetryd_device_up" in await metrics.text()
        assert (await client.get("/healthz")).status == 200
        assert (await client.get("/-/ready")).status == 200
        status = await (await client.get("/api/v1/status")).json()
        s1 = next(s for s in status["schools"] if s["id"] == "s1")
        assert s1["devices"]["camera"] == {"total": 1, "up": 0, "down": 1, "unknown": 0}
        assert {d["device"]: d["reason"] for d in s1["down"]} == {
            "s1-cam-1": "tcp:554 refused",
            "s1-alarm": "icmp timeout",
        }
        one = await (await client.get("/api/v1/status", params={"school": "s2"})).json()
        assert [s["id"] for s in one["schools"]] == ["s2"] and one["schools"][0]["all_devices"][0][
            "health"
        ] == "unknown"
        assert s1["link"]["compliance"] == "below_contract"
        assert s1["link"]["speedtest"]["download"]["mbps"] == 19.0
        assert s1["link"]["snmp"]["segments"]["alarm"]["out_mbps"] == 20.0
        page = await (await client.get("/")).text()
        assert "s1-alarm" in page and "icmp timeout" in page
        assert "↓19.0 ↑18.5 / 150 Mbps below contract" in page
        assert "1 school(s) confirmed below contract" in page
        assert "Gate &lt;east&gt;" in page and "Gate <east>" not in page


async def test_ready_is_503_until_started(tmp_path: Path) -> None:
    """/-/ready says 503 until the daemon has started its scheduler."""
    daemon = _daemon(tmp_path)
    async with TestClient(
        TestServer(
            create_app(daemon.export_sources(), health_problems=daemon.health_problems, ready=lambda: daemon.ready)
        )
    ) as client:
        assert (await client.get("/-/ready")).status == 503


def _without_process(body: bytes) -> list[bytes]:
    """The body's lines but the process_* ones (CPU seconds move between two scrapes)."""
    return [line for line in body.splitlines() if not line.startswith(b"process_")]


async def test_metrics_gzip_and_openmetrics_negotiation(tmp_path: Path) -> None:
    """/metrics gzips when asked (the same body, a fraction of the bytes), else plain; OpenMetrics when accepted."""
    daemon = _daemon(tmp_path)
    async with TestClient(TestServer(_app(daemon)), auto_decompress=False) as client:
        plain = await client.get("/metrics", headers={"Accept-Encoding": "identity"})
        assert plain.headers.get("Content-Encoding") is None
        assert plain.headers["Content-Type"].startswith("text/plain")
        text = await plain.read()
        zipped = await client.get("/metrics", headers={"Accept-Encoding": "gzip"})
        assert zipped.headers["Content-Encoding"] == "gzip"
        assert zipped.headers["Vary"] == "Accept-Encoding"
        packed = await zipped.read()
        unpacked = gzip.decompress(packed)
        assert len(packed) < len(unpacked) / 3
        assert _without_process(unpacked) == _without_process(text)
        om = await client.get(
            "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0", "Accept-Encoding": "identity"}
        )
        assert om.headers["Content-Type"].startswith("application/openmetrics-text")
        body = await om.read()
        assert body.endswith(b"# EOF\n") and body.count(b"# EOF") == 1
        assert b"# TYPE telemetryd_device info\n" in body


def test_collector_timing_is_exported(tmp_path: Path) -> None:
    """The collector's seconds and passes per generation, its longest pause and frozen objects reach /metrics."""
    daemon = _daemon(tmp_path)
    daemon.instance.collector = CollectorClock(seconds=[0.5, 0.25, 1.5], passes=[100, 10, 2], longest=0.75)
    samples = _samples(Exposition(daemon.export_sources()).render().decode())
    assert _get(samples, "telemetryd_gc_seconds_total", generation="2") == 1.5
    assert _get(samples, "telemetryd_gc_passes_total", generation="0") == 100.0
    assert _get(samples, "telemetryd_gc_longest_pause_seconds") == 0.75
    assert _get(samples, "telemetryd_gc_frozen_objects") >= 0

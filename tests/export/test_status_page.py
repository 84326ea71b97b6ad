"""The NOC's status pages: schools by district, filter and problems-only, the school page, zone, Grafana, escaping."""

from __future__ import annotations

import gzip
import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from telemetryd.config import load_config
from telemetryd.daemon import Daemon
from telemetryd.export.app import create_app
from telemetryd.export.status import (
    GRAFANA_SCHOOL_DASHBOARD,
    PageOptions,
    SpeedView,
    city_view,
    render_city_page,
    render_school_page,
    speed_view,
)
from telemetryd.link.compliance import LinkState
from telemetryd.model import Contract, Direction, ProbeResult, School, SpeedResult
from telemetryd.probes.isapi import IsapiHealth
from telemetryd.probes.isapi.health import Problem
from telemetryd.probes.isapi.xml import DeviceIdentity
from tests.helpers import school, write_config

AT = 1_796_000_000.0
"""2026-11-30 00:53:20 UTC: 05:53:20 in Shymkent (UTC+05:00), 01:53:20 in Berlin."""
OK = ProbeResult(True, 0.002, rtt=0.0012, loss=0.0, sent=3, received=3)
DOWN = ProbeResult(False, 2.5, "timeout", "no echo reply to 3 requests", loss=1.0, sent=3)
REFUSED = ProbeResult(False, 0.001, "refused", "port 554 refused the connection")
HOSTILE = '<script>alert("x")</script>'
SECRET = "s3cr3t-Pa55-never-shown"


def _schools() -> list[dict[str, Any]]:
    """Four schools in two districts (Cyrillic and Kazakh names), one with a hostile name."""
    return [
        school(
            "sh-001",
            [
                {"id": "sh-001-router", "kind": "router", "host": "127.0.0.1"},
                {"id": "sh-001-cam-1", "kind": "camera", "host": "127.0.0.2", "name": "Вход <восток>"},
                {
                    "id": "sh-001-nvr",
                    "kind": "nvr",
                    "host": "127.0.0.3",
                    "credentials": "nvr-admin",
                    "probes": ["icmp", "tcp:80", "isapi"],
                },
            ],
            name="Школа-гимназия № 12",
            district="Абайский район",
        ),
        school(
            "sh-002",
            [
                {"id": "sh-002-router", "kind": "router", "host": "127.0.0.4"},
                {"id": "sh-002-panel", "kind": "alarm_panel", "host": "127.0.0.5"},
            ],
            name="№ 45 мектеп-лицей Әл-Фараби",
            district="Абайский район",
        ),
        school(
            "sh-101",
            [{"id": "sh-101-router", "kind": "router", "host": "127.0.0.6"}],
            name="Жалпы орта білім беретін мектеп № 7",
            district="Қаратау ауданы",
        ),
        school(
            "sh-102",
            [{"id": "sh-102-router", "kind": "router", "host": "127.0.0.7", "name": HOSTILE}],
            name=HOSTILE,
            district="Қаратау ауданы",
        ),
    ]


def _daemon(tmp_path: Path, **settings: Any) -> Daemon:
    """sh-001: a camera refusing RTSP and the speed below contract; sh-002 and sh-101 all up; sh-102's router down."""
    secrets = tmp_path / "secrets"
    secrets.mkdir(exist_ok=True)
    (secrets / "nvr-admin").write_text(f"admin:{SECRET}\n")
    daemon = Daemon(load_config(write_config(tmp_path, _schools(), credentials_directory=str(secrets), **settings)))
    for device_id, state in daemon.state.devices.items():
        for probe in state.probes:
            daemon.state.apply(device_id, probe, OK, AT - 600)
    for at in (AT - 2, AT - 1, AT):  # down_after: three failures in a row
        daemon.state.apply("sh-001-cam-1", "tcp:554", REFUSED, at)
        daemon.state.apply("sh-102-router", "icmp", DOWN, at)
    daemon.links.sync(daemon.config.inventory.schools)
    for wall in (AT - 300, AT - 100):
        daemon.links.record_speedtest(
            "sh-001",
            SpeedResult(True, Direction.DOWNLOAD, 19.0, 5_000_000, 2.1, 4),
            SpeedResult(True, Direction.UPLOAD, 18.5, 4_900_000, 2.2, 4),
            now=wall,
            wall=wall,
        )
    daemon.links.record_speedtest(
        "sh-002",
        SpeedResult(True, Direction.DOWNLOAD, 149.0, 5_000_000, 2.1, 4),
        SpeedResult(True, Direction.UPLOAD, 148.0, 4_900_000, 2.2, 4),
        now=AT,
        wall=AT,
    )
    return daemon


class _Page(HTMLParser):
    """What a status page shows: district sections and school rows, hidden or not; links; the h1's school."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.districts: list[tuple[str, bool]] = []
        self.rows: list[tuple[str, str, bool, bool]] = []
        """(school, district, shown, problem)"""
        self.links: list[str] = []
        self.devices: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        classes = (attributes.get("class") or "").split()
        if tag == "section" and "district" in classes:
            self.districts.append((attributes["data-district"] or "", "hidden" not in attributes))
        elif tag == "tr" and "school" in classes:
            school_id, district = attributes["data-school"] or "", self.districts[-1][0]
            self.rows.append((school_id, district, "hidden" not in attributes, "problem" in classes))
        elif tag == "tr" and "device" in classes:
            self.devices.append(attributes["data-device"] or "")
        elif tag == "a":
            self.links.append(attributes.get("href") or "")

    def shown(self) -> list[str]:
        """Ids of the school rows the page shows."""
        return [school_id for school_id, _district, shown, _problem in self.rows if shown]


def _city(daemon: Daemon, **query: Any) -> _Page:
    return _Page(render_city_page(daemon.export_sources().status, now=AT, **query))


def test_schools_are_grouped_by_district_with_problems_first(tmp_path: Path) -> None:
    """Districts come by name, every school under its own, the ones with a problem first within a district."""
    page = _city(_daemon(tmp_path))
    assert page.districts == [("Абайский район", True), ("Қаратау ауданы", True)]
    assert [(s, d, p) for s, d, _shown, p in page.rows] == [
        ("sh-001", "Абайский район", True),
        ("sh-002", "Абайский район", False),
        ("sh-102", "Қаратау ауданы", True),
        ("sh-101", "Қаратау ауданы", False),
    ]
    assert page.shown() == ["sh-001", "sh-002", "sh-102", "sh-101"]


def test_row_tells_the_state_at_a_glance(tmp_path: Path) -> None:
    """Link, speed verdict, cameras, NVRs, panels up/total and the down device with its reason and local time."""
    daemon = _daemon(tmp_path)
    view = city_view(daemon.export_sources().status, PageOptions.of(daemon.config.settings), now=AT)
    rows = {row.id: row for district in view.districts for row in district.rows}
    first = rows["sh-001"]
    assert first.link == "up" and (first.cameras.up, first.cameras.total) == (0, 1)
    assert (first.nvrs.up, first.nvrs.total) == (1, 1) and first.panels.total == 0
    assert (first.speed.text, first.speed.verdict) == ("↓19.0 ↑18.5 / 150 Mbps", "below contract")
    assert [(d.id, d.reason, d.since) for d in first.down] == [
        ("sh-001-cam-1", "tcp:554 refused", "2026-11-30 05:53:20 +05:00")
    ]
    assert rows["sh-102"].link == "down" and rows["sh-102"].problem
    assert [(d.id, d.reason) for d in rows["sh-102"].down] == [("sh-102-router", "icmp timeout")]
    assert rows["sh-002"].speed.css == "ok" and not rows["sh-002"].problem
    assert (view.below_contract, view.problems) == (1, 2)
    text = render_city_page(daemon.export_sources().status, now=AT)
    assert "↓19.0 ↑18.5 / 150 Mbps below contract" in text and "tcp:554 refused" in text


@pytest.mark.parametrize(
    ("query", "shown"),
    [
        ("sh-10", ["sh-102", "sh-101"]),
        ("ГИМНАЗИЯ", ["sh-001"]),  # case-insensitive in Cyrillic
        ("әл-фараби", ["sh-002"]),  # Kazakh letters
        ("қаратау", ["sh-102", "sh-101"]),  # by district
        ("  sh-002 ", ["sh-002"]),
        ("no such school", []),
    ],
)
def test_filter_query_shows_matching_schools(tmp_path: Path, query: str, shown: list[str]) -> None:
    """?q= keeps the schools whose id, name or district contains it; the others are sent hidden, for the script."""
    page = _city(_daemon(tmp_path), query=query)
    assert page.shown() == shown
    assert len(page.rows) == 4  # clearing the box in the browser shows them again without a request
    assert {d for d, shown_district in page.districts if shown_district} == {d for s, d, v, _p in page.rows if v}


def test_problems_only(tmp_path: Path) -> None:
    """problems_only keeps schools with a device or link down or the speed below contract; it combines with q."""
    daemon = _daemon(tmp_path)
    assert _city(daemon, problems_only=True).shown() == ["sh-001", "sh-102"]
    assert _city(daemon, problems_only=True, query="Қаратау").shown() == ["sh-102"]


async def test_query_parameters_and_routes(tmp_path: Path) -> None:
    """/status and / take ?q= and ?problems=1 without script; the page is gzipped when asked, never cached."""
    daemon = _daemon(tmp_path)
    app = create_app(daemon.export_sources(), health_problems=daemon.health_problems, ready=lambda: True)
    async with TestClient(TestServer(app), auto_decompress=False) as client:
        response = await client.get("/status", params={"problems": "1"}, headers={"Accept-Encoding": "gzip"})
        assert response.status == 200 and response.headers["Content-Encoding"] == "gzip"
        assert response.headers["Content-Type"] == "text/html; charset=utf-8"
        assert response.headers["Cache-Control"] == "no-store"
        page = _Page(gzip.decompress(await response.read()).decode())
        assert page.shown() == ["sh-001", "sh-102"]
        plain = {"Accept-Encoding": "identity"}
        response = await client.get("/", params={"q": "мектеп", "problems": "0"}, headers=plain)
        assert _Page(await response.text()).shown() == ["sh-002", "sh-101"]
        assert "/status/school/sh-001" in _Page(await (await client.get("/status", headers=plain)).text()).links


async def test_school_page_lists_every_device_probe_and_finding(tmp_path: Path) -> None:
    """The school page has each device with each probe: health, reason, detail, RTT and times in the city's zone."""
    daemon = _daemon(tmp_path)
    app = create_app(daemon.export_sources(), health_problems=daemon.health_problems, ready=lambda: True)
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/status/school/sh-001")
        assert response.status == 200
        text = await response.text()
    page = _Page(text)
    assert page.devices == ["sh-001-router", "sh-001-cam-1", "sh-001-nvr"]
    assert "Школа-гимназия № 12" in text and "Абайский район" in text
    assert "Вход &lt;восток&gt;" in text
    assert "tcp:554 refused" in text and "port 554 refused the connection" in text
    assert "2026-11-30 05:53:20 +05:00" in text  # the camera's last change
    assert "2026-11-30 05:43:20 +05:00" in text  # the router's last run
    assert ">1.2<" in text  # RTT of the router's echo, in ms
    assert "150 Mbps (alarm 20, video 30, education 100)" in text
    assert "19.0 Mbps" in text and "below contract" in text


@pytest.mark.parametrize(
    "path", ["/status/school/nope", "/status/school/sh-001x", "/status/school/..%2Fsh-001", "/status/school/%3Cx%3E"]
)
async def test_unknown_or_invalid_school_is_404(tmp_path: Path, path: str) -> None:
    """An id this instance does not watch, or one the inventory could not hold, is a 404 that does not echo it."""
    daemon = _daemon(tmp_path)
    app = create_app(daemon.export_sources(), health_problems=daemon.health_problems, ready=lambda: True)
    async with TestClient(TestServer(app)) as client:
        response = await client.get(path)
        assert response.status == 404
        assert "<x>" not in await response.text()


def test_hostile_names_are_escaped(tmp_path: Path) -> None:
    """A school or device named `<script>`, and a hostile filter query, reach the pages escaped, never as markup."""
    daemon = _daemon(tmp_path)
    sources = daemon.export_sources().status
    city = render_city_page(sources, query='"><script>alert(1)</script>', now=AT)
    school_page = render_school_page(sources, "sh-102", now=AT) or ""
    for text in (city, school_page):
        assert HOSTILE not in text and "<script>alert" not in text
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in text
    assert 'value="&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"' in city
    assert city.count("<script>") == 2  # the page's own: auto-refresh and filter


def test_times_in_the_configured_zone_with_offset(tmp_path: Path) -> None:
    """Times show in the `timezone` setting's zone with the offset, by default Asia/Almaty; none in UTC."""
    default = render_school_page(_daemon(tmp_path).export_sources().status, "sh-001", now=AT) or ""
    assert "Asia/Almaty (UTC+05:00)" in default and "2026-11-30 05:53:20 +05:00" in default
    assert "00:53:20" not in default and "Z<" not in default
    berlin_dir = tmp_path / "berlin"
    berlin_dir.mkdir()
    berlin = render_city_page(_daemon(berlin_dir, timezone="Europe/Berlin").export_sources().status, now=AT)
    assert "Europe/Berlin (UTC+01:00)" in berlin and "since 2026-11-30 01:53:20 +01:00" in berlin


def test_grafana_link_when_configured(tmp_path: Path) -> None:
    """With grafana_url each school links to the shipped school dashboard with its variable; without it, none."""
    plain = render_city_page(_daemon(tmp_path).export_sources().status, now=AT)
    assert "/d/telemetryd-school/" not in plain and 'class="grafana"' not in plain
    linked_dir = tmp_path / "linked"
    linked_dir.mkdir()
    sources = _daemon(linked_dir, grafana_url="https://grafana.noc.example/").export_sources().status
    link = "https://grafana.noc.example/d/telemetryd-school/telemetryd-school?var-school=sh-101"
    assert link in _Page(render_city_page(sources, now=AT)).links
    assert link in _Page(render_school_page(sources, "sh-101", now=AT) or "").links


def test_grafana_link_follows_the_shipped_dashboard() -> None:
    """The uid and variable the links use are those of grafana/dashboards/school.json."""
    dashboard = json.loads((Path(__file__).parents[2] / "grafana/dashboards/school.json").read_text())
    uid, _slug, variable = GRAFANA_SCHOOL_DASHBOARD
    assert dashboard["uid"] == uid
    assert variable in [v["name"] for v in dashboard["templating"]["list"]]


def test_pages_carry_no_secret(tmp_path: Path) -> None:
    """Neither page shows a credential's value, nor which named credential a device uses."""
    sources = _daemon(tmp_path).export_sources().status
    for text in (render_city_page(sources, now=AT), render_school_page(sources, "sh-001", now=AT) or ""):
        assert SECRET not in text and "nvr-admin" not in text


async def test_json_api_unchanged(tmp_path: Path) -> None:
    """/api/v1/status keeps its UTC ISO times and fields for the programs that read it."""
    daemon = _daemon(tmp_path)
    app = create_app(daemon.export_sources(), health_problems=daemon.health_problems, ready=lambda: True)
    async with TestClient(TestServer(app)) as client:
        status = await (await client.get("/api/v1/status")).json()
    first = next(s for s in status["schools"] if s["id"] == "sh-001")
    assert first["down"] == [
        {
            "device": "sh-001-cam-1",
            "kind": "camera",
            "host": "127.0.0.2",
            "reason": "tcp:554 refused",
            "since": "2026-11-30T00:53:20Z",
        }
    ]
    assert first["link"]["compliance"] == "below_contract" and first["district"] == "Абайский район"


def test_school_page_shows_typed_findings(tmp_path: Path) -> None:
    """An ISAPI check's problems (step, reason, detail), the model, firmware and clock drift reach the school page."""
    daemon = _daemon(tmp_path)
    health = IsapiHealth(
        False,
        1.2,
        "disk_fault",
        "disk 1: error",
        identity=DeviceIdentity("DS-7608NI-K2", "V4.61.005", "SN-1", "NVR", "aa:bb:cc:dd:ee:ff"),
        clock_drift=-12.5,
        problems=(Problem("storage", "disk_fault", "disk 1: error"), Problem("recording", "not_recording", "")),
    )
    daemon.state.apply("sh-001-nvr", "isapi:80", health.probe_result(), AT)
    text = render_school_page(daemon.export_sources().status, "sh-001", now=AT) or ""
    assert "storage: disk_fault — disk 1: error" in text and "recording: not_recording<" in text
    assert "model DS-7608NI-K2, firmware V4.61.005" in text and "clock off by -12.5 s" in text
    assert "aa:bb:cc:dd:ee:ff" not in text  # not what a NOC engineer acts on


def test_pages_follow_the_settings_in_force(tmp_path: Path) -> None:
    """The sources the HTTP app holds read the daemon's settings per request: a reload's new zone shows at once."""
    daemon = _daemon(tmp_path)
    sources = daemon.export_sources().status
    assert "Asia/Almaty (UTC+05:00)" in render_city_page(sources, now=AT)
    reloaded = tmp_path / "reloaded"
    reloaded.mkdir()
    daemon.config = load_config(
        write_config(reloaded, _schools(), timezone="Europe/Berlin", grafana_url="https://g.example")
    )
    text = render_city_page(sources, now=AT)
    assert "Europe/Berlin (UTC+01:00)" in text and "https://g.example/d/telemetryd-school/" in text


def test_speed_verdicts() -> None:
    """Untested is no problem; a failed latest test, a suspect and a confirmed shortfall are, each saying so."""
    links = LinkState()
    links.sync([School("x", "X", "D", Contract(), ())])
    assert speed_view(None, 150) == SpeedView("not tested", "", "muted", False)
    good = (
        SpeedResult(True, Direction.DOWNLOAD, 149.0, 1, 1.0, 4),
        SpeedResult(True, Direction.UPLOAD, 148.0, 1, 1.0, 4),
    )
    low = SpeedResult(True, Direction.DOWNLOAD, 50.0, 1, 1.0, 4), SpeedResult(True, Direction.UPLOAD, 50.0, 1, 1.0, 4)
    failed = (
        SpeedResult(False, Direction.DOWNLOAD, 0.0, 0, 10.0, 4, reason="timeout"),
        SpeedResult(False, Direction.UPLOAD, 0.0, 0, 10.0, 4, reason="timeout"),
    )
    links.record_speedtest("x", *failed, now=0, wall=0)
    assert speed_view(links.schools["x"], 150) == SpeedView("test failed", "timeout", "bad", True)
    links.record_speedtest("x", *good, now=1, wall=1)
    assert speed_view(links.schools["x"], 150) == SpeedView("↓149.0 ↑148.0 / 150 Mbps", "", "ok", False)
    links.record_speedtest("x", *failed, now=2, wall=2)
    assert speed_view(links.schools["x"], 150).verdict == "last test failed: timeout"
    links.record_speedtest("x", *low, now=3, wall=3)
    assert speed_view(links.schools["x"], 150) == SpeedView("↓50.0 ↑50.0 / 150 Mbps", "low, re-testing", "bad", True)
    links.record_speedtest("x", *low, now=4, wall=4)
    assert speed_view(links.schools["x"], 150).verdict == "below contract"

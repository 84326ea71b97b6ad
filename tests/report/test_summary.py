"""The first page's figures (report/summary.py) on hand-built school reports and on the fixture month.

Each hand-built school states its link (up/down seconds), its speed rounds and its
devices, so every count, ratio and ordering below is worked out from those numbers.
"""

from __future__ import annotations

import gettext
import re
from dataclasses import replace
from datetime import date, datetime
from html import unescape

import jinja2
import pytest
import segno
from babel.numbers import format_decimal

from telemetryd.report.figures import (
    Availability,
    ChainStatus,
    DayAvailability,
    DirectionSummary,
    Excluded,
    KindAvailability,
    Outage,
    Report,
    SchoolReport,
    SchoolRow,
    build_report,
    local_time,
    month_period,
)
from telemetryd.report.summary import (
    REASON_LINK,
    REASON_SPEED,
    CitySummary,
    SchoolRef,
    chain_payload,
    chain_qr_svg,
    excluded_summary,
    previous_period,
    speed_compliance,
    summarize,
    worst_schools,
)
from tests.report import sla_fixture as fx
from tests.report.sla_fixture import local
from tests.report.test_figures import _inputs

HOUR = 3_600.0
MONTH = 28 * 86_400.0  # February 2026
ALFARABI = "Әл-Фараби ауданы"
KARATAU = "Қаратау ауданы"
ENBEKSHI = "Енбекшинский район"
HEAD = "3f" * 32


def _direction(direction: str, rounds: int, compliant: int) -> DirectionSummary:
    return DirectionSummary(direction, rounds, 0, None, None, rounds, compliant, 0)


def _school(
    school_id: str,
    district: str,
    *,
    down_hours: float = 0.0,
    monitored: float = MONTH,
    outages: int = 1,
    download: tuple[int, int] = (10, 10),
    upload: tuple[int, int] = (10, 10),
    cameras: tuple[int, float] = (0, 0.0),
    panels: tuple[int, float] = (0, 0.0),
    maintenance: tuple[Excluded, ...] = (),
    gaps: tuple[Excluded, ...] = (),
    name: str | None = None,
) -> SchoolReport:
    """A school with `down_hours` of counted link outage split over `outages` outages.

    `cameras`/`panels` are (devices, down hours over all of them), each device monitored all month.
    """
    down = down_hours * HOUR
    counted = [Outage(0.0, 1.0, down / outages) for _ in range(outages)] if down else []

    def kind(name: str, spec: tuple[int, float]) -> KindAvailability:
        devices, down_h = spec
        return KindAvailability(name, devices, Availability(devices * MONTH - down_h * HOUR, down_h * HOUR))

    return SchoolReport(
        school=SchoolRow(school_id, name if name is not None else f"Школа {school_id}", district, 100.0),
        link_basis="router",
        link=Availability(monitored - down, down) if monitored else Availability(),
        outages=tuple(counted),
        device_outages=(),
        kinds=(kind("camera", cameras), KindAvailability("nvr", 0, Availability()), kind("alarm_panel", panels)),
        daily=(DayAvailability(0.0, Availability()),),
        download=_direction("download", *download),
        upload=_direction("upload", *upload),
        tests=(),
        saturation=(),
        maintenance=maintenance,
        gaps=gaps,
        maintenance_seconds=sum(e.seconds_in_period for e in maintenance),
        gap_seconds=sum(e.seconds_in_period for e in gaps),
        devices=1,
    )


def _report(schools: list[SchoolReport], month: str = fx.MONTH, chain: ChainStatus | None = None) -> Report:
    return Report(month_period(month, fx.OFFSET_HOURS, fx.NOW), fx.NOW, chain, tuple(schools))


# 99 % of 672 h is 665.28 h up: at most 6.72 h down meets the link target.
CITY = [
    _school("s01", ALFARABI, down_hours=2, cameras=(4, 10), panels=(1, 0)),  # meets both
    _school("s02", ALFARABI, down_hours=30, outages=3, cameras=(2, 0)),  # link 95.54 %
    _school("s03", KARATAU, down_hours=6.72, download=(20, 18), upload=(20, 19)),  # link exactly 99 %; speed 90 %
    _school("s04", KARATAU, down_hours=100),  # link 85.12 %, the worst
    _school("s05", ENBEKSHI, download=(0, 0), upload=(0, 0)),  # link 100 %, speed not judged
    _school("s06", ENBEKSHI, monitored=0, download=(0, 0), upload=(0, 0)),  # not monitored at all
    _school("s07", ENBEKSHI, download=(10, 10), upload=(10, 5)),  # speed 50 % (upload)
    _school("s08", "", down_hours=30, outages=1),  # same link figures as s02: the id breaks the tie
]


@pytest.fixture(scope="module")
def city() -> CitySummary:
    """The hand-built city, without a previous month."""
    return summarize(_report(CITY))


def _ids(refs: tuple[SchoolRef, ...]) -> list[str]:
    return [r.id for r in refs]


def test_city_counts_and_names(city: CitySummary) -> None:
    """Monitored, met and missed on link and speed are counted and named; exactly 99 % meets the target."""
    c = city.city
    assert c.district is None
    assert (c.schools, c.monitored) == (8, 7)
    assert _ids(c.not_monitored) == ["s06"]
    assert _ids(c.link_met) == ["s01", "s03", "s05", "s07"]
    assert _ids(c.link_missed) == ["s02", "s04", "s08"]
    assert _ids(c.link_not_judged) == ["s06"]
    assert _ids(c.speed_met) == ["s01", "s02", "s04", "s08"]
    assert _ids(c.speed_missed) == ["s03", "s07"]
    assert _ids(c.speed_not_judged) == ["s05", "s06"]
    assert c.link_met[0].name == "Школа s01"


def test_a_school_with_only_speed_tests_is_monitored_but_not_judged_on_link() -> None:
    """No link time but judged speed rounds: monitored, link not judged, speed judged; nothing at all: not monitored."""
    speed_only = _school("t1", KARATAU, monitored=0, download=(4, 4), upload=(4, 1))
    nothing = _school("t2", KARATAU, monitored=0, download=(0, 0), upload=(0, 0))
    area = summarize(_report([speed_only, nothing])).city
    assert (area.schools, area.monitored) == (2, 1)
    assert _ids(area.not_monitored) == ["t2"]
    assert _ids(area.link_not_judged) == ["t1", "t2"]
    assert (area.link_met, area.link_missed) == ((), ())
    assert _ids(area.speed_missed) == ["t1"]
    assert area.link_availability is None


def test_city_outage_time_and_link_availability(city: CitySummary) -> None:
    """Link outage time is the counted down time; area availability is Σ up / Σ monitored."""
    c = city.city
    down = 2 + 30 + 6.72 + 100 + 30
    assert c.link_outage_seconds == pytest.approx(down * HOUR)
    assert c.link_outage_hours == pytest.approx(down)
    assert c.link_outages == 1 + 3 + 1 + 1 + 1
    assert c.link_availability == pytest.approx(1 - down * HOUR / (7 * MONTH))


def test_device_availability_weighs_devices(city: CitySummary) -> None:
    """Cameras: 10 h down over 6 camera-months; panels: one panel never down; no NVR: None."""
    camera = city.city.device("camera")
    assert camera.devices == 6
    assert camera.availability == pytest.approx(1 - 10 * HOUR / (6 * MONTH))
    assert camera.down_seconds == pytest.approx(10 * HOUR)
    assert city.city.device("alarm_panel").availability == 1.0
    nvr = city.city.device("nvr")
    assert (nvr.devices, nvr.availability) == (0, None)


def test_districts_keep_kazakh_and_russian_names(city: CitySummary) -> None:
    """Districts are grouped by the name as written, sorted by it, the unnamed one last."""
    assert [d.district for d in city.districts] == [ENBEKSHI, KARATAU, ALFARABI, ""]
    by_name = {d.district: d for d in city.districts}
    karatau = by_name[KARATAU]
    assert (karatau.schools, karatau.monitored) == (2, 2)
    assert _ids(karatau.link_met) == ["s03"]
    assert _ids(karatau.link_missed) == ["s04"]
    assert _ids(karatau.speed_missed) == ["s03"]
    assert karatau.link_outage_seconds == pytest.approx(106.72 * HOUR)
    assert by_name[ALFARABI].device("camera").devices == 6
    assert _ids(by_name[ENBEKSHI].not_monitored) == ["s06"]
    assert sum(d.schools for d in city.districts) == city.city.schools


def test_worst_link_first_then_speed(city: CitySummary) -> None:
    """Missed link first (lowest availability first, ties by id here), then missed speed (lowest first)."""
    got = [(w.rank, w.school.id, w.reason, round(w.value, 4)) for w in city.worst]
    assert got == [
        (1, "s04", REASON_LINK, round(1 - 100 / 672, 4)),
        (2, "s02", REASON_LINK, round(1 - 30 / 672, 4)),
        (3, "s08", REASON_LINK, round(1 - 30 / 672, 4)),
        (4, "s07", REASON_SPEED, 0.5),
        (5, "s03", REASON_SPEED, 0.9),
    ]
    s07 = city.worst[3]
    assert (s07.speed_direction, s07.target, s07.link_availability) == ("upload", 0.95, 1.0)
    assert city.worst[0].target == 0.99
    assert city.worst[0].previous_value is None


def test_worst_ties_break_on_outage_time_then_id() -> None:
    """Equal link availability: the school with more counted outage time ranks worse, then the smaller id."""
    a = _school("b", KARATAU, down_hours=10, monitored=MONTH)
    b = _school("a", KARATAU, down_hours=10, monitored=MONTH)
    c = _school("c", KARATAU, down_hours=10, monitored=MONTH)
    # Same ratio as 10 h of 672 h, with more down time over a longer monitored span.
    d = _school("d", KARATAU, down_hours=20, monitored=2 * MONTH)
    assert [w.school.id for w in worst_schools(_report([a, b, c, d]))] == ["d", "a", "b", "c"]


def test_worst_is_capped_at_ten_and_skips_schools_that_met_both() -> None:
    """Twelve failing schools give ten entries; schools meeting both targets never appear."""
    failing = [_school(f"f{i:02d}", KARATAU, down_hours=10 + i) for i in range(12)]
    fine = [_school("ok", KARATAU, down_hours=1)]
    worst = worst_schools(_report([*fine, *failing]))
    assert [w.school.id for w in worst] == [f"f{i:02d}" for i in range(11, 1, -1)]
    assert [w.rank for w in worst] == list(range(1, 11))


def test_targets_can_be_passed_in() -> None:
    """A contract target of 95 % link / 80 % speed moves s02, s08 and s03 to met."""
    summary = summarize(_report(CITY), link_target=0.95, speed_target=0.80)
    assert _ids(summary.city.link_missed) == ["s04"]
    assert _ids(summary.city.speed_missed) == ["s07"]
    assert (summary.link_target, summary.speed_target) == (0.95, 0.80)


def test_speed_compliance_is_the_worse_direction() -> None:
    """Download 90 %, upload 95 %: 90 % download; only upload judged: upload; nothing judged: None."""
    assert speed_compliance(_school("x", "", download=(10, 9), upload=(20, 19))) == (0.9, "download")
    assert speed_compliance(_school("x", "", download=(0, 0), upload=(4, 3))) == (0.75, "upload")
    assert speed_compliance(_school("x", "", download=(0, 0), upload=(0, 0))) == (None, None)


def test_deltas_against_the_previous_month() -> None:
    """This month minus January: counts, availability and outage time; a new district has no delta."""
    january = [
        _school("s01", ALFARABI, down_hours=50, cameras=(4, 40), panels=(1, 0)),  # missed link in January
        _school("s02", ALFARABI, down_hours=30, outages=3, cameras=(2, 0)),
        _school("s03", KARATAU, down_hours=0, download=(20, 20), upload=(20, 20)),
        _school("s04", KARATAU, down_hours=0),
    ]
    previous = Report(previous_period(_report(CITY).period), fx.NOW, None, tuple(january))
    summary = summarize(_report(CITY), previous)
    assert summary.previous_month == "2026-01"
    by_name = {d.district: d for d in summary.districts}
    alfarabi = by_name[ALFARABI].delta
    assert alfarabi is not None
    assert alfarabi.previous_month == "2026-01"
    # s01 met the link in February (2 h down), not in January (50 h): +1 met, -1 missed.
    assert (alfarabi.schools, alfarabi.link_met, alfarabi.link_missed) == (0, 1, -1)
    assert alfarabi.link_outage_seconds == pytest.approx((2 - 50) * HOUR)
    assert alfarabi.link_availability == pytest.approx(48 * HOUR / (2 * MONTH))
    assert alfarabi.camera_availability == pytest.approx(30 * HOUR / (6 * MONTH))
    assert alfarabi.alarm_panel_availability == 0.0
    assert alfarabi.nvr_availability is None  # no NVR either month
    karatau = by_name[KARATAU].delta
    assert karatau is not None
    assert (karatau.link_missed, karatau.speed_missed, karatau.speed_met) == (1, 1, -1)
    assert by_name[ENBEKSHI].delta is None  # no Enbekshi school in January
    assert summary.city.delta is not None
    assert summary.city.delta.schools == 4
    assert summary.city.delta.monitored == 3
    # The worst list carries the January figure of the same reason.
    s04 = next(w for w in summary.worst if w.school.id == "s04")
    assert s04.previous_value == 1.0
    s03 = next(w for w in summary.worst if w.school.id == "s03")
    assert s03.previous_value == 1.0  # speed compliance in January
    assert next(w for w in summary.worst if w.school.id == "s08").previous_value is None


def test_without_previous_month_there_are_no_deltas(city: CitySummary) -> None:
    """No previous report: every delta None."""
    assert city.previous_month is None
    assert city.city.delta is None
    assert all(d.delta is None for d in city.districts)


def test_previous_period_is_the_whole_month_before() -> None:
    """February's previous period is all of January, and January's is December of the year before."""
    february = month_period("2026-02", fx.OFFSET_HOURS, fx.NOW)
    january = previous_period(february)
    assert january.month == "2026-01"
    assert january.start == local(1, 1)
    assert january.end == january.nominal_end == february.start
    assert january.complete
    assert previous_period(january).month == "2025-12"
    # A running month's previous month is complete too.
    running = month_period("2026-02", fx.OFFSET_HOURS, local(2, 10, 12))
    assert previous_period(running).end == february.start


def test_excluded_time_in_one_summary() -> None:
    """A city-wide gap counts once in wall time and once per school; windows are counted distinct."""
    t0 = fx.PERIOD_START
    # The gap began an hour before the month: only its 2 h inside February count.
    gap = Excluded(t0 - HOUR, t0 + 2 * HOUR, 2 * HOUR, "daemon not running", "0/1")
    works = Excluded(t0 + 10 * HOUR, t0 + 14 * HOUR, 4 * HOUR, "router firmware upgrade")
    overlapping = Excluded(t0 + 12 * HOUR, t0 + 16 * HOUR, 4 * HOUR, "power works")
    schools = [
        _school("a", KARATAU, gaps=(gap,), maintenance=(works,)),
        _school("b", KARATAU, gaps=(gap,), maintenance=(overlapping,)),
        _school("c", KARATAU, gaps=(gap,)),
        _school("d", KARATAU),
    ]
    excluded = excluded_summary(_report(schools))
    assert excluded.period_seconds == MONTH
    assert (excluded.gaps, excluded.gap_schools) == (1, 3)
    assert excluded.gap_seconds == 2 * HOUR
    assert excluded.gap_school_seconds == 6 * HOUR
    assert (excluded.maintenance_windows, excluded.maintenance_schools) == (2, 2)
    assert excluded.maintenance_seconds == 6 * HOUR  # 10:00-16:00 as a union
    assert excluded.maintenance_school_seconds == 8 * HOUR


def test_fixture_month_summary() -> None:
    """The hand-computed fixture month (test_figures.py): shy-002's 38 h ongoing outage ranks first."""
    chain = ChainStatus(7, HEAD, local(3, 20), 2, 6, 5)
    summary = summarize(build_report(_inputs(chain=chain), generated_at=fx.NOW))
    c = summary.city
    assert (c.schools, c.monitored) == (3, 2)
    assert _ids(c.not_monitored) == ["shy-003"]
    assert _ids(c.link_met) == ["shy-001"]  # 2,377,800 / 2,395,800 = 99.25 %
    assert _ids(c.link_missed) == ["shy-002"]  # down from Feb 27 09:00 to month end
    # shy-001: 18,000 s; shy-002: cameras down Feb 27 09:00, panel Feb 27 10:00 → link down from 10:00, 38 h.
    assert c.link_outage_seconds == pytest.approx(18_000 + 38 * HOUR)
    assert [(w.school.id, w.reason) for w in summary.worst] == [("shy-002", REASON_LINK), ("shy-001", REASON_SPEED)]
    assert summary.worst[1].value == pytest.approx(5 / 8)  # download: 5 of 8 rounds compliant
    assert summary.worst[1].speed_direction == "download"
    # Maintenance: the one February window (the January one is outside); gaps: 0/1 (2 h) and 1/3 (1 h).
    e = summary.excluded
    assert (e.maintenance_windows, e.maintenance_seconds, e.maintenance_schools) == (1, 4 * HOUR, 1)
    assert (e.gaps, e.gap_seconds, e.gap_school_seconds, e.gap_schools) == (2, 3 * HOUR, 7 * HOUR, 3)
    assert [d.district for d in summary.districts] == ["Abay", "Al-Farabi", "Karatau"]


# ----------------------------------------------------------------------------- chain and its QR code


def _svg_matrix(svg: str, border: int) -> list[list[bool]]:
    """The dark modules of a segno SVG path (`M x y`, then `h n` dark runs and `m dx dy` moves), one unit a module."""
    box = re.search(r'viewBox="0 0 (\d+) (\d+)"', svg)
    path = re.search(r' d="([^"]+)"', svg)
    assert box and path and box.group(1) == box.group(2)
    size = int(box.group(1)) - 2 * border
    modules = [[False] * size for _ in range(size)]
    x = y = 0.0
    for command, a, b in re.findall(r"([Mmh])(-?[\d.]+)(?: (-?[\d.]+))?", path.group(1)):
        if command == "M":
            x, y = float(a), float(b)
        elif command == "m":
            x, y = x + float(a), y + float(b)
        else:
            row = int(y - 0.5) - border
            for col in range(int(x) - border, int(x + float(a)) - border):
                modules[row][col] = True
            x += float(a)
    return modules


def _segno_matrix(payload: str) -> list[list[bool]]:
    qr = segno.make(payload, error="m", micro=False, boost_error=False)
    return [[bool(v) for v in row] for row in qr.matrix]


def test_chain_head_and_how_to_verify() -> None:
    """The head, its checks (report command and SQL on the head's link) and the QR of the payload."""
    chain = ChainStatus(7, HEAD, local(3, 20), 2, 6, 5, ("link 4: digest mismatch",))
    summary = summarize(_report(CITY, chain=chain))
    c = summary.chain
    assert c is not None
    assert (c.head_seq, c.head_hex, c.ok, c.problems, c.links_verified) == (7, HEAD, False, 1, 5)
    assert c.payload == chain_payload(7, HEAD) == f"telemetryd-chain:7:{HEAD}"
    assert c.verify_command == "telemetryd report sla --month 2026-02 --format json -o /dev/null"
    assert c.verify_sql == f"SELECT encode(head, 'hex') = '{HEAD}' FROM history_chain WHERE seq = 7;"
    assert c.qr_svg == chain_qr_svg(c.payload)


def test_qr_svg_holds_the_chain_head_and_is_deterministic() -> None:
    """The SVG's modules are exactly segno's matrix for the payload (not for another head), run after run."""
    payload = chain_payload(7, HEAD)
    svg = chain_qr_svg(payload)
    assert svg == chain_qr_svg(payload)
    assert svg.startswith("<svg") and 'class="chain-qr"' in svg
    # Sized by CSS: a viewBox and no fixed width/height, else a smaller box would clip the code.
    assert "viewBox=" in svg and "width=" not in svg and "transform" not in svg
    drawn = _svg_matrix(svg, border=4)
    assert drawn == _segno_matrix(payload)
    assert drawn != _segno_matrix(chain_payload(7, "3e" + HEAD[2:]))
    # The finder pattern's top-left corner: a dark 7-module row.
    assert drawn[0][:8] == [True] * 7 + [False]


def test_no_chain_and_empty_chain() -> None:
    """Without a chain check there is no chain block; an empty chain has no head to encode."""
    assert summarize(_report(CITY)).chain is None
    empty = summarize(_report(CITY, chain=ChainStatus(None, "", None, None, None, 0))).chain
    assert empty is not None
    assert (empty.payload, empty.verify_sql, empty.qr_svg) == ("", "", None)
    assert empty.ok


def test_summary_is_plain_data(city: CitySummary) -> None:
    """Frozen: a template cannot change a figure, and two summaries of one report are equal."""
    with pytest.raises(AttributeError):
        city.city.schools = 1  # type: ignore[misc]
    assert summarize(_report(CITY)) == city
    assert replace(city, month="x") != city


# ----------------------------------------------------------------------------- the page template


class _EnglishFormats:
    """The slice of telemetryd.templating.Formatters the fragment uses, in English (the real one is on i14-report)."""

    def number(self, value: float | None, pattern: str = "#,##0.#") -> str:
        return "—" if value is None else format_decimal(value, format=pattern, locale="en")

    def percent(self, ratio: float | None) -> str:
        return "—" if ratio is None else f"{self.number(ratio * 100, '0.00')}\u00a0%"

    def month(self, at: date) -> str:
        return at.strftime("%B %Y")

    def datetime(self, at: datetime | None) -> str:
        return "ongoing" if at is None else at.strftime("%Y-%m-%d %H:%M")


def _page(summary: CitySummary, **context: object) -> str:
    """The fragment as report/sla.html includes it: autoescape, newstyle gettext, strict undefined."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("telemetryd", "templates"),
        autoescape=True,
        extensions=["jinja2.ext.i18n"],
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.install_gettext_translations(gettext.NullTranslations(), newstyle=True)  # type: ignore[attr-defined]
    period = month_period(summary.month, summary.utc_offset_hours, fx.NOW)
    return env.get_template("report/summary.html").render(
        summary=summary,
        fmt=_EnglishFormats(),
        when=lambda at: None if at is None else local_time(at, period),
        **context,
    )


def _text(html: str) -> str:
    """The page's words, tags dropped and entities decoded."""
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html)))


def test_page_shows_figures_names_and_changes() -> None:
    """The fragment renders every part: counts, Kazakh names, worst, changes, excluded, chain with its QR."""
    january = [_school("s01", ALFARABI, down_hours=50), _school("s04", KARATAU, down_hours=0)]
    previous = Report(previous_period(_report(CITY).period), fx.NOW, None, tuple(january))
    chain = ChainStatus(7, HEAD, local(3, 20), 2, 6, 5)
    odd = _school("s09", KARATAU, monitored=0, download=(0, 0), upload=(0, 0), name="Школа <№ 9> & сад")
    summary = summarize(_report([*CITY, odd], chain=chain), previous)
    html = _page(summary)
    text = _text(html)
    assert "Schools monitored 7 of 9 +5" in text
    assert "Change against January 2026" in text
    assert f"{KARATAU} 2 of 3" in text and ALFARABI in text and "District not given" in text
    assert "Link availability below the contract: Школа s02, Школа s04, Школа s08" in text
    assert "Not monitored this month: Школа s06, Школа <№ 9> & сад" in text
    assert "Школа &lt;№ 9&gt; &amp; сад" in html  # a name is text, never markup
    assert "<№ 9>" not in html
    assert "link availability: 85.12 %" in text  # s04, ranked first
    assert "previous month 100.00 %" in text
    assert "maintenance 0 h (0 windows, 0 schools); monitoring gaps 0 h (0 gaps, 0 schools)" in text
    assert summary.chain is not None and summary.chain.qr_svg is not None
    assert html.count("<svg") == 1 and summary.chain.qr_svg in html
    assert f"<code>{summary.chain.verify_command}</code>" in html
    assert "&lt;code&gt;" not in html  # the commands are markup, not escaped text


def test_page_without_previous_month_or_chain() -> None:
    """No previous report: the change column says so and shows dashes; no chain: "Not checked."."""
    text = _text(_page(summarize(_report(CITY))))
    assert "Change against the previous month" in text
    assert " pp" not in text  # no change without a previous month
    assert "Schools monitored 7 of 8 —" in text
    assert "Not checked." in text
    assert "previous month" not in text.replace("the previous month", "")


def test_missed_names_are_capped() -> None:
    """Forty schools below the link target: five names, then "and 35 more"."""
    schools = [_school(f"s{i:02d}", KARATAU, down_hours=20) for i in range(40)]
    text = _text(_page(summarize(_report(schools))))
    assert "Школа s04 and 35 more" in text
    listed = text.split("Link availability below the contract:")[1].split("Excluded from availability")[0]
    assert "Школа s05" not in listed


def test_page_fits_one_a4_page() -> None:
    """300 schools in five districts with long Kazakh names, ten worst and the QR: one A4 page in WeasyPrint."""
    weasyprint = pytest.importorskip("weasyprint")
    districts = [ALFARABI, KARATAU, ENBEKSHI, "Абай ауданы", "Тұран ауданы"]
    long_name = "Шымкент қаласы білім басқармасының «Қожа Ахмет Ясауи атындағы №{} жалпы орта мектебі» КММ"
    schools = [
        _school(
            f"shy-{i:03d}",
            districts[i % 5],
            name=long_name.format(i),
            down_hours=(i % 13) * 3,
            download=(10, 10 - i % 4),
            cameras=(30, i % 7),
            panels=(1, i % 3),
        )
        for i in range(300)
    ]
    chain = ChainStatus(123_456, HEAD, local(3, 20), 2, 6, 5)
    summary = summarize(_report(schools, chain=chain), _report(schools[:200], month="2026-01"))
    assert len(summary.worst) == 10
    html = (
        "<!DOCTYPE html><html lang='kk'><head><meta charset='utf-8'><style>"
        "@page { size: A4; margin: 14mm 12mm 16mm; } html { font: 9.5pt/1.35 'DejaVu Sans', sans-serif; }"
        "table { border-collapse: collapse; width: 100%; table-layout: fixed; } th, td { border: 0.3mm solid #bbb;"
        " text-align: left; vertical-align: top; overflow-wrap: anywhere; } code { word-break: break-all; }"
        f"</style></head><body>{_page(summary)}<p>after</p></body></html>"
    )
    document = weasyprint.HTML(string=html).render()
    # The summary fills page 1 and breaks after it: "after" is alone on page 2.
    assert len(document.pages) == 2


def test_page_changes_in_points_never_show_minus_zero() -> None:
    """A camera change of -0.001 points rounds to ±0.00 pp; +0.3 points stays +0.30 pp."""
    now = _report([_school("a", KARATAU, cameras=(1, 0.0))])
    before = Report(
        previous_period(now.period),
        fx.NOW,
        None,
        (_school("a", KARATAU, cameras=(1, 0.00001 * MONTH / HOUR), down_hours=0.003 * MONTH / HOUR),),
    )
    text = _text(_page(summarize(now, before)))
    assert "Camera availability (1 camera) 100.00 % ±0.00 pp" in text
    assert "Link availability, all schools 100.00 % +0.30 pp" in text
    assert "-0.00" not in text

"""The SLA report as A4 PDF: deterministic bytes, A4 pages, one page per school, nothing past the margins."""

from __future__ import annotations

import dataclasses
import io
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from pypdf import PdfReader
from weasyprint import HTML
from weasyprint.formatting_structure import boxes

from telemetryd.report.figures import Excluded, Outage, Report, SegmentSaturation, SpeedTestPoint, by_district
from telemetryd.report.pdf import ONE_DOCUMENT_BELOW, render_pdf
from telemetryd.report.render import render_html, school_pages
from telemetryd.templating import Language
from tests.report.test_i18n import _local_report

COPIES = 6
"""The fixture's 3 schools 6 times over: 18 schools, a summary table longer than a page."""
# A state school's full name as the inventory writes it: the longest kind the city has.
LONG_NAME = (
    "Шымкент қаласы білім басқармасының «№ {n} жалпы білім беретін мектеп-гимназиясы» коммуналдық мемлекеттік мекемесі"
)
SLACK = 0.5
"""CSS px of rounding allowed at an edge."""


def _city() -> Report:
    base = _local_report()
    schools = []
    for copy in range(COPIES):
        for s in base.schools:
            n = copy * 10 + int(s.school.id[-1])
            row = dataclasses.replace(s.school, id=f"shy-{n:03d}", name=LONG_NAME.format(n=n))
            schools.append(dataclasses.replace(s, school=row))
    return dataclasses.replace(base, schools=tuple(schools))


@pytest.fixture(scope="module")
def city() -> Report:
    """18 schools with long Kazakh names."""
    return _city()


def _descendants(box: Any) -> Iterator[Any]:
    yield box
    for child in getattr(box, "children", ()):
        yield from _descendants(child)


def _right(box: Any) -> float:
    return float(box.border_box_x() + box.border_width())


@pytest.mark.parametrize("lang", ["kk", "ru", "en"])
def test_nothing_wider_than_the_page(city: Report, lang: Language) -> None:
    """Every box ends inside the page's margins, every text inside its table cell; a page per school."""
    document = HTML(string=render_html(city, lang=lang)).render()
    for number, page in enumerate(document.pages, 1):
        page_box = page._page_box
        left, right = page_box.margin_left, page.width - page_box.margin_right
        for box in _descendants(page_box.children[0]):
            if box.width is None:
                continue
            assert box.border_box_x() >= left - SLACK, (number, box)
            assert _right(box) <= right + SLACK, (number, box, _right(box), right)
            if isinstance(box, boxes.TableCellBox):
                edge = _right(box)
                texts = [t for t in _descendants(box) if isinstance(t, boxes.TextBox)]
                overflowing = [t.text for t in texts if _right(t) > edge + SLACK]
                assert overflowing == [], (number, overflowing)
    pages = {a: i for i, page in enumerate(document.pages) for a in page.anchors if a.startswith("school-")}
    starts = [pages[f"school-{s.school.id}"] for _, schools in by_district(city.schools) for s in schools]
    # One page per school, in the table's order (by district); the chain page ends the report.
    assert starts == list(range(starts[0], starts[0] + len(city.schools)))
    assert len(document.pages) == starts[-1] + 2
    assert starts[0] <= 8  # the all-schools table


@pytest.mark.skipif(shutil.which("pdftoppm") is None, reason="poppler-utils (pdftoppm) not installed")
def test_pdf_pages_are_a4(city: Report, tmp_path: Path) -> None:
    """pdftoppm's PNGs: the table, one per school, the chain page; all A4."""
    pdf = tmp_path / "sla.pdf"
    pdf.write_bytes(render_pdf(city, lang="kk"))
    subprocess.run(["pdftoppm", "-r", "36", "-png", str(pdf), str(tmp_path / "page")], check=True)
    pngs = sorted(tmp_path.glob("page-*.png"))
    assert len(pngs) == 1 + len(city.schools) + 1  # 18 schools' rows fit the first page
    for png in pngs:
        with Image.open(png) as image:
            assert image.size == (298, 421)  # 210 × 297 mm at 36 dpi


def _many(count: int) -> Report:
    base = _local_report()
    schools = []
    for copy in range(count // len(base.schools)):
        for s in base.schools:
            n = copy * 10 + int(s.school.id[-1])
            schools.append(dataclasses.replace(s, school=dataclasses.replace(s.school, id=f"shy-{n:04d}")))
    return dataclasses.replace(base, schools=tuple(schools))


@pytest.mark.skipif(shutil.which("pdftotext") is None, reason="poppler-utils (pdftotext) not installed")
def test_table_header_repeats_on_every_page(tmp_path: Path) -> None:
    """A table of 150 schools runs over pages; each page starts again with the column headings."""
    pdf = tmp_path / "summary.pdf"
    pdf.write_bytes(render_pdf(_many(150), lang="kk", summary_only=True))
    pages = 0
    while True:
        pages += 1
        run = subprocess.run(
            ["pdftotext", "-f", str(pages), "-l", str(pages), str(pdf), "-"],
            check=False,
            capture_output=True,
            text=True,
        )
        if run.returncode != 0 or not run.stdout.strip():
            break
        # Capitalised headings: school names and district rows hold "мектеп" in lower case only.
        assert "Мектеп" in run.stdout and "Үзілістер" in run.stdout, pages
    assert pages - 1 >= 3


@pytest.mark.skipif(shutil.which("pdfinfo") is None, reason="poppler-utils (pdfinfo) not installed")
def test_same_report_same_bytes(tmp_path: Path) -> None:
    """Two renderings of the same report are byte-identical; the metadata dates are the period's end."""
    report = _local_report()
    first, second = render_pdf(report, lang="ru"), render_pdf(report, lang="ru")
    assert first == second
    pdf = tmp_path / "sla.pdf"
    pdf.write_bytes(first)
    info = subprocess.run(["pdfinfo", "-isodates", str(pdf)], check=True, capture_output=True, text=True).stdout
    # 2026-03-01 00:00 at UTC+5, the end of February 2026 in Shymkent.
    assert "CreationDate:    2026-03-01T00:00:00+05" in info
    assert "ModDate:         2026-03-01T00:00:00+05" in info
    assert "Title:           Отчёт о соблюдении SLA за февраль 2026 г." in info
    assert render_pdf(report, lang="kk") != first


def test_one_school_is_one_page(city: Report) -> None:
    """The school pages alone (--school): one A4 page for one school, headed by the period and the chain head."""
    one = dataclasses.replace(city, schools=city.schools[:1])
    page = render_html(one, lang="kk", schools_only=True)
    assert 'class="summary"' not in page
    assert page.count('<section class="school"') == 1
    assert "ab" * 32 in page  # the chain head, to check a printed copy against
    assert len(HTML(string=page).render().pages) == 1


KINDS = ("camera", "nvr", "alarm_panel")


def _crowded(base: Report) -> Report:
    """One school with a hard month: hourly tests, 30 link outages, 200 device outages, 20 excluded spans."""
    school = base.schools[0]
    start, hour = base.period.start, 3600.0
    tests = tuple(
        SpeedTestPoint(start + h * hour + 60 * k, direction, 40.0 + (h * 7 + k) % 120, True, k == 1, 135.0)
        for h in range(24 * 28)
        for direction in ("download", "upload")
        for k in (0, 1)
    )
    outages = tuple(Outage(start + d * 86400, start + d * 86400 + 600 + d, 600.0 + d) for d in range(30))
    devices = tuple(
        Outage(start + i * 3000, start + i * 3000 + 900, 900.0, f"shy-cam-{i:03d}", KINDS[i % 3]) for i in range(200)
    )
    reason = "плановые работы " * 12
    excluded = tuple(Excluded(start + d * 86400, start + d * 86400 + 3600, 3600.0, reason) for d in range(10))
    segments = tuple(SegmentSaturation(school.school.id, f"segment-{i}", 3600.0 * i, 10) for i in range(10))
    crowded = dataclasses.replace(
        school,
        school=dataclasses.replace(school.school, name=LONG_NAME.format(n=1)),
        tests=tests,
        outages=outages,
        device_outages=devices,
        maintenance=excluded,
        gaps=excluded,
        saturation=segments,
    )
    return dataclasses.replace(base, schools=(crowded,))


@pytest.mark.parametrize("lang", ["kk", "ru"])
def test_a_crowded_school_still_takes_one_page(lang: Language) -> None:
    """The longest rows a page has room for, the rest counted: a month of trouble is still one A4 page."""
    report = _crowded(_local_report())
    page = render_html(report, lang=lang, schools_only=True)
    assert page.count("<tr><td>shy-cam-") == 8  # the longest device outages, then a count of the others
    assert page.count("<circle") == 0  # the chart draws each day's range, not 2,700 dots
    assert len(HTML(string=page).render().pages) == 1
    assert "192" in page  # "… and 192 shorter ones"
    assert "плановые работы " * 12 not in page  # a reason is cut to its first words


def test_summary_only_stops_after_the_table(city: Report) -> None:
    """--summary-only: the title, the table of every school, no school pages and no chain page."""
    page = render_html(city, lang="ru", summary_only=True)
    assert all(f"{s.school.name} <small>{s.school.id}</small>" in page for s in city.schools)
    assert '<a href="#school-' not in page  # no link to a page left out
    assert '<section class="school"' not in page
    assert '<section class="chain"' not in page
    document = HTML(string=page).render()
    assert 1 <= len(document.pages) <= 8


DISTRICTS = ("Абай ауданы", "Әл-Фараби ауданы", "Еңбекші ауданы", "Қаратау ауданы", "Тұран ауданы")


def test_summary_table_holds_300_schools_in_8_pages() -> None:
    """The all-schools table of a 300-school month, every school under its full official Kazakh name,
    takes at most 8 A4 pages in Kazakh and Russian."""
    many = _many(300)
    schools = tuple(
        dataclasses.replace(
            s, school=dataclasses.replace(s.school, name=LONG_NAME.format(n=i), district=DISTRICTS[i % 5])
        )
        for i, s in enumerate(many.schools)
    )
    report = dataclasses.replace(many, schools=schools)
    for lang in ("kk", "ru"):
        pages = HTML(string=render_html(report, lang=lang, summary_only=True)).render().pages
        assert len(pages) <= 8, lang


def _page_texts(pdf: bytes) -> list[str]:
    reader = PdfReader(io.BytesIO(pdf))
    return [page.extract_text() for page in reader.pages]


@pytest.fixture(scope="module")
def parted() -> tuple[Report, bytes, bytes]:
    """30 schools as one document (one process) and as parts laid out by two processes."""
    report = _many(30)
    return report, render_pdf(report, lang="ru", processes=1), render_pdf(report, lang="ru", processes=2)


def test_parts_join_into_the_same_pages(parted: tuple[Report, bytes, bytes]) -> None:
    """Laid out in parts by two processes, the report has the pages, text and numbers of one document."""
    report, whole, joined = parted
    assert len(report.schools) >= ONE_DOCUMENT_BELOW
    whole_texts, joined_texts = _page_texts(whole), _page_texts(joined)
    assert len(joined_texts) == len(whole_texts)
    total = len(joined_texts)
    for number, (one, part) in enumerate(zip(whole_texts, joined_texts, strict=True), 1):
        assert f"{number} / {total}" in part, number
        assert one.replace(" ", "") == part.replace(" ", ""), number


def test_parted_pdf_is_deterministic(parted: tuple[Report, bytes, bytes]) -> None:
    """The same report laid out in parts twice gives the same bytes."""
    report, _, joined = parted
    assert render_pdf(report, lang="ru", processes=2) == joined


@pytest.mark.parametrize("which", ["whole", "joined"])
def test_table_rows_link_to_their_school_pages(parted: tuple[Report, bytes, bytes], which: str) -> None:
    """Each school's row in the table links to the page that carries its id, in one document and in parts."""
    report, whole, joined = parted
    reader = PdfReader(io.BytesIO(whole if which == "whole" else joined))
    texts = [page.extract_text() for page in reader.pages]
    targets = []
    for page in reader.pages[:3]:
        for annotation in page.get("/Annots") or []:
            link = annotation.get_object()
            if link.get("/Subtype") != "/Link":
                continue
            dest = link.get("/Dest") or link.get("/A", {}).get("/D")
            # WeasyPrint's own links name a destination; the joined parts' give the page.
            dest = reader.named_destinations[dest].page if isinstance(dest, str) else dest[0]
            targets.append(reader.get_page_number(dest.get_object()))
    targets = list(dict.fromkeys(targets))  # a name over two lines is a link on each line
    assert len(targets) == len(report.schools)
    ids = [s.school.id for s in school_pages(report)]
    # Row k links to the k-th school page, the one whose meta line starts with that school's id.
    assert [re.search(r"(shy-\d{4}) ·", texts[t]).group(1) for t in targets] == ids  # type: ignore[union-attr]

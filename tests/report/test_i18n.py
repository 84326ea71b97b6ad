"""The SLA report in Russian and Kazakh: catalogs complete, no English left, figures written per locale."""

from __future__ import annotations

import dataclasses
import re
from datetime import date
from html.parser import HTMLParser
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po

from telemetryd.report.figures import Report, build_report
from telemetryd.report.render import render_html
from telemetryd.templating import LANGUAGES, LOCALE_DIR, Language, compile_po, formatters, translations
from tests.report import sla_fixture as fx
from tests.report.test_figures import _chain, _inputs

ROOT = Path(__file__).resolve().parents[2]
POT = LOCALE_DIR / "telemetryd.pot"
# Names as the inventory writes them: Kazakh letters (ә, ғ, қ, ң, ө, ұ, ү, һ, і), a Russian name, markup.
NAMES = {
    "shy-001": ("№ 12 жалпы білім беретін мектеп-гимназиясы (Әл-Фараби ауданы, Түркістан көшесі)", "Әл-Фараби ауданы"),
    "shy-002": ("Школа-гимназия № 2 имени Абая <Абай>", "Абайский район"),
    "shy-003": ("Қаратау ауданының № 3 мектеп-лицейі", "Қаратау ауданы"),
}
ALLOWED_LATIN = {"SLA", "UTC", "NVR"}
"""Latin words a Russian or Kazakh page may hold: the contract's terms and the device class."""
KAZAKH_MONTHS = (
    "қаңтар",
    "ақпан",
    "наурыз",
    "сәуір",
    "мамыр",
    "маусым",
    "шілде",
    "тамыз",
    "қыркүйек",
    "қазан",
    "қараша",
    "желтоқсан",
)


class _VisibleText(HTMLParser):
    """Text a reader sees: text nodes (SVG labels and tooltips included) and title/aria-label attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._skip += tag == "style"
        self.parts += [v for k, v in attrs if k in ("title", "aria-label") and v]

    def handle_endtag(self, tag: str) -> None:
        self._skip -= tag == "style"

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def _visible(page: str) -> str:
    parser = _VisibleText()
    parser.feed(page)
    return " ".join(" ".join(parser.parts).split())


def _local_report() -> Report:
    """The fixture month with the schools named in Kazakh and Russian, chain verified."""
    data = _inputs(chain=_chain())
    schools = [dataclasses.replace(s, name=NAMES[s.id][0], district=NAMES[s.id][1]) for s in data.schools]
    return build_report(dataclasses.replace(data, schools=schools), generated_at=fx.NOW)


def _data_strings(report: Report) -> set[str]:
    """What the report shows verbatim from the inventory, settings and history (ids, segments, reasons)."""
    found: set[str] = set()
    for s in report.schools:
        found |= {s.school.id, *(o.device_id for o in s.device_outages), *(x.segment for x in s.saturation)}
        found |= {e.reason for e in (*s.maintenance, *s.gaps) if e.reason}
    if report.chain:
        found.add(report.chain.head_hex)
    return found


def _msgids() -> list[str]:
    with POT.open("rb") as f:
        catalog = read_po(f)
    ids: list[str] = []
    for message in catalog:
        if message.id:
            ids += list(message.id) if isinstance(message.id, tuple) else [message.id]
    return ids


def _english_fragments() -> set[str]:
    """Each msgid cut at its placeholders, the pieces that hold an English word of 3+ letters."""
    pieces = (p.strip(" .,:;()–") for m in _msgids() for p in re.split(r"%\(\w+\)\w|%%", m))
    return {p for p in pieces if re.search(r"[A-Za-z]{3,}", p)}


@pytest.mark.parametrize("lang", ["ru", "kk"])
def test_no_english_left(lang: Language) -> None:
    """ru and kk pages hold no msgid fragment and no Latin word but SLA, UTC, NVR and the data's own ids."""
    report = _local_report()
    text = _visible(render_html(report, lang=lang))
    for verbatim in sorted(_data_strings(report), key=len, reverse=True):
        text = text.replace(verbatim, " ")
    # A msgid that is itself an allowed abbreviation ("NVR") may stay.
    left = [f for f in _english_fragments() if f in text and f not in ALLOWED_LATIN]
    assert left == []
    assert set(re.findall(r"[A-Za-z]{2,}", text)) <= ALLOWED_LATIN


def test_english_page_holds_the_msgids() -> None:
    """The check above can fail: the English page shows the same fragments it looks for."""
    text = _visible(render_html(_local_report(), lang="en"))
    shown = {f for f in _english_fragments() if f in text}
    assert {"Link availability", "Speed compliance", "Evidence chain", "Excluded time"} <= shown
    assert re.search(r"[A-Za-z]{3,}", text)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_names_exactly_as_in_the_inventory(lang: Language) -> None:
    """School and district names keep their Kazakh and Cyrillic letters; markup in a name is escaped."""
    page = render_html(_local_report(), lang=lang)
    text = _visible(page)
    for name, district in NAMES.values():
        assert name in text
        assert district in text
    assert "&lt;Абай&gt;" in page
    assert "<Абай>" not in page


@pytest.mark.parametrize("lang", ["ru", "kk"])
def test_every_catalog_entry_translated(lang: str) -> None:
    """The .po holds every msgid of the .pot, each translated (every plural form), none fuzzy, formats matching."""
    po = LOCALE_DIR / lang / "LC_MESSAGES" / "telemetryd.po"
    with po.open("rb") as f:
        catalog = read_po(f, locale=lang)
    with POT.open("rb") as f:
        template = read_po(f)
    assert {m.id for m in template if m.id} <= {m.id for m in catalog if m.id}
    assert not catalog.fuzzy
    for message in catalog:
        if not message.id:
            continue
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        assert all(strings), message.id
        assert len(strings) == (catalog.num_plurals if message.pluralizable else 1), message.id
        assert not message.fuzzy, message.id
    problems = [(m.id, [str(e) for e in errors]) for m, errors in catalog.check()]
    assert problems == []


def test_template_matches_the_sources() -> None:
    """The .pot holds exactly the strings marked in the templates and Python (`make messages` was run)."""
    with (ROOT / "babel.cfg").open() as f:
        method_map, options_map = parse_mapping_cfg(f)
    found = {
        msg if isinstance(msg, str) else msg[0]
        for _file, _line, msg, _comments, _context in extract_from_dir(ROOT, method_map, options_map)
    }
    with POT.open("rb") as f:
        template = read_po(f)
    assert found == {m.id if isinstance(m.id, str) else m.id[0] for m in template if m.id}


@pytest.mark.parametrize("lang", ["ru", "kk"])
def test_po_compiles_in_memory_like_the_mo(lang: Language) -> None:
    """Without a compiled .mo (a fresh clone, a wheel) the .po compiled in memory says the same."""
    po = LOCALE_DIR / lang / "LC_MESSAGES" / "telemetryd.po"
    in_memory = compile_po(po, lang)
    with po.open("rb") as f:
        catalog = read_po(f, locale=lang)
    for message in catalog:
        if message.id and not message.pluralizable:
            assert in_memory.gettext(message.id) == message.string
    assert in_memory.gettext("School") == {"ru": "Школа", "kk": "Мектеп"}[lang]
    five = in_memory.ngettext("%(num)d link verified, OK", "%(num)d links verified, OK", 5)
    expected = {"ru": "Проверено %(num)d звеньев, нарушений нет", "kk": "%(num)d буын тексерілді, бұзушылық жоқ"}
    assert five == expected[lang]
    assert translations(lang).gettext("District") == in_memory.gettext("District")  # the .mo when make venv built it


def test_months_numbers_and_durations_per_locale() -> None:
    """Month titles, decimal comma, no-break thousands and duration units in each language."""
    ru, kk, en = formatters("ru"), formatters("kk"), formatters("en")
    assert ru.month(date(2026, 12, 1)) == "декабрь 2026 г."
    assert en.month(date(2026, 12, 1)) == "December 2026"
    assert [kk.month(date(2026, m, 1)) for m in range(1, 13)] == [f"2026 жылғы {m}" for m in KAZAKH_MONTHS]
    assert ru.percent(0.99531) == "99,53\u00a0%"
    assert kk.percent(0.99531) == "99,53\u00a0%"
    assert en.percent(0.99531) == "99.53\u00a0%"
    assert ru.number(1234.5) == "1\u00a0234,5"
    assert ru.duration(90_060) == "1 сут 1 ч 01 мин"
    assert kk.duration(3_900) == "1 сағ 05 мин"
    assert en.duration(None) == "ongoing"


def test_russian_page_title_and_period() -> None:
    """The Russian title names the month in Russian; dates are day.month.year."""
    text = _visible(render_html(_local_report(), lang="ru"))
    assert "Отчёт о соблюдении SLA за февраль 2026 г." in text
    assert "Период: 01.02.2026 00:00 – 01.03.2026 00:00 по местному времени (UTC+05:00)." in text
    kk_text = _visible(render_html(_local_report(), lang="kk"))
    assert "SLA сақталуы туралы есеп: 2026 жылғы ақпан" in kk_text

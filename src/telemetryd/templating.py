"""The one Jinja2 environment of telemetryd's HTML (SLA report, status page) and its locale helpers.

Two entry points:

* ``environment(lang)`` — templates from ``telemetryd/templates/`` with autoescape on
  (every ``{{ }}`` is HTML-escaped; nothing is escaped by hand), the ``jinja2.ext.i18n``
  extension with the language's catalog installed (``_()``, ``ngettext()``, newstyle:
  ``_("%(n)s schools", n=3)`` formats and escapes the argument), and ``fmt`` — the
  language's `Formatters` — as a global. One environment per language, cached.
* ``formatters(lang)`` — numbers, percentages, dates, months and durations as the
  language writes them (CLDR data via Babel): decimal comma and a no-break space as
  the thousands separator in ru and kk, "декабрь 2026 г.", "2026 жылғы желтоқсан".

Catalogs: ``telemetryd/locale/<lang>/LC_MESSAGES/telemetryd.po`` are the sources (kept in
git, managed with ``pybabel extract/update`` — see babel.cfg). ``make venv`` compiles them
to ``.mo`` beside them (not committed); when a ``.mo`` is missing or older than its
``.po`` (a fresh clone, a wheel), the ``.po`` is compiled in memory at first use, so a
checkout always reports in its own words. English is the msgids themselves.
"""

from __future__ import annotations

import gettext
import io
from dataclasses import dataclass
from datetime import date, datetime
from functools import cache
from pathlib import Path
from typing import Literal, get_args

import jinja2
from babel.dates import format_date, format_datetime
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_decimal

Language = Literal["en", "ru", "kk"]
LANGUAGES: tuple[Language, ...] = get_args(Language)
DOMAIN = "telemetryd"
LOCALE_DIR = Path(__file__).parent / "locale"

# How each language writes a month and a moment. CLDR's stand-alone Kazakh month is capitalised
# ("Желтоқсан"); in running text it is lower case, as in the format context used here.
_MONTH_PATTERN: dict[Language, str] = {"en": "MMMM y", "ru": "LLLL y 'г.'", "kk": "y 'жылғы' MMMM"}
_DATETIME_PATTERN: dict[Language, str] = {"en": "y-MM-dd HH:mm", "ru": "dd.MM.y HH:mm", "kk": "dd.MM.y HH:mm"}
_DATE_PATTERN: dict[Language, str] = {"en": "y-MM-dd", "ru": "dd.MM.y", "kk": "dd.MM.y"}


def language(value: str) -> Language:
    """`value` as a supported language, or ValueError naming the choices."""
    for lang in LANGUAGES:
        if value == lang:
            return lang
    raise ValueError(f"unsupported language {value!r}: expected one of {', '.join(LANGUAGES)}")


@cache
def translations(lang: Language) -> gettext.NullTranslations:
    """The language's catalog: the compiled .mo when current, else the .po compiled in memory."""
    if lang == "en":
        return gettext.NullTranslations()
    po = LOCALE_DIR / lang / "LC_MESSAGES" / f"{DOMAIN}.po"
    mo = po.with_suffix(".mo")
    if mo.exists() and mo.stat().st_mtime >= po.stat().st_mtime:
        with mo.open("rb") as f:
            return gettext.GNUTranslations(f)
    return compile_po(po, lang)


def compile_po(po: Path, lang: Language) -> gettext.GNUTranslations:
    """A .po catalog compiled in memory (what `pybabel compile` would write to the .mo)."""
    with po.open("rb") as f:
        catalog = read_po(f, locale=lang, domain=DOMAIN)
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return gettext.GNUTranslations(buffer)


@dataclass(frozen=True)
class Formatters:
    """How one language writes figures; every method returns display text, "—" for None."""

    lang: Language

    @property
    def _t(self) -> gettext.NullTranslations:
        return translations(self.lang)

    def number(self, value: float | None, pattern: str = "#,##0.#") -> str:
        """A number in the locale's digits and separators (``1 234,5`` in ru and kk)."""
        return "—" if value is None else format_decimal(value, format=pattern, locale=self.lang)

    def percent(self, ratio: float | None) -> str:
        """A 0-1 ratio as a percentage with two decimals: ``99,53 %``."""
        return "—" if ratio is None else f"{self.number(ratio * 100, '0.00')}\u00a0%"

    def month(self, at: date) -> str:
        """The month and year as a title says them: "December 2026", "декабрь 2026 г."."""
        return format_date(at, _MONTH_PATTERN[self.lang], locale=self.lang)

    def datetime(self, at: datetime | None) -> str:
        """A local moment to the minute; None is an interval still open."""
        if at is None:
            return self._t.gettext("ongoing")
        return format_datetime(at, _DATETIME_PATTERN[self.lang], locale=self.lang)

    def date(self, at: date) -> str:
        """A local day."""
        return format_date(at, _DATE_PATTERN[self.lang], locale=self.lang)

    def duration(self, seconds: float | None) -> str:
        """Seconds to the minute as days, hours and minutes; None is an outage still running."""
        t = self._t
        if seconds is None:
            return t.gettext("ongoing")
        hours, minutes = divmod(round(seconds / 60), 60)
        days, hours = divmod(hours, 24)
        if days:
            return t.gettext("%(days)d d %(hours)d h %(minutes)02d min") % {
                "days": days,
                "hours": hours,
                "minutes": minutes,
            }
        if hours:
            return t.gettext("%(hours)d h %(minutes)02d min") % {"hours": hours, "minutes": minutes}
        return t.gettext("%(minutes)s min") % {"minutes": minutes}

    def minutes(self, seconds: float) -> str:
        """Seconds as whole minutes with the unit: ``125 min``."""
        return self._t.gettext("%(minutes)s min") % {"minutes": self.number(seconds / 60, "#,##0")}


@cache
def formatters(lang: Language) -> Formatters:
    """The language's `Formatters`."""
    return Formatters(lang)


@cache
def environment(lang: Language = "en") -> jinja2.Environment:
    """Templates of `telemetryd/templates/` in `lang`: autoescaped, gettext installed, `fmt` global."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("telemetryd", "templates"),
        autoescape=True,
        extensions=["jinja2.ext.i18n"],
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.install_gettext_translations(translations(lang), newstyle=True)  # type: ignore[attr-defined]
    env.globals["fmt"] = formatters(lang)
    env.globals["lang"] = lang
    return env

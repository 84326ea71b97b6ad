"""Hatch build hook: compile the gettext catalogs (.po, in git) into .mo files inside the wheel.

The .mo files are build output (git-ignored); without this hook a wheel would carry only the
.po sources and the report would compile them in memory on every run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from hatchling.builders.hooks.plugin.interface import BuildHookInterface

LOCALE = Path("src/telemetryd/locale")


def compile_catalogs(root: Path) -> list[Path]:
    """Write LC_MESSAGES/telemetryd.mo beside every telemetryd.po under root/LOCALE; the .mo paths."""
    written = []
    for po in sorted((root / LOCALE).glob("*/LC_MESSAGES/telemetryd.po")):
        with po.open("rb") as source:
            catalog = read_po(source, locale=po.parent.parent.name)
        mo = po.with_suffix(".mo")
        with mo.open("wb") as target:
            write_mo(target, catalog)
        written.append(mo)
    return written


class CatalogHook(BuildHookInterface):  # type: ignore[misc]
    """Compiles the catalogs before the wheel is assembled and forces them in (they are git-ignored)."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        root = Path(self.root)
        for mo in compile_catalogs(root):
            build_data["force_include"][str(mo)] = str(mo.relative_to(root / "src"))

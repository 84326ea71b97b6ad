"""The wheel carries what an installed daemon needs beside its code: templates and compiled catalogs."""

from __future__ import annotations

import gettext
import io
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UV = shutil.which("uv") or str(ROOT / ".tools" / "bin" / "uv")


@pytest.mark.skipif(not Path(UV).exists(), reason="uv not installed (make venv installs it)")
def test_wheel_holds_templates_and_compiled_catalogs(tmp_path: Path) -> None:
    """hatch_build.py compiles each .po into a .mo inside the wheel; the .mo translates the report's words."""
    # A copy without .mo files, as a clean clone is: the wheel's must come from the build hook.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".venv", ".tools", ".git", "*.mo", "__pycache__"))
    subprocess.run([UV, "build", "--wheel", "-q", "-o", str(tmp_path / "dist"), str(source)], check=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("telemetryd-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert "telemetryd/templates/report/sla.html" in names
        for lang, word in (("ru", "Камеры"), ("kk", "Камералар")):
            mo = f"telemetryd/locale/{lang}/LC_MESSAGES/telemetryd.mo"
            assert mo in names, lang
            catalog = gettext.GNUTranslations(io.BytesIO(archive.read(mo)))
            assert catalog.gettext("Cameras") == word, lang

"""Builders shared by tests: a loopback config written to a temp dir, loaded by the real loader."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from telemetryd.config import Config, load_config
from tests.conftest import require_binary


def write_config(tmp_path: Path, schools: list[dict[str, Any]], **settings: Any) -> Path:
    """Write telemetryd.yaml plus inventory/schools.yaml under tmp_path; return the settings path."""
    inventory = tmp_path / "inventory"
    inventory.mkdir(exist_ok=True)
    (inventory / "schools.yaml").write_text(yaml.safe_dump({"schools": schools}, sort_keys=False))
    body = {"listen": "127.0.0.1:0", "inventory": "inventory", "logging": {"format": "json"}, **settings}
    path = tmp_path / "telemetryd.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def school(school_id: str, devices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """A school entry with the default 150 = 20/30/100 contract."""
    return {"id": school_id, "name": f"School {school_id}", "district": "Abay", **extra, "devices": devices}


def loopback_config(tmp_path: Path) -> Config:
    """Two schools of loopback devices, loaded through load_config."""
    path = write_config(
        tmp_path,
        [
            school(
                "s1",
                [
                    {"id": "s1-router", "kind": "router", "host": "127.0.0.1"},
                    {"id": "s1-cam-1", "kind": "camera", "host": "127.0.0.2", "name": "Gate <east>"},
                    {"id": "s1-alarm", "kind": "alarm_panel", "host": "127.0.0.3"},
                ],
                location={"latitude": 42.3, "longitude": 69.6},
            ),
            school("s2", [{"id": "s2-router", "kind": "router", "host": "127.0.0.4"}]),
        ],
    )
    return load_config(path)


SYSTEMD_DIR = Path(__file__).resolve().parents[1] / "systemd"


def systemd_verify_text(tmp_path: Path, *names: str) -> tuple[int, str, list[str]]:
    """`systemd-analyze verify` unit files already written under `tmp_path` (binary pointed at this venv)."""
    analyze = require_binary("systemd-analyze", "systemd")
    telemetryd = shutil.which("telemetryd") or str(Path(sys.executable).parent / "telemetryd")
    for name in names:
        path = tmp_path / name
        path.write_text(path.read_text().replace("/opt/telemetryd/bin/telemetryd", telemetryd))
    proc = subprocess.run(
        [analyze, "verify", *(str(tmp_path / n) for n in names)], capture_output=True, text=True, check=False
    )
    output = (proc.stdout + proc.stderr).strip()
    return proc.returncode, output, [line for line in output.splitlines() if "telemetryd" in line]


def systemd_verify(tmp_path: Path, *names: str) -> tuple[int, str, list[str]]:
    """`systemd-analyze verify` the shipped units `names` with the binary pointed at this venv.

    Returns (exit code, whole output, the output lines about our units): the tool also
    reports on unrelated units of the host, which the last item leaves out.
    """
    for name in names:
        (tmp_path / name).write_text((SYSTEMD_DIR / name).read_text())
    return systemd_verify_text(tmp_path, *names)

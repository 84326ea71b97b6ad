"""The shipped systemd unit: `systemd-analyze verify` clean, hardened, unprivileged."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

from .conftest import require_binary

UNIT = Path(__file__).parent.parent / "systemd" / "telemetryd.service"


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNIT)
    return parser


def test_unit_is_hardened_and_unprivileged() -> None:
    """The service runs as a dynamic user with only CAP_NET_RAW and the promised sandboxing."""
    service = _unit()["Service"]
    assert service["Type"] == "notify"
    assert service["DynamicUser"] == "yes"
    assert service["CapabilityBoundingSet"] == "CAP_NET_RAW"
    assert service["AmbientCapabilities"] == "CAP_NET_RAW"
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "PrivateTmp": "yes",
        "ProtectHome": "yes",
        "ProtectKernelTunables": "yes",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter": "@system-service",
    }.items():
        assert service[key] == value, key
    assert "kill -HUP" in service["ExecReload"]


def test_systemd_analyze_verify_clean(tmp_path: Path) -> None:
    """`systemd-analyze verify` reports nothing for the unit (binary paths pointed at this venv)."""
    analyze = require_binary("systemd-analyze", "systemd")
    telemetryd = shutil.which("telemetryd") or str(Path(sys.executable).parent / "telemetryd")
    unit = tmp_path / "telemetryd.service"
    unit.write_text(UNIT.read_text().replace("/opt/telemetryd/bin/telemetryd", telemetryd))
    proc = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, check=False)
    output = (proc.stdout + proc.stderr).strip()
    # systemd-analyze also reports on unrelated units of the host; keep only lines about ours.
    ours = [line for line in output.splitlines() if "telemetryd" in line]
    assert proc.returncode == 0, output
    assert ours == [], output


REPORT_UNITS = ("telemetryd-report.service", "telemetryd-report.timer")


def test_report_units_verify_clean(tmp_path: Path) -> None:
    """The daily SLA report service and timer pass `systemd-analyze verify`."""
    analyze = require_binary("systemd-analyze", "systemd")
    telemetryd = shutil.which("telemetryd") or str(Path(sys.executable).parent / "telemetryd")
    for name in REPORT_UNITS:
        text = (UNIT.parent / name).read_text().replace("/opt/telemetryd/bin/telemetryd", telemetryd)
        (tmp_path / name).write_text(text)
    proc = subprocess.run(
        [analyze, "verify", *(str(tmp_path / n) for n in REPORT_UNITS)], capture_output=True, text=True, check=False
    )
    output = (proc.stdout + proc.stderr).strip()
    assert proc.returncode == 0, output
    assert [line for line in output.splitlines() if "telemetryd" in line] == [], output


def test_report_service_runs_both_months_unprivileged() -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read_string((UNIT.parent / "telemetryd-report.service").read_text())
    service = parser["Service"]
    assert service["Type"] == "oneshot" and service["DynamicUser"] == "yes"
    assert service["CapabilityBoundingSet"] == ""
    text = (UNIT.parent / "telemetryd-report.service").read_text()
    assert "--month current --save" in text and "--month previous --save" in text

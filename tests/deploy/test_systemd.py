"""The shipped systemd unit: `systemd-analyze verify` clean, hardened, unprivileged."""

from __future__ import annotations

import configparser
from pathlib import Path

from tests.helpers import systemd_verify, systemd_verify_text

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "telemetryd.service"


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
    returncode, output, ours = systemd_verify(tmp_path, "telemetryd.service")
    assert returncode == 0, output
    assert ours == [], output


REPORT_UNITS = ("telemetryd-report.service", "telemetryd-report.timer")


def test_report_units_verify_clean(tmp_path: Path) -> None:
    """The daily SLA report service and timer pass `systemd-analyze verify`."""
    returncode, output, ours = systemd_verify(tmp_path, *REPORT_UNITS)
    assert returncode == 0, output
    assert ours == [], output


def test_report_service_runs_both_months_unprivileged() -> None:
    """The report unit is a oneshot dynamic user with no capabilities that saves the current and previous month."""
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read_string((UNIT.parent / "telemetryd-report.service").read_text())
    service = parser["Service"]
    assert service["Type"] == "oneshot" and service["DynamicUser"] == "yes"
    assert service["CapabilityBoundingSet"] == ""
    text = (UNIT.parent / "telemetryd-report.service").read_text()
    assert "--month current --save" in text and "--month previous --save" in text


def test_shard_template_verifies_and_keeps_each_shard_apart(tmp_path: Path) -> None:
    """`telemetryd@.service` as instance 1 verifies clean and gives the shard its own config and state directory."""
    template = (UNIT.parent / "telemetryd@.service").read_text()
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(template)
    service = parser["Service"]
    assert "/etc/telemetryd/shard-%i.yaml" in service["ExecStart"]
    assert service["StateDirectory"] == "telemetryd/shard-%i"
    single = _unit()["Service"]
    for key in ("DynamicUser", "CapabilityBoundingSet", "SystemCallFilter", "ProtectSystem", "Type", "WatchdogSec"):
        assert service[key] == single[key], key  # the same hardening as the single unit
    (tmp_path / "telemetryd@1.service").write_text(template)
    returncode, output, ours = systemd_verify_text(tmp_path, "telemetryd@1.service")
    assert returncode == 0, output
    assert ours == [], output

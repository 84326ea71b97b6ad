"""The shipped responder unit: `systemd-analyze verify` clean, hardened, without any capability."""

from __future__ import annotations

from pathlib import Path

from telemetryd.school_responder import DEFAULT_LIMITS
from tests.helpers import systemd_verify

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "telemetryd-responder.service"


def _service() -> dict[str, list[str]]:
    """The [Service] section, every value of repeated keys kept (configparser would keep only the last)."""
    values: dict[str, list[str]] = {}
    section = ""
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


def test_unit_is_hardened_and_holds_no_capability() -> None:
    """The responder runs as a dynamic user with an empty capability set and the project's sandboxing."""
    service = _service()
    assert service["DynamicUser"] == ["yes"]
    assert service["CapabilityBoundingSet"] == [""]
    assert service["AmbientCapabilities"] == [""]
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "PrivateTmp": "yes",
        "ProtectHome": "yes",
        "ProtectKernelTunables": "yes",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "MemoryDenyWriteExecute": "yes",
    }.items():
        assert service[key] == [value], key
    assert "@system-service" in service["SystemCallFilter"]


def test_token_comes_from_a_credential_not_argv() -> None:
    """The token is loaded with LoadCredential= and read from $CREDENTIALS_DIRECTORY, never passed inline."""
    service = _service()
    assert service["LoadCredential"] == ["speedtest-token:/etc/telemetryd/credentials/speedtest-token"]
    (command,) = service["ExecStart"]
    assert "responder --listen 0.0.0.0:8088 --token-file ${CREDENTIALS_DIRECTORY}/speedtest-token" in command
    assert "--token " not in command
    assert "Environment" not in service


def test_descriptor_limit_is_above_the_connection_cap() -> None:
    """LimitNOFILE leaves the responder's reserve above --max-connections: the cap bites before EMFILE does."""
    service = _service()
    (command,) = service["ExecStart"]
    words = command.split()
    cap = int(words[words.index("--max-connections") + 1]) if "--max-connections" in words else None
    assert cap is not None, "the unit states its connection cap"
    reserve = int(words[words.index("--fd-reserve") + 1]) if "--fd-reserve" in words else DEFAULT_LIMITS.fd_reserve
    (limit,) = service["LimitNOFILE"]
    assert int(limit) >= cap + reserve
    assert {"--head-timeout", "--idle-timeout"} <= set(words)


def test_systemd_analyze_verify_clean(tmp_path: Path) -> None:
    """`systemd-analyze verify` reports nothing for the unit (binary path pointed at this venv)."""
    returncode, output, ours = systemd_verify(tmp_path, "telemetryd-responder.service")
    assert returncode == 0, output
    assert ours == [], output

"""Named secrets: read from the credentials directory, errors that name the secret but never its value."""

from __future__ import annotations

from pathlib import Path

import pytest

from telemetryd.secrets import SecretMissing, Secrets


def test_value_is_read_and_trailing_newline_dropped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The file's content is the secret; editors' trailing newline is not part of it."""
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    (tmp_path / "snmp-ro").write_text("c0mmunity\n")
    assert Secrets(tmp_path).get("snmp-ro") == "c0mmunity"


def test_systemd_credentials_directory_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under systemd LoadCredential=, $CREDENTIALS_DIRECTORY is used instead of the configured directory."""
    configured, systemd = tmp_path / "etc", tmp_path / "run"
    configured.mkdir()
    systemd.mkdir()
    (configured / "token").write_text("old")
    (systemd / "token").write_text("from-systemd")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(systemd))
    assert Secrets(configured).get("token") == "from-systemd"


@pytest.mark.parametrize(
    ("setup", "name", "message"),
    [
        (None, "token", "no file"),
        ("", "token", "is empty"),
        ("x", "../etc/passwd", "not a plain name"),
    ],
)
def test_problems_name_the_secret_not_its_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setup: str | None, name: str, message: str
) -> None:
    """Missing, empty or path-like names fail with a message about the name."""
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    if setup is not None:
        (tmp_path / "token").write_text(setup)
    with pytest.raises(SecretMissing, match=message):
        Secrets(tmp_path).get(name)


def test_no_directory_configured_says_how_to_set_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without any directory the error says where to configure one."""
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(SecretMissing, match="credentials_directory"):
        Secrets(None).get("token")

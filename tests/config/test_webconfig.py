"""The exporter-toolkit web config: validated with file:line, TLS files read, paths relative to the file."""

from __future__ import annotations

import ssl
from pathlib import Path

import bcrypt
import pytest
import yaml

from telemetryd.config import ConfigError, load_config
from telemetryd.config.loader import load_web_config
from telemetryd.sim.certs import certificate_authority, issued_by
from tests.helpers import write_config

HASH = bcrypt.hashpw(b"scrape-secret", bcrypt.gensalt(rounds=4)).decode()


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_full_web_config_loads(tmp_path: Path) -> None:
    """TLS with a client CA and basic auth users; files relative to the web config's directory."""
    ca = certificate_authority(tmp_path)
    server = issued_by(ca, tmp_path, "127.0.0.1")
    (tmp_path / "web").mkdir()
    body = {
        "tls_server_config": {
            "cert_file": f"../{server.cert.name}",
            "key_file": f"../{server.key.name}",
            "client_ca_file": f"../{ca.cert.name}",
            "client_auth_type": "RequireAndVerifyClientCert",
            "min_version": "TLS13",
        },
        "basic_auth_users": {"prometheus": HASH},
    }
    config = load_web_config(_write(tmp_path / "web" / "web-config.yml", yaml.safe_dump(body)))
    assert config.tls is not None and config.tls.verify_mode == ssl.CERT_REQUIRED
    assert config.tls.minimum_version == ssl.TLSVersion.TLSv1_3
    assert config.users == {"prometheus": HASH.encode()} and config.requires_auth
    assert server.cert.resolve() in {p.resolve() for p in config.files}


def test_an_empty_web_config_is_plain_http(tmp_path: Path) -> None:
    """No TLS, no users: what the exporter did before web configs."""
    config = load_web_config(_write(tmp_path / "web-config.yml", ""))
    assert config.tls is None and not config.requires_auth


WEB = "web-config.yml"
BAD = [
    ("basic_auth_users:\n  prometheus: hunter2\n", f"{WEB}:2: basic_auth_users.prometheus: expected a bcrypt hash"),
    ("http_server_config:\n  http2: false\n", f"{WEB}:1: http_server_config: unknown key 'http_server_config'; "
     "allowed here: tls_server_config, basic_auth_users"),
    (f"tls_server_config:\n  cert_file: nope.crt\n  key_file: {WEB}\n", f"{WEB}:2: tls_server_config.cert_file: "),
    ("tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequireAnyClientCert\n",
     f"{WEB}:4: tls_server_config.client_auth_type: "),
    ("tls_server_config:\n  key_file: b\n", f"{WEB}:1: tls_server_config.cert_file: required, but missing"),
    ("- a list\n", f"{WEB}:1: expected a mapping"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), BAD)
def test_a_bad_web_config_names_file_line_and_field(tmp_path: Path, text: str, expected: str) -> None:
    """Each mistake is one problem with the file, line and field, and never echoes a password."""
    with pytest.raises(ConfigError) as caught:
        load_web_config(_write(tmp_path / "web-config.yml", text))
    (problem,) = caught.value.problems
    assert str(problem).replace(str(tmp_path) + "/", "").startswith(expected), str(problem)
    assert "hunter2" not in str(problem)


def test_missing_tls_file_is_named(tmp_path: Path) -> None:
    """A certificate that is not there: the problem names the file the operator has to fix."""
    with pytest.raises(ConfigError) as caught:
        load_web_config(
            _write(tmp_path / "web-config.yml", "tls_server_config:\n  cert_file: nope.crt\n  key_file: k\n")
        )
    assert [str(p).rpartition(": ")[2] for p in caught.value.problems] == ["no such file"] * 2
    assert "nope.crt" in str(caught.value.problems[0]) and ":2: tls_server_config.cert_file" in str(caught.value)


def test_settings_point_at_the_web_config_relative_to_themselves(tmp_path: Path) -> None:
    """`web_config_file` is relative to the settings file and loaded by check-config's loader, errors and all."""
    _write(tmp_path / "web-config.yml", f"basic_auth_users:\n  prometheus: '{HASH}'\n")
    config = load_config(write_config(tmp_path, [], web_config_file="web-config.yml"))
    assert config.settings.web_config_file == str(tmp_path / "web-config.yml")

    _write(tmp_path / "web-config.yml", "basic_auth_users:\n  prometheus: plain-password\n")
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "telemetryd.yaml")
    assert f"{tmp_path / 'web-config.yml'}:2: basic_auth_users.prometheus" in str(caught.value)

    with pytest.raises(ConfigError) as missing:
        load_config(write_config(tmp_path, [], web_config_file="elsewhere.yml"))
    assert "telemetryd.yaml:" in str(missing.value) and "web_config_file" in str(missing.value)


def test_the_shipped_example_loads(tmp_path: Path) -> None:
    """config/web-config.example.yml is valid once its certificate files exist; its hash is of "change-me"."""
    example = Path(__file__).resolve().parents[2] / "config" / "web-config.example.yml"
    ca = certificate_authority(tmp_path)
    server = issued_by(ca, tmp_path, "127.0.0.1")
    server.cert.rename(tmp_path / "telemetryd.crt")
    server.key.rename(tmp_path / "telemetryd.key")
    config = load_web_config(_write(tmp_path / "web-config.yml", example.read_text()))
    assert config.tls is not None
    assert bcrypt.checkpw(b"change-me", config.users["prometheus"])

"""Basic auth with bcrypt and its cache; the web config re-read when it changes, a broken one never applied."""

from __future__ import annotations

import base64
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

import bcrypt
import pytest
import structlog

from telemetryd.config import ConfigError
from telemetryd.export import webauth
from telemetryd.export.webauth import BasicAuth, WebConfigWatch, credentials
from tests.daemon_process import DaemonProcess
from tests.helpers import write_config

PASSWORD = b"scrape-secret"
HASH = bcrypt.hashpw(PASSWORD, bcrypt.gensalt(rounds=4))


def basic(user: str, password: bytes) -> str:
    """An Authorization header value."""
    return "Basic " + base64.b64encode(user.encode() + b":" + password).decode()


def test_credentials_are_parsed_or_refused() -> None:
    """Only a well-formed Basic header gives (user, password); a colon in the password is kept."""
    assert credentials(basic("prometheus", b"a:b")) == ("prometheus", b"a:b")
    for header in ("", "Bearer abc", "Basic !!!", "Basic " + base64.b64encode(b"no-colon").decode()):
        assert credentials(header) is None


async def test_a_good_credential_costs_one_bcrypt_check_however_often_it_is_shown(tmp_path: Path) -> None:
    """Prometheus every 15 s pays bcrypt once; wrong ones and unknown users are refused (and cached too)."""
    auth = BasicAuth(WebConfigWatch(None))
    users = {"prometheus": HASH}
    for _ in range(5):
        assert await auth.allowed(basic("prometheus", PASSWORD), users)
    assert auth.bcrypt_checks == 1
    assert not await auth.allowed(basic("prometheus", b"guess"), users)
    assert not await auth.allowed(basic("prometheus", b"guess"), users)
    assert not await auth.allowed(basic("root", PASSWORD), users)  # unknown user: the dummy hash is checked
    assert auth.bcrypt_checks == 3
    assert all(PASSWORD not in key for key in auth._cache)  # keys are keyed hashes


async def test_a_changed_hash_misses_the_cache() -> None:
    """Changing a user's hash in the web config revokes the old password at once."""
    auth = BasicAuth(WebConfigWatch(None))
    assert await auth.allowed(basic("prometheus", PASSWORD), {"prometheus": HASH})
    other = bcrypt.hashpw(b"new-secret", bcrypt.gensalt(rounds=4))
    assert not await auth.allowed(basic("prometheus", PASSWORD), {"prometheus": other})


async def test_the_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stranger trying many passwords cannot grow memory: the oldest entries go."""
    monkeypatch.setattr(webauth, "CACHE_SIZE", 4)
    auth = BasicAuth(WebConfigWatch(None))
    for i in range(10):
        await auth.allowed(basic("prometheus", b"guess-%d" % i), {"prometheus": HASH})
    assert len(auth._cache) == 4


def test_the_web_config_is_re_read_and_a_broken_one_kept_out(tmp_path: Path) -> None:
    """A change is applied on the next look; a broken file is logged once and the previous config stays."""
    path = tmp_path / "web-config.yml"
    path.write_text(f"basic_auth_users:\n  prometheus: '{HASH.decode()}'\n")
    now = [0.0]
    watch = WebConfigWatch(str(path), clock=lambda: now[0])
    assert set(watch.current().users) == {"prometheus"}

    path.write_text(f"basic_auth_users:\n  grafana: '{HASH.decode()}'\n")
    assert set(watch.current().users) == {"prometheus"}  # not looked at yet: at most once a second
    now[0] = 1.5
    assert set(watch.current().users) == {"grafana"}
    assert watch.reloads == 1

    path.write_text("basic_auth_users:\n  grafana: plain-text-password\n")
    with structlog.testing.capture_logs() as logs:
        for step in range(3):
            now[0] = 3.0 + 1.5 * step
            assert set(watch.current().users) == {"grafana"}
    failures = [line for line in logs if line["event"] == "web_config_reload_failed"]
    assert len(failures) == 1 and ":2: basic_auth_users.grafana" in failures[0]["problems"][0]
    assert "plain-text-password" not in repr(logs)
    assert watch.reload_failures == 1


def test_a_missing_web_config_at_start_is_an_error(tmp_path: Path) -> None:
    """At start-up there is no previous config to keep: the error goes to the caller."""
    with pytest.raises(ConfigError):
        WebConfigWatch(str(tmp_path / "absent.yml"))


def test_sighup_turns_the_web_config_on_and_a_broken_file_keeps_it(tmp_path: Path) -> None:
    """A reload that adds web_config_file protects every path from then on; breaking the file keeps it protected."""
    config = write_config(tmp_path, [])
    with DaemonProcess(config) as daemon:
        assert _status(daemon.address) == 200
        (tmp_path / "web-config.yml").write_text(f"basic_auth_users:\n  prometheus: '{HASH.decode()}'\n")
        write_config(tmp_path, [], web_config_file="web-config.yml")
        daemon.send_signal(signal.SIGHUP)
        daemon.wait_event("web_config_followed")
        assert _status(daemon.address) == 401
        assert _status(daemon.address, basic("prometheus", PASSWORD)) == 200

        (tmp_path / "web-config.yml").write_text("basic_auth_users:\n  prometheus: oops\n")
        time.sleep(1.2)
        assert _status(daemon.address) == 401  # this request notices the change: broken, so the old one stays
        failed = daemon.wait_event("web_config_reload_failed")
        assert "basic_auth_users.prometheus" in failed["problems"][0]
        assert _status(daemon.address, basic("prometheus", PASSWORD)) == 200


def _status(address: str, authorization: str | None = None) -> int:
    request = urllib.request.Request(f"http://{address}/api/v1/status")
    if authorization:
        request.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code

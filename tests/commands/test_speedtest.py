"""`telemetryd speedtest SCHOOL` and `telemetryd responder` as a NOC engineer runs them, in real processes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import school, write_config

TOKEN = "t0ken-for-the-cli-test"


@pytest.fixture
def responder(tmp_path: Path) -> Iterator[str]:
    """`telemetryd responder` on a free loopback port; yields its base URL."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "telemetryd", "responder", "--listen", "127.0.0.1:0", "--token-file", str(token_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("ready "), line
        yield f"http://{line.removeprefix('ready ')}"
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=10)
        assert TOKEN not in stderr


def _config(tmp_path: Path, url: str, token: str, total_mbps: float) -> Path:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "speed-token").write_text(token)
    speed = {"url": url, "credentials": "speed-token"}
    contract = {"total_mbps": total_mbps, "segments": {"alarm": 0, "video": 0, "education": 0}}
    devices = [{"id": "s1-router", "kind": "router", "host": "127.0.0.1"}]
    return write_config(
        tmp_path,
        [school("s1", devices, speedtest=speed, contract=contract)],
        credentials_directory="credentials",
        speedtest={"max_seconds": 1.5, "max_bytes": 200_000_000, "streams": 2},
    )


def _speedtest(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "telemetryd", "speedtest", "s1", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_speedtest_prints_both_directions_against_the_contract(tmp_path: Path, responder: str) -> None:
    """Loopback moves far more than a 1 Mbps contract: both directions print OK and the exit code is 0."""
    result = _speedtest(_config(tmp_path, responder, TOKEN, 1.0))
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("s1 School s1 (Abay): contract 1 Mbps, responder http://127.0.0.1:")
    assert [line.split()[0] for line in lines[1:]] == ["download", "upload"]
    assert all(line.split()[-1].endswith("]") and " OK " in line for line in lines[1:])
    assert TOKEN not in result.stdout + result.stderr


def test_speedtest_below_contract_exits_one(tmp_path: Path, responder: str) -> None:
    """Against an impossible 1,000,000 Mbps contract both directions print BELOW CONTRACT and exit 1."""
    result = _speedtest(_config(tmp_path, responder, TOKEN, 1_000_000.0))
    assert result.returncode == 1
    assert result.stdout.count("BELOW CONTRACT") == 2


def test_speedtest_with_a_wrong_token_tries_once_and_says_unauthorized(tmp_path: Path, responder: str) -> None:
    """A rejected token fails the download with `unauthorized` and the upload is not attempted."""
    result = _speedtest(_config(tmp_path, responder, "wrong-token-value", 150.0))
    assert result.returncode == 1
    assert "download  FAIL  unauthorized" in result.stdout
    assert "upload" not in result.stdout
    assert "wrong-token-value" not in result.stdout + result.stderr


def test_speedtest_of_an_unknown_school_names_it(tmp_path: Path) -> None:
    """An id that is not in the inventory is a clear error, exit 2."""
    config = write_config(tmp_path, [school("s1", [{"id": "r", "kind": "router", "host": "127.0.0.1"}])])
    result = subprocess.run(
        [sys.executable, "-m", "telemetryd", "speedtest", "nope", "-c", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "no school 'nope' in the inventory" in result.stderr

"""`telemetryd probe -p isapis:PORT` and `telemetryd pins` in real processes against a simulated HTTPS camera."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from telemetryd.probes.isapi.pins import PIN_FILE, short
from telemetryd.sim.certs import der_sha256
from telemetryd.sim.hikvision import HikvisionSim, SimDevice
from tests.helpers import school, write_config

pytestmark = pytest.mark.integration

PASSWORD = "Pins-Cli-Secret-5"


async def _telemetryd(*args: str) -> tuple[int, str]:
    """Run `python -m telemetryd ARGS`; exit code and both streams."""
    env = {k: v for k, v in os.environ.items() if k not in ("CREDENTIALS_DIRECTORY", "STATE_DIRECTORY")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "telemetryd",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    except TimeoutError:
        proc.kill()  # only the process this helper started
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_probe_pins_then_a_swap_fails_until_forgotten(tmp_path: Path) -> None:
    """`probe -p isapis:PORT` pins on first use; after a swap it fails certificate_changed; `pins forget` re-trusts."""
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "hik").write_text(f"admin:{PASSWORD}\n")
    async with HikvisionSim() as sim:
        device = SimDevice(kind="camera", password=PASSWORD, tls=True)
        host, port = await sim.add(device)
        config = write_config(
            tmp_path,
            [school("s1", [{"id": "s1-cam-1", "kind": "camera", "host": host, "credentials": "hik"}])],
            credentials_directory="credentials",
            state_directory="state",
            probes={"isapi": {"timeout": 5}},
        )
        probe = ("probe", "s1-cam-1", "-c", str(config), "-p", f"isapis:{port}")
        code, out = await _telemetryd(*probe)
        assert code == 0 and f"isapis:{port} OK" in out, out
        pinned = short(der_sha256(device.certificate))  # type: ignore[arg-type]
        assert f"certificate {pinned} (pinned)" in out
        assert (tmp_path / "state" / PIN_FILE).exists()

        await sim.swap_certificate((host, port))
        seen = device.requests
        code, out = await _telemetryd(*probe)
        assert code == 1 and "certificate_changed" in out and device.requests == seen, out

        code, out = await _telemetryd("pins", "list", "-c", str(config))
        assert code == 0 and f"{host}:{port}" in out and pinned in out, out
        code, out = await _telemetryd("pins", "forget", f"{host}:{port}", "-c", str(config))
        assert code == 0, out
        code, out = await _telemetryd("pins", "forget", f"{host}:{port}", "-c", str(config))
        assert code == 1 and "no pin" in out

        code, out = await _telemetryd(*probe)
        assert code == 0 and short(der_sha256(device.certificate)) in out, out  # type: ignore[arg-type]
    assert PASSWORD not in (tmp_path / "state" / PIN_FILE).read_text()


async def test_pins_without_a_state_directory_says_so(tmp_path: Path) -> None:
    """With no state directory `pins list` explains that pins live in memory only, exit 2."""
    config = write_config(tmp_path, [school("s1", [])])
    code, out = await _telemetryd("pins", "list", "-c", str(config))
    assert code == 2 and "state_directory" in out, out

"""`telemetryd probe` as a NOC engineer runs it, in a real process, against the project's simulators on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from telemetryd.sim.hikvision import HikvisionSim, SimDevice
from telemetryd.sim.rtsp import RtspCamera, RtspResponder
from tests.conftest import require_root
from tests.helpers import school, write_config

pytestmark = pytest.mark.integration

PASSWORD = "Pr0be-Cli-Secret-7"
WRONG = "Wr0ng-Cli-Guess-3"


@dataclass(frozen=True)
class Run:
    """What one `telemetryd probe` process printed and how it exited."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        """Both streams, for assertions that nothing secret leaked anywhere."""
        return self.stdout + self.stderr


async def _probe(*args: str) -> Run:
    """Run `python -m telemetryd probe ARGS` without blocking the loop the simulators serve on."""
    env = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}  # secrets come from the config only
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "telemetryd",
        "probe",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 30)
    except TimeoutError:
        proc.kill()  # only the process this helper started
        await proc.wait()
        raise
    assert proc.returncode is not None
    return Run(proc.returncode, stdout.decode(), stderr.decode())


def _config(tmp_path: Path, device: dict[str, Any], secret: str) -> Path:
    """Settings and a one-device inventory; `<credentials_directory>/hik` holds `secret` as user:password."""
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "hik").write_text(f"admin:{secret}\n")
    return write_config(
        tmp_path,
        [school("s1", [{"credentials": "hik", **device}])],
        credentials_directory="credentials",
        probes={"isapi": {"timeout": 5}, "axpro": {"timeout": 5}},
    )


def _icmp_socket_available() -> bool:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_RAW):
        try:
            socket.socket(socket.AF_INET, kind, socket.IPPROTO_ICMP).close()
        except PermissionError:
            continue
        return True
    return False


@pytest.fixture
def listening_port() -> Iterator[int]:
    """A TCP listener on 127.0.0.1 (port 0: the kernel picks); the kernel completes the handshake from its backlog."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port bound but not listening: reserved for the test, and connecting to it is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


async def test_icmp_pings_loopback() -> None:
    """A bare address defaults to the icmp probe, which gets every echo reply from 127.0.0.1 and exits 0."""
    if not _icmp_socket_available():
        require_root("an ICMP socket (net.ipv4.ping_group_range excludes this group and there is no CAP_NET_RAW)")
    run = await _probe("127.0.0.1")
    assert run.returncode == 0, run.output
    lines = run.stdout.splitlines()
    assert lines[0] == "127.0.0.1"
    assert re.fullmatch(r"  icmp +OK  rtt \d+\.\d\d ms  (\d+)/\1 replies, loss 0%", lines[1]), lines
    assert "icmp:" not in run.stderr  # the shared socket opened: no "unavailable" line


async def test_tcp_open_port_is_ok(listening_port: int) -> None:
    """A connect to a port the test listens on prints OK with an rtt and exits 0."""
    run = await _probe("127.0.0.1", "-p", f"tcp:{listening_port}")
    assert run.returncode == 0, run.output
    assert re.fullmatch(rf"127\.0\.0\.1\n  tcp:{listening_port} +OK  rtt \d+\.\d\d ms\n", run.stdout), run.stdout


async def test_tcp_closed_port_fails_refused(closed_port: int) -> None:
    """A connect to a port nobody listens on prints FAIL refused and exits 1."""
    run = await _probe("127.0.0.1", "-p", f"tcp:{closed_port}")
    assert run.returncode == 1, run.output
    pattern = rf"  tcp:{closed_port} +FAIL  refused: port {closed_port} refused the connection  \(\d+\.\d\d s\)"
    assert re.search(pattern, run.stdout), run.stdout


async def test_rtsp_options_against_the_simulated_stream_server() -> None:
    """The simulated camera's RTSP server answers OPTIONS: OK with an rtt, exit 0, one request seen."""
    async with RtspResponder() as sim:
        camera = RtspCamera()
        host, port = await sim.add(camera, "127.0.0.1")
        run = await _probe(host, "-p", f"rtsp:{port}")
    assert run.returncode == 0, run.output
    assert re.search(rf"^  rtsp:{port} +OK  rtt \d+\.\d\d ms$", run.stdout, re.MULTILINE), run.stdout
    assert camera.requests == 1


async def test_isapi_camera_prints_the_simulated_identity(tmp_path: Path) -> None:
    """`-p isapi:PORT` on a camera id logs in from its secret file, printing the simulator's model, firmware, serial."""
    async with HikvisionSim() as sim:
        device = SimDevice(kind="camera", password=PASSWORD, model="DS-2CD2143G2-IS", serial="DS-2CD2143G2-IS0042XYZ")
        host, port = await sim.add(device, "127.0.0.1")
        config = _config(tmp_path, {"id": "s1-cam-1", "kind": "camera", "host": host}, PASSWORD)
        run = await _probe("s1-cam-1", "-c", str(config), "-p", f"isapi:{port}")
    assert run.returncode == 0, run.output
    lines = run.stdout.splitlines()
    assert lines[0] == f"s1-cam-1 (camera, {host})"
    assert lines[1] == f"  isapi:{port} OK"
    assert "    model DS-2CD2143G2-IS, firmware V5.7.14, serial DS-2CD2143G2-IS0042XYZ, type IPCamera" in lines
    assert re.search(r"^    clock [+-]\d+\.\d s against this machine$", run.stdout, re.MULTILINE), run.stdout
    assert "not running" not in run.output
    assert (device.authenticated >= 1, device.failed_logins) == (True, 0)
    assert PASSWORD not in run.output


async def test_isapi_nvr_from_the_inventory_prints_channels_disks_recording(tmp_path: Path) -> None:
    """An NVR id with its inventory probes prints identity, channels, disk and recording (channel 3 offline, 2 idle)."""
    async with HikvisionSim() as sim:
        device = SimDevice(kind="nvr", password=PASSWORD, channels=4, offline_channels={3: "netUnreachable"})
        device.idle_channels = {2}
        host, port = await sim.add(device, "127.0.0.1")
        config = _config(tmp_path, {"id": "s1-nvr", "kind": "nvr", "host": host, "probes": [f"isapi:{port}"]}, PASSWORD)
        run = await _probe("s1-nvr", "-c", str(config))
    assert run.returncode == 1, run.output  # an offline channel fails the check
    lines = run.stdout.splitlines()
    assert lines[0] == f"s1-nvr (nvr, {host})"
    assert lines[1].startswith(f"  isapi:{port} FAIL  "), lines
    assert f"    model DS-7608NXI-I2, firmware V5.7.14, serial {device.serial}, type NVR" in lines
    assert "    channels: 4, offline: 3" in lines
    assert "    disk 1: ok" in lines
    assert "    recording: 2/3 channels, idle: 2" in lines, "\n".join(lines)  # offline channels are not searched
    assert "    problem [channels] channel_offline: channel(s) offline: 3 (netUnreachable)" in lines
    assert device.failed_logins == 0
    assert PASSWORD not in run.output


async def test_isapi_wrong_password_costs_exactly_one_failed_login(tmp_path: Path) -> None:
    """A wrong password in the secret file prints auth_failed, exits 1, and the camera counts one failed login."""
    async with HikvisionSim() as sim:
        device = SimDevice(kind="camera", password=PASSWORD)
        host, port = await sim.add(device, "127.0.0.1")
        config = _config(tmp_path, {"id": "s1-cam-1", "kind": "camera", "host": host}, WRONG)
        run = await _probe("s1-cam-1", "-c", str(config), "-p", f"isapi:{port}")
    assert run.returncode == 1, run.output
    assert f"  isapi:{port} FAIL  auth_failed: credential rejected (401)" in run.stdout
    assert "model " not in run.stdout
    assert (device.failed_logins, device.authenticated) == (1, 0)
    assert WRONG not in run.output and PASSWORD not in run.output


async def test_axpro_prints_areas_and_zones(tmp_path: Path) -> None:
    """`-p axpro:PORT` on a panel id logs in to the simulated AX PRO and prints its area and every zone."""
    async with HikvisionSim() as sim:
        panel = SimDevice(kind="axpro", password=PASSWORD, zones=3)
        host, port = await sim.add(panel, "127.0.0.1")
        config = _config(tmp_path, {"id": "s1-alarm", "kind": "alarm_panel", "host": host}, PASSWORD)
        run = await _probe("s1-alarm", "-c", str(config), "-p", f"axpro:{port}")
    assert run.returncode == 0, run.output
    lines = [line for line in run.stdout.splitlines() if line.startswith("  ")]
    assert lines == [
        f"  axpro:{port} OK",
        "    area 1 School: away",
        "    zone 1 Zone 1: online",
        "    zone 2 Zone 2: online",
        "    zone 3 Zone 3: online",
    ]
    assert (panel.authenticated, panel.failed_logins) == (1, 0)
    assert PASSWORD not in run.output

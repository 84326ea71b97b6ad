"""The fleet on real sockets: netns mode (root) and loopback mode (anyone).

Traffic goes only to 127.0.0.0/8 or into namespaces these tests create, after the
fleet's route guard has passed. Every fleet is stopped in a `finally`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from io import StringIO
from pathlib import Path

import pytest

from telemetryd.config.loader import load_inventory
from telemetryd.sim import fleet as fleet_module
from telemetryd.sim.city import City, Condition, generate_city
from telemetryd.sim.cli import run_simulate
from telemetryd.sim.fleet import (
    Fleet,
    FleetError,
    ip_route_get,
    ip_routes,
    overlapping_routes,
    route_leads_into,
)

IS_ROOT = os.geteuid() == 0
root_only = pytest.mark.skipif(not IS_ROOT, reason="netns fleets need root (ip netns, veth, routes, raw ICMP)")
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # root may exceed net.core.rmem_max
MARGIN = 0.5
"""Seconds around a flap where the fleet may still be switching; such checks are skipped."""


def free_netns_base() -> str:
    """A 10.x.0.0/16 no route on this machine touches (10.200 is left to `make demo`)."""
    routes = ip_routes()
    for second in range(201, 255):
        base = f"10.{second}.0.0/16"
        if not overlapping_routes(routes, ipaddress.IPv4Network(base)):
            return base
    pytest.fail("no free 10.x.0.0/16 on this machine for a test fleet")


def faulty_city(base: str, *, tcp_port_offset: int = 0) -> City:
    """3 schools × 10 devices with every kind of fault and quick flapping (4–6 s cycles)."""
    return generate_city(
        3,
        10,
        seed=5,
        base=base,
        dead_share=0.1,
        flapping_share=0.1,
        closed_port_share=0.1,
        flap_period=(4.0, 6.0),
        tcp_port_offset=tcp_port_offset,
    )


def icmp_echo(hosts: list[str], timeout: float = 1.0) -> set[str]:
    """The hosts that answer one ICMP echo within `timeout` (raw socket, root only)."""
    ident = (os.getpid() ^ threading.get_ident()) & 0xFFFF
    wanted = set(hosts)
    answered: set[str] = set()
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        # Replies to a burst arrive while we still send: room for them, and drain as we go.
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 * 1024 * 1024)
        for sequence, host in enumerate(hosts):
            header = struct.pack("!BBHHH", 8, 0, 0, ident, sequence & 0xFFFF)
            payload = b"telemetryd-sim-test"
            checksum = _checksum(header + payload)
            sock.sendto(struct.pack("!BBHHH", 8, 0, checksum, ident, sequence & 0xFFFF) + payload, (host, 0))
            if sequence % 100 == 99:
                _collect_echo_replies(sock, ident, wanted, answered, time.monotonic())
        _collect_echo_replies(sock, ident, wanted, answered, time.monotonic() + timeout)
    return answered


def _collect_echo_replies(
    sock: socket.socket, ident: int, wanted: set[str], answered: set[str], deadline: float
) -> None:
    while answered != wanted:
        remaining = deadline - time.monotonic()
        if remaining > 0:
            sock.settimeout(remaining)
        else:
            sock.setblocking(False)  # just drain what already arrived
        try:
            packet, (source, _) = sock.recvfrom(2048)
        except (TimeoutError, BlockingIOError):
            return
        offset = (packet[0] & 0x0F) * 4
        kind, _, _, reply_ident, _ = struct.unpack("!BBHHH", packet[offset : offset + 8])
        if kind == 0 and reply_ident == ident and source in wanted:
            answered.add(source)


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


async def tcp_outcome(host: str, port: int, timeout: float = 1.0) -> str:
    """``open``, ``refused`` or ``timeout`` for one TCP connect."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except ConnectionRefusedError:
        return "refused"
    except TimeoutError:
        return "timeout"
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return "open"


def netns_names() -> list[str]:
    """Namespaces `ip netns list` shows."""
    output = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in output.splitlines() if line.strip()]


def process_gone(pid: int) -> bool:
    """True when `pid` no longer runs (missing, or a zombie nobody reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def wait_until_gone(pid: int, seconds: float = 5.0) -> bool:
    """Poll until `pid` has exited; False if it still runs after `seconds`."""
    deadline = time.monotonic() + seconds
    while not process_gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture(scope="module")
def netns_fleet() -> Iterator[Fleet]:
    """A running netns fleet of 30 devices, shared by the read-only root tests of this module."""
    if not IS_ROOT:
        pytest.skip("netns fleets need root (ip netns, veth, routes, raw ICMP)")
    fleet = Fleet(faulty_city(free_netns_base()), mode="netns")
    try:
        fleet.start()
        yield fleet
    finally:
        fleet.stop()


@root_only
@pytest.mark.root
@pytest.mark.integration
def test_netns_routes_lead_into_our_veth(netns_fleet: Fleet) -> None:
    """Every device address routes into the fleet's own veth, nothing toward the real network."""
    assert netns_fleet.mode == "netns"
    assert netns_fleet.ping_allowed
    assert netns_fleet.ns_name in netns_names()
    veth = netns_fleet.root_veth
    assert veth is not None
    for truth in netns_fleet.city.devices():
        assert route_leads_into(ip_route_get(truth.host), veth), truth.host


@root_only
@pytest.mark.root
@pytest.mark.integration
def test_netns_ping_answers_alive_hosts_and_not_dead_ones(netns_fleet: Fleet) -> None:
    """Alive and closed-port hosts answer ICMP echo; dead (and down flapping) hosts stay silent."""
    truths = list(netns_fleet.city.devices())
    sent_at = time.time()
    answered = icmp_echo([t.host for t in truths], timeout=1.0)
    checked = 0
    for truth in truths:
        expected = netns_fleet.expected(truth.device_id, "icmp", sent_at, margin=1.5)
        if expected is None:
            continue
        checked += 1
        assert (truth.host in answered) is expected, f"{truth.device_id} ({truth.condition})"
    assert checked >= 25
    assert any(t.condition is Condition.DEAD for t in truths)


@root_only
@pytest.mark.root
@pytest.mark.integration
async def test_netns_tcp_opens_refuses_and_times_out_per_truth(netns_fleet: Fleet) -> None:
    """Open ports accept, closed ports refuse with RST, dead hosts time out silently."""
    checks = [(t, port) for t in netns_fleet.city.devices() for port in t.tcp_ports]
    started = time.time()
    outcomes = await asyncio.gather(*(tcp_outcome(t.host, port) for t, port in checks))
    seen: set[str] = set()
    for (truth, port), outcome in zip(checks, outcomes, strict=True):
        expected = netns_fleet.expected(truth.device_id, f"tcp:{port}", started, margin=1.5)
        if expected is None:
            continue
        if expected:
            want = "open"
        elif truth.condition is Condition.CLOSED_PORTS:
            want = "refused"
        else:
            want = "timeout"  # dead, or flapping while down: the address is gone
        assert outcome == want, f"{truth.device_id} tcp:{port} ({truth.condition})"
        seen.add(outcome)
    assert seen == {"open", "refused", "timeout"}


@root_only
@pytest.mark.root
@pytest.mark.integration
async def test_netns_flapping_device_follows_its_schedule(netns_fleet: Fleet) -> None:
    """A flapping device answers ping exactly when its schedule says, across two flips."""
    truth = next(netns_fleet.city.devices(Condition.FLAPPING))
    assert truth.flap is not None
    states = []
    for _ in range(2):
        flip = truth.flap.next_transition(time.time())
        await asyncio.sleep(flip + 0.6 - time.time())
        at = time.time()
        expected = netns_fleet.expected(truth.device_id, "icmp", at, margin=MARGIN)
        assert expected is not None
        answered = await asyncio.to_thread(icmp_echo, [truth.host], 0.5)
        assert (truth.host in answered) is expected
        states.append(expected)
    assert states[0] != states[1]


@root_only
@pytest.mark.root
@pytest.mark.integration
def test_netns_stop_removes_namespace_veth_route_and_responder() -> None:
    """After stop() no namespace, veth, route or responder of the fleet is left, and stop() repeats."""
    base = free_netns_base()
    fleet = Fleet(generate_city(2, 5, base=base), mode="netns")
    try:
        fleet.start()
        ns, veth, pid = fleet.ns_name, fleet.root_veth, fleet.responder_pid
        assert ns is not None
        assert veth is not None
        assert pid is not None
        assert ns in netns_names()
    finally:
        fleet.stop()
    assert ns not in netns_names()
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert veth not in links
    assert not overlapping_routes(ip_routes(), ipaddress.IPv4Network(base))
    assert process_gone(pid)
    assert fleet.ns_name is None
    assert not fleet.running
    fleet.stop()


@root_only
@pytest.mark.root
@pytest.mark.integration
def test_netns_guard_refuses_a_route_out_of_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """When a fleet address would route via eth0, start() refuses and tears everything down."""
    monkeypatch.setattr(
        fleet_module,
        "ip_route_get",
        lambda address: f"{address} via 192.0.2.1 dev eth0 src 192.0.2.2 uid 0 \n    cache \n",
    )
    before = set(netns_names())
    fleet = Fleet(generate_city(1, 5, base=free_netns_base()), mode="netns")
    try:
        with pytest.raises(FleetError, match="safety guard"):
            fleet.start()
        assert set(netns_names()) == before
        assert fleet.responder_pid is None
        assert not fleet.running
    finally:
        fleet.stop()


@root_only
@pytest.mark.root
@pytest.mark.integration
def test_netns_refuses_a_range_already_routed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fleet range overlapping an existing route is refused before anything is created."""
    base = free_netns_base()
    taken = str(next(ipaddress.IPv4Network(base).subnets(new_prefix=24)))
    monkeypatch.setattr(fleet_module, "ip_routes", lambda: [{"dst": taken, "dev": "wg0"}])
    before = set(netns_names())
    fleet = Fleet(generate_city(1, 5, base=base), mode="netns")
    try:
        with pytest.raises(FleetError, match="overlaps routes"):
            fleet.start()
        assert set(netns_names()) == before
    finally:
        fleet.stop()


@root_only
@pytest.mark.root
def test_netns_refuses_public_ranges() -> None:
    """A city on public addresses is never brought up in netns mode."""
    fleet = Fleet(generate_city(1, 5, base="8.8.0.0/16"), mode="netns")
    try:
        with pytest.raises(FleetError, match="private"):
            fleet.start()
    finally:
        fleet.stop()


# --- loopback: runs as anyone --------------------------------------------------------------


@pytest.mark.integration
async def test_loopback_tcp_truth() -> None:
    """On loopback, open ports accept and closed, dead and down-flapping devices refuse."""
    fleet = Fleet(faulty_city("127.201.0.0/16", tcp_port_offset=10000), mode="loopback")
    try:
        await asyncio.to_thread(fleet.start)
        assert fleet.ns_name is None
        assert not fleet.ping_allowed
        checks = [(t, port) for t in fleet.city.devices() for port in t.tcp_ports]
        started = time.time()
        outcomes = await asyncio.gather(*(tcp_outcome(t.host, port) for t, port in checks))
        seen: set[bool] = set()
        for (truth, port), outcome in zip(checks, outcomes, strict=True):
            expected = fleet.expected(truth.device_id, f"tcp:{port}", started, margin=1.0)
            if expected is None:
                continue
            assert outcome == ("open" if expected else "refused"), f"{truth.device_id} tcp:{port}"
            seen.add(expected)
        assert seen == {True, False}
        assert fleet.expected(checks[0][0].device_id, "icmp") is None
    finally:
        await asyncio.to_thread(fleet.stop)


@pytest.mark.integration
async def test_loopback_flapping_device_closes_and_reopens() -> None:
    """A flapping device's port accepts while it is up and refuses while it is down."""
    city = faulty_city("127.202.0.0/16", tcp_port_offset=10000)
    truth = next(t for t in city.devices(Condition.FLAPPING) if t.tcp_ports)
    assert truth.flap is not None
    port = truth.tcp_ports[0]
    async with Fleet(city, mode="loopback") as fleet:
        states = []
        for _ in range(2):
            flip = truth.flap.next_transition(time.time())
            await asyncio.sleep(flip + 0.4 - time.time())
            expected = fleet.expected(truth.device_id, f"tcp:{port}", margin=0.3)
            assert expected is not None
            assert await tcp_outcome(truth.host, port) == ("open" if expected else "refused")
            states.append(expected)
        assert states[0] != states[1]


@pytest.mark.integration
async def test_async_context_manager_stops_the_responder() -> None:
    """Leaving `async with Fleet(...)` ends the responder process it started."""
    async with Fleet(generate_city(1, 5, base="127.203.0.0/16", tcp_port_offset=10000), mode="loopback") as fleet:
        pid = fleet.responder_pid
        assert pid is not None
        assert fleet.running
    assert await asyncio.to_thread(wait_until_gone, pid)
    assert not fleet.running


@pytest.mark.integration
def test_loopback_refuses_a_city_outside_127() -> None:
    """Loopback mode will not listen on a city generated for another range."""
    fleet = Fleet(generate_city(1, 5, base="10.250.0.0/16"), mode="loopback")
    try:
        with pytest.raises(FleetError, match=r"127\.0\.0\.0/8"):
            fleet.start()
        assert fleet.responder_pid is None
    finally:
        fleet.stop()


CHILD = """
import sys, time
from telemetryd.sim import Fleet, generate_city
fleet = Fleet(generate_city(1, 5, base="127.204.0.0/16", tcp_port_offset=10000), mode="loopback").start()
print("responder", fleet.responder_pid, flush=True)
time.sleep(60)
"""


@pytest.mark.integration
def test_responder_exits_when_its_parent_is_killed() -> None:
    """A responder whose parent dies without cleanup (SIGKILL) exits on its own."""
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        line = ""
        while not line.startswith("responder "):
            line = child.stdout.readline()
            assert line, "the child fleet did not start"
        responder_pid = int(line.split()[1])
        assert not process_gone(responder_pid)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert wait_until_gone(responder_pid)


@pytest.mark.integration
def test_run_simulate_writes_inventory_runs_and_cleans_up(tmp_path: Path) -> None:
    """run_simulate writes a loadable inventory, prints a summary, and stops when asked."""
    stop = threading.Event()
    out = StringIO()
    codes: list[int] = []
    runner = threading.Thread(
        target=lambda: codes.append(run_simulate(2, 6, tmp_path, 3, "loopback", stop=stop, out=out))
    )
    runner.start()
    try:
        deadline = time.monotonic() + 30
        while "Ctrl-C" not in out.getvalue() and runner.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        runner.join(30)
    assert codes == [0]
    summary = out.getvalue()
    assert "2 schools, 12 devices" in summary
    assert "mode loopback" in summary
    assert str(tmp_path) in summary
    assert load_inventory(tmp_path).device_count == 12

"""Bring a simulated city's devices up on real addresses, and take them down again.

Two modes:

``netns`` (root)
    A network namespace per fleet joined to the root namespace by a veth pair on the
    last /24 of the city's /16. Alive hosts are /32 addresses on the namespace's `lo`;
    the root namespace routes the /16 into the veth. Forwarding stays off inside, so
    unassigned (dead) addresses time out silently, and ports without a listener
    refuse with RST. Before `start` returns, a guard checks that the kernel routes
    sample fleet addresses into our veth; traffic must never reach the real network.

``loopback`` (anyone)
    Devices on 127.x.y.z. Every 127/8 address answers ping, so ICMP truth does not
    hold in this mode (`Fleet.expected` answers None for ``icmp``); dead devices and
    flapping devices while down have no listener, so they refuse instead of timing out.

In both modes one responder process (`telemetryd.sim.fleet_responder`) listens per
(address, port) and enacts the flapping schedule from the same `FlapSchedule` that
`City.expected` reads, so behaviour and truth agree.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ipaddress
import itertools
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import structlog

import telemetryd
from telemetryd.sim._proc import netns_names, run
from telemetryd.sim._proc import pid_alive as _pid_alive
from telemetryd.sim._proc import read_line as _read_line
from telemetryd.sim.city import FLAP_MARGIN, City, Condition
from telemetryd.sim.fleet_responder import HANDOVER_PREFIX, HostSpec, ResponderSpec

Mode = Literal["netns", "loopback"]

NETNS_BASE = "10.200.0.0/16"
LOOPBACK_BASE = "127.200.0.0/16"
LOOPBACK_PORT_OFFSET = 10000
"""Added to TCP ports of a loopback city run without root (ports below 1024 need root)."""
NS_LINK = "uplink"
"""The namespace's end of the veth pair."""
GUARD_SAMPLE = 12
"""Random device addresses checked by the route guard, on top of the range's ends."""

_LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")
_NS_NAME = re.compile(r"tlmd-(\d+)-(\d+)")
_VETH_NAME = re.compile(r"tlv(\d+)n(\d+)a")
_fleet_numbers = itertools.count()
log = structlog.get_logger("telemetryd.sim")


class FleetError(RuntimeError):
    """The fleet could not be brought up or taken down; the message says why and what to do."""


def resolve_mode(mode: str = "auto") -> Mode:
    """``auto`` becomes ``netns`` when root with `ip` available, else ``loopback``."""
    if mode == "auto":
        return "netns" if os.geteuid() == 0 and shutil.which("ip") else "loopback"
    if mode in ("netns", "loopback"):
        return "netns" if mode == "netns" else "loopback"
    raise FleetError(f"unknown fleet mode {mode!r}; expected auto, netns or loopback")


def default_base(mode: Mode) -> str:
    """The /16 a city for `mode` should be generated in."""
    return NETNS_BASE if mode == "netns" else LOOPBACK_BASE


def port_offset_for(mode: Mode) -> int:
    """The `tcp_port_offset` a city needs so this process can bind its ports in `mode`."""
    if mode == "netns" or os.geteuid() == 0:
        return 0
    return LOOPBACK_PORT_OFFSET if _unprivileged_port_start() > 80 else 0


def route_leads_into(ip_route_get_output: str, veth: str) -> bool:
    """Whether `ip route get ADDR` output sends the packet out of interface `veth`.

    Local, unreachable, blackhole and prohibit answers, and any other device, are a no.
    """
    lines = [line for line in ip_route_get_output.splitlines() if line.strip()]
    if not lines:
        return False
    words = lines[0].split()
    if words[0] in ("local", "broadcast", "unreachable", "blackhole", "prohibit", "throw", "multicast"):
        return False
    devices = [words[i + 1] for i, word in enumerate(words[:-1]) if word == "dev"]
    return devices == [veth]


def overlapping_routes(routes: Sequence[Mapping[str, Any]], network: ipaddress.IPv4Network) -> list[str]:
    """Routes (from ``ip -4 -j route show table all``) whose destination overlaps `network`.

    Default routes are left out: every address overlaps them, and our more specific
    route wins over them.
    """
    clashes: list[str] = []
    for route in routes:
        destination = str(route.get("dst", ""))
        if destination in ("", "default", "0.0.0.0/0"):
            continue
        try:
            prefix = ipaddress.IPv4Network(destination, strict=False)
        except ValueError:
            continue
        if prefix.prefixlen > 0 and prefix.overlaps(network):
            where = f" dev {route['dev']}" if route.get("dev") else ""
            table = f" table {route['table']}" if route.get("table") else ""
            clashes.append(f"{route.get('type', 'unicast')} {destination}{where}{table}")
    return clashes


def ip_routes() -> list[dict[str, Any]]:
    """Every IPv4 route of the root namespace, all tables, as `ip -j` reports them."""
    output = _ip("-4", "-j", "route", "show", "table", "all")
    parsed = json.loads(output or "[]")
    return [r for r in parsed if isinstance(r, dict)]


def ip_route_get(address: str) -> str:
    """What `ip route get ADDR` says about `address` in the root namespace."""
    return _ip("route", "get", address)


def guard_sample(city: City) -> list[str]:
    """Addresses the route guard checks: both ends of the usable range, first and last device, a few more."""
    hosts = [t.host for t in city.devices()]
    network = city.network
    ends = [str(network.network_address + 1), str(city.link_network.network_address - 2)]
    picked = random.Random(city.seed).sample(hosts, min(GUARD_SAMPLE, len(hosts)))
    return list(dict.fromkeys([*ends, hosts[0], hosts[-1], *picked]))


def reap_stale_fleets() -> list[str]:
    """Remove namespaces and veths that fleets of dead processes left behind (SIGKILL).

    Only names this module makes (``tlmd-<pid>-<n>``, ``tlv<pid>n<n>a``) whose pid no
    longer runs are touched. Returns what was removed; does nothing without root.
    """
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return []
    removed: list[str] = []
    for name in _netns_names():
        match = _NS_NAME.fullmatch(name)
        if match and not _pid_alive(int(match[1])):
            _ip("netns", "del", name, check=False)
            removed.append(f"netns {name}")
    for link in _root_links():
        match = _VETH_NAME.fullmatch(link)
        if match and not _pid_alive(int(match[1])):
            _ip("link", "del", link, check=False)
            removed.append(f"link {link}")
    for item in removed:
        log.info("stale_fleet_removed", what=item)
    return removed


class Fleet:
    """A city's devices, up on the network: ``with Fleet(city) as fleet:`` or ``start()``/``stop()``.

    `stop` removes everything `start` created (route, veth, namespace, responder
    process) and may be called any number of times; it also runs at interpreter exit.
    """

    def __init__(self, city: City, mode: str = "auto", *, ready_timeout: float | None = None) -> None:
        self.city = city
        self._mode = resolve_mode(mode)
        self._ready_timeout = ready_timeout
        self._lock = threading.RLock()
        self._ns: str | None = None
        self._veth: str | None = None
        self._route: str | None = None
        self._responder: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None
        self._running = False
        self.started_in: float | None = None
        """Seconds the last `start` took."""

    @property
    def mode(self) -> Mode:
        """``netns`` or ``loopback``, after resolving ``auto``."""
        return self._mode

    @property
    def ns_name(self) -> str | None:
        """The namespace holding the devices; None in loopback mode or when stopped."""
        return self._ns

    @property
    def root_veth(self) -> str | None:
        """The root namespace's end of the veth pair; probe traffic leaves through it."""
        return self._veth

    @property
    def source_address(self) -> str | None:
        """The root side's address on the veth link (netns mode), the probes' source."""
        if self._mode != "netns":
            return None
        return str(self.city.link_network.network_address + 1)

    @property
    def ping_allowed(self) -> bool:
        """Whether ICMP truth holds: True in netns mode, False on loopback (127/8 always answers)."""
        return self._mode == "netns"

    @property
    def running(self) -> bool:
        """Whether the fleet is up."""
        return self._running

    @property
    def responder_pid(self) -> int | None:
        """PID of the responder process, while it runs."""
        return self._responder.pid if self._responder is not None else None

    def expected(
        self, device_id: str, probe_name: str, at: float | None = None, *, margin: float = FLAP_MARGIN
    ) -> bool | None:
        """`City.expected` at `at` (default: now), but None for ``icmp`` where ICMP truth does not hold."""
        if probe_name == "icmp" and not self.ping_allowed:
            return None
        return self.city.expected(device_id, probe_name, time.time() if at is None else at, margin=margin)

    def start(self) -> Fleet:
        """Bring every device up; on any failure undo what was done and raise FleetError."""
        with self._lock:
            if self._running:
                raise FleetError("this fleet is already running")
            began = time.monotonic()
            atexit.register(self.stop)
            try:
                self._workdir = Path(tempfile.mkdtemp(prefix=HANDOVER_PREFIX))
                if self._mode == "netns":
                    self._start_netns()
                else:
                    self._check_loopback()
                self._start_responder()
            except BaseException:
                with contextlib.suppress(FleetError):
                    self.stop()
                raise
            self._running = True
            self.started_in = time.monotonic() - began
            log.info(
                "fleet_started",
                mode=self._mode,
                netns=self._ns,
                devices=self.city.inventory.device_count,
                seconds=round(self.started_in, 2),
            )
        return self

    def stop(self) -> None:
        """Remove the responder, route, veth and namespace this fleet created; safe to repeat."""
        with self._lock:
            problems: list[str] = []
            self._stop_responder(problems)
            if self._route is not None and self._veth is not None:
                _ip("route", "del", self._route, "dev", self._veth, check=False)
            if self._veth is not None:
                _ip("link", "del", self._veth, check=False)
                if Path("/sys/class/net", self._veth).exists():
                    problems.append(f"veth {self._veth} is still there (ip link del {self._veth})")
            if self._ns is not None:
                _ip("netns", "del", self._ns, check=False)
                if self._ns in _netns_names():
                    problems.append(f"namespace {self._ns} is still there (ip netns del {self._ns})")
            if self._workdir is not None:
                shutil.rmtree(self._workdir, ignore_errors=True)
            self._route = self._veth = self._ns = None
            self._workdir = None
            was_running, self._running = self._running, False
            atexit.unregister(self.stop)
            if problems:
                raise FleetError("fleet teardown left things behind: " + "; ".join(problems))
            if was_running:
                log.info("fleet_stopped", mode=self._mode)

    def __enter__(self) -> Fleet:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Fleet:
        starting = asyncio.ensure_future(asyncio.to_thread(self.start))
        try:
            await asyncio.shield(starting)
        except asyncio.CancelledError:
            # start() keeps running in its thread: let it finish, then undo it.
            with contextlib.suppress(BaseException):
                await starting
            await asyncio.to_thread(self.stop)
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.shield(asyncio.to_thread(self.stop))

    # --- netns ---------------------------------------------------------------------------

    def _start_netns(self) -> None:
        if os.geteuid() != 0:
            raise FleetError("netns mode needs root (namespaces, veth, routes); use mode='loopback'")
        if shutil.which("ip") is None:
            raise FleetError("netns mode needs iproute2's `ip` (apt-get install iproute2)")
        network = self.city.network
        if network.subnet_of(_LOOPBACK) or not network.is_private:
            raise FleetError(
                f"netns mode needs a private, non-loopback range, got {network}; "
                f"generate the city with base={NETNS_BASE!r}"
            )
        clashes = overlapping_routes(ip_routes(), network)
        if clashes:
            raise FleetError(
                f"{network} overlaps routes already on this machine ({'; '.join(clashes)}); "
                "generate the city with another base, e.g. base='10.201.0.0/16'"
            )
        ns, veth = self._free_names()
        root_side = str(self.city.link_network.network_address + 1)
        ns_side = str(self.city.link_network.network_address + 2)

        _ip("netns", "add", ns)
        self._ns = ns
        _ip("link", "add", veth, "type", "veth", "peer", "name", NS_LINK, "netns", ns)
        self._veth = veth
        # Forwarding off inside: packets to unassigned addresses are dropped without an
        # ICMP error, like a camera that lost power.
        _run(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_forward=0"])
        static = [
            t.host
            for t in self.city.devices()
            if t.condition in (Condition.ALIVE, Condition.CLOSED_PORTS) and t.flap is None
        ]
        script = [
            "link set lo up",
            f"address add {ns_side}/30 dev {NS_LINK}",
            f"link set {NS_LINK} up",
            *(f"address add {host}/32 dev lo" for host in static),
        ]
        _ip("-n", ns, "-batch", "-", stdin="\n".join(script) + "\n")
        _ip("address", "add", f"{root_side}/30", "dev", veth)
        _ip("link", "set", veth, "up")
        _ip("route", "add", str(network), "via", ns_side, "dev", veth)
        self._route = str(network)
        self._check_routes(veth)

    def _check_routes(self, veth: str) -> None:
        """The safety guard: every sampled fleet address must route into our veth."""
        for address in guard_sample(self.city):
            answer = ip_route_get(address)
            if not route_leads_into(answer, veth):
                raise FleetError(
                    f"safety guard: the route to {address} does not lead into {veth} "
                    f"({answer.strip() or 'no answer'}); refusing to run the fleet, torn down"
                )

    def _free_names(self) -> tuple[str, str]:
        pid = os.getpid()
        taken_ns = set(_netns_names())
        for number in _fleet_numbers:
            ns, veth = f"tlmd-{pid}-{number}", f"tlv{pid}n{number}a"
            if len(veth) > 15:
                break
            if ns not in taken_ns and not Path("/sys/class/net", veth).exists():
                return ns, veth
        raise FleetError("no free namespace/veth name left for this process; stop some fleets first")

    # --- loopback ------------------------------------------------------------------------

    def _check_loopback(self) -> None:
        if not self.city.network.subnet_of(_LOOPBACK):
            raise FleetError(
                f"loopback mode needs a city inside 127.0.0.0/8, got {self.city.network}; "
                f"generate it with base={LOOPBACK_BASE!r}"
            )
        lowest = min((p for t in self.city.truth.values() for p in t.tcp_ports), default=65535)
        if os.geteuid() != 0 and lowest < _unprivileged_port_start():
            raise FleetError(
                f"port {lowest} needs root to listen on; generate the city with "
                f"tcp_port_offset={LOOPBACK_PORT_OFFSET} (see port_offset_for) or run as root"
            )

    # --- responder -----------------------------------------------------------------------

    def _start_responder(self) -> None:
        assert self._workdir is not None
        spec = ResponderSpec(
            mode=self._mode,
            hosts=tuple(
                HostSpec(t.host, t.open_ports, t.flap)
                for t in self.city.devices()
                if t.flap is not None or (t.condition is not Condition.DEAD and t.open_ports)
            ),
        )
        spec_file = self._workdir / "responder.json"
        spec_file.write_text(spec.to_json(), encoding="utf-8")
        log_file = self._workdir / "responder.log"
        command = [sys.executable, "-m", "telemetryd.sim.fleet_responder", str(spec_file)]
        if self._mode == "netns":
            assert self._ns is not None
            command = ["ip", "netns", "exec", self._ns, *command]
        # The responder must import this very telemetryd, installed or not.
        package_root = str(Path(telemetryd.__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        with log_file.open("wb") as errors:
            self._responder = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors, env=env
            )
        timeout = self._ready_timeout or 30.0 + spec.socket_count / 500
        line = _read_line(self._responder, time.monotonic() + timeout)
        if not line.startswith("ready"):
            tail = log_file.read_text(encoding="utf-8", errors="replace").strip()[-2000:]
            reason = "did not report ready in time" if line == "" else f"said {line!r}"
            raise FleetError(f"the fleet responder {reason}: {tail or 'no output'}")

    def _stop_responder(self, problems: list[str]) -> None:
        process, self._responder = self._responder, None
        if process is None:
            return
        # Closing stdin is the responder's signal to exit; signals are the fallback.
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        for action in (None, process.terminate, process.kill):
            if action is not None:
                with contextlib.suppress(ProcessLookupError):
                    action()
            try:
                process.wait(timeout=5)
                return
            except subprocess.TimeoutExpired:
                continue
        problems.append(f"responder pid {process.pid} did not exit")


def _run(command: list[str], *, stdin: str | None = None, check: bool = True) -> str:
    return run(command, error=FleetError, stdin=stdin, check=check, timeout=120)


def _ip(*args: str, stdin: str | None = None, check: bool = True) -> str:
    return _run(["ip", *args], stdin=stdin, check=check)


def _netns_names() -> list[str]:
    return netns_names(FleetError)


def _root_links() -> list[str]:
    try:
        return sorted(os.listdir("/sys/class/net"))
    except OSError:
        return []


def _unprivileged_port_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text().strip())
    except (OSError, ValueError):
        return 1024

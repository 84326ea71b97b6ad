"""Many simulated school routers in ONE snmpsim process on loopback, for scale tests and the demo.

Issue: "snmpsim for the many routers of a large city". A real-snmpd router
(`telemetryd.sim.router`) costs three namespaces and iperf3 flows; a city needs
hundreds. snmpsim answers for every router from one UDP port: in snmpsim the data
file name (without ``.snmprec``) is the v2c community, so each router is one
``<community>.snmprec`` file and the community alone picks the router.

Each router has the interfaces of the real-snmpd router (`INTERFACE_NAMES`: wan0,
alarm0, video0, edu0 at ifIndex 1..4). The octet counters use snmpsim's ``numeric``
variation (``70:numeric|rate=R,initial=I``), which answers ``I + R x (now - start)``
from the wall clock on every request, so the rate a poller computes is exact up to the
timing of its own polls. The WAN carries the sum of the segments, as on a real router:
WAN out = what the segments brought in (school → NOC), WAN in = what they sent out.

Every router also gets a UDP port of its own on the same process (one snmpsim
endpoint each): `SnmpSessions` keys sockets and ifName tables by (host, port), one
router per address as in production, so routers sharing one port would evict each
other's sessions. The shared `port` answers every community too (snmpsim picks the
data file by community on every endpoint), which also means a router's own port
answers the other routers' communities: harmless for polling, not a realism goal.

Only 127.0.0.1 is used. Communities are random secrets: they never appear in a repr,
an error message or a log line of this module.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import importlib.util
import os
import random
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType

import aiosnmp
import structlog
from aiosnmp.exceptions import SnmpException

from telemetryd.model import Segment
from telemetryd.probes.snmp import (
    IF_HC_IN_OCTETS,
    IF_HC_OUT_OCTETS,
    IF_HIGH_SPEED,
    IF_IN_DISCARDS,
    IF_IN_ERRORS,
    IF_NAME,
    IF_OPER_STATUS,
    IF_OUT_DISCARDS,
    IF_OUT_ERRORS,
    OPER_UP,
    SYS_UPTIME,
)
from telemetryd.sim._proc import end as _end
from telemetryd.sim.router import INTERFACE_NAMES, SHAPING_MBPS, WAN

HOST = "127.0.0.1"
IF_INDEX: dict[str, int] = {WAN: 1, Segment.ALARM.value: 2, Segment.VIDEO.value: 3, Segment.EDUCATION.value: 4}
"""Role → ifIndex on every simulated router."""
SEGMENTS: tuple[str, ...] = (Segment.ALARM.value, Segment.VIDEO.value, Segment.EDUCATION.value)
LOAD_SHARE = (0.1, 0.9)
"""Each segment direction carries a random share of its allocation in this range: the WAN (sum) stays under 150."""
RESPONDER = "snmpsim-command-responder"

# snmprec type tags
_INTEGER, _OCTET_STRING, _COUNTER32, _GAUGE32, _TIMETICKS, _COUNTER64 = "2", "4", "65", "66", "67", "70"

log = structlog.get_logger("telemetryd.sim.snmpsim")


class SnmpSimError(RuntimeError):
    """snmpsim could not be started or did not answer; the message says why (never with a community)."""


@dataclass(frozen=True, slots=True)
class SimRouterSpec:
    """One simulated router: its community and the bit rates its counters advance at, per role."""

    name: str
    """Non-secret label for reports, e.g. ``router-007``."""
    community: str = field(repr=False)
    rates_bps: tuple[tuple[str, float, float], ...] = field(default=())
    """(role, in bit/s, out bit/s) for ``wan`` and every segment, as the router's interfaces count them."""
    uptime_ticks: int = 0
    """sysUpTime at simulator start, in 1/100 s."""
    port: int = 0
    """This router's own UDP port on 127.0.0.1 once the simulator runs (0 before `start`)."""

    @property
    def interfaces(self) -> dict[str, str]:
        """Role → ifName, as an inventory would list them."""
        return dict(INTERFACE_NAMES)

    def rate(self, role: str) -> tuple[float, float]:
        """(in bit/s, out bit/s) of one role's interface."""
        for name, in_bps, out_bps in self.rates_bps:
            if name == role:
                return in_bps, out_bps
        raise KeyError(f"{self.name} has no role {role!r}")


def plan_routers(count: int, *, seed: int | None = None) -> list[SimRouterSpec]:
    """`count` routers with fresh secret communities and random loads (reproducible with `seed`)."""
    rng = random.Random(seed)
    routers = []
    for number in range(count):
        segment_rates: list[tuple[str, float, float]] = []
        for role in SEGMENTS:
            allocation_bps = SHAPING_MBPS[role] * 1e6
            # Whole octets per second, so the snmprec rate and the expected bit rate agree exactly.
            in_bps, out_bps = (8.0 * round(allocation_bps * rng.uniform(*LOAD_SHARE) / 8) for _ in range(2))
            segment_rates.append((role, in_bps, out_bps))
        wan = (WAN, sum(r[2] for r in segment_rates), sum(r[1] for r in segment_rates))
        routers.append(
            SimRouterSpec(
                name=f"router-{number:03d}",
                community=secrets.token_hex(12),
                rates_bps=(wan, *segment_rates),
                uptime_ticks=rng.randrange(100 * 3600, 100 * 86400 * 60),
            )
        )
    return routers


def snmprec(router: SimRouterSpec, *, seed: int | None = None) -> str:
    """The snmpsim data file of one router: sysUpTime and the interface columns `poll_router` reads."""
    rng = random.Random(seed)
    records: list[tuple[str, str, str]] = [
        (SYS_UPTIME, f"{_TIMETICKS}:numeric", f"rate=100,initial={router.uptime_ticks}")
    ]
    for role, in_bps, out_bps in router.rates_bps:
        i = IF_INDEX[role]
        # Start well away from zero (as on a router up for a while) but below 2^53, where floats stay exact.
        in_start, out_start = rng.randrange(2**30, 2**48), rng.randrange(2**30, 2**48)
        records += [
            (f"{IF_NAME}.{i}", _OCTET_STRING, INTERFACE_NAMES[role]),
            (f"{IF_HC_IN_OCTETS}.{i}", f"{_COUNTER64}:numeric", f"rate={in_bps / 8!r},initial={in_start}"),
            (f"{IF_HC_OUT_OCTETS}.{i}", f"{_COUNTER64}:numeric", f"rate={out_bps / 8!r},initial={out_start}"),
            (f"{IF_HIGH_SPEED}.{i}", _GAUGE32, str(int(SHAPING_MBPS[role]))),
            (f"{IF_OPER_STATUS}.{i}", _INTEGER, str(OPER_UP)),
            (f"{IF_IN_ERRORS}.{i}", _COUNTER32, str(rng.randrange(0, 50))),
            (f"{IF_OUT_ERRORS}.{i}", _COUNTER32, str(rng.randrange(0, 50))),
            (f"{IF_IN_DISCARDS}.{i}", _COUNTER32, str(rng.randrange(0, 500))),
            (f"{IF_OUT_DISCARDS}.{i}", _COUNTER32, str(rng.randrange(0, 500))),
        ]
    # snmpsim serves GETNEXT/GETBULK in file order: the records must be in OID order.
    records.sort(key=lambda record: _oid_key(record[0]))
    return "".join(f"{oid.lstrip('.')}|{tag}|{value}\n" for oid, tag, value in records)


def _oid_key(oid: str) -> tuple[int, ...]:
    return tuple(int(part) for part in oid.strip(".").split("."))


class SnmpSimCity:
    """`routers` simulated school routers behind one snmpsim process on 127.0.0.1.

    ``with SnmpSimCity(300) as city:`` then poll ``city.host:city.port`` with each
    ``router.community`` for ``router.interfaces``; `expected_rate` gives the truth.
    `stop()` ends the process by PID and removes the temp dir; it also runs at exit.
    """

    def __init__(self, routers: int = 300, *, seed: int | None = None, ready_timeout: float = 120.0) -> None:
        if routers < 1:
            raise ValueError("a city needs at least one router")
        self.routers: list[SimRouterSpec] = plan_routers(routers, seed=seed)
        self.seed = seed
        self.ready_timeout = ready_timeout
        self.host = HOST
        self._by_community = {router.community: router for router in self.routers}
        self._port: int | None = None
        self._workdir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    # --- what tests read -----------------------------------------------------------------

    @property
    def port(self) -> int:
        """The UDP port snmpsim answers on."""
        if self._port is None:
            raise SnmpSimError("the simulator is not running")
        return self._port

    @property
    def workdir(self) -> Path | None:
        """The private temp dir holding the data files (named after the communities), while running."""
        return self._workdir

    @property
    def pid(self) -> int | None:
        """PID of the snmpsim process."""
        return self._process.pid if self._process is not None else None

    def expected_rate(self, community: str, role: str) -> tuple[float, float]:
        """(in bit/s, out bit/s) the counters of `role` advance at on the router with `community`."""
        router = self._by_community.get(community)
        if router is None:
            raise KeyError("no simulated router has that community")
        return router.rate(role)

    def responder_cpu_seconds(self) -> float:
        """User + system CPU time the snmpsim process has used so far (from /proc)."""
        if self.pid is None:
            raise SnmpSimError("the simulator is not running")
        fields = Path(f"/proc/{self.pid}/stat").read_text(encoding="ascii").rpartition(")")[2].split()
        # utime and stime are fields 14 and 15 of stat(5); [2] after the comm field is field 3.
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> SnmpSimCity:
        """Write the data files, start snmpsim and return once it answers; undo everything and raise on failure."""
        with self._lock:
            if self._process is not None:
                raise SnmpSimError("this simulator is already running")
            binary = responder_path()
            self._workdir = Path(tempfile.mkdtemp(prefix="tlmd-snmpsim-"))  # 0700: file names are communities
            atexit.register(self.stop)
            try:
                self._launch(binary, self._workdir)
            except BaseException:
                self._stop_locked()
                raise
            log.info("snmpsim_city_started", routers=len(self.routers), port=self._port, pid=self.pid)
        return self

    def stop(self) -> None:
        """Stop snmpsim by PID (TERM, then KILL) and remove the temp dir; safe to repeat."""
        with self._lock:
            self._stop_locked()

    def __enter__(self) -> SnmpSimCity:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- internals -----------------------------------------------------------------------

    def _launch(self, binary: str, workdir: Path) -> None:
        data, cache = workdir / "data", workdir / "cache"
        data.mkdir()
        cache.mkdir()
        for number, router in enumerate(self.routers):
            seed = None if self.seed is None else self.seed * 100_003 + number
            (data / f"{router.community}.snmprec").write_text(snmprec(router, seed=seed), encoding="ascii")
        self._port, *own_ports = free_udp_ports(len(self.routers) + 1, self.host)
        self.routers = [replace(router, port=port) for router, port in zip(self.routers, own_ports, strict=True)]
        self._by_community = {router.community: router for router in self.routers}
        command = [
            binary,
            f"--data-dir={data}",
            f"--cache-dir={cache}",  # its dbm indices, otherwise left behind in /tmp/snmpsim
            f"--variation-modules-dir={_variation_dir()}",  # not ~/.snmpsim/variation
            "--log-level=error",  # info logs every request: most of snmpsim's CPU at scale
        ]
        command += [f"--agent-udpv4-endpoint={self.host}:{port}" for port in (self._port, *own_ports)]
        env = dict(os.environ)
        if os.geteuid() == 0:
            # As root snmpsim insists on dropping to --process-user, but this Python lives under
            # /root (mode 0700): as nobody it cannot import the modules it loads lazily (dbm.dumb)
            # and fails. It only reads our temp dir and listens on loopback, so let it run as root.
            env["SNMPSIM_ALLOW_ROOT"] = "true"
        log_path = workdir / "snmpsim.log"
        with log_path.open("wb") as output:
            self._process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT, env=env, cwd=workdir
            )
        # The shared port and the last router's own: every endpoint is bound before any answers.
        last = self.routers[-1]
        probes = ((self._port, self.routers[0].community), (last.port, last.community))
        error = _wait_until_answering(self.host, probes, self._process, timeout=self.ready_timeout)
        if error is not None:
            tail = _redact(log_path.read_text(encoding="utf-8", errors="replace").strip()[-1500:], self._by_community)
            raise SnmpSimError(f"snmpsim on {self.host}:{self._port} {error}: {tail or 'no output'}")

    def _stop_locked(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            _end(process)
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        self._port = None
        atexit.unregister(self.stop)


def responder_path() -> str:
    """Path of snmpsim's command responder, next to this Python first (the venv), else on PATH."""
    beside = Path(sys.executable).parent / RESPONDER
    path = str(beside) if beside.exists() else shutil.which(RESPONDER)
    if path is None:
        raise SnmpSimError(f"{RESPONDER} is not installed (Python package snmpsim, a dev dependency)")
    return path


def free_udp_ports(count: int, host: str = HOST) -> list[int]:
    """`count` distinct UDP ports on `host` that nothing used a moment ago (the OS picks them)."""
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        for _ in range(count):
            # All held open at once, so the OS cannot hand out the same port twice.
            probe = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            probe.bind((host, 0))
            ports.append(probe.getsockname()[1])
        return ports


def _variation_dir() -> Path:
    # Found, not imported: the daemon's process has no use for snmpsim itself.
    spec = importlib.util.find_spec("snmpsim")
    if spec is None or spec.origin is None:
        raise SnmpSimError("the snmpsim package is not installed (a dev dependency)")
    return Path(spec.origin).parent / "variation"


def _wait_until_answering(
    host: str, probes: Iterable[tuple[int, str]], process: subprocess.Popen[bytes], *, timeout: float
) -> str | None:
    """None once every (port, community) answers a GET of sysUpTime, else why not ("exited with 1", ...)."""
    deadline = time.monotonic() + timeout
    waiting = list(probes)
    while time.monotonic() < deadline:
        code = process.poll()
        if code is not None:
            return f"exited with {code}"
        waiting = [(port, community) for port, community in waiting if not _answers(host, port, community)]
        if not waiting:
            return None
        time.sleep(0.1)
    return f"did not answer within {timeout:g} s"


def _answers(host: str, port: int, community: str) -> bool:
    """One short GET with aiosnmp, in a thread of its own: start() may be called inside a running loop."""
    answered = False

    async def probe() -> None:
        nonlocal answered
        # aiosnmp.Snmp needs a running loop at construction, hence inside the coroutine.
        session = aiosnmp.Snmp(host=host, port=port, community=community, timeout=0.5, retries=1)
        try:
            answered = bool(await session.get(SYS_UPTIME))
        except (SnmpException, OSError):
            answered = False
        finally:
            session.close()

    worker = threading.Thread(target=asyncio.run, args=(probe(),), name="snmpsim-ready-probe")
    worker.start()
    worker.join()
    return answered


def _redact(text: str, communities: Iterable[str]) -> str:
    for community in communities:
        text = text.replace(community, "<community>")
    return text


__all__ = [
    "HOST",
    "IF_INDEX",
    "SEGMENTS",
    "SimRouterSpec",
    "SnmpSimCity",
    "SnmpSimError",
    "free_udp_ports",
    "plan_routers",
    "responder_path",
    "snmprec",
]

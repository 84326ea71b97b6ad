"""A simulated school router for tests and the demo: real snmpd, real interfaces, real load.

Three network namespaces per router (root, 10.220.<n>.0/24, nothing else routed):

    root ──mgmt veth 10.220.n.1/30 ↔ .2──▶ router ns (snmpd on .2:161, forwarding on)
                                              │ wan0 .5/30 ↔ .6 "uplink" ── isp ns (iperf3 servers on .65-.67)
    school ns ◀── alarm0 .9 ↔ .10, video0 .13 ↔ .14, edu0 .17 ↔ .18 ──┘

Each router interface is shaped with `tc tbf` on both ends to its allocation (WAN 150,
alarm 20, video 30, education 100 Mbit/s). A UDP iperf3 client per segment in the
school namespace sends a known bitrate to its server behind the WAN, so the router sees
the load arrive on the segment interface (ifHCInOctets) and leave on wan0
(ifHCOutOctets): the SNMP counters are the kernel's, as on a Linux router.

The root namespace only routes the management /30 into our veth; a guard checks that
before the first packet. `stop` removes namespaces, veths, processes and the temp dir,
also after a failed `start`.

Restarts, and what they really exercise:

`restart_snmpd()` kills snmpd by PID and starts it again. net-snmp's sysUpTime is the
agent's uptime, so it restarts from zero, but the interface counters come from the
kernel and keep counting: it tests that a sysUpTime drop is taken as a reboot (one
interval without a rate, no spike) even though the counters did not reset.

`reboot()` tears the router down and builds it again (namespaces and veths recreated,
so the kernel counters restart from zero and ifIndex values may change; snmpd restarts,
so sysUpTime restarts; load generators restart). That is what a real router reboot
looks like from the NOC.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import structlog

from telemetryd.model import Segment
from telemetryd.sim._proc import end as _end
from telemetryd.sim._proc import netns_names, run
from telemetryd.sim.fleet import ip_route_get, ip_routes, overlapping_routes, route_leads_into

ROUTER_BASE = ipaddress.IPv4Network("10.220.0.0/16")
"""Router namespaces live here; the fleet uses 10.200/16 and the speed-test helper 10.210/16."""
WAN = "wan"
INTERFACE_NAMES: dict[str, str] = {
    WAN: "wan0",
    Segment.ALARM.value: "alarm0",
    Segment.VIDEO.value: "video0",
    Segment.EDUCATION.value: "edu0",
}
"""Role → ifName on the simulated router."""
SHAPING_MBPS: dict[str, float] = {
    WAN: 150.0,
    Segment.ALARM.value: 20.0,
    Segment.VIDEO.value: 30.0,
    Segment.EDUCATION.value: 100.0,
}
"""Role → tbf rate, the school's contract."""
DEFAULT_LOAD_MBPS: dict[str, float] = {
    Segment.ALARM.value: 10.0,
    Segment.VIDEO.value: 15.0,
    Segment.EDUCATION.value: 50.0,
}
"""iperf3 payload bitrate per segment: half of each allocation, so shaping never clips it."""
UDP_PAYLOAD = 1400
"""iperf3 datagram size; on the wire each one carries 42 more bytes (UDP 8, IP 20, Ethernet 14)."""
WIRE_OVERHEAD = (UDP_PAYLOAD + 42) / UDP_PAYLOAD
"""Interface octets per iperf3 payload octet."""
IPERF_PORT = 5201
NS_CACHE_TABLE = ".1.3.6.1.4.1.8072.1.5"
NS_CACHE_TIMEOUT = ".1.3.6.1.4.1.8072.1.5.3.1.2"
IF_TABLE_SUFFIX = ".1.3.6.1.2.1.2.2"
"""nsCacheTimeout is indexed by the cached table's OID; ifXTable shares the ifTable cache."""
_SEGMENT_OCTET = {Segment.ALARM.value: 8, Segment.VIDEO.value: 12, Segment.EDUCATION.value: 16}
"""Fourth octet of each segment's /30 inside 10.220.<n>.0/24."""
_SINK_OCTET = {Segment.ALARM.value: 65, Segment.VIDEO.value: 66, Segment.EDUCATION.value: 67}

_numbers = itertools.count()
log = structlog.get_logger("telemetryd.sim.router")


class SimRouterError(RuntimeError):
    """The simulated router could not be brought up or taken down; the message says why."""


# --- snmpd ---------------------------------------------------------------------------------


class Snmpd:
    """One net-snmp `snmpd` process, started and stopped by PID, with its own config and state dir.

    `client` is the only source address its read-only community answers. In a namespace
    when `netns` is given; on 127.0.0.1 for tests that need no root. With `live_counters`
    (default) the interface-table cache is turned off after start, so counters are the
    kernel's at the moment of each request (needs `snmpset`, Debian package snmp).
    """

    def __init__(
        self,
        address: str,
        port: int,
        community: str,
        client: str,
        workdir: Path,
        *,
        netns: str | None = None,
        live_counters: bool = True,
    ) -> None:
        self.address = address
        self.port = port
        self.community = community
        self.client = client
        self.netns = netns
        self.workdir = workdir
        self.live_counters = live_counters
        self._process: subprocess.Popen[bytes] | None = None
        self.started_at: float | None = None

    @property
    def pid(self) -> int | None:
        """PID of the running snmpd."""
        return self._process.pid if self._process is not None else None

    def start(self, *, ready_timeout: float = 10.0) -> None:
        """Write the config and start snmpd; return once it listens, or raise SimRouterError."""
        binary = _binary("snmpd")
        state = self.workdir / "snmp-state"
        mibs = self.workdir / "no-mibs"
        state.mkdir(parents=True, exist_ok=True)
        mibs.mkdir(exist_ok=True)
        config = self.workdir / "snmpd.conf"
        tuner = secrets.token_hex(8)
        # A write community limited to nsCacheTable, from the same client, only to turn the cache off below.
        config.write_text(
            f"rocommunity {self.community} {self.client}\nrwcommunity {tuner} {self.client} {NS_CACHE_TABLE}\n",
            encoding="utf-8",
        )
        config.chmod(0o600)  # the community is a secret
        log_file = self.workdir / "snmpd.log"
        log_file.unlink(missing_ok=True)
        # No MIB files on Debian: point the MIB path at an empty dir so snmpd does not log pages of noise.
        env = {**os.environ, "SNMP_PERSISTENT_DIR": str(state), "MIBDIRS": str(mibs), "MIBS": ""}
        command = [binary, "-f", "-Lo", "-C", "-c", str(config), "-p", str(self.workdir / "snmpd.pid")]
        command.append(f"udp:{self.address}:{self.port}")
        if self.netns is not None:
            command = ["ip", "netns", "exec", self.netns, *command]  # ip execs snmpd: same PID
        with log_file.open("wb") as output:
            self._process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            text = log_file.read_text(encoding="utf-8", errors="replace")
            if "NET-SNMP version" in text:
                self.started_at = time.monotonic()
                if self.live_counters:
                    self._live_counters(tuner, env)
                return
            if self._process.poll() is not None:
                break
            time.sleep(0.02)
        tail = log_file.read_text(encoding="utf-8", errors="replace").strip()[-1000:]
        self.stop()
        raise SimRouterError(f"snmpd on {self.address}:{self.port} did not start: {tail or 'no output'}")

    def _live_counters(self, tuner: str, env: Mapping[str, str]) -> None:
        # net-snmp serves interface counters from a cache reloaded at most every 3 s, which
        # skews rates over short test intervals by up to 3 s / interval; real routers poll
        # live or close to it. Timeout 0 makes every request read the kernel's counters.
        oid = f"{NS_CACHE_TIMEOUT}{IF_TABLE_SUFFIX}"
        command = [_binary("snmpset"), "-v2c", "-c", tuner, "-t", "1", "-r", "3", "-Oq"]
        command += [f"udp:{self.address}:{self.port}", oid, "i", "0"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=20, check=False, env=dict(env))
        if done.returncode != 0:
            self.stop()
            raise SimRouterError(f"could not turn off snmpd's interface cache: {done.stderr.strip()}")

    def stop(self) -> None:
        """Stop our snmpd by PID (TERM, then KILL); safe to repeat."""
        process, self._process = self._process, None
        if process is not None:
            _end(process)


# --- the router ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RouterAddresses:
    """The addresses of router number `n` inside 10.220.<n>.0/24."""

    n: int

    def at(self, last_octet: int) -> str:
        """10.220.<n>.<last_octet>."""
        return str(ROUTER_BASE.network_address + (self.n << 8) + last_octet)

    @property
    def network(self) -> ipaddress.IPv4Network:
        """The router's whole /24; no other route may overlap it."""
        return ipaddress.IPv4Network(f"{self.at(0)}/24")

    @property
    def root_side(self) -> str:
        """The poller's source address on the management link."""
        return self.at(1)

    @property
    def management(self) -> str:
        """Where snmpd listens."""
        return self.at(2)


class SimRouter:
    """A school router with WAN and segment interfaces, snmpd and per-segment load.

    ``with SimRouter(community="s3cret") as router: ...`` then poll `router.host` for
    `router.interfaces` (role → ifName). `load_mbps` is the iperf3 payload bitrate per
    segment (role → Mbit/s); 0 or absent means no generator on that segment.
    """

    def __init__(
        self,
        *,
        community: str = "public",
        load_mbps: Mapping[str, float] | None = None,
        shaping_mbps: Mapping[str, float] | None = None,
    ) -> None:
        self.community = community
        self.load_mbps = dict(DEFAULT_LOAD_MBPS if load_mbps is None else load_mbps)
        self.shaping_mbps = dict(SHAPING_MBPS if shaping_mbps is None else shaping_mbps)
        unknown = set(self.load_mbps) - set(_SEGMENT_OCTET)
        if unknown:
            raise SimRouterError(f"load can only be put on segments {sorted(_SEGMENT_OCTET)}, not {sorted(unknown)}")
        self._lock = threading.RLock()
        self._addresses: RouterAddresses | None = None
        self._names: dict[str, str] = {}
        self._created_ns: list[str] = []
        self._veth: str | None = None
        self._workdir: Path | None = None
        self._snmpd: Snmpd | None = None
        self._generators: list[subprocess.Popen[bytes]] = []
        self._clients: dict[str, subprocess.Popen[bytes]] = {}
        self._sink_pid: int | None = None

    # --- what tests read -----------------------------------------------------------------

    @property
    def host(self) -> str:
        """The management address snmpd answers on."""
        return self._require_addresses().management

    @property
    def interfaces(self) -> dict[str, str]:
        """Role → ifName, as an inventory would list them."""
        return dict(INTERFACE_NAMES)

    @property
    def router_ns(self) -> str:
        """Name of the router's namespace."""
        return self._names["router"]

    @property
    def root_veth(self) -> str | None:
        """The root namespace's end of the management link."""
        return self._veth

    @property
    def snmpd_pid(self) -> int | None:
        """PID of the router's snmpd."""
        return self._snmpd.pid if self._snmpd is not None else None

    def wire_octets(self) -> dict[str, int]:
        """Octets the load put on each link, counted by the kernel at the far end from the router.

        Segments: what the school-side interface transmitted. WAN: what the ISP side
        received. This is the truth the router's SNMP counters should agree with.
        """
        school = _net_dev(self._pid_in("school"))
        isp = _net_dev(self._pid_in("isp"))
        octets = {role: school[_school_link(role)][1] for role in _SEGMENT_OCTET if _school_link(role) in school}
        if "uplink" in isp:
            octets[WAN] = isp["uplink"][0]
        return octets

    def router_octets(self) -> dict[str, tuple[int, int]]:
        """(in, out) octets of each router interface as the router's own kernel counts them."""
        assert self._snmpd is not None and self._snmpd.pid is not None
        table = _net_dev(self._snmpd.pid)
        return {role: table[name] for role, name in INTERFACE_NAMES.items() if name in table}

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> SimRouter:
        """Build namespaces, links, shaping, snmpd and load; undo everything and raise on failure."""
        with self._lock:
            if self._addresses is not None:
                raise SimRouterError("this router is already running")
            _check_tools()
            try:
                self._workdir = Path(tempfile.mkdtemp(prefix="tlmd-router-"))
                self._addresses = self._free_number()
                self._bring_up()
            except BaseException:
                with contextlib.suppress(SimRouterError):
                    self.stop()
                raise
            log.info("sim_router_started", host=self.host, netns=self.router_ns)
        return self

    def stop(self) -> None:
        """Remove processes, namespaces, veths and the temp dir this router created; safe to repeat."""
        with self._lock:
            problems = self._tear_down()
            if self._workdir is not None:
                shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
            self._addresses = None
            self._veth = None
            if problems:
                raise SimRouterError("router teardown left things behind: " + "; ".join(problems))

    def restart_snmpd(self) -> None:
        """Kill snmpd by PID and start it again: sysUpTime restarts, kernel counters do not."""
        with self._lock:
            assert self._snmpd is not None
            self._snmpd.stop()
            self._snmpd.start()

    def freeze_snmpd(self) -> None:
        """SIGSTOP our snmpd: the router is up but the agent is silent, like a dead router to a poller."""
        with self._lock:
            assert self._snmpd is not None and self._snmpd.pid is not None
            os.kill(self._snmpd.pid, signal.SIGSTOP)

    def thaw_snmpd(self) -> None:
        """SIGCONT our snmpd after `freeze_snmpd`."""
        with self._lock:
            assert self._snmpd is not None and self._snmpd.pid is not None
            os.kill(self._snmpd.pid, signal.SIGCONT)

    def reboot(self) -> None:
        """Tear the router down and build it again: counters, ifIndex and sysUpTime all restart."""
        with self._lock:
            problems = self._tear_down()
            if problems:
                raise SimRouterError("reboot could not remove the old router: " + "; ".join(problems))
            try:
                self._bring_up()
            except BaseException:
                with contextlib.suppress(SimRouterError):
                    self.stop()
                raise

    def __enter__(self) -> SimRouter:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- building ------------------------------------------------------------------------

    def _free_number(self) -> RouterAddresses:
        routes = ip_routes()
        taken = set(_netns_names())
        pid = os.getpid()
        for n in _numbers:
            if n > 255:
                break
            addresses = RouterAddresses(n)
            names = {"router": f"tlmd-rtr-{pid}-{n}", "school": f"tlmd-sch-{pid}-{n}", "isp": f"tlmd-isp-{pid}-{n}"}
            if taken & set(names.values()) or overlapping_routes(routes, addresses.network):
                continue
            self._names = names
            self._veth = f"tlr{pid}n{n}"
            if len(self._veth) > 15 or Path("/sys/class/net", self._veth).exists():
                continue
            return addresses
        raise SimRouterError("no free 10.220.<n>.0/24 left for a simulated router; stop some first")

    def _bring_up(self) -> None:
        a = self._require_addresses()
        assert self._veth is not None and self._workdir is not None
        router, school, isp = self._names["router"], self._names["school"], self._names["isp"]
        for ns in (router, school, isp):
            _ip("netns", "add", ns)
            self._created_ns.append(ns)
        # Management link: the only thing the root namespace can reach.
        _ip("link", "add", self._veth, "type", "veth", "peer", "name", "mgmt0", "netns", router)
        _ip("address", "add", f"{a.root_side}/30", "dev", self._veth)
        _ip("link", "set", self._veth, "up")
        router_script = ["link set lo up", f"address add {a.management}/30 dev mgmt0", "link set mgmt0 up"]
        school_script = ["link set lo up"]
        isp_script = ["link set lo up"]
        # WAN: router wan0 .5 ↔ isp uplink .6; the sinks sit on the isp's lo.
        _ip("-n", router, "link", "add", "wan0", "type", "veth", "peer", "name", "uplink", "netns", isp)
        router_script += [f"address add {a.at(5)}/30 dev wan0", "link set wan0 up"]
        router_script.append(f"route add {a.at(64)}/26 via {a.at(6)} dev wan0")
        isp_script += [f"address add {a.at(6)}/30 dev uplink", "link set uplink up"]
        isp_script += [f"address add {a.at(octet)}/32 dev lo" for octet in _SINK_OCTET.values()]
        isp_script.append(f"route add {a.network} via {a.at(5)} dev uplink")
        for role, octet in _SEGMENT_OCTET.items():
            name, peer = INTERFACE_NAMES[role], _school_link(role)
            _ip("-n", router, "link", "add", name, "type", "veth", "peer", "name", peer, "netns", school)
            router_script += [f"address add {a.at(octet + 1)}/30 dev {name}", f"link set {name} up"]
            school_script += [f"address add {a.at(octet + 2)}/30 dev {peer}", f"link set {peer} up"]
            school_script.append(f"route add {a.at(_SINK_OCTET[role])}/32 via {a.at(octet + 1)} dev {peer}")
        _ip("-n", router, "-batch", "-", stdin="\n".join(router_script) + "\n")
        _ip("-n", school, "-batch", "-", stdin="\n".join(school_script) + "\n")
        _ip("-n", isp, "-batch", "-", stdin="\n".join(isp_script) + "\n")
        _run(["ip", "netns", "exec", router, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
        for role, mbps in self.shaping_mbps.items():
            name = INTERFACE_NAMES[role]
            peer_ns, peer = (isp, "uplink") if role == WAN else (school, _school_link(role))
            _tbf(router, name, mbps)
            _tbf(peer_ns, peer, mbps)
        self._guard()
        self._snmpd = Snmpd(a.management, 161, self.community, a.root_side, self._workdir, netns=router)
        self._snmpd.start()
        self._start_load()

    def _guard(self) -> None:
        """The safety guard: the management address must route into our own veth, nowhere else."""
        a = self._require_addresses()
        assert self._veth is not None
        answer = ip_route_get(a.management)
        if not route_leads_into(answer, self._veth):
            raise SimRouterError(
                f"safety guard: the route to {a.management} does not lead into {self._veth} "
                f"({answer.strip() or 'no answer'}); refusing to start the router, torn down"
            )

    def _start_load(self) -> None:
        a = self._require_addresses()
        assert self._workdir is not None
        school, isp = self._names["school"], self._names["isp"]
        active = {role: mbps for role, mbps in self.load_mbps.items() if mbps > 0}
        for role in active:
            sink = a.at(_SINK_OCTET[role])
            server = self._spawn(isp, ["-s", "-B", sink, "-p", str(IPERF_PORT)], f"iperf3-server-{role}.log")
            self._sink_pid = server.pid
        if self._sink_pid is None:
            # Nothing to send: a sleeper keeps a PID in the namespaces for /proc/<pid>/net reads.
            self._sink_pid = self._spawn_plain(isp, ["sleep", "infinity"]).pid
        deadline = time.monotonic() + 5
        while not _listening(self._sink_pid, IPERF_PORT, len(active)) and time.monotonic() < deadline:
            time.sleep(0.02)
        for role, mbps in active.items():
            args = ["-c", a.at(_SINK_OCTET[role]), "-p", str(IPERF_PORT), "-u", "-b", f"{mbps}M"]
            args += ["-l", str(UDP_PAYLOAD), "-t", "86400"]
            self._clients[role] = self._spawn(school, args, f"iperf3-client-{role}.log")
        if not active:
            self._clients["idle"] = self._spawn_plain(school, ["sleep", "infinity"])
        time.sleep(0.3)
        dead = {role: p for role, p in self._clients.items() if p.poll() is not None}
        if dead:
            role = next(iter(dead))
            tail = (self._workdir / f"iperf3-client-{role}.log").read_text(errors="replace").strip()[-500:]
            raise SimRouterError(f"the {role} load generator exited at once: {tail or 'no output'}")

    def _spawn(self, ns: str, args: list[str], log_name: str) -> subprocess.Popen[bytes]:
        assert self._workdir is not None
        with (self._workdir / log_name).open("wb") as output:
            process = subprocess.Popen(
                ["ip", "netns", "exec", ns, _binary("iperf3"), *args], stdout=output, stderr=subprocess.STDOUT
            )
        self._generators.append(process)
        return process

    def _spawn_plain(self, ns: str, command: list[str]) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(["ip", "netns", "exec", ns, *command])
        self._generators.append(process)
        return process

    def _tear_down(self) -> list[str]:
        problems: list[str] = []
        for process in reversed(self._generators):  # clients first, servers last
            _end(process)
        self._generators.clear()
        self._clients.clear()
        self._sink_pid = None
        if self._snmpd is not None:
            self._snmpd.stop()
            self._snmpd = None
        if self._veth is not None:
            _ip("link", "del", self._veth, check=False)
            if Path("/sys/class/net", self._veth).exists():
                problems.append(f"veth {self._veth} is still there (ip link del {self._veth})")
        for ns in self._created_ns:
            _ip("netns", "del", ns, check=False)
        left = set(self._created_ns) & set(_netns_names())
        problems += [f"namespace {ns} is still there (ip netns del {ns})" for ns in sorted(left)]
        self._created_ns = []
        return problems

    def _pid_in(self, which: str) -> int:
        if which == "isp" and self._sink_pid is not None:
            return self._sink_pid
        for process in self._clients.values():
            return process.pid
        raise SimRouterError(f"no process runs in the {which} namespace")

    def _require_addresses(self) -> RouterAddresses:
        if self._addresses is None:
            raise SimRouterError("the router is not running")
        return self._addresses


# --- helpers -------------------------------------------------------------------------------


def _school_link(role: str) -> str:
    return f"{INTERFACE_NAMES[role]}-lan"


def _tbf(ns: str, device: str, mbps: float) -> None:
    # The bucket must hold at least one timer tick of traffic at this rate, or tbf undershoots.
    burst_kbit = max(32, int(mbps * 8))
    _run(
        [
            "ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", device, "root", "tbf",
            "rate", f"{mbps}mbit", "burst", f"{burst_kbit}kbit", "latency", "50ms",
        ]
    )  # fmt: skip


def _net_dev(pid: int) -> dict[str, tuple[int, int]]:
    """Interface → (rx octets, tx octets) in the namespace of process `pid`, without a subprocess."""
    table: dict[str, tuple[int, int]] = {}
    for line in Path(f"/proc/{pid}/net/dev").read_text(encoding="ascii").splitlines()[2:]:
        name, _, numbers = line.partition(":")
        fields = numbers.split()
        table[name.strip()] = (int(fields[0]), int(fields[8]))
    return table


def _listening(pid: int, port: int, count: int) -> bool:
    """Whether at least `count` TCP sockets listen on `port` in the namespace of `pid`."""
    try:
        lines = Path(f"/proc/{pid}/net/tcp").read_text(encoding="ascii").splitlines()[1:]
    except OSError:
        return False
    wanted = f":{port:04X}"
    return sum(1 for line in lines if line.split()[1].endswith(wanted) and line.split()[3] == "0A") >= count


def _check_tools() -> None:
    if os.geteuid() != 0:
        raise SimRouterError("a simulated router needs root (namespaces, veths, tc)")
    for tool in ("ip", "tc", "snmpd", "snmpset", "iperf3"):
        _binary(tool)


def _binary(name: str) -> str:
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/sbin/{name}", f"/usr/bin/{name}") if os.path.exists(p)), None
    )
    if path is None:
        raise SimRouterError(f"{name} is not installed")
    return path


__all__ = [
    "DEFAULT_LOAD_MBPS",
    "INTERFACE_NAMES",
    "ROUTER_BASE",
    "SHAPING_MBPS",
    "WAN",
    "WIRE_OVERHEAD",
    "RouterAddresses",
    "SimRouter",
    "SimRouterError",
    "Snmpd",
]


def _run(command: list[str], *, stdin: str | None = None, check: bool = True) -> str:
    return run(command, error=SimRouterError, stdin=stdin, check=check)


def _ip(*args: str, stdin: str | None = None, check: bool = True) -> str:
    return _run(["ip", *args], stdin=stdin, check=check)


def _netns_names() -> list[str]:
    return netns_names(SimRouterError)

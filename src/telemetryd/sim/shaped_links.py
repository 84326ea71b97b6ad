"""Shaped school links (root): a namespace per school behind a rate-limited veth, with a responder.

For school number n (1..254) of one `ShapedLinks`:

* namespace ``tlmd-link-<pid>-<n>``; veth pair, root side ``tll<pid>n<n>`` with
  10.210.n.1/30, school side ``school`` with 10.210.n.2/30;
* on both ends (each end shapes its own egress: the root side shapes uploads, the
  school side downloads) ``netem delay D`` at the root with ``tbf rate R burst B
  latency 50ms`` under it, or a bare root ``tbf`` when D is 0. Delay before the shaper
  keeps tbf's queue at its 50 ms, as on a real access link. A kernel without sch_netem
  (the project's test machines) gets the bare tbf; `ShapedSchool.delay_ms` then says 0;
* the speed-test responder (`python -m telemetryd.school_responder`) inside the namespace on
  10.210.n.2:8088 with a random token.

Before `start` returns, a guard checks that the kernel routes every responder address
into its own veth (`ip route get`); if not, everything is torn down and `LinkError`
says why. `stop` (also `__exit__` and an atexit hook) kills the responders by PID and
deletes the namespaces; `reap_stale_links` removes what SIGKILLed processes left.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import structlog

import telemetryd
from telemetryd.sim._proc import end, run
from telemetryd.sim._proc import pid_alive as _pid_alive
from telemetryd.sim._proc import read_line as _read_line
from telemetryd.sim.fleet import ip_route_get, ip_routes, overlapping_routes, route_leads_into

LINKS_BASE = ipaddress.IPv4Network("10.210.0.0/16")
RESPONDER_PORT = 8088
SCHOOL_LINK = "school"
"""The namespace's end of each veth pair."""
DEFAULT_DELAY_MS = 5.0
TBF_LATENCY_MS = 50
READY_TIMEOUT = 20.0

_NS_NAME = re.compile(r"tlmd-link-(\d+)-(\d+)")
_VETH_NAME = re.compile(r"tll(\d+)n(\d+)")
log = structlog.get_logger("telemetryd.sim.shaped_links")


class LinkError(RuntimeError):
    """A shaped link could not be set up or torn down; the message says why."""


def tbf_burst_bytes(rate_mbit: float) -> int:
    """Bucket size for `rate_mbit`: 2 ms of the rate, at least 16 KiB.

    The bucket must hold a full segment burst or the rate is not reached; a large one
    flatters the first moments of a short test. Measured here at 150 Mbit with iperf3:
    4 KiB, 37.5 KiB (this formula) and 64 KiB all gave 143.0–143.5 Mbit/s (95.5 %).
    """
    return max(16 * 1024, int(rate_mbit * 1e6 / 8 * 0.002))


@dataclass(frozen=True, slots=True)
class ShapedSchool:
    """One school behind a shaped link: where its responder listens and with which token."""

    school_id: str
    rate_mbit: float
    number: int
    namespace: str
    root_veth: str
    address: str
    """The responder's (school side) address."""
    port: int
    token: str
    delay_ms: float
    pid: int
    """The responder's process id."""

    @property
    def url(self) -> str:
        """Base URL of the responder, as `probes.speedtest.measure` takes it."""
        return f"http://{self.address}:{self.port}"

    @property
    def root_address(self) -> str:
        """The root side's address on the link (the NOC's source address)."""
        return str(ipaddress.IPv4Address(self.address) - 1)


class ShapedLinks:
    """Shaped links for some schools: ``with ShapedLinks([("school-1", 20.0)]) as links:``.

    `schools` pairs a school id with its link rate in Mbit/s. `stop` removes everything
    `start` made and may be called any number of times.
    """

    def __init__(
        self,
        schools: Sequence[tuple[str, float]],
        *,
        delay_ms: float = DEFAULT_DELAY_MS,
        port: int = RESPONDER_PORT,
        max_bytes_per_request: int = 1 << 30,
        burst_bytes: int | None = None,
    ) -> None:
        if not schools or len(schools) > 254:
            raise ValueError("between 1 and 254 shaped schools per ShapedLinks")
        if any(rate <= 0 for _, rate in schools) or delay_ms < 0:
            raise ValueError("rates must be positive and the delay not negative")
        self._wanted = list(schools)
        self._delay_ms = delay_ms
        self._port = port
        self._cap = max_bytes_per_request
        self._burst_bytes = burst_bytes
        self._netem: bool | None = None
        """None until tried; False when this kernel has no netem qdisc."""
        self._lock = threading.RLock()
        self._namespaces: list[str] = []
        self._veths: list[str] = []
        self._responders: list[subprocess.Popen[bytes]] = []
        self._workdir: Path | None = None
        self.schools: list[ShapedSchool] = []

    def __enter__(self) -> ShapedLinks:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Create every link and responder; on any failure, tear down what was made and raise LinkError."""
        if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("tc") is None:
            raise LinkError("shaped links need root with `ip` and `tc` (iproute2)")
        with self._lock:
            if self.schools:
                return
            atexit.register(self.stop)
            self._workdir = Path(tempfile.mkdtemp(prefix="telemetryd-links-"))
            try:
                numbers = self._free_numbers(len(self._wanted))
                for (school_id, rate), number in zip(self._wanted, numbers, strict=True):
                    self.schools.append(self._start_school(school_id, rate, number))
                self._check_routes()
            except BaseException:
                self.stop()
                raise

    def stop(self) -> None:
        """Kill the responders (by PID), delete namespaces and veths, remove the temp dir."""
        with self._lock:
            problems: list[str] = []
            responders, self._responders = self._responders, []
            for process in responders:
                _stop_process(process, problems)
            namespaces, self._namespaces = self._namespaces, []
            for namespace in namespaces:
                _run(["ip", "netns", "del", namespace], check=False)
            veths, self._veths = self._veths, []
            for veth in veths:
                if Path("/sys/class/net", veth).exists():
                    _run(["ip", "link", "del", veth], check=False)
            workdir, self._workdir = self._workdir, None
            if workdir is not None:
                shutil.rmtree(workdir, ignore_errors=True)
            self.schools = []
            with contextlib.suppress(Exception):
                atexit.unregister(self.stop)
            if problems:
                raise LinkError("; ".join(problems))

    # --- set-up --------------------------------------------------------------------------

    def _free_numbers(self, count: int) -> list[int]:
        """Third octets whose /30 nothing on this machine routes yet."""
        routes = ip_routes()
        numbers: list[int] = []
        for number in range(1, 255):
            network = ipaddress.IPv4Network(f"10.210.{number}.0/30")
            if not overlapping_routes(routes, network) and not Path("/run/netns", self._ns_name(number)).exists():
                numbers.append(number)
            if len(numbers) == count:
                return numbers
        raise LinkError(f"fewer than {count} free /30s in {LINKS_BASE}; stop other shaped links first")

    @staticmethod
    def _ns_name(number: int) -> str:
        return f"tlmd-link-{os.getpid()}-{number}"

    def _start_school(self, school_id: str, rate_mbit: float, number: int) -> ShapedSchool:
        assert self._workdir is not None
        namespace = self._ns_name(number)
        veth = f"tll{os.getpid()}n{number}"
        if len(veth) > 15:
            raise LinkError(f"interface name {veth} is too long for this pid")
        root_side, school_side = f"10.210.{number}.1", f"10.210.{number}.2"
        _run(["ip", "netns", "add", namespace])
        self._namespaces.append(namespace)
        _run(["ip", "link", "add", veth, "type", "veth", "peer", "name", SCHOOL_LINK, "netns", namespace])
        self._veths.append(veth)
        _run(["ip", "address", "add", f"{root_side}/30", "dev", veth])
        _run(["ip", "link", "set", veth, "up"])
        script = ["link set lo up", f"address add {school_side}/30 dev {SCHOOL_LINK}", f"link set {SCHOOL_LINK} up"]
        _run(["ip", "-n", namespace, "-batch", "-"], stdin="\n".join(script) + "\n")
        burst = self._burst_bytes or tbf_burst_bytes(rate_mbit)
        for prefix, device in ((["tc"], veth), (["ip", "netns", "exec", namespace, "tc"], SCHOOL_LINK)):
            self._shape(prefix, device, rate_mbit, burst)
        token = secrets.token_urlsafe(24)
        process = self._start_responder(namespace, school_side, token, number)
        return ShapedSchool(
            school_id=school_id,
            rate_mbit=rate_mbit,
            number=number,
            namespace=namespace,
            root_veth=veth,
            address=school_side,
            port=self._port,
            token=token,
            delay_ms=self._delay_ms if self._netem is not False else 0.0,
            pid=process.pid,
        )

    def _shape(self, prefix: list[str], device: str, rate_mbit: float, burst: int) -> None:
        """tbf on `device`, under a netem delay when asked and the kernel has netem."""
        if self._delay_ms > 0 and self._netem is not False:
            try:
                for command in _shaping_commands(device, rate_mbit, burst, self._delay_ms):
                    _run([*prefix, *command])
                self._netem = True
                return
            except LinkError as exc:
                if self._netem or "unknown" not in str(exc).lower():
                    raise
                # Kernels built without sch_netem (this project's CI boxes) still shape; they just add no delay.
                log.warning("netem_unavailable", delay_ms=self._delay_ms, effect="links shaped without added delay")
                self._netem = False
                _run([*prefix, "qdisc", "del", "dev", device, "root"], check=False)
        _run([*prefix, *_shaping_commands(device, rate_mbit, burst, 0.0)[0]])

    def _start_responder(self, namespace: str, address: str, token: str, number: int) -> subprocess.Popen[bytes]:
        assert self._workdir is not None
        token_file = self._workdir / f"token-{number}"
        token_file.touch(mode=0o600)
        token_file.write_text(token + "\n", encoding="utf-8")
        log_path = self._workdir / f"responder-{number}.log"
        command = [
            *("ip", "netns", "exec", namespace, sys.executable, "-m", "telemetryd.school_responder"),
            *("--listen", f"{address}:{self._port}", "--token-file", str(token_file), "--max-bytes", str(self._cap)),
        ]
        # The responder must import this very telemetryd, installed or not.
        package_root = str(Path(telemetryd.__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        with log_path.open("wb") as errors:
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors, env=env
            )
        self._responders.append(process)
        line = _read_line(process, time.monotonic() + READY_TIMEOUT)
        if not line.startswith("ready"):
            tail = log_path.read_text(encoding="utf-8", errors="replace").strip()[-1500:]
            raise LinkError(f"the responder in {namespace} did not get ready ({line or 'no output'}): {tail}")
        return process

    def _check_routes(self) -> None:
        """The safety guard: each responder address must route into that school's own veth."""
        for school in self.schools:
            answer = ip_route_get(school.address)
            if not route_leads_into(answer, school.root_veth):
                raise LinkError(
                    f"safety guard: the route to {school.address} does not lead into {school.root_veth} "
                    f"({answer.strip() or 'no answer'}); refusing to use the shaped links, torn down"
                )


def check_route(school: ShapedSchool) -> None:
    """Raise LinkError unless traffic to the school's responder leaves through its veth; call before sending."""
    answer = ip_route_get(school.address)
    if not route_leads_into(answer, school.root_veth):
        raise LinkError(f"safety guard: {school.address} does not route into {school.root_veth}: {answer.strip()}")


def reap_stale_links() -> list[str]:
    """Remove namespaces and veths that ShapedLinks of dead processes left behind; needs root."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return []
    removed: list[str] = []
    for name in _run(["ip", "netns", "list"], check=False).split():
        match = _NS_NAME.fullmatch(name)
        if match and not _pid_alive(int(match[1])):
            _run(["ip", "netns", "del", name], check=False)
            removed.append(f"netns {name}")
    with contextlib.suppress(OSError):
        for link in sorted(os.listdir("/sys/class/net")):
            match = _VETH_NAME.fullmatch(link)
            if match and not _pid_alive(int(match[1])):
                _run(["ip", "link", "del", link], check=False)
                removed.append(f"link {link}")
    return removed


def _shaping_commands(device: str, rate_mbit: float, burst: int, delay_ms: float) -> list[list[str]]:
    tbf = ["tbf", "rate", f"{rate_mbit:g}mbit", "burst", str(burst), "latency", f"{TBF_LATENCY_MS}ms"]
    if delay_ms <= 0:
        return [["qdisc", "add", "dev", device, "root", *tbf]]
    return [
        ["qdisc", "add", "dev", device, "root", "handle", "1:", "netem", "delay", f"{delay_ms:g}ms", "limit", "10000"],
        ["qdisc", "add", "dev", device, "parent", "1:1", "handle", "10:", *tbf],
    ]


def _run(command: list[str], *, stdin: str | None = None, check: bool = True) -> str:
    return run(command, error=LinkError, stdin=stdin, check=check)


def _stop_process(process: subprocess.Popen[bytes], problems: list[str]) -> None:
    if not end(process):
        problems.append(f"responder pid {process.pid} did not exit")

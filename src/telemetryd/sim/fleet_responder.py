"""The fleet's TCP responder: `python -m telemetryd.sim.fleet_responder SPEC.json`.

One process answers for every simulated device. It binds one listening socket per
(address, open port), so a device with closed ports refuses the others with RST,
accepts and closes connections, and enacts the flapping schedule: in netns mode by
adding and removing the device's /32 on the namespace's `lo`, in loopback mode by
closing and reopening its listeners. It prints ``ready <sockets>`` once every socket
listens, and exits when stdin closes or its parent dies.

It imports nothing heavier than `telemetryd.sim.schedule` so it starts fast.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import json
import os
import resource
import shutil
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from telemetryd.sim.schedule import FlapSchedule

IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)  # Linux value; Python 3.11 does not export it
BACKLOG = 128
PARENT_CHECK_SECONDS = 1.0
HANDOVER_PREFIX = "telemetryd-sim-"
"""Name prefix of the temporary directory `Fleet` hands the spec over in."""
SPARE_FILES = 256
"""File descriptors kept free beyond the listeners: accepted sockets, pipes, `ip` children."""


@dataclass(frozen=True, slots=True)
class HostSpec:
    """One address the responder answers for."""

    host: str
    ports: tuple[int, ...]
    """Ports that accept while the host is up."""
    flap: FlapSchedule | None = None


@dataclass(frozen=True, slots=True)
class ResponderSpec:
    """What the parent `Fleet` hands the responder, as JSON."""

    mode: str
    """``netns``: flap by address add/del on `flap_device`; ``loopback``: by closing listeners."""
    hosts: tuple[HostSpec, ...]
    flap_device: str = "lo"

    def to_json(self) -> str:
        """Serialise for the responder's command line file."""
        return json.dumps(
            {
                "mode": self.mode,
                "flap_device": self.flap_device,
                "hosts": [
                    [h.host, list(h.ports), None if h.flap is None else [h.flap.period, h.flap.phase]]
                    for h in self.hosts
                ],
            }
        )

    @classmethod
    def from_json(cls, text: str) -> ResponderSpec:
        """Parse what `to_json` wrote."""
        raw = json.loads(text)
        hosts = tuple(
            HostSpec(host, tuple(ports), None if flap is None else FlapSchedule(flap[0], flap[1]))
            for host, ports, flap in raw["hosts"]
        )
        return cls(mode=raw["mode"], hosts=hosts, flap_device=raw.get("flap_device", "lo"))

    @property
    def socket_count(self) -> int:
        """How many listening sockets the responder holds at most."""
        return sum(len(h.ports) for h in self.hosts)


def raise_nofile_limit(needed: int) -> int:
    """Raise RLIMIT_NOFILE to at least `needed`; returns the new soft limit.

    Raises OSError with advice when the hard limit is lower and we may not lift it
    (only root may raise a hard limit).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft >= needed:
        return soft
    new_hard = hard if hard == resource.RLIM_INFINITY or hard >= needed else needed
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, new_hard))
    except (ValueError, OSError) as exc:
        raise OSError(
            f"the responder needs {needed} open files but the hard limit is {hard}: "
            "run as root, raise `ulimit -Hn`, or simulate fewer devices"
        ) from exc
    return needed


class Responder:
    """Listening sockets for a fleet, and the flapping schedule applied to them."""

    def __init__(self, spec: ResponderSpec) -> None:
        self.spec = spec
        self.listeners: dict[str, list[socket.socket]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped = asyncio.Event()

    def listen(self, host: HostSpec) -> None:
        """Open a listener on every open port of `host` (no-op if already open)."""
        if host.host in self.listeners:
            return
        sockets: list[socket.socket] = []
        try:
            for port in host.ports:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                # A flapping host's address comes and goes; the listener must outlive it.
                sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
                sock.bind((host.host, port))
                sock.listen(BACKLOG)
                sock.setblocking(False)
        except OSError as exc:
            for sock in sockets:
                sock.close()
            raise OSError(exc.errno, f"cannot listen on {host.host}:{port}: {exc.strerror}") from exc
        self.listeners[host.host] = sockets
        if self._loop is not None:
            for sock in sockets:
                self._loop.add_reader(sock.fileno(), self._accept, sock)

    def close(self, address: str) -> None:
        """Close every listener of `address`; connections to it are refused from now on."""
        for sock in self.listeners.pop(address, []):
            if self._loop is not None:
                self._loop.remove_reader(sock.fileno())
            sock.close()

    @staticmethod
    def _accept(sock: socket.socket) -> None:
        # Bounded so one busy listener cannot starve the rest of the loop.
        for _ in range(64):
            try:
                connection, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                print(f"responder: accept on {sock.getsockname()}: {exc}", file=sys.stderr)
                return
            connection.close()

    async def run(self) -> None:
        """Listen, report ready on stdout, flap on schedule, until stdin closes or the parent dies."""
        self._loop = asyncio.get_running_loop()
        now = time.time()
        flapping = [h for h in self.spec.hosts if h.flap is not None]
        for host in self.spec.hosts:
            if host.flap is None or self.spec.mode == "netns" or host.flap.is_up(now):
                self.listen(host)
        if self.spec.mode == "netns":
            # Down hosts simply have no address yet; only the up ones need adding.
            await self._set_addresses([(h.host, True) for h in flapping if h.flap and h.flap.is_up(now)])
        print(f"ready {sum(len(s) for s in self.listeners.values())}", flush=True)

        parent = os.getppid()
        self._loop.add_reader(sys.stdin.fileno(), self._on_stdin)
        tasks = [
            asyncio.create_task(self._watch_parent(parent)),
            asyncio.create_task(self._flap(flapping)),
        ]
        try:
            await self._stopped.wait()
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            self._loop.remove_reader(sys.stdin.fileno())
            for address in list(self.listeners):
                self.close(address)

    def _on_stdin(self) -> None:
        try:
            chunk = os.read(sys.stdin.fileno(), 4096)
        except OSError:
            chunk = b""
        if not chunk:  # the parent closed the pipe or died
            self._stopped.set()

    async def _watch_parent(self, parent: int) -> None:
        while True:
            await asyncio.sleep(PARENT_CHECK_SECONDS)
            if os.getppid() != parent:  # reparented: whoever started us is gone
                self._stopped.set()
                return

    async def _flap(self, hosts: Sequence[HostSpec]) -> None:
        now = time.time()
        queue: list[tuple[float, int]] = []
        for index, host in enumerate(hosts):
            assert host.flap is not None
            queue.append((host.flap.next_transition(now), index))
        heapq.heapify(queue)
        while queue:
            delay = queue[0][0] - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            due: list[tuple[HostSpec, bool]] = []
            while queue and queue[0][0] <= time.time() + 0.005:
                at, index = heapq.heappop(queue)
                host = hosts[index]
                assert host.flap is not None
                # Judge the state mid-stretch: at the edge itself float rounding may lie.
                middle = at + host.flap.half / 2
                due.append((host, host.flap.is_up(middle)))
                heapq.heappush(queue, (host.flap.next_transition(middle), index))
            if self.spec.mode == "netns":
                await self._set_addresses([(h.host, up) for h, up in due])
            else:
                for host, up in due:
                    if up:
                        self._listen_or_warn(host)
                    else:
                        self.close(host.host)

    def _listen_or_warn(self, host: HostSpec) -> None:
        try:
            self.listen(host)
        except OSError as exc:
            print(f"responder: cannot reopen {host.host}: {exc}", file=sys.stderr)

    async def _set_addresses(self, changes: Sequence[tuple[str, bool]]) -> None:
        """Add (up) or remove (down) /32 addresses on the flap device in one `ip -batch`."""
        if not changes:
            return
        device = self.spec.flap_device
        script = "".join(f"address {'add' if up else 'del'} {address}/32 dev {device}\n" for address, up in changes)
        process = await asyncio.create_subprocess_exec(
            "ip",
            "-force",
            "-batch",
            "-",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, errors = await process.communicate(script.encode())
        if process.returncode != 0:
            print(f"responder: ip -batch failed: {errors.decode(errors='replace').strip()}", file=sys.stderr)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop  # noqa: PLC0415 - optional, and only the responder process wants it
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def main(argv: Sequence[str] | None = None) -> int:
    """Run the responder for the spec file named on the command line."""
    parser = argparse.ArgumentParser(prog="python -m telemetryd.sim.fleet_responder", description=__doc__)
    parser.add_argument("spec", type=Path, help="JSON written by Fleet (ResponderSpec.to_json)")
    args = parser.parse_args(argv)
    # Ctrl-C in a terminal reaches the whole process group; the parent tears us down.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    spec = ResponderSpec.from_json(args.spec.read_text(encoding="utf-8"))
    try:
        raise_nofile_limit(spec.socket_count + SPARE_FILES)
    except OSError as exc:
        print(f"responder: {exc}", file=sys.stderr)
        return 1
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(Responder(spec).run())
    except OSError as exc:
        print(f"responder: {exc}", file=sys.stderr)
        return 1
    # A parent killed with SIGKILL cannot remove the hand-over directory; do it for it.
    if args.spec.parent.name.startswith(HANDOVER_PREFIX):
        shutil.rmtree(args.spec.parent, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

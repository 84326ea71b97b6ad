"""What 10,000 open ISAPI event streams cost: telemetryd's `EventStreams` against simulated cameras.

The simulator (`telemetryd.sim.hikvision`, its own process pinned to the other core) serves
every camera on its own 127.0.0.1 port with the firmware's heartbeat (``videoloss`` /
``inactive``, every `--heartbeat` seconds) and tampering events at `--events-per-minute`
across the fleet, each repeated every second for 5 s and then ended. This process runs only
what the daemon runs for the streams (the ISAPI prober's stream pool, digest auth, the
bounded multipart reader, event books, the expiry sweep), pinned to one core, and measures
its own CPU (user + system) over a window once every stream is open.

    .venv/bin/python bench/event_streams.py [--cameras 10000] [--seconds 60] [--heartbeat 10]

Traffic goes only to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop

from telemetryd import logs
from telemetryd.model import Contract, Device, DeviceKind, Inventory, ProbeSpec, School
from telemetryd.probes.isapi import IsapiPolicy, IsapiProber
from telemetryd.probes.isapi.events import EventStreams
from telemetryd.secrets import Secrets
from telemetryd.sim.hikvision import raise_file_limit

PASSWORD = "Bench-Pass-1"


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _inventory(devices: list[dict[str, object]]) -> Inventory:
    schools = []
    for first in range(0, len(devices), 35):  # ~35 cameras a school, as in the city
        listed = tuple(
            Device(
                f"cam-{index}",
                f"s{first // 35}",
                DeviceKind.CAMERA,
                str(d["host"]),
                (ProbeSpec("isapi", int(str(d["port"]))),),
                credentials="hik",
            )
            for index, d in enumerate(devices[first : first + 35], start=first)
        )
        schools.append(School(f"s{first // 35}", "School", "Bench", Contract(), listed))
    return Inventory.build(schools)


async def _measure(devices: list[dict[str, object]], seconds: float, secrets: Secrets) -> dict[str, Any]:
    changes = [0]
    async with IsapiProber(policy=IsapiPolicy(request_timeout=10.0)) as prober:
        streams = EventStreams(prober, secrets, on_change=lambda _d, _c: changes.__setitem__(0, changes[0] + 1))
        started = time.monotonic()
        streams.sync(_inventory(devices))
        while streams.states()["open"] < len(devices):
            if time.monotonic() - started > 60:
                break  # measured with what opened; the rest are reported
            await asyncio.sleep(0.5)
        failing = collections.Counter(s.detail for s in streams.streams.values() if s.state != "open")
        hosts = sorted(s.device.host for s in streams.streams.values() if s.state != "open")
        opened = time.monotonic() - started
        await asyncio.sleep(5)  # the opening burst's garbage and timers settle
        cpu, wall, parts, changed = _cpu(), time.monotonic(), streams.parts, changes[0]
        await asyncio.sleep(seconds)
        cpu, wall = _cpu() - cpu, time.monotonic() - wall
        result = {
            "open_seconds": opened,
            "cpu_seconds": cpu,
            "wall_seconds": wall,
            "parts": streams.parts - parts,
            "changes": changes[0] - changed,
            "still_open": streams.states()["open"],
            "reconnects": streams.reconnects,
            "rss_mb": _rss_mb(),
            "failing": dict(failing),
            "failing_hosts": hosts[:20],
        }
        await streams.close()
    return result


def main() -> None:
    """Open the streams, measure a quiet window, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cameras", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--heartbeat", type=float, default=10.0)
    parser.add_argument("--events-per-minute", type=float, default=60.0)
    args = parser.parse_args()
    raise_file_limit(4 * args.cameras)  # one socket per stream
    logs.configure("json", "info", stream=open(os.devnull, "w"))  # noqa: SIM115 - for the process's life

    cores = sorted(os.sched_getaffinity(0))
    bench_core, sim_cores = cores[0], (cores[1:] or cores)
    sim = subprocess.Popen(
        [sys.executable, "-m", "telemetryd.sim.hikvision", "--cameras", str(args.cameras), "--nvrs", "0",
         "--password", PASSWORD, "--heartbeat", str(args.heartbeat),
         "--events-per-minute", str(args.events_per_minute), *(["--own-hosts"] if os.geteuid() == 0 else [])],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        preexec_fn=lambda: os.sched_setaffinity(0, set(sim_cores)),  # noqa: PLW1509 - no threads yet
    )  # fmt: skip
    try:
        assert sim.stdout is not None
        devices = json.loads(sim.stdout.readline())["devices"]
        os.sched_setaffinity(0, {bench_core})
        with tempfile.TemporaryDirectory() as secrets_dir:
            Path(secrets_dir, "hik").write_text(f"admin:{PASSWORD}\n")
            result = uvloop.run(_measure(devices, args.seconds, Secrets(secrets_dir)))
    finally:
        assert sim.stdin is not None
        sim.stdin.close()
        sim.wait(timeout=60)
    share = 100 * result["cpu_seconds"] / result["wall_seconds"]
    print(f"{args.cameras} event streams, heartbeat {args.heartbeat:g} s, {args.events_per_minute:g} events/min")
    print(f"all open after {result['open_seconds']:.1f} s; {result['still_open']:.0f} open at the end")
    print(
        f"window {result['wall_seconds']:.0f} s: {result['parts'] / result['wall_seconds']:.0f} parts/s, "
        f"{result['changes']:.0f} event changes, {result['reconnects']:.0f} reconnects"
    )
    if result["failing"]:
        print(f"not open: {result['failing']} {result['failing_hosts']}")
    print(f"CPU: {share:.2f} % of one core (target < 5 %); RSS {result['rss_mb']:.0f} MB")
    if sim_cores == [bench_core]:
        print("note: one core only; the simulator shared it")


if __name__ == "__main__":
    main()

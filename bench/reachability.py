"""Reachability benchmark: CPU per 1,000 probes of telemetryd against fping and blackbox_exporter.

All tools probe the same simulated fleet (a network namespace of alive hosts) in the same
run; each is measured as CPU time (user + system) of its own process, medians of
--repeat runs. Prints a table with ratios against the peers.

    sudo .venv/bin/python bench/reachability.py [--hosts 10000] [--repeat 3]

Needs root (the namespace fleet, raw ICMP), fping and prometheus-blackbox-exporter.
Traffic goes only to the fleet's addresses, inside the namespace this script creates.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from telemetryd.model import DeviceKind
from telemetryd.sim.city import generate_city
from telemetryd.sim.fleet import Fleet

HERE = Path(__file__).resolve().parent
TICKS = os.sysconf("SC_CLK_TCK")
UNPACED = 10_000_000
"""A packet rate no sweep reaches: pacing never waits."""


@dataclass
class Sample:
    probes: int
    ok: int
    cpu_seconds: float
    wall_seconds: float

    @property
    def cpu_ms_per_1000(self) -> float:
        return self.cpu_seconds * 1000 / self.probes * 1000


def _children_cpu() -> float:
    # getrusage has microsecond resolution; os.times() counts 10 ms clock ticks.
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_fping(fping: str, hosts_file: Path, count: int, interval_ms: float) -> Sample:
    """fping over every host once; CPU from the child's rusage."""
    before, wall = _children_cpu(), time.monotonic()
    proc = subprocess.run(
        [fping, "-q", "-C", "1", "-r", "0", "-t", "2000", "-i", f"{interval_ms:g}", "-f", str(hosts_file)],
        capture_output=True,
        text=True,
        check=False,
    )
    cpu, elapsed = _children_cpu() - before, time.monotonic() - wall
    # -C output on stderr: "host : 0.05" per host, "-" when lost.
    ok = sum(1 for line in proc.stderr.splitlines() if ":" in line and line.rsplit(":", 1)[1].strip() != "-")
    return Sample(count, ok, cpu, elapsed)


def run_telemetryd(kind: str, hosts_file: Path, arg: int) -> Sample:
    """telemetryd's prober in its own process (see _worker.py)."""
    proc = subprocess.run(
        [sys.executable, str(HERE / "_worker.py"), kind, str(hosts_file), str(arg)],
        capture_output=True,
        text=True,
        check=True,
    )
    data = json.loads(proc.stdout)
    return Sample(data["probes"], data["ok"], data["cpu_seconds"], data["wall_seconds"])


def _proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


class Blackbox:
    """prometheus-blackbox-exporter on loopback with icmp and tcp modules."""

    def __init__(self, binary: str, workdir: Path) -> None:
        config = workdir / "blackbox.yml"
        config.write_text(
            "modules:\n"
            "  icmp: {prober: icmp, timeout: 2s, icmp: {preferred_ip_protocol: ip4}}\n"
            "  tcp: {prober: tcp, timeout: 2s, tcp: {preferred_ip_protocol: ip4}}\n"
        )
        with socket.socket() as probe_port:
            probe_port.bind(("127.0.0.1", 0))
            self.port = probe_port.getsockname()[1]
        self.proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("blackbox_exporter did not start")

    def sweep(self, module: str, hosts: list[str], concurrency: int = 50) -> Sample:
        """One /probe request per host, `concurrency` at a time; CPU of the exporter only."""

        async def drive() -> int:
            limit = asyncio.Semaphore(concurrency)
            url = f"http://127.0.0.1:{self.port}/probe"
            async with aiohttp.ClientSession() as session:

                async def one(host: str) -> bool:
                    target = host if module == "icmp" else f"{host}:80"
                    async with limit, session.get(url, params={"module": module, "target": target}) as response:
                        return "probe_success 1" in await response.text()

                return sum(await asyncio.gather(*(one(h) for h in hosts)))

        before, wall = _proc_cpu(self.proc.pid), time.monotonic()
        ok = asyncio.run(drive())
        return Sample(len(hosts), ok, _proc_cpu(self.proc.pid) - before, time.monotonic() - wall)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def median(samples: list[Sample]) -> Sample:
    """The run with the median CPU per probe."""
    return sorted(samples, key=lambda s: s.cpu_ms_per_1000)[len(samples) // 2]


def measure(name: str, repeat: int, fn: Callable[[], Sample]) -> Sample:
    return measure_pair(repeat, (name, fn))[0]


def measure_pair(repeat: int, *tools: tuple[str, Callable[[], Sample]]) -> list[Sample]:
    """Run the tools in turn, `repeat` rounds, so a load that comes and goes hits them alike."""
    runs: list[list[Sample]] = [[] for _ in tools]
    for _ in range(repeat):
        for samples, (_name, fn) in zip(runs, tools, strict=True):
            samples.append(fn())
    medians = []
    for samples, (name, _fn) in zip(runs, tools, strict=True):
        best = median(samples)
        spread = [round(s.cpu_ms_per_1000, 1) for s in samples]
        print(f"  {name:<38} {best.cpu_ms_per_1000:8.1f} ms/1000  runs {spread}  ok {best.ok}/{best.probes}")
        medians.append(best)
    return medians


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=10_000)
    parser.add_argument("--blackbox-probes", type=int, default=1_000, help="blackbox is slow: probe this many")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rate", type=int, default=1000, help="ICMP packets/s for both fping and telemetryd")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root: the benchmark builds a network namespace fleet and uses raw ICMP", file=sys.stderr)
        return 2
    fping = shutil.which("fping")
    blackbox_bin = shutil.which("prometheus-blackbox-exporter")
    if not fping or not blackbox_bin:
        print("needs fping and prometheus-blackbox-exporter (make bench installs them)", file=sys.stderr)
        return 2

    schools = -(-args.hosts // 35)
    city = generate_city(schools, 35, seed=42, dead_share=0.0, flapping_share=0.0, closed_port_share=0.0)
    devices = list(city.inventory.devices_by_id.values())[: args.hosts]
    hosts = [d.host for d in devices]
    tcp_hosts = [d.host for d in devices if d.kind in (DeviceKind.CAMERA, DeviceKind.NVR, DeviceKind.ALARM_PANEL)]
    fleet = Fleet(city, mode="netns")
    with tempfile.TemporaryDirectory(prefix="telemetryd-bench-") as tmp:
        workdir = Path(tmp)
        hosts_file = workdir / "hosts.txt"
        hosts_file.write_text("\n".join(hosts))
        tcp_file = workdir / "tcp_hosts.txt"
        tcp_file.write_text("\n".join(tcp_hosts))
        bb_hosts = hosts[: args.blackbox_probes]
        bb_tcp_hosts = tcp_hosts[: args.blackbox_probes]
        fleet.start()
        blackbox = Blackbox(blackbox_bin, workdir)
        try:
            print(
                f"fleet: {len(hosts)} alive hosts in namespace {fleet.ns_name}; ICMP rate {args.rate}/s; "
                f"median of {args.repeat} runs (CPU = user + system of the prober's process)\n"
            )
            print(f"ICMP, paced at {args.rate} packets/s (how the daemon sends)")
            fping_s, ours_icmp = measure_pair(
                args.repeat,
                ("fping 1 ping/host", lambda: run_fping(fping, hosts_file, len(hosts), 1000 / args.rate)),
                ("telemetryd icmp (shared socket)", lambda: run_telemetryd("icmp", hosts_file, args.rate)),
            )
            print("ICMP, unpaced (each tool as fast as it sends)")
            fping_fast, ours_fast = measure_pair(
                args.repeat,
                ("fping -i 0", lambda: run_fping(fping, hosts_file, len(hosts), 0)),
                ("telemetryd icmp, no pacing", lambda: run_telemetryd("icmp", hosts_file, UNPACED)),
            )
            bb_icmp = measure(
                f"blackbox_exporter icmp ({len(bb_hosts)})", args.repeat, lambda: blackbox.sweep("icmp", bb_hosts)
            )
            print("TCP connect :80")
            ours_tcp, bb_tcp = measure_pair(
                args.repeat,
                ("telemetryd tcp", lambda: run_telemetryd("tcp", tcp_file, 1000)),
                (f"blackbox_exporter tcp_connect ({len(bb_tcp_hosts)})", lambda: blackbox.sweep("tcp", bb_tcp_hosts)),
            )
        finally:
            blackbox.stop()
            fleet.stop()

    rows = [
        ("ICMP paced", "fping", fping_s, None),
        (
            "ICMP paced",
            "telemetryd",
            ours_icmp,
            f"{ours_icmp.cpu_ms_per_1000 / fping_s.cpu_ms_per_1000:.2f}x fping "
            f"(target <= 1.5x), {ours_icmp.cpu_ms_per_1000 / bb_icmp.cpu_ms_per_1000:.3f}x blackbox",
        ),
        ("ICMP", "blackbox_exporter", bb_icmp, None),
        ("ICMP unpaced", "fping -i 0", fping_fast, None),
        (
            "ICMP unpaced",
            "telemetryd",
            ours_fast,
            f"{ours_fast.cpu_ms_per_1000 / fping_fast.cpu_ms_per_1000:.2f}x fping (target <= 1.5x)",
        ),
        (
            "TCP",
            "telemetryd",
            ours_tcp,
            f"{ours_tcp.cpu_ms_per_1000 / bb_tcp.cpu_ms_per_1000:.3f}x blackbox (target <= 0.3x)",
        ),
        ("TCP", "blackbox_exporter", bb_tcp, None),
    ]
    print("\n| probe | tool | probes | ok | CPU ms per 1,000 | wall s | ratio |")
    print("| --- | --- | ---: | ---: | ---: | ---: | --- |")
    for probe, tool, sample, ratio in rows:
        print(
            f"| {probe} | {tool} | {sample.probes} | {sample.ok} | {sample.cpu_ms_per_1000:.1f} | "
            f"{sample.wall_seconds:.2f} | {ratio or ''} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

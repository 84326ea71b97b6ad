"""Speed test vs iperf3 on shaped links (root): rate agreement and bytes spent.

    sudo uv run --frozen python bench/speedtest.py [--rates 10,20,50,100,150] [--repeat 3]

For every link rate, one namespace behind a tbf-shaped veth (telemetryd.sim.shaped_links) runs
the telemetryd responder; on the same link in the same run this script measures
download and upload with telemetryd's speed test and with iperf3 (default 10 s test;
``-R`` for download, the server sending), and prints a Markdown table of medians.
Targets: rate within ±3 % of iperf3, bytes at most 0.5× iperf3's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

from telemetryd import logs
from telemetryd.model import Direction
from telemetryd.probes.speedcalc import default_budget
from telemetryd.probes.speedtest import DEFAULT_STREAMS, measure
from telemetryd.sim.shaped_links import ShapedLinks, ShapedSchool, check_route


@dataclass(frozen=True, slots=True)
class Run:
    """One measurement of one direction by one tool."""

    mbps: float
    moved: int
    seconds: float
    stable: bool = True


def forget_tcp_metrics(school: ShapedSchool) -> None:
    """Drop the kernel's cached ssthresh/cwnd for this link on both ends, so no run inherits the last one's losses."""
    prefix = f"{school.root_address}/30"
    subprocess.run(["ip", "tcp_metrics", "flush", prefix], capture_output=True, check=False)
    subprocess.run(["ip", "-n", school.namespace, "tcp_metrics", "flush", prefix], capture_output=True, check=False)


def iperf3_run(school: ShapedSchool, direction: Direction) -> Run:
    """One default 10 s iperf3 test; the server lives in the school's namespace, the client here."""
    check_route(school)
    forget_tcp_metrics(school)
    server = subprocess.Popen(
        ["ip", "netns", "exec", school.namespace, "iperf3", "-s", "-1", "-B", school.address],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        command = ["iperf3", "-c", school.address, "-J"]
        if direction is Direction.DOWNLOAD:
            command.append("-R")  # the server (school side) sends
        for _attempt in range(20):
            started = time.monotonic()
            done = subprocess.run(command, capture_output=True, text=True, timeout=40, check=False)
            with contextlib.suppress(ValueError, KeyError, TypeError):
                received = json.loads(done.stdout)["end"]["sum_received"]
                return Run(received["bits_per_second"] / 1e6, int(received["bytes"]), time.monotonic() - started)
            time.sleep(0.2)  # the server was not listening yet
        raise RuntimeError(f"iperf3 failed: {done.stdout[-500:]} {done.stderr[-500:]}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            server.terminate()
        try:
            server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def telemetryd_run(school: ShapedSchool, direction: Direction, args: argparse.Namespace) -> Run:
    """One telemetryd speed test of one direction, with the default budget for the link's rate."""
    check_route(school)
    forget_tcp_metrics(school)
    result = asyncio.run(
        measure(
            school.url,
            school.token,
            direction,
            streams=args.streams,
            max_bytes=default_budget(school.rate_mbit, seconds=args.budget_seconds),
            max_seconds=args.max_seconds,
        )
    )
    if not result.ok:
        raise RuntimeError(f"telemetryd speed test failed: {result.reason}: {result.detail}")
    return Run(result.mbps, result.bytes_used, result.duration, result.stable)


def main() -> int:
    """Run the comparison and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="10,20,50,100,150", help="link rates in Mbit/s, comma separated")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--streams", type=int, default=DEFAULT_STREAMS)
    parser.add_argument("--budget-seconds", type=float, default=4.0, help="byte budget: seconds at the link rate")
    parser.add_argument("--max-seconds", type=float, default=8.0)
    parser.add_argument("--delay-ms", type=float, default=5.0)
    args = parser.parse_args()
    logs.configure(stream=sys.stderr)  # stdout is the table
    if shutil.which("iperf3") is None:
        print("iperf3 not installed (Debian package iperf3)", file=sys.stderr)
        return 2
    rates = [float(r) for r in args.rates.split(",")]
    rows: list[str] = []
    with ShapedLinks([(f"bench-{r:g}", r) for r in rates], delay_ms=args.delay_ms) as links:
        print(f"links up; added delay {links.schools[0].delay_ms:g} ms", file=sys.stderr)
        for school in links.schools:
            for direction in (Direction.DOWNLOAD, Direction.UPLOAD):
                ours: list[Run] = []
                theirs: list[Run] = []
                for _ in range(args.repeat):
                    theirs.append(iperf3_run(school, direction))
                    ours.append(telemetryd_run(school, direction, args))
                    print(
                        f"{school.rate_mbit:g} {direction}: iperf3 {theirs[-1]} telemetryd {ours[-1]}", file=sys.stderr
                    )
                rows.append(_row(school.rate_mbit, direction, theirs, ours))
    print(
        "| link Mbit | direction | iperf3 Mbps | iperf3 bytes | telemetryd Mbps | telemetryd bytes "
        "| telemetryd s | stable | rate ratio | bytes ratio |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))
    return 0


def _row(rate: float, direction: Direction, theirs: list[Run], ours: list[Run]) -> str:
    iperf_mbps = statistics.median(r.mbps for r in theirs)
    iperf_bytes = statistics.median(r.moved for r in theirs)
    our_mbps = statistics.median(r.mbps for r in ours)
    our_bytes = statistics.median(r.moved for r in ours)
    our_seconds = statistics.median(r.seconds for r in ours)
    stable = sum(r.stable for r in ours)
    return (
        f"| {rate:g} | {direction} | {iperf_mbps:.2f} | {iperf_bytes / 1e6:.1f} MB | {our_mbps:.2f} "
        f"| {our_bytes / 1e6:.1f} MB | {our_seconds:.2f} | {stable}/{len(ours)} "
        f"| {our_mbps / iperf_mbps:.3f} | {our_bytes / iperf_bytes:.2f} |"
    )


if __name__ == "__main__":
    sys.exit(main())

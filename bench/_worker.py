"""Runs one telemetryd probe sweep and prints its own CPU time as JSON (used by reachability.py).

A separate process so its CPU is measured alone, the way a long-running daemon spends it:
interpreter start-up and imports are outside the measured span.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time

import uvloop

from telemetryd.probes import tcp
from telemetryd.probes.icmp import Pinger


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def icmp_sweep(hosts: list[str], rate: int) -> tuple[int, float, float]:
    pinger = Pinger.open(max_packets_per_second=rate)
    try:
        cpu, wall = _cpu(), time.monotonic()
        results = await pinger.ping_many(hosts, count=1, timeout=2.0)
        return sum(r.ok for r in results), _cpu() - cpu, time.monotonic() - wall
    finally:
        pinger.close()


async def tcp_sweep(hosts: list[str], port: int, concurrency: int) -> tuple[int, float, float]:
    limit = asyncio.Semaphore(concurrency)

    async def one(host: str) -> bool:
        async with limit:
            return (await tcp.connect(host, port, 2.0)).ok

    cpu, wall = _cpu(), time.monotonic()
    results = await asyncio.gather(*(one(h) for h in hosts))
    return sum(results), _cpu() - cpu, time.monotonic() - wall


def main() -> None:
    kind, hosts_file, arg = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with open(hosts_file) as f:
        hosts = f.read().split()
    coro = icmp_sweep(hosts, arg) if kind == "icmp" else tcp_sweep(hosts, 80, arg)
    ok, cpu, wall = uvloop.run(coro)
    print(json.dumps({"probes": len(hosts), "ok": ok, "cpu_seconds": cpu, "wall_seconds": wall}))


if __name__ == "__main__":
    main()

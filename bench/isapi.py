"""ISAPI health-check throughput on one core: telemetryd's client against simulated cameras and NVRs.

The simulator (`telemetryd.sim.hikvision`) runs in its own process pinned to another
core, so its CPU is not counted; this process is pinned to one core and measures its
own CPU time (user + system) over the measured rounds. Every check is the real thing:
digest auth (MD5 and SHA-256 firmware), keep-alive, XML parsing, lockout bookkeeping.

    uv run --frozen python bench/isapi.py [--cameras 450] [--nvrs 50] [--rounds 5] [--concurrency 200]

Traffic goes only to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import resource
import subprocess
import sys
import time

import uvloop

from telemetryd.probes.isapi import IsapiPolicy, IsapiProber

PASSWORD = "Bench-Pass-1"


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _rounds(
    devices: list[dict[str, object]], rounds: int, concurrency: int, policy: IsapiPolicy
) -> dict[str, float]:
    limit = asyncio.Semaphore(concurrency)
    async with IsapiProber(policy=policy, connections=concurrency) as prober:
        requests = [0]

        async def one(device: dict[str, object]) -> bool:
            async with limit:
                health = await prober.check(
                    str(device["host"]), int(str(device["port"])), "admin", PASSWORD,
                    "nvr" if device["kind"] == "nvr" else "camera", now=time.time(),
                )  # fmt: skip
                requests[0] += health.requests
                return health.ok

        warm = await asyncio.gather(*(one(d) for d in devices))  # first contact: challenges, connections
        cpu, wall = _cpu(), time.monotonic()
        requests[0] = 0
        ok = 0
        for _ in range(rounds):
            ok += sum(await asyncio.gather(*(one(d) for d in devices)))
        cpu, wall = _cpu() - cpu, time.monotonic() - wall
    checks = len(devices) * rounds
    return {
        "checks": checks,
        "ok": ok,
        "warm_ok": sum(warm),
        "cpu_seconds": cpu,
        "wall_seconds": wall,
        "requests": requests[0],  # HTTP requests sent, challenge fetches included
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cameras", type=int, default=450)
    parser.add_argument("--nvrs", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument(
        "--nonce-max-age", type=float, default=None,
        help="seconds a nonce is reused (the client's default: 30); below a round's length every check fetches "
        "its own challenge, as checks 5 minutes apart do in the daemon",
    )  # fmt: skip
    args = parser.parse_args()
    policy = IsapiPolicy()
    if args.nonce_max_age is not None:
        policy = dataclasses.replace(policy, nonce_max_age=args.nonce_max_age)

    cores = sorted(os.sched_getaffinity(0))
    bench_core, sim_cores = cores[0], (cores[1:] or cores)
    sim = subprocess.Popen(
        [sys.executable, "-m", "telemetryd.sim.hikvision", "--cameras", str(args.cameras), "--nvrs", str(args.nvrs),
         "--password", PASSWORD],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        preexec_fn=lambda: os.sched_setaffinity(0, set(sim_cores)),  # noqa: PLW1509 - no threads yet
    )  # fmt: skip
    try:
        assert sim.stdout is not None
        devices = json.loads(sim.stdout.readline())["devices"]
        os.sched_setaffinity(0, {bench_core})
        result = uvloop.run(_rounds(devices, args.rounds, args.concurrency, policy))
    finally:
        assert sim.stdin is not None
        sim.stdin.close()
        sim.wait(timeout=10)
    cpu_ms = result["cpu_seconds"] * 1000 / result["checks"]
    print(
        f"{args.cameras} cameras + {args.nvrs} NVRs, {args.rounds} rounds, concurrency {args.concurrency}, "
        f"client on core {bench_core}, simulator on {sim_cores}"
    )
    print(f"checks: {result['checks']:.0f} ({result['ok']:.0f} ok), wall {result['wall_seconds']:.2f}s")
    print(f"wall rate: {result['checks'] / result['wall_seconds']:.0f} checks/s (bounded by the simulator too)")
    print(f"client CPU: {cpu_ms:.3f} ms/check -> {1000 / cpu_ms:.0f} checks/s per core")
    print(f"requests: {result['requests'] / result['checks']:.2f} per check (challenge fetches included)")
    if sim_cores == [bench_core]:
        print("note: one core only; the simulator shared it, so the wall rate understates the client")


if __name__ == "__main__":
    main()

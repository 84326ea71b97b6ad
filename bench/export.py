"""Cost of one /metrics render at city scale, and of one probe result through the scheduler.

Both are hot paths a refactor can slow down without any test noticing, so this bench
prints figures to compare before and after a change (run it on both checkouts):

* render: a simulated city (300 schools × 35 = 10,500 devices, every device with
  results, 1 % of them changing state between two renders), one /metrics body as the
  daemon renders it, CPU ms per render and per 1,000 devices, series in the body;
* scheduler: 10,000 TCP jobs on a 1 s interval with a prober that answers at once,
  CPU per 1,000 runs, against the same runs made as bare asyncio tasks in the same
  process (the least any asyncio scheduler pays): the ratio is the scheduler's overhead.

    .venv/bin/python bench/export.py [--schools 300] [--renders 5] [--churn 0.01] [--seconds 5]

No network traffic: nothing is probed, results are applied by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import uvloop
from prometheus_client import generate_latest

from telemetryd.config import load_config
from telemetryd.daemon import Daemon
from telemetryd.model import ProbeResult, ProbeSpec
from telemetryd.sim.city import generate_city


def _cpu() -> float:
    return time.process_time()


def _renderer(daemon: Daemon) -> Callable[[], bytes]:
    """One scrape's render, whichever layout this checkout has."""
    try:
        from telemetryd.export.app import Exposition
    except ImportError:
        pass
    else:
        return Exposition(daemon.export_sources()).render
    try:  # issue 10, before the hand-encoded device families
        from telemetryd.export.app import build_registry  # type: ignore[attr-defined]

        registry = build_registry(daemon.export_sources())
    except ImportError:  # the layout before issue 10
        from telemetryd.exporter import build_registry  # type: ignore[import-not-found,no-redef]

        registry = build_registry(daemon)
    return lambda: bytes(generate_latest(registry))


CITY_SCHOOLS = 1000
"""Schools one generated city holds (one /16); larger benches join several, ids renamed apart."""


def _write_city(schools: int, inventory: Path) -> None:
    """`schools` generated schools in `inventory`: one city per 1,000, the n-th with ids ``simN-…``."""
    inventory.mkdir(parents=True)
    for n, first in enumerate(range(0, schools, CITY_SCHOOLS)):
        part = inventory.parent / f"city-{n}"
        generate_city(min(CITY_SCHOOLS, schools - first), seed=n + 1, base=f"10.{200 + n}.0.0/16").write_inventory(part)
        for path in part.glob("*.yaml"):
            text = path.read_text()
            (inventory / f"{n}-{path.name}").write_text(re.sub(r"\bsim-", f"sim{n}-", text) if n else text)


def _city_daemon(schools: int, workdir: Path) -> Daemon:
    _write_city(schools, workdir / "inventory")
    (workdir / "telemetryd.yaml").write_text("listen: 127.0.0.1:0\ninventory: inventory\n")
    daemon = Daemon(load_config(workdir / "telemetryd.yaml"))
    now = time.time()
    for index, device in enumerate(daemon.config.inventory.devices_by_id.values()):
        for spec in device.probes:
            ok = index % 29 != 0
            result = ProbeResult(ok, 0.01, "" if ok else "timeout", rtt=0.002 if ok else None, loss=0.0, sent=3)
            daemon.state.apply(device.id, spec.name, result, now)
    return daemon


def _churn(daemon: Daemon, share: float, round_no: int) -> None:
    """Turn `share` of the devices (a different slice each round) up or down, as happens between scrapes."""
    devices = list(daemon.config.inventory.devices_by_id.values())
    step = max(1, round(1 / share)) if share > 0 else 0
    if not step:
        return
    ok = round_no % 2 == 1
    result = ProbeResult(ok, 0.01, "" if ok else "timeout", rtt=0.002 if ok else None, loss=0.0, sent=3)
    for device in devices[round_no % step :: step]:
        for _ in range(daemon.state.down_after):  # enough in a row to pass the hysteresis
            daemon.state.apply(device.id, device.probes[0].name, result, time.time())


def bench_render(schools: int, renders: int, churn: float = 0.01) -> dict[str, float]:
    """CPU ms per render of the whole registry, median of `renders`, `churn` of the devices changing between."""
    with tempfile.TemporaryDirectory() as tmp:
        daemon = _city_daemon(schools, Path(tmp))
        render = _renderer(daemon)
        body = render()
        costs = []
        for round_no in range(renders):
            _churn(daemon, churn, round_no)
            start = _cpu()
            render()
            costs.append(_cpu() - start)
        devices = daemon.config.inventory.device_count
    series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    ms = statistics.median(costs) * 1000
    return {"devices": devices, "series": series, "bytes": len(body), "ms": ms, "ms_per_1000": ms / devices * 1000}


async def _bare(jobs: int, seconds: float) -> tuple[int, float]:
    """The same number of runs as asyncio tasks calling the prober, no scheduling at all."""
    runs = 0

    async def prober() -> ProbeResult:
        return ProbeResult(True, 0.0)

    async def one() -> None:
        nonlocal runs
        await prober()
        runs += 1

    start = _cpu()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await asyncio.gather(*(one() for _ in range(jobs)))
        await asyncio.sleep(1.0 - (time.monotonic() % 1.0))
    return runs, _cpu() - start


async def _scheduled(jobs: int, seconds: float) -> tuple[int, float]:
    from telemetryd.config.settings import Settings

    try:
        from telemetryd.reachability.scheduler import Scheduler
    except ImportError:  # the layout before issue 10
        from telemetryd.scheduler import Scheduler  # type: ignore[import-not-found,no-redef]
    from telemetryd.model import Contract, Device, DeviceKind, Inventory, School
    from telemetryd.probes import ProbeContext

    devices = tuple(
        Device(
            id=f"d{i}",
            school_id=f"s{i // 35}",
            kind=DeviceKind.CAMERA,
            host=f"10.0.{i // 250}.{i % 250}",
            probes=(ProbeSpec("tcp", 554),),
        )
        for i in range(jobs)
    )
    schools = [
        School(f"s{n}", f"s{n}", "d", Contract(), tuple(d for d in devices if d.school_id == f"s{n}"))
        for n in range((jobs + 34) // 35)
    ]
    settings = Settings.model_validate({"probes": {"tcp": {"interval": "1s"}}, "concurrency": {"max_probes": 4096}})
    runs = 0

    def sink(*_: object) -> None:
        nonlocal runs
        runs += 1

    async def prober(*_: object) -> ProbeResult:
        return ProbeResult(True, 0.0)

    scheduler = Scheduler(ProbeContext(settings), sink, probers={"tcp": prober})
    scheduler.load(Inventory.build(schools), settings)
    task = asyncio.create_task(scheduler.run())
    await asyncio.sleep(1.0)  # one interval to settle the phases
    runs, start = 0, _cpu()
    await asyncio.sleep(seconds)
    cpu = _cpu() - start
    scheduler.stop()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return runs, cpu


def bench_scheduler(jobs: int, seconds: float) -> dict[str, float]:
    """CPU per 1,000 runs through the scheduler and as bare tasks."""
    runs, cpu = uvloop.run(_scheduled(jobs, seconds))
    bare_runs, bare_cpu = uvloop.run(_bare(jobs, seconds))
    ours = cpu / runs * 1000 * 1000
    peer = bare_cpu / bare_runs * 1000 * 1000
    return {"runs": runs, "ms_per_1000": ours, "bare_ms_per_1000": peer, "ratio": ours / peer}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schools", type=int, default=300)
    parser.add_argument("--renders", type=int, default=5)
    parser.add_argument("--churn", type=float, default=0.01, help="share of devices changing state between renders")
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    render = bench_render(args.schools, args.renders, args.churn)
    print(
        f"render: {render['devices']:.0f} devices, {render['series']:.0f} series, {render['bytes'] / 1e6:.1f} MB: "
        f"{render['ms']:.0f} ms CPU per render, {render['ms_per_1000']:.1f} ms per 1,000 devices"
    )
    sched = bench_scheduler(args.jobs, args.seconds)
    print(
        f"scheduler: {sched['runs']:.0f} runs, {sched['ms_per_1000']:.1f} ms CPU per 1,000 runs; "
        f"bare tasks {sched['bare_ms_per_1000']:.1f} ms; ratio {sched['ratio']:.2f}x"
    )


if __name__ == "__main__":
    main()

"""History writer hot path: what `submit` costs per row, this tree against an older one, in the same run.

`submit` is what the prober, the SNMP poller and the DC-09 receiver pay on the event loop
for every history row. Since issue 13 it journals the row (one ``os.write``) before it
returns, so a kill -9 cannot lose it; this measures that price. The writer task is not
started (PostgreSQL is not involved): only the caller's side is timed. Three shapes:

- ``submit``: one state change per call (one write per row, the worst case);
- ``submit x8``: eight link samples per call (a poll closing a school's buckets);
- ``submit x1000``: a burst, as a reload or a flush hands over.

Each tree runs in its own subprocesses (``PYTHONPATH=<tree>/src``), alternating, one run
each, --repeat times (the best run of each is printed); the older tree is taken
from git (``--baseline``, default the commit before issue 13's journal). The journal goes
to --directory (default: a temporary directory under the working tree's parent, i.e. a
real disk, not tmpfs).

    .venv/bin/python bench/history_writer.py [--rows 200000] [--repeat 5] [--baseline b591d32]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHAPES = (("submit", 1), ("submit x8", 8), ("submit x1000", 1000))


def _measure(rows: int, repeat: int, directory: Path) -> dict[str, float]:
    """In the child: microseconds per row for each shape (best of `repeat`)."""
    import asyncio

    from telemetryd.history import HistoryWriter, LinkSample, Spool
    from telemetryd.model import DeviceKind, Direction, Health, StateChange

    changes = [
        StateChange(1_700_000_000.0 + i, f"s{i % 500}", f"cam{i}", DeviceKind.CAMERA, "tcp:554", Health.UP,
                    Health.DOWN, "timeout", "port 554 refused the connection")
        for i in range(rows)
    ]  # fmt: skip
    samples = [
        LinkSample(1_700_000_000.0 + i * 300, f"s{i % 500}", "video", Direction.DOWNLOAD, 12.5, 28.0, 470_000_000, 30)
        for i in range(rows)
    ]

    async def one(shape: int, events: list[object], path: Path) -> float:
        writer = HistoryWriter("postgresql://postgres@127.0.0.1:1/x", Spool(path), queue_size=rows + 1)
        many = getattr(writer, "submit_many", None)
        started = time.perf_counter()
        if shape == 1:
            for event in events:
                writer.submit(event)  # type: ignore[arg-type]
        else:
            for i in range(0, len(events), shape):
                if many is not None:
                    many(events[i : i + shape])
                else:  # the older writer: one submit per row
                    for event in events[i : i + shape]:
                        writer.submit(event)  # type: ignore[arg-type]
        return (time.perf_counter() - started) / len(events) * 1e6

    out: dict[str, float] = {}
    for name, shape in SHAPES:
        events: list[object] = list(changes if shape != 8 else samples)
        runs = []
        for n in range(repeat):
            path = directory / f"spool-{shape}-{n}"
            runs.append(asyncio.run(one(shape, events, path)))
            path.unlink(missing_ok=True)
        out[name] = min(runs)
    return out


def _child(src: Path, rows: int, repeat: int, directory: Path) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{ROOT}"}
    args = [sys.executable, __file__, "--child", "--rows", str(rows), "--repeat", str(repeat)]
    done = subprocess.run([*args, "--directory", str(directory)], env=env, capture_output=True, text=True, check=True)
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    """Run both trees and print µs per row with the ratio."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--baseline", default="b591d32", help="git revision of the tree to compare against")
    parser.add_argument("--directory", type=Path, default=None, help="where the journals go (a real disk)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_measure(args.rows, args.repeat, args.directory)))
        return
    scratch = Path(tempfile.mkdtemp(prefix="telemetryd-bench-", dir=args.directory or ROOT.parent))
    try:
        baseline = scratch / "baseline"
        baseline.mkdir()
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", args.baseline, "src"], capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", str(baseline)], input=archive.stdout, check=True)
        # Interleaved, one run per child: a busy host slows both trees alike.
        olds, news = [], []
        for _ in range(args.repeat):
            olds.append(_child(baseline / "src", args.rows, 1, scratch))
            news.append(_child(ROOT / "src", args.rows, 1, scratch))
        # The best run of each: what the code costs, not what a busy host added to it (as timeit does).
        old = {name: min(run[name] for run in olds) for name, _ in SHAPES}
        new = {name: min(run[name] for run in news) for name, _ in SHAPES}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"{args.rows:,} rows per shape, best of {args.repeat}; journal on {args.directory or ROOT.parent}")
    print(f"{'shape':<16}{args.baseline + ' µs/row':>18}{'this tree µs/row':>18}{'ratio':>8}")
    for name, _ in SHAPES:
        print(f"{name:<16}{old[name]:>18.2f}{new[name]:>18.2f}{new[name] / old[name]:>7.2f}x")


if __name__ == "__main__":
    main()

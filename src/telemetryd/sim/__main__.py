"""`python -m telemetryd.sim`: run a simulated city (the same as `telemetryd simulate`)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from telemetryd.sim.cli import run_simulate


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run the simulated city until Ctrl-C."""
    parser = argparse.ArgumentParser(prog="python -m telemetryd.sim", description=__doc__)
    parser.add_argument("--schools", type=int, default=300, help="schools in the city (default 300)")
    parser.add_argument("--devices-per-school", type=int, default=35, help="devices per school (default 35)")
    parser.add_argument("--out", type=Path, default=Path(".demo/inventory"), help="inventory directory to write")
    parser.add_argument("--seed", type=int, default=1, help="same seed, same city")
    parser.add_argument("--mode", choices=("auto", "netns", "loopback"), default="auto")
    args = parser.parse_args(argv)
    return run_simulate(args.schools, args.devices_per_school, args.out, args.seed, args.mode)


if __name__ == "__main__":
    raise SystemExit(main())

"""`telemetryd simulate`: generate a city, write its inventory, run its fleet until told to stop."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import TextIO

from telemetryd.sim.city import Condition, generate_city
from telemetryd.sim.fleet import (
    Fleet,
    FleetError,
    default_base,
    port_offset_for,
    reap_stale_fleets,
    resolve_mode,
)


def run_simulate(
    schools: int,
    devices_per_school: int = 35,
    out_dir: Path = Path(".demo/inventory"),
    seed: int = 1,
    mode: str = "auto",
    *,
    stop: threading.Event | None = None,
    out: TextIO | None = None,
) -> int:
    """Run a simulated city until SIGINT/SIGTERM (or `stop` is set); returns the exit code.

    Writes the inventory to `out_dir`, prints a summary, and removes the fleet on the
    way out. Exit codes: 0 after a clean stop, 1 when the fleet cannot start, 2 for
    bad arguments.
    """
    out = out or sys.stdout
    stop = stop or threading.Event()
    try:
        resolved = resolve_mode(mode)
        city = generate_city(
            schools,
            devices_per_school,
            seed=seed,
            base=default_base(resolved),
            tcp_port_offset=port_offset_for(resolved),
        )
    except (FleetError, ValueError) as exc:
        print(f"telemetryd simulate: {exc}", file=sys.stderr)
        return 2
    files = city.write_inventory(out_dir)
    if resolved == "netns":
        for leftover in reap_stale_fleets():
            print(f"removed a fleet left by a killed run: {leftover}", file=out)

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous: dict[signal.Signals, object] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, request_stop)
    fleet = Fleet(city, resolved)
    try:
        try:
            fleet.start()
        except FleetError as exc:
            print(f"telemetryd simulate: {exc}", file=sys.stderr)
            return 1
        counts = city.counts()
        total = city.inventory.device_count
        print(f"simulated city: {len(city.inventory.schools)} schools, {total} devices (seed {seed})", file=out)
        print(
            f"  alive {counts[Condition.ALIVE]}, dead {counts[Condition.DEAD]}, "
            f"flapping {counts[Condition.FLAPPING]}, closed ports {counts[Condition.CLOSED_PORTS]}",
            file=out,
        )
        if fleet.mode == "netns":
            print(
                f"  mode netns: namespace {fleet.ns_name}, veth {fleet.root_veth}, "
                f"{city.network} routed via {city.link_network.network_address + 2} (ICMP truth holds)",
                file=out,
            )
        else:
            offset = f", TCP ports +{city.tcp_port_offset}" if city.tcp_port_offset else ""
            print(
                f"  mode loopback: {city.network}{offset} (every 127/8 address answers ping: ICMP truth does not hold)",
                file=out,
            )
        print(f"  inventory: {out_dir} ({len(files)} files)", file=out)
        print(f"  up in {fleet.started_in or 0:.1f} s; Ctrl-C to stop", file=out, flush=True)
        while not stop.wait(1.0):
            pass
        print("stopping the simulated city", file=out, flush=True)
        return 0
    finally:
        try:
            fleet.stop()
        except FleetError as exc:
            print(f"telemetryd simulate: {exc}", file=sys.stderr)
        for signum, handler in previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]

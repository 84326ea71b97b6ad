"""End to end: the daemon in its own process against a namespace fleet agrees with the simulator's truth."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from telemetryd.sim.city import City, generate_city
from telemetryd.sim.fleet import Fleet
from telemetryd.sim.truth import compare, exported_up

from ..conftest import require_root
from ..daemon_process import DaemonProcess

pytestmark = pytest.mark.integration

INTERVAL = 2.0


@pytest.fixture(scope="module")
def city_and_fleet() -> Iterator[tuple[City, Fleet]]:
    """20 schools x 35 devices in a network namespace: some dead, some flapping, some ports closed."""
    require_root("a network namespace fleet and raw ICMP")
    city = generate_city(20, 35, seed=7, dead_share=0.08, flapping_share=0.03, closed_port_share=0.05)
    fleet = Fleet(city, mode="netns")
    fleet.start()
    try:
        yield city, fleet
    finally:
        fleet.stop()


def test_metrics_agree_with_truth_within_three_intervals(tmp_path: Path, city_and_fleet: tuple[City, Fleet]) -> None:
    """Within 3 probe intervals, every device's exported up/down, dead ones included, matches the truth."""
    city, _fleet = city_and_fleet
    city.write_inventory(tmp_path / "inventory")
    config = tmp_path / "telemetryd.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "listen": "127.0.0.1:0",
                "inventory": "inventory",
                "probes": {
                    "icmp": {"interval": INTERVAL, "timeout": 1.0, "packets": 2, "packet_spacing": 0.1},
                    "tcp": {"interval": INTERVAL, "timeout": 1.0},
                },
                "hysteresis": {"down_after": 1, "up_after": 1},
                "logging": {"format": "json"},
            }
        )
    )
    with DaemonProcess(config) as daemon:
        assert daemon.started()["icmp"] == "raw"
        started = time.time()
        time.sleep(3 * INTERVAL)
        at = time.time()
        # The exported state is as old as the last probe: up to one interval plus its timeout.
        agreement = compare(city, exported_up(daemon.scrape(timeout=10)), at, margin=INTERVAL + 1.5)
        total = sum(len(d.probes) + 1 for d in city.inventory.devices_by_id.values())
        assert agreement.compared >= 0.95 * total
        assert agreement.wrong == [], (
            f"{len(agreement.wrong)} of {agreement.compared} disagree after {at - started:.1f}s: {agreement.wrong[:20]}"
        )
        dead = [d for d in city.inventory.devices_by_id.values() if city.expected(d.id, "icmp", at) is False]
        assert dead, "the fleet must include dead devices for this test to mean anything"
        daemon.terminate(timeout=15)

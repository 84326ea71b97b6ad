"""End to end: the daemon measures real shaped links and a real snmpd router, and flags the slow school."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from telemetryd.sim.linklab import LinkLab

from ..conftest import require_binary, require_root
from ..daemon_process import DaemonProcess

pytestmark = pytest.mark.integration


def test_daemon_flags_under_delivered_school_and_reads_segments(tmp_path: Path) -> None:
    """A 20 Mbit school is declared below its 150 Mbps contract after a confirmation, a 150 Mbit one is
    compliant, segment rates come from SNMP, and no token or community appears anywhere the daemon writes."""
    require_root("network namespaces and tc shaping")
    require_binary("tc", "iproute2")
    require_binary("snmpd", "snmpd")
    require_binary("iperf3", "iperf3")
    lab = LinkLab(tmp_path / "inventory", tmp_path / "credentials", schools=[("slow-020", 20.0), ("fast-150", 150.0)])
    config = tmp_path / "telemetryd.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "listen": "127.0.0.1:0",
                "inventory": "inventory",
                "credentials_directory": "credentials",
                "probes": {"snmp": {"interval": 2, "timeout": 1, "retries": 2}},
                # Both schools within 20 s; a 150 Mbit/s budget lets one test run at a time.
                "speedtest": {"interval": 20, "confirm_after": 2, "max_seconds": 6, "central_capacity_mbps": 150},
                "logging": {"format": "json"},
            }
        )
    )
    with lab, DaemonProcess(config) as daemon:
        daemon.started()
        try:
            deadline = time.monotonic() + 120
            verdicts: dict[str, str] = {}
            while time.monotonic() < deadline:
                status = json.loads(daemon.scrape("/api/v1/status", timeout=10))
                verdicts = {s["id"]: s["link"]["compliance"] for s in status["schools"]}
                if verdicts == {"slow-020": "below_contract", "fast-150": "compliant"}:
                    break
                time.sleep(1)
            assert verdicts == {"slow-020": "below_contract", "fast-150": "compliant"}, daemon.output(20)

            links = {s["id"]: s["link"] for s in status["schools"]}
            slow = links["slow-020"]["speedtest"]
            fast = links["fast-150"]["speedtest"]
            # tbf delivers ~94-95 % of its rate as TCP goodput; ±10 % of the shaped rate.
            for direction in ("download", "upload"):
                assert 18.0 <= slow[direction]["mbps"] <= 22.0, slow
                assert 135.0 <= fast[direction]["mbps"] <= 165.0, fast
                assert slow[direction]["bytes_used"] <= 100_000_000
            segments = links["slow-020"]["snmp"]["segments"]
            # The router's generator sends 10 / 15 / 50 Mbit/s of UDP payload from each segment towards the ISP.
            for role, load in (("alarm", 10.0), ("video", 15.0), ("education", 50.0)):
                assert segments[role]["in_mbps"] == pytest.approx(load, rel=0.1), segments

            metrics = daemon.scrape(timeout=10)
            assert 'telemetryd_school_below_contract{school="slow-020"} 1.0' in metrics
            assert 'telemetryd_school_below_contract{school="fast-150"} 0.0' in metrics
            assert 'telemetryd_snmp_up{device="slow-020-router",school="slow-020"} 1.0' in metrics
            assert "telemetryd_speedtests_deferred_total" in metrics
            page = daemon.scrape("/", timeout=10)
            secrets = [lab.community, *(s.token for s in lab.links.schools)]
            for text in (metrics, page, json.dumps(status)):
                assert not any(secret in text for secret in secrets)
        finally:
            daemon.terminate(timeout=30)
    log = daemon.text()
    assert any(r.get("event") == "school_below_contract" and r.get("school") == "slow-020" for r in daemon.records())
    assert not any(secret in log for secret in secrets)

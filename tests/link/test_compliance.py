"""Link state: the contract verdict with confirmation, and SNMP rates per segment."""

from __future__ import annotations

from telemetryd.link.compliance import Compliance, LinkState, verdict
from telemetryd.model import (
    Contract,
    Device,
    DeviceKind,
    Direction,
    InterfaceCounters,
    ProbeSpec,
    School,
    SnmpSample,
    SnmpTarget,
    SpeedResult,
)

CONTRACT = Contract()  # 150 = 20/30/100


def school(school_id: str = "s1", *, router: bool = True) -> School:
    devices = (
        Device(
            f"{school_id}-router",
            school_id,
            DeviceKind.ROUTER,
            "10.0.0.1",
            (ProbeSpec("icmp"),),
            credentials="snmp",
            snmp=SnmpTarget((("wan", "wan0"), ("alarm", "alarm0"), ("video", "video0"))) if router else None,
        ),
    )
    return School(school_id, "School", "Abay", CONTRACT, devices)


def speed(direction: Direction, mbps: float, *, ok: bool = True) -> SpeedResult:
    return SpeedResult(ok, direction, mbps if ok else 0.0, 10_000_000, 2.0, 4, reason="" if ok else "timeout")


def test_verdict_needs_both_directions_at_the_threshold() -> None:
    """A test passes only when download and upload both reach 90 % of the contracted total."""
    assert verdict(speed(Direction.DOWNLOAD, 140), speed(Direction.UPLOAD, 136), CONTRACT, 0.9) is True
    assert verdict(speed(Direction.DOWNLOAD, 140), speed(Direction.UPLOAD, 134), CONTRACT, 0.9) is False
    assert verdict(speed(Direction.DOWNLOAD, 19), speed(Direction.UPLOAD, 150), CONTRACT, 0.9) is False
    assert verdict(speed(Direction.DOWNLOAD, 0, ok=False), speed(Direction.UPLOAD, 150), CONTRACT, 0.9) is None


def test_low_result_is_suspect_until_the_confirmation_agrees() -> None:
    """One low test makes the school suspect with a re-test due; a second low one declares it below contract."""
    state = LinkState(below_ratio=0.9, confirm_after=120)
    state.sync([school()])
    first = state.record_speedtest("s1", speed(Direction.DOWNLOAD, 19), speed(Direction.UPLOAD, 19), now=1000, wall=5)
    assert first is not None and (first.old, first.new) == (Compliance.UNKNOWN, Compliance.SUSPECT)
    assert state.due_confirmations(1119) == []
    assert state.due_confirmations(1120) == ["s1"]
    second = state.record_speedtest("s1", speed(Direction.DOWNLOAD, 18), speed(Direction.UPLOAD, 19), now=1130, wall=6)
    assert second is not None and second.new is Compliance.BELOW
    assert second.download_mbps == 18 and second.contract_mbps == 150
    assert state.schools["s1"].confirmation_due is None
    # Still low on the next regular test: no new change, still below.
    again = state.record_speedtest("s1", speed(Direction.DOWNLOAD, 18), speed(Direction.UPLOAD, 19), now=5000, wall=7)
    assert again is None and state.schools["s1"].compliance is Compliance.BELOW


def test_confirmation_at_full_speed_clears_the_suspicion() -> None:
    """A congested minute does not become a breach: a good re-test makes the school compliant."""
    state = LinkState()
    state.sync([school()])
    state.record_speedtest("s1", speed(Direction.DOWNLOAD, 40), speed(Direction.UPLOAD, 140), now=0, wall=0)
    change = state.record_speedtest("s1", speed(Direction.DOWNLOAD, 141), speed(Direction.UPLOAD, 140), now=200, wall=1)
    assert change is not None and (change.old, change.new) == (Compliance.SUSPECT, Compliance.COMPLIANT)
    assert state.due_confirmations(10_000) == []


def test_failed_test_keeps_the_verdict_and_counts_bytes() -> None:
    """A failed test says nothing about the speed: the verdict stands, the failure and bytes are counted."""
    state = LinkState()
    state.sync([school()])
    state.record_speedtest("s1", speed(Direction.DOWNLOAD, 149), speed(Direction.UPLOAD, 148), now=0, wall=100)
    change = state.record_speedtest(
        "s1", speed(Direction.DOWNLOAD, 0, ok=False), speed(Direction.UPLOAD, 0, ok=False), now=10, wall=200
    )
    link = state.schools["s1"]
    assert change is None
    assert link.compliance is Compliance.COMPLIANT
    assert link.tests == {"ok": 1, "failed": 1}
    assert link.last_success_at == 100
    assert link.last[Direction.DOWNLOAD].ok is False
    assert link.last_good[Direction.DOWNLOAD].mbps == 149
    assert link.bytes_used[Direction.UPLOAD] == 20_000_000
    assert link.ratio(Direction.DOWNLOAD) == 149 / 150


def counters(name: str, in_octets: int, out_octets: int, speed_mbps: int = 1000) -> InterfaceCounters:
    return InterfaceCounters(name, 1, in_octets, out_octets, 64, speed_mbps=speed_mbps, oper_up=True)


def poll(at: float, uptime: int, alarm_out: int, video_out: int) -> SnmpSample:
    return SnmpSample(
        True,
        at,
        0.01,
        uptime_ticks=uptime,
        interfaces=(
            ("wan", counters("wan0", 0, alarm_out + video_out)),
            ("alarm", counters("alarm0", 0, alarm_out)),
            ("video", counters("video0", 0, video_out)),
        ),
    )


def test_snmp_rates_become_segment_utilisation_and_saturation() -> None:
    """Counters 60 s apart give rates against each segment's allocation; three full polls mean saturated."""
    state = LinkState(snmp_interval=60)
    state.sync([school()])
    alarm_rate = 19.5e6 / 8  # bytes/s: 97.5 % of the 20 Mbit alarm allocation
    video_rate = 3e6 / 8  # 10 % of 30 Mbit
    state.record_snmp("s1", poll(0, 0, 0, 0))
    link = state.schools["s1"]
    assert link.segments["alarm"].rate is None  # a first sample is only a baseline
    for n in range(1, 4):
        state.record_snmp("s1", poll(60 * n, 6000 * n, int(alarm_rate * 60 * n), int(video_rate * 60 * n)))
        assert link.segments["alarm"].saturated is (n == 3)
    alarm, video, wan = link.segments["alarm"], link.segments["video"], link.segments["wan"]
    assert alarm.rate is not None and abs(alarm.rate.out_bps - 19.5e6) < 1
    assert alarm.utilisation is not None and abs(alarm.utilisation - 0.975) < 1e-6
    assert video.utilisation is not None and abs(video.utilisation - 0.1) < 1e-6
    assert video.saturated is False
    assert wan.utilisation is not None and abs(wan.utilisation - 22.5 / 150) < 1e-6


def test_router_reboot_gives_no_spike_and_breaks_saturation() -> None:
    """After sysUpTime goes back the interval has no rate, so neither a spike nor a stale saturated flag."""
    state = LinkState(snmp_interval=60)
    state.sync([school()])
    rate = 20e6 / 8
    for n in range(4):
        state.record_snmp("s1", poll(60 * n, 6000 * n, int(rate * 60 * n), 0))
    assert state.schools["s1"].segments["alarm"].saturated
    state.record_snmp("s1", poll(240, 500, 1000, 0))  # rebooted: counters near zero
    view = state.schools["s1"].segments["alarm"]
    assert view.rate is None and view.utilisation is None and view.saturated is False


def test_failed_poll_is_recorded_and_keeps_the_last_counters() -> None:
    """A timeout marks SNMP down with its reason; the last raw counters stay for the exporter."""
    state = LinkState(snmp_interval=60)
    state.sync([school()])
    state.record_snmp("s1", poll(0, 0, 100, 200))
    state.record_snmp("s1", SnmpSample(False, 60, 4.0, reason="timeout", detail="no answer from 10.0.0.1"))
    link = state.schools["s1"]
    assert (link.snmp_ok, link.snmp_reason) == (False, "timeout")
    assert link.snmp_sample is not None and link.snmp_sample.at == 0
    assert all(v.rate is None for v in link.segments.values())


def test_sync_keeps_history_and_drops_removed_schools() -> None:
    """A reload keeps a school's verdict; a removed school disappears; losing the router clears SNMP state."""
    state = LinkState()
    state.sync([school("s1"), school("s2")])
    state.record_speedtest("s1", speed(Direction.DOWNLOAD, 150), speed(Direction.UPLOAD, 150), now=0, wall=0)
    state.record_snmp("s1", poll(0, 0, 1, 1))
    state.sync([school("s1", router=False)])
    assert set(state.schools) == {"s1"}
    assert state.schools["s1"].compliance is Compliance.COMPLIANT
    assert state.schools["s1"].router_id is None and state.schools["s1"].segments == {}

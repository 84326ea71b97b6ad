"""State: hysteresis, flaps, roll-ups and reload behaviour, with an injected clock."""

from __future__ import annotations

import random

from telemetryd.model import Contract, Device, DeviceKind, Health, Inventory, ProbeResult, ProbeSpec, School
from telemetryd.reachability.state import State

OK = ProbeResult(True, 0.01, rtt=0.001)
TIMEOUT = ProbeResult(False, 2.0, "timeout", "no echo reply to 3 requests")
REFUSED = ProbeResult(False, 0.01, "refused", "port 554 refused the connection")


def _school(*devices: Device, school_id: str = "s1") -> School:
    return School(school_id, "School 1", "Abay", Contract(), devices)


def _camera(device_id: str = "cam1", host: str = "10.0.0.1") -> Device:
    return Device(device_id, "s1", DeviceKind.CAMERA, host, (ProbeSpec("icmp"), ProbeSpec("tcp", 554)))


def _state(*devices: Device, down_after: int = 3, up_after: int = 2) -> State:
    state = State(down_after, up_after)
    state.sync(Inventory.build([_school(*devices)]))
    return state


def test_first_result_decides_at_once() -> None:
    """A device with no history takes its first result's verdict immediately (no 3-interval blind start)."""
    state = _state(_camera())
    changes = state.apply("cam1", "icmp", TIMEOUT, now=1.0)
    assert [(c.probe, c.old, c.new) for c in changes] == [
        ("icmp", Health.UNKNOWN, Health.DOWN),
        (None, Health.UNKNOWN, Health.DOWN),
    ]
    assert state.devices["cam1"].health is Health.DOWN


def test_down_only_after_n_consecutive_failures() -> None:
    """An up device survives down_after-1 failures and goes down on the N-th, with the reason."""
    state = _state(_camera(), down_after=3)
    state.apply("cam1", "icmp", OK, 0.0)
    assert state.apply("cam1", "icmp", TIMEOUT, 1.0) == []
    assert state.apply("cam1", "icmp", TIMEOUT, 2.0) == []
    changes = state.apply("cam1", "icmp", TIMEOUT, 3.0)
    device_change = next(c for c in changes if c.probe is None)
    assert (device_change.old, device_change.new, device_change.reason) == (
        Health.UP,
        Health.DOWN,
        "icmp timeout",
    )
    assert state.devices["cam1"].last_change == 3.0


def test_a_success_resets_the_failure_streak() -> None:
    """Failures must be consecutive: one good result in between starts the count again."""
    state = _state(_camera(), down_after=2)
    state.apply("cam1", "icmp", OK, 0.0)
    state.apply("cam1", "icmp", TIMEOUT, 1.0)
    state.apply("cam1", "icmp", OK, 2.0)
    assert state.apply("cam1", "icmp", TIMEOUT, 3.0) == []
    assert state.devices["cam1"].health is Health.UP


def test_up_after_m_successes_and_flap_counted() -> None:
    """A down device needs up_after good results to recover; each up/down transition is a flap."""
    state = _state(_camera(), down_after=1, up_after=2)
    state.apply("cam1", "icmp", OK, 0.0)
    state.apply("cam1", "icmp", TIMEOUT, 1.0)
    assert state.apply("cam1", "icmp", OK, 2.0) == []
    changes = state.apply("cam1", "icmp", OK, 3.0)
    assert [c.new for c in changes] == [Health.UP, Health.UP]
    assert state.devices["cam1"].flaps == 2
    assert state.devices["cam1"].probes["icmp"].flaps == 2


def test_device_down_when_any_probe_down() -> None:
    """A camera that answers ping but refuses RTSP is down, and the reason names the RTSP probe."""
    state = _state(_camera())
    state.apply("cam1", "icmp", OK, 0.0)
    state.apply("cam1", "tcp:554", REFUSED, 0.5)
    assert state.devices["cam1"].health is Health.DOWN
    assert state.devices["cam1"].down_reason() == "tcp:554 refused"


def test_school_rollup_counts_by_kind() -> None:
    """School summaries count devices per kind as up, down and not yet known."""
    devices = [_camera(f"cam{i}", f"10.0.0.{i}") for i in range(1, 4)]
    router = Device("r1", "s1", DeviceKind.ROUTER, "10.0.0.254", (ProbeSpec("icmp"),))
    state = _state(*devices, router)
    state.apply("cam1", "icmp", OK, 0.0)
    state.apply("cam2", "icmp", TIMEOUT, 0.0)
    state.apply("r1", "icmp", OK, 0.0)
    summary = next(state.school_summaries())
    cams = summary.count(DeviceKind.CAMERA)
    assert (cams.total, cams.up, cams.down, cams.unknown) == (3, 1, 1, 1)
    assert summary.count(DeviceKind.ROUTER).up == 1
    assert summary.count(DeviceKind.ALARM_PANEL).total == 0
    assert [d.device.id for d in summary.down_devices] == ["cam2"]


def test_reload_keeps_unchanged_devices_and_drops_removed() -> None:
    """A reload keeps state of devices whose address is unchanged, resets moved ones, drops removed ones."""
    state = _state(_camera("cam1", "10.0.0.1"), _camera("cam2", "10.0.0.2"), _camera("cam3", "10.0.0.3"))
    for device_id in ("cam1", "cam2", "cam3"):
        state.apply(device_id, "icmp", TIMEOUT, 0.0)
    state.sync(Inventory.build([_school(_camera("cam1", "10.0.0.1"), _camera("cam2", "10.0.0.99"))]))
    assert set(state.devices) == {"cam1", "cam2"}
    assert state.devices["cam1"].health is Health.DOWN
    assert state.devices["cam2"].health is Health.UNKNOWN
    assert state.apply("cam3", "icmp", OK, 1.0) == []


def test_result_for_unknown_probe_is_ignored() -> None:
    """A late result for a probe that a reload removed changes nothing."""
    state = _state(_camera())
    assert state.apply("cam1", "tcp:80", OK, 0.0) == []
    assert state.devices["cam1"].health is Health.UNKNOWN


def test_the_tally_always_equals_a_recount() -> None:
    """Through random results and reloads (kept, moved and new devices), the kept tally equals counting devices."""
    rng = random.Random(11)
    cameras = [_camera(f"cam{i}", f"10.0.0.{i}") for i in range(8)]
    router = Device("r1", "s1", DeviceKind.ROUTER, "10.0.0.254", (ProbeSpec("icmp"),))
    state = _state(router, *cameras, down_after=2, up_after=2)
    results = [OK, TIMEOUT, REFUSED]
    for step in range(400):
        if step % 97 == 96:  # a reload: one camera gets a new address (starts over), one leaves, one arrives
            kept = [c for c in cameras if c.id != f"cam{step % 8}"]
            moved = _camera("cam0", f"10.9.0.{step % 200}")
            state.sync(Inventory.build([_school(router, moved, *kept[1:], _camera(f"new{step}", "10.1.0.1"))]))
        device_id = rng.choice(list(state.devices))
        probe = rng.choice(list(state.devices[device_id].probes))
        state.apply(device_id, probe, rng.choice(results), float(step))
        summary = next(state.school_summaries())
        recount = {kind: [c.total, c.up, c.down] for kind, c in summary.by_kind.items()}
        assert state.roster.tally("s1") == recount, step
        healths = [d.health for d in state.devices.values()]
        assert state.count_by_health() == {health: healths.count(health) for health in Health}, step


def test_results_applied_between_plan_and_adopt_are_kept() -> None:
    """A reload planned off the loop: results that land before the swap show in the new roster and its tally."""
    router = Device("r1", "s1", DeviceKind.ROUTER, "10.0.0.254", (ProbeSpec("icmp"),))
    kept, moved, reprobed = _camera("cam1", "10.0.0.1"), _camera("cam2", "10.0.0.2"), _camera("cam3", "10.0.0.3")
    state = _state(router, kept, moved, reprobed, down_after=1, up_after=1)
    other = _school(Device("r2", "s2", DeviceKind.ROUTER, "10.0.1.254", (ProbeSpec("icmp"),)), school_id="s2")
    state.sync(Inventory.build([state.inventory.schools[0], other]))
    for device_id in ("r1", "cam1", "cam2", "cam3", "r2"):
        state.apply(device_id, "icmp", OK, 1.0)
    fewer_probes = Device("cam3", "s1", DeviceKind.CAMERA, "10.0.0.3", (ProbeSpec("icmp"),))
    plan = state.plan(Inventory.build([_school(router, kept, _camera("cam2", "10.0.0.9"), fewer_probes), other]))
    # While the plan waits for the loop: r2 (an untouched school) and cam3 (same address) go down.
    state.apply("r2", "icmp", TIMEOUT, 2.0)
    state.apply("cam3", "icmp", TIMEOUT, 2.0)
    changes = state.adopt(plan, 3.0)
    assert state.roster is plan.roster
    assert plan.untouched == {"s2"}
    assert state.devices["r2"].health is Health.DOWN
    assert state.devices["cam3"].health is Health.DOWN  # its icmp state came along
    assert list(state.devices["cam3"].probes) == ["icmp"]
    assert state.devices["cam1"] is plan.replaces.devices["cam1"]  # the same object: nothing to copy
    assert [(c.device_id, c.old, c.reason) for c in changes] == [("cam2", Health.UP, "address changed")]
    assert state.roster.tally("s2") == {DeviceKind.ROUTER: [1, 0, 1]}
    assert state.roster.tally("s1") == {DeviceKind.ROUTER: [1, 1, 0], DeviceKind.CAMERA: [3, 1, 1]}
    assert state.count_by_health() == {Health.UP: 2, Health.DOWN: 2, Health.UNKNOWN: 1}


def test_a_plan_made_against_an_older_roster_is_made_again() -> None:
    """Adopting a stale plan (another reload came first) plans again over the current roster: nothing is lost."""
    state = _state(_camera("cam1", "10.0.0.1"), _camera("cam2", "10.0.0.2"), down_after=1)
    stale = state.plan(Inventory.build([_school(_camera("cam1", "10.0.0.1"))]))
    state.sync(Inventory.build([_school(_camera("cam1", "10.0.0.1"), _camera("cam2", "10.0.0.2"))]))
    state.apply("cam1", "icmp", TIMEOUT, 1.0)
    state.adopt(stale, 2.0)
    assert set(state.devices) == {"cam1"}
    assert state.devices["cam1"].health is Health.DOWN
    assert state.roster.tally("s1") == {DeviceKind.CAMERA: [1, 0, 1]}

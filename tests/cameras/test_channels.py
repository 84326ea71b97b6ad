"""Every camera's verdict over a roster, with and without the per-roster reachability memo."""

from __future__ import annotations

from telemetryd.cameras.channels import Reachability, camera_verdicts
from telemetryd.cameras.verdict import Judgement, Verdict
from telemetryd.model import Contract, Device, DeviceKind, Inventory, ProbeResult, ProbeSpec, School
from telemetryd.reachability.state import State

UP = ProbeResult(True, 0.001, rtt=0.001)
TIMEOUT = ProbeResult(False, 3.0, "timeout")
UNAUTHORISED = ProbeResult(False, 0.05, "auth_failed")


def _state() -> State:
    devices = (
        Device("nvr", "s1", DeviceKind.NVR, "10.0.0.2", (ProbeSpec("isapi", 80),)),  # ISAPI only: judged by reasons
        Device("cam-1", "s1", DeviceKind.CAMERA, "10.0.0.11", (ProbeSpec("icmp"),), nvr=("nvr", 1)),
        Device("cam-2", "s1", DeviceKind.CAMERA, "10.0.0.12", (ProbeSpec("icmp"),)),
    )
    state = State(down_after=1, up_after=1)
    state.sync(Inventory.build([School("s1", "School", "Abay", Contract(), devices)]))
    return state


def _verdicts(state: State, memo: Reachability | None) -> dict[str, Judgement]:
    return {camera.id: verdict for camera, verdict in camera_verdicts(state.roster, memo)}


def test_the_memo_gives_the_verdicts_a_fresh_judgement_gives() -> None:
    """Through health changes and an ISAPI-only NVR whose reason changes, memo and no memo always agree."""
    state = _state()
    memo: Reachability = {}
    steps = [
        ("cam-1", "icmp", UP),
        ("cam-2", "icmp", UP),
        ("nvr", "isapi:80", TIMEOUT),  # the NVR does not answer: cam-1 reads nvr_down
        ("nvr", "isapi:80", UNAUTHORISED),  # still down, a new reason: it answered, so alive again
        ("cam-2", "icmp", TIMEOUT),
        ("cam-2", "icmp", UP),
    ]
    seen = []
    for now, (device, probe, result) in enumerate(steps):
        state.apply(device, probe, result, float(now))
        with_memo = _verdicts(state, memo)
        assert with_memo == _verdicts(state, None), (device, probe, result)
        seen.append(with_memo)
    # Alive again, but a 401 carries no channel view: not "ok" without evidence.
    assert seen[2]["cam-1"].verdict is Verdict.NVR_DOWN
    assert seen[3]["cam-1"] == Judgement(Verdict.UNKNOWN, "nvr_not_checked")
    assert seen[4]["cam-2"].verdict is Verdict.CAMERA_DOWN and seen[5]["cam-2"] == Judgement(Verdict.UNKNOWN, "no_nvr")
    assert "nvr" not in memo  # ISAPI-only: never remembered
    assert memo["cam-2"][1] == state.devices["cam-2"].version


def test_a_stale_memo_entry_is_not_used() -> None:
    """An entry of another DeviceState (a previous roster) or an older version is judged afresh."""
    state = _state()
    state.apply("cam-2", "icmp", UP, 0.0)
    memo: Reachability = {}
    _verdicts(state, memo)
    state.apply("cam-2", "icmp", TIMEOUT, 1.0)
    assert _verdicts(state, memo)["cam-2"].verdict is Verdict.CAMERA_DOWN

"""Current state of every device: pure, synchronous, no I/O.

Probe results go in; debounced health, flap counts, school roll-ups and StateChange
events come out. The clock is passed in, so every rule here is tested without sleeping.

Hysteresis: a (device, probe) pair that is up goes down only after `down_after`
consecutive failures and comes back only after `up_after` consecutive successes. The
very first result decides at once (there is nothing to debounce against), so a daemon
start does not leave the whole city "unknown" for three intervals.
A device is down when any of its probes is down, up when none is down and one is up.

Readers on other threads (the /metrics render) take `State.roster` once: a reload swaps
the whole roster in one assignment, so a reader never pairs one generation's inventory
with another's devices.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import InitVar, dataclass, field
from typing import TypeVar

from telemetryd.model import Device, DeviceKind, Finding, Health, Inventory, ProbeResult, School, StateChange
from telemetryd.slices import Steps, finish

F = TypeVar("F", bound=Finding)


@dataclass(slots=True)
class ProbeState:
    """Debounced health of one probe of one device, with its latest raw result."""

    health: Health = Health.UNKNOWN
    ok_streak: int = 0
    fail_streak: int = 0
    last_result: ProbeResult | None = None
    last_run: float | None = None
    last_change: float | None = None
    flaps: int = 0
    runs: int = 0


@dataclass(slots=True)
class DeviceState:
    """A device and the state of each of its probes."""

    device: Device
    probes: dict[str, ProbeState]
    health: Health = Health.UNKNOWN
    last_change: float | None = None
    flaps: int = 0
    version: int = 0
    """Bumped whenever the device's or one of its probes' health changes: the exporter's cache key."""

    def down_reason(self) -> str:
        """Why the device is down, e.g. ``tcp:554 refused`` (empty when it is not down)."""
        reasons = []
        for name, probe in self.probes.items():
            if probe.health is Health.DOWN and probe.last_result is not None:
                reasons.append(f"{name} {probe.last_result.reason}".strip())
        return ", ".join(reasons)

    def finding(self, kind: type[F]) -> F | None:
        """The finding of this kind from the device's first probe that reported one (ISAPI health, AX PRO status).

        One per device: two probes of one protocol on a device must not export the same series twice.
        """
        for probe in self.probes.values():
            result = probe.last_result
            if result is not None and isinstance(result.finding, kind):
                return result.finding
        return None


@dataclass(frozen=True, slots=True)
class KindCount:
    """How many devices of one kind a school has, and how they are."""

    total: int = 0
    up: int = 0
    down: int = 0

    @property
    def unknown(self) -> int:
        """Devices with no result yet."""
        return self.total - self.up - self.down


@dataclass(frozen=True, slots=True)
class SchoolSummary:
    """Per-school roll-up for the status page, the API and the exporter."""

    school: School
    by_kind: dict[DeviceKind, KindCount]
    down_devices: tuple[DeviceState, ...]

    def count(self, kind: DeviceKind) -> KindCount:
        """Roll-up of one device kind (zeros when the school has none)."""
        return self.by_kind.get(kind, KindCount())


SIA_PROBE = "sia"
"""Pseudo-probe of a panel supervised by the DC-09 receiver: results come from heartbeats, not a prober."""


_TALLY_SLOT = {Health.UP: 1, Health.DOWN: 2}
"""Where a health is counted in a tally's [total, up, down]."""


def _count(states: Iterable[DeviceState]) -> dict[DeviceKind, list[int]]:
    """Kind → [total, up, down] of these device states."""
    counts: dict[DeviceKind, list[int]] = {}
    for state in states:
        kind = counts.setdefault(state.device.kind, [0, 0, 0])
        kind[0] += 1
        slot = _TALLY_SLOT.get(state.health)
        if slot is not None:
            kind[slot] += 1
    return counts


_Indexes = tuple[
    dict[str, tuple["DeviceState", ...]], dict[str, tuple["DeviceState", ...]], dict[str, dict[DeviceKind, list[int]]]
]
"""A roster's devices by protocol and by school, and each school's tally."""
_DEVICES_PER_STEP = 1000
_SCHOOLS_PER_STEP = 100


def _indexing(devices: dict[str, DeviceState]) -> Steps[_Indexes]:
    index: dict[str, list[DeviceState]] = {}
    by_school: dict[str, list[DeviceState]] = {}
    for count, state in enumerate(devices.values(), 1):
        for protocol in dict.fromkeys(spec.protocol for spec in state.device.probes):
            index.setdefault(protocol, []).append(state)
        by_school.setdefault(state.device.school_id, []).append(state)
        if count % _DEVICES_PER_STEP == 0:
            yield
    tally = {}
    for count, (school, states) in enumerate(by_school.items(), 1):
        tally[school] = _count(states)
        if count % _SCHOOLS_PER_STEP == 0:
            yield
    return (
        {protocol: tuple(states) for protocol, states in index.items()},
        {school: tuple(states) for school, states in by_school.items()},
        tally,
    )


def probe_names(device: Device) -> list[str]:
    """The probes a device's state tracks: its scheduled probes plus heartbeat supervision."""
    return [p.name for p in device.probes] + ([SIA_PROBE] if device.sia is not None else [])


@dataclass(frozen=True, slots=True)
class Roster:
    """One generation of the inventory with the state of its devices; replaced whole on reload."""

    inventory: Inventory
    devices: dict[str, DeviceState]
    _probing: dict[str, tuple[DeviceState, ...]] = field(init=False, repr=False, compare=False)
    _by_school: dict[str, tuple[DeviceState, ...]] = field(init=False, repr=False, compare=False)
    _tally: dict[str, dict[DeviceKind, list[int]]] = field(init=False, repr=False, compare=False)
    _versions: dict[str, int] = field(init=False, repr=False, compare=False)

    prebuilt: InitVar[_Indexes | None] = None

    def __post_init__(self, prebuilt: _Indexes | None) -> None:
        # Built once per generation, so a scrape reads ISAPI/AX PRO findings of the few devices
        # that have those probes instead of looking at every device of the city, and re-encodes
        # only the schools whose version moved, with roll-ups from counters State.apply keeps.
        probing, by_school, tally = prebuilt or finish(_indexing(self.devices))
        object.__setattr__(self, "_probing", probing)
        object.__setattr__(self, "_by_school", by_school)
        object.__setattr__(self, "_tally", tally)
        object.__setattr__(self, "_versions", dict.fromkeys(by_school, 0))

    @classmethod
    def assembling(cls, inventory: Inventory, devices: dict[str, DeviceState]) -> Steps[Roster]:
        """The roster, its indexes built in steps (a reload builds it on the event loop)."""
        return cls(inventory, devices, (yield from _indexing(devices)))

    def untouched_since(self, old: Roster) -> Steps[frozenset[str]]:
        """The schools whose device states are the very objects `old` holds for them, in the same order."""
        untouched = []
        for count, (school_id, states) in enumerate(self._by_school.items(), 1):
            was = old.school_states(school_id)
            if len(states) == len(was) and all(a is b for a, b in zip(states, was, strict=True)):
                untouched.append(school_id)
            if count % _SCHOOLS_PER_STEP == 0:
                yield
        return frozenset(untouched)

    def carry_over(self, old: Roster, untouched: frozenset[str], recount: frozenset[str]) -> None:
        """Take the live counts of `old` where nothing changed, count `recount` again (at the swap, on the loop).

        A school in `untouched` holds the very same device states as in `old`, whose tally
        `State.apply` kept current while this roster was being built: its lists are shared,
        and its version continues. A school in `recount` mixes old and new states, whose
        healths may have moved since they were counted; the others hold only new states.
        """
        tally = self._tally
        for school_id in untouched:
            tally[school_id] = old._tally[school_id]
            self._versions[school_id] = old._versions[school_id]
        for school_id in recount:
            tally[school_id] = _count(self._by_school[school_id])

    def probing(self, protocol: str) -> tuple[DeviceState, ...]:
        """The devices with at least one probe of `protocol`, in inventory order."""
        return self._probing.get(protocol, ())

    def protocols(self) -> set[str]:
        """Every protocol some device of this roster is probed with."""
        return set(self._probing)

    def kind_totals(self) -> dict[DeviceKind, int]:
        """How many devices of each kind the roster holds (every kind, zeros included)."""
        totals = dict.fromkeys(DeviceKind, 0)
        for kinds in self._tally.values():
            for kind, counts in kinds.items():
                totals[kind] += counts[0]
        return totals

    def school_states(self, school_id: str) -> tuple[DeviceState, ...]:
        """The states of the school's devices, in inventory order."""
        return self._by_school.get(school_id, ())

    def school_version(self, school_id: str) -> int:
        """Grows whenever a device's or probe's health at the school changes (within this roster)."""
        return self._versions.get(school_id, 0)

    def tally(self, school_id: str) -> dict[DeviceKind, list[int]]:
        """Kind → [total, up, down] of the school's devices, kept current by `State.apply` (read, never change)."""
        return self._tally.get(school_id, {})

    def changed(self, device: Device, old: Health, new: Health) -> None:
        """Note a probe's health change on `device` (whose own health went `old` → `new`, maybe the same).

        The school's version moves first, then its tally: the old slot before the new, so a
        reader on another thread never over-counts.
        """
        self._versions[device.school_id] += 1
        if old is new:
            return
        counts = self._tally[device.school_id][device.kind]
        if old is not Health.UNKNOWN:
            counts[_TALLY_SLOT[old]] -= 1
        if new is not Health.UNKNOWN:
            counts[_TALLY_SLOT[new]] += 1

    def school_summaries(self) -> Iterator[SchoolSummary]:
        """Roll-ups per school in inventory order."""
        for school in self.inventory.schools:
            yield self.school_summary(school)

    def school_summary(self, school: School) -> SchoolSummary:
        """Cameras, NVRs, alarm panels and routers up/down/total at one school."""
        counts: dict[DeviceKind, list[int]] = {}
        down: list[DeviceState] = []
        for device in school.devices:
            state = self.devices[device.id]
            total_up_down = counts.setdefault(device.kind, [0, 0, 0])
            total_up_down[0] += 1
            if state.health is Health.UP:
                total_up_down[1] += 1
            elif state.health is Health.DOWN:
                total_up_down[2] += 1
                down.append(state)
        return SchoolSummary(
            school,
            {kind: KindCount(*values) for kind, values in counts.items()},
            tuple(down),
        )

    def count_by_health(self) -> dict[Health, int]:
        """How many devices are up, down and unknown across the instance (from the tallies: no device is read)."""
        total = up = down = 0
        for kinds in self._tally.values():
            for counts in kinds.values():
                total, up, down = total + counts[0], up + counts[1], down + counts[2]
        return {Health.UP: up, Health.DOWN: down, Health.UNKNOWN: total - up - down}


@dataclass(frozen=True, slots=True)
class RosterPlan:
    """A roster built off the loop for a new inventory, and what `State.adopt` must settle at the swap."""

    roster: Roster
    replaces: Roster
    """The roster this was planned against: adopting it over another one plans again."""
    carried: tuple[tuple[DeviceState, DeviceState], ...]
    """(new, old) states of devices whose probes changed at the same address."""
    reset: tuple[DeviceState, ...]
    """Old states of devices at a new address."""
    removed: tuple[DeviceState, ...]
    """Old states of devices the inventory no longer has."""
    untouched: frozenset[str]
    """Schools whose device states are exactly the old roster's."""
    recount: frozenset[str]
    """Other schools with states results may change before the swap: counted again at it."""


@dataclass(slots=True)
class State:
    """Every device's state; the single source the exporter, status page and history read."""

    down_after: int = 3
    up_after: int = 2
    roster: Roster = field(default_factory=lambda: Roster(Inventory.build([]), {}))

    @property
    def inventory(self) -> Inventory:
        """The inventory of the current roster."""
        return self.roster.inventory

    @property
    def devices(self) -> dict[str, DeviceState]:
        """Device id → state, of the current roster."""
        return self.roster.devices

    def sync(self, inventory: Inventory, at: float = 0.0) -> list[StateChange]:
        """Follow an inventory (re)load at once: `adopt(plan(inventory))`."""
        return self.adopt(self.plan(inventory), at)

    def plan(self, inventory: Inventory) -> RosterPlan:
        """`planning` run to its end."""
        return finish(self.planning(inventory))

    def planning(self, inventory: Inventory) -> Steps[RosterPlan]:
        """The roster for `inventory`, built in steps against the current one; `adopt` puts it in place.

        An unchanged device keeps its `DeviceState` itself, so results applied while the plan
        is built (and after) land in the new roster too. A device whose probes changed at the
        same address keeps its probe states; one with a new address starts over as unknown,
        since its old results say nothing about the new target. Between steps the event loop
        may apply results: the plan only reads the current roster.
        """
        current = self.roster
        old_states = current.devices
        states: dict[str, DeviceState] = {}
        carried: list[tuple[DeviceState, DeviceState]] = []
        reset: list[DeviceState] = []
        live: set[str] = set()
        """Schools holding states that results may change before the swap (kept or carried ones)."""
        for count, device in enumerate(inventory.devices_by_id.values(), 1):
            if count % _DEVICES_PER_STEP == 0:
                yield
            old = old_states.get(device.id)
            if old is not None and old.device == device:
                old.device = device  # equal; the new inventory's object, so the old one can go
                states[device.id] = old
                live.add(device.school_id)
                continue
            fresh = DeviceState(device, {name: ProbeState() for name in probe_names(device)})
            if old is not None and old.device.host == device.host:
                fresh.probes = {name: old.probes.get(name, ProbeState()) for name in fresh.probes}
                carried.append((fresh, old))
                live.add(device.school_id)
            elif old is not None:
                reset.append(old)
            states[device.id] = fresh
        removed = []
        for count, (device_id, state) in enumerate(old_states.items(), 1):
            if device_id not in states:
                removed.append(state)
            if count % _DEVICES_PER_STEP == 0:
                yield
        roster = yield from Roster.assembling(inventory, states)
        untouched = yield from roster.untouched_since(current)
        recount = frozenset(live - untouched)
        return RosterPlan(roster, current, tuple(carried), tuple(reset), tuple(removed), untouched, recount)

    def adopt(self, plan: RosterPlan, at: float) -> list[StateChange]:
        """Make a planned roster current (on the loop, in time proportional to what changed).

        Returns the device-level changes to unknown of devices the plan removed or reset, so
        the history does not keep them in their last state for ever. A plan made against an
        older roster than the current one is made again first.
        """
        if plan.replaces is not self.roster:
            plan = self.plan(plan.roster.inventory)
        for fresh, old in plan.carried:  # results went to the old state until now
            fresh.health = _device_health(fresh.probes.values())
            fresh.last_change, fresh.flaps = old.last_change, old.flaps
        plan.roster.carry_over(plan.replaces, plan.untouched, plan.recount)
        self.roster = plan.roster
        gone = [(old, "address changed") for old in plan.reset]
        gone += [(old, "removed from the inventory") for old in plan.removed]
        return [
            StateChange(at, old.device.school_id, old.device.id, old.device.kind, None, old.health, Health.UNKNOWN, why)
            for old, why in gone
            if old.health is not Health.UNKNOWN
        ]

    def apply(self, device_id: str, probe: str, result: ProbeResult, now: float) -> list[StateChange]:
        """Record one probe result; return the transitions it caused (probe and device level)."""
        device_state = self.devices.get(device_id)
        if device_state is None:
            return []  # the device was removed by a reload while its probe ran
        probe_state = device_state.probes.get(probe)
        if probe_state is None:
            return []
        probe_state.last_result = result
        probe_state.last_run = now
        probe_state.runs += 1
        if result.ok:
            probe_state.ok_streak += 1
            probe_state.fail_streak = 0
        else:
            probe_state.fail_streak += 1
            probe_state.ok_streak = 0

        new = _debounce(probe_state, self.down_after, self.up_after, ok=result.ok)
        if new is probe_state.health:
            return []
        device = device_state.device
        changes = [
            StateChange(
                now,
                device.school_id,
                device.id,
                device.kind,
                probe,
                probe_state.health,
                new,
                result.reason,
                result.detail,
            )
        ]
        if probe_state.health is not Health.UNKNOWN:
            probe_state.flaps += 1
        probe_state.health = new
        probe_state.last_change = now

        device_old = device_state.health
        device_new = _device_health(device_state.probes.values())
        if device_new is not device_old:
            reason = device_state.down_reason() if device_new is Health.DOWN else ""
            changes.append(
                StateChange(
                    now,
                    device.school_id,
                    device.id,
                    device.kind,
                    None,
                    device_state.health,
                    device_new,
                    reason,
                    result.detail if device_new is Health.DOWN else "",
                )
            )
            if device_state.health is not Health.UNKNOWN:
                device_state.flaps += 1
            device_state.health = device_new
            device_state.last_change = now
        # Versions move after the healths they stand for: a reader on another thread reads the
        # version first, so at worst it caches newer lines under an older version, re-encoded next time.
        device_state.version += 1
        self.roster.changed(device, device_old, device_new)
        return changes

    def school_summaries(self) -> Iterator[SchoolSummary]:
        """Roll-ups per school in inventory order (of one roster, even across a reload)."""
        return self.roster.school_summaries()

    def count_by_health(self) -> dict[Health, int]:
        """How many devices are up, down and unknown across the instance."""
        return self.roster.count_by_health()


def _debounce(state: ProbeState, down_after: int, up_after: int, *, ok: bool) -> Health:
    if state.health is Health.UNKNOWN:
        return Health.UP if ok else Health.DOWN
    if state.health is Health.UP and state.fail_streak >= down_after:
        return Health.DOWN
    if state.health is Health.DOWN and state.ok_streak >= up_after:
        return Health.UP
    return state.health


def _device_health(probes: Iterable[ProbeState]) -> Health:
    seen_up = False
    for probe in probes:
        if probe.health is Health.DOWN:
            return Health.DOWN
        seen_up = seen_up or probe.health is Health.UP
    return Health.UP if seen_up else Health.UNKNOWN

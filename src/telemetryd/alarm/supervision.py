"""Supervision of every alarm panel: who was heard when, and what that means for its `sia` probe.

A school's alarm panel reports to the Emergency Management Center over IP; losing that
path is itself an alarm condition, so panels send NULL heartbeats and supervision is
"lost" when one is overdue. Pure bookkeeping, driven by whatever clock the caller
passes in: the receiver (`alarm.receiver`) feeds it, the daemon turns `supervision_results`
into State.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from telemetryd.alarm.dc09 import AccountKey, PanelEvent
from telemetryd.config.settings import Settings
from telemetryd.model import Device, Inventory, ProbeResult, SiaAccount

DEFAULT_GRACE = 30.0
"""Seconds past the heartbeat interval before supervision is lost: room for a heartbeat that
needed retries or waited behind an event, without hiding a dead path for long."""
MAX_STRANGERS = 1024
"""Unknown accounts remembered (oldest forgotten first), so a flood of made-up ones costs bounded memory."""


class SupervisionState(enum.StrEnum):
    """Where a panel's heartbeats stand."""

    OK = "ok"
    SUPERVISION_LOST = "supervision_lost"
    """Heard before, but nothing for longer than interval + grace."""
    NEVER_HEARD = "never_heard"
    """Nothing since supervision began; see `AccountStatus.overdue` for whether that is yet a fault."""


def account_key(sia: SiaAccount) -> AccountKey:
    """The receiver's key for a panel configured in the inventory (`sia:`)."""
    return AccountKey(sia.receiver, sia.prefix, sia.account)


def panel_devices(inventory: Inventory) -> dict[AccountKey, tuple[str, str]]:
    """Account → (school id, device id) of every panel with `sia:` in the inventory."""
    return {account_key(d.sia): (d.school_id, d.id) for d in inventory.devices_by_id.values() if d.sia is not None}


@dataclass(frozen=True, slots=True)
class SupervisedPanel:
    """One panel the receiver expects to hear from, and how often (seconds)."""

    key: AccountKey
    interval: float
    grace: float = DEFAULT_GRACE

    def __post_init__(self) -> None:
        if self.interval <= 0 or self.grace < 0:
            raise ValueError(f"{self.key}: interval must be > 0 and grace >= 0")


@dataclass(frozen=True, slots=True)
class AccountStatus:
    """What supervision knows about one panel at one moment."""

    key: AccountKey
    state: SupervisionState
    interval: float
    grace: float
    since: float
    """When supervision of this account began (clock of the caller)."""
    last_heard: float | None
    """When the last accepted frame (heartbeat or event) arrived."""
    silent_for: float
    """Seconds since `last_heard`, or since `since` when never heard."""
    overdue: bool
    """True when `silent_for` exceeds interval + grace: lost, or never heard and late."""
    frames: int
    last_event: PanelEvent | None
    last_event_at: float | None
    events: int


@dataclass(slots=True)
class _Account:
    panel: SupervisedPanel
    since: float
    last_heard: float | None = None
    frames: int = 0
    last_event: PanelEvent | None = None
    last_event_at: float | None = None
    events: int = 0


class Supervision:
    """Per-account heartbeat supervision; every method takes the time, nothing reads a clock.

    Any accepted frame counts as a sign of life, not only NULL: an alarm proves the path
    as well as a heartbeat does.
    """

    def __init__(self, panels: Iterable[SupervisedPanel] = (), *, started_at: float) -> None:
        self._accounts: dict[AccountKey, _Account] = {}
        self._strangers: OrderedDict[AccountKey, float] = OrderedDict()
        self.configure(panels, now=started_at)

    def configure(self, panels: Iterable[SupervisedPanel], *, now: float) -> None:
        """Set the expected panels (config load or reload); accounts kept keep their history."""
        previous = self._accounts
        self._accounts = {}
        for panel in panels:
            old = previous.get(panel.key)
            if old is None:
                self._accounts[panel.key] = _Account(panel, since=now)
                self._strangers.pop(panel.key, None)
            else:
                old.panel = panel
                self._accounts[panel.key] = old

    @property
    def keys(self) -> tuple[AccountKey, ...]:
        """The supervised accounts."""
        return tuple(self._accounts)

    @property
    def strangers(self) -> dict[AccountKey, float]:
        """Accounts heard from but not configured, with when they were last heard."""
        return dict(self._strangers)

    def observe(self, key: AccountKey, at: float) -> bool:
        """Record a sign of life; False (and remembered as a stranger) when the account is not supervised."""
        account = self._accounts.get(key)
        if account is None:
            self._strangers[key] = at
            self._strangers.move_to_end(key)
            while len(self._strangers) > MAX_STRANGERS:
                self._strangers.popitem(last=False)
            return False
        if account.last_heard is None or at >= account.last_heard:
            account.last_heard = at
        account.frames += 1
        return True

    def record_event(self, key: AccountKey, event: PanelEvent, at: float) -> bool:
        """Remember an event (alarm, restore, test) as the panel's last; False when not supervised."""
        account = self._accounts.get(key)
        if account is None:
            return False
        account.last_event, account.last_event_at = event, at
        account.events += 1
        return True

    def status_of(self, key: AccountKey, now: float) -> AccountStatus:
        """The status of one supervised account (KeyError when not supervised)."""
        account = self._accounts[key]
        panel = account.panel
        silent_for = max(0.0, now - (account.last_heard if account.last_heard is not None else account.since))
        overdue = silent_for > panel.interval + panel.grace
        if account.last_heard is None:
            state = SupervisionState.NEVER_HEARD
        else:
            state = SupervisionState.SUPERVISION_LOST if overdue else SupervisionState.OK
        return AccountStatus(
            key=key,
            state=state,
            interval=panel.interval,
            grace=panel.grace,
            since=account.since,
            last_heard=account.last_heard,
            silent_for=silent_for,
            overdue=overdue,
            frames=account.frames,
            last_event=account.last_event,
            last_event_at=account.last_event_at,
            events=account.events,
        )

    def status(self, now: float) -> dict[AccountKey, AccountStatus]:
        """Every supervised account's status at `now`."""
        return {key: self.status_of(key, now) for key in self._accounts}


def supervised_panels(inventory: Inventory, settings: Settings) -> list[SupervisedPanel]:
    """The alarm panels with `sia:`, as the receiver's supervision table wants them."""
    return [
        SupervisedPanel(account_key(d.sia), d.sia.interval, settings.sia.grace)
        for d in inventory.devices_by_id.values()
        if d.sia is not None
    ]


def supervision_results(
    supervision: Supervision, inventory: Inventory, now: float
) -> Iterator[tuple[Device, ProbeResult]]:
    """One pass: ok → up, lost or never heard past its interval → down, not yet due → no result."""
    for device in inventory.devices_by_id.values():
        if device.sia is None:
            continue
        try:
            status = supervision.status_of(account_key(device.sia), now)
        except KeyError:
            continue  # a reload in between
        if status.state is SupervisionState.OK:
            yield device, ProbeResult(True, 0.0)
        elif status.overdue:
            heard = "no heartbeat since the receiver started" if status.last_heard is None else "no heartbeat"
            detail = f"{heard} for {status.silent_for:.0f} s (heartbeat every {status.interval:g} s)"
            yield device, ProbeResult(False, 0.0, status.state.value, detail)

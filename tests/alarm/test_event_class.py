"""The event class of SIA and Contact ID codes: a pure function of the code alone."""

from __future__ import annotations

import pytest

from telemetryd.alarm.dc09 import EventClass, PanelEvent, event_class

ALARM, TROUBLE, RESTORAL, TEST, OTHER = (
    EventClass.ALARM,
    EventClass.TROUBLE,
    EventClass.RESTORAL,
    EventClass.TEST,
    EventClass.OTHER,
)


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("BA", ALARM),
        ("FA", ALARM),
        ("PA", ALARM),
        ("HA", ALARM),
        ("MA", ALARM),
        ("TA", ALARM),
        ("WA", ALARM),
        ("GA", ALARM),
        ("BV", ALARM),
        ("BM", ALARM),
        ("BR", RESTORAL),
        ("FR", RESTORAL),
        ("PR", RESTORAL),
        ("TR", RESTORAL),
        ("BH", RESTORAL),
        ("FJ", RESTORAL),
        ("AR", RESTORAL),
        ("YR", RESTORAL),
        ("NR", RESTORAL),
        ("BT", TROUBLE),
        ("FT", TROUBLE),
        ("AT", TROUBLE),
        ("YT", TROUBLE),
        ("LT", TROUBLE),
        ("XT", TROUBLE),
        ("FS", TROUBLE),
        ("RP", TEST),
        ("RX", TEST),
        ("TX", TEST),
        ("TS", TEST),
        ("FX", TEST),
        ("CL", OTHER),
        ("OP", OTHER),
        ("OR", OTHER),
        ("CR", OTHER),
        ("RR", OTHER),
        ("BB", OTHER),
        ("BU", OTHER),
        ("AX", OTHER),
        ("QQ", OTHER),
        ("", OTHER),
        ("BAD", OTHER),
    ],
)
def test_sia_codes(code: str, expected: EventClass) -> None:
    """SIA alarms (xA), restorals (xR/xH/xJ), troubles (xT/xS, AC and battery) and tests (RP/RX/TX) are told apart."""
    assert event_class(code) is expected


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("E110", ALARM),
        ("E130", ALARM),
        ("E120", ALARM),
        ("P130", ALARM),
        ("R130", RESTORAL),
        ("R110", RESTORAL),
        ("E301", TROUBLE),
        ("E302", TROUBLE),
        ("E200", TROUBLE),
        ("R301", RESTORAL),
        ("E602", TEST),
        ("E601", TEST),
        ("R611", TEST),
        ("E627", OTHER),
        ("E401", OTHER),
        ("R401", OTHER),
        ("E570", OTHER),
        ("E13A", OTHER),
        ("X130", OTHER),
    ],
)
def test_contact_id_codes(code: str, expected: EventClass) -> None:
    """Contact ID: 1xx alarm, 2xx/3xx trouble, qualifier R (3) a restoral, 60x/61x test, the rest other."""
    assert event_class(code) is expected


def test_panel_event_carries_its_class_and_lower_case_is_accepted() -> None:
    """A PanelEvent's class follows its code, and the function is indifferent to case and stray blanks."""
    assert PanelEvent("BA", zone="03").event_class is ALARM
    assert PanelEvent("R130", zone="015", partition="01").event_class is RESTORAL
    assert event_class(" yt ") is TROUBLE

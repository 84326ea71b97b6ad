"""When speed tests may run: quiet windows in local time and the NOC uplink budget."""

from __future__ import annotations

from telemetryd.link.budget import Budget, quiet_wait


def test_quiet_windows_in_local_time() -> None:
    """Windows are local minutes of the day (UTC+5 for Shymkent) and may wrap midnight."""
    lessons = [(8 * 60, 14 * 60)]
    at_0300_utc = 3 * 3600  # 08:00 local
    assert quiet_wait(at_0300_utc, lessons, 5) == 6 * 3600
    assert quiet_wait(at_0300_utc - 60, lessons, 5) == 0  # 07:59 local
    assert quiet_wait(9 * 3600, lessons, 5) == 0  # 14:00 local: the window has ended
    night = [(22 * 60, 6 * 60)]
    assert quiet_wait(18 * 3600, night, 5) == 7 * 3600  # 23:00 local → 06:00
    assert quiet_wait(0, night, 5) == 1 * 3600  # 05:00 local
    assert quiet_wait(2 * 3600, night, 5) == 0  # 07:00 local


def test_budget_admits_tests_up_to_capacity_and_one_oversized_alone() -> None:
    """Tests reserve their contract; an oversized school may run, but never beside another."""
    budget = Budget(300)
    assert budget.fits(150)
    budget.take(150)
    assert budget.fits(150)
    budget.take(150)
    assert not budget.fits(150)
    budget.give_back(150)
    budget.give_back(150)
    assert budget.fits(1000)
    budget.take(1000)
    assert not budget.fits(10)

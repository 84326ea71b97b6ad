"""Digest nonces done right and cheap: reused while accepted, refreshed when spent, never a second password try."""

from __future__ import annotations

import pytest

from telemetryd.probes.isapi import AuthState, IsapiPolicy, IsapiProber
from telemetryd.sim.hikvision import HikvisionSim
from tests.probes.isapi_sim import PASSWORD, POLICY, Clock, add_device


async def test_a_nonce_is_reused_across_requests_and_checks(sim: HikvisionSim, clock: Clock) -> None:
    """One challenge fetch serves a whole camera check and the next one (within nonce_max_age)."""
    device, port = await add_device(sim, "ipc-v5")
    async with IsapiProber(policy=POLICY) as prober:
        first = await prober.check("127.0.0.1", port, "admin", PASSWORD, "camera", now=clock.now)
        second = await prober.check("127.0.0.1", port, "admin", PASSWORD, "camera", now=clock.now)
    assert first.ok and second.ok
    assert (first.requests, second.requests) == (4, 3)  # deviceInfo, status, time: one fetch in all
    assert device.authenticated == 6 and device.failed_logins == 0


async def test_an_old_nonce_is_not_used_again(sim: HikvisionSim, clock: Clock) -> None:
    """Past nonce_max_age the next check fetches a fresh challenge instead of betting on the old nonce."""
    device, port = await add_device(sim, "ipc-v5")
    async with IsapiProber(policy=IsapiPolicy(request_timeout=1.0, check_timeout=5.0, nonce_max_age=0.0)) as prober:
        first = await prober.check("127.0.0.1", port, "admin", PASSWORD, "camera", now=clock.now)
        second = await prober.check("127.0.0.1", port, "admin", PASSWORD, "camera", now=clock.now)
    assert first.ok and second.ok
    assert second.requests == 6  # a fetch before each request: nothing reused
    assert device.nonce_refusals == 0 and device.failed_logins == 0


async def test_an_expired_nonce_without_stale_keeps_a_proven_password(sim: HikvisionSim, clock: Clock) -> None:
    """Firmware that expires a nonce with stale=FALSE: the 401 did not count (retryLoginTime unchanged),
    so the proven credential gets the request again on a fresh nonce — not auth_failed until a restart."""
    device, port = await add_device(sim, "ipc-quiet-expiry", nonce_lifetime=30)
    async with IsapiProber(policy=POLICY) as prober:
        assert (await prober.check("127.0.0.1", port, "admin", PASSWORD, "camera", now=clock.now)).ok
        clock.now += 120  # the device's nonce expires; ours is young by our clock, so it is tried
        later = await prober.check("127.0.0.1", port, "admin", PASSWORD, "camera", now=clock.now)
        assert later.ok and later.auth is AuthState.OK, later.detail
        again = await prober.check("127.0.0.1", port, "admin", PASSWORD, "camera", now=clock.now)
    assert again.ok
    assert device.nonce_refusals == 1 and device.failed_logins == 0


async def test_the_nonce_limit_is_learnt_once(sim: HikvisionSim, clock: Clock) -> None:
    """Firmware refusing a nonce's third use (401, no challenge) costs one refused request, then never again."""
    device, port = await add_device(sim, "ipc-strict-nonce")
    async with IsapiProber(policy=POLICY) as prober:
        for _ in range(4):
            found = await prober.check("127.0.0.1", port, "admin", PASSWORD, "camera", now=clock.now)
            assert found.ok, found.detail
    assert device.nonce_refusals == 1 and device.failed_logins == 0


@pytest.mark.parametrize("firmware", ["ipc-v5", "ipc-old", "ipc-quiet-expiry"])
async def test_a_password_changed_on_the_device_costs_one_failed_login(
    sim: HikvisionSim, clock: Clock, firmware: str
) -> None:
    """A reused nonce refused with the failed-login count going down (or no count at all, old firmware)
    is the credential: no retry on a fresh nonce, one failed login, then nothing."""
    device, port = await add_device(sim, firmware)
    async with IsapiProber(policy=POLICY) as prober:
        assert (await prober.check("127.0.0.1", port, "admin", PASSWORD, "camera", now=clock.now)).ok
        device.password = "Rotated-By-Installer-1"
        for _ in range(3):
            found = await prober.check("127.0.0.1", port, "admin", PASSWORD, "camera", now=clock.now)
            assert found.reason == "auth_failed"
    assert device.failed_logins == 1

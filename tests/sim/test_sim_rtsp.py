"""The simulated RTSP stream servers answer the RTSP prober the way cameras do."""

from __future__ import annotations

import asyncio

from telemetryd.probes.rtsp import options
from telemetryd.sim.rtsp import RtspCamera, RtspResponder


async def test_each_mode_gives_the_probe_result_a_camera_would() -> None:
    """200 is ok with the methods, 401 is ok but says so, garbage is not_rtsp, silence times out."""
    async with RtspResponder() as sim:
        cameras = {mode: RtspCamera(mode) for mode in ("ok", "unauthorized", "garbage", "silent")}
        where = {mode: await sim.add(camera, f"127.0.0.{n}") for n, (mode, camera) in enumerate(cameras.items(), 1)}
        results = dict(
            zip(
                where,
                await asyncio.gather(*(options(host, port, timeout=1.0) for host, port in where.values())),
                strict=True,
            )
        )
    assert results["ok"].ok and "DESCRIBE" in results["ok"].detail
    assert results["unauthorized"].ok and "auth" in results["unauthorized"].detail
    assert (results["garbage"].ok, results["garbage"].reason) == (False, "not_rtsp")
    assert (results["silent"].ok, results["silent"].reason) == (False, "timeout")
    assert all(camera.requests == 1 for camera in cameras.values())


async def test_a_camera_without_a_responder_is_refused() -> None:
    """A closed stream port is `refused`, told apart from a timeout."""
    async with RtspResponder() as sim:
        host, port = await sim.add(RtspCamera(), "127.0.0.9")
    result = await options(host, port, timeout=1.0)
    assert (result.ok, result.reason) == (False, "refused")

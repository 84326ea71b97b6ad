"""The speed-test responder on a real loopback listener: exact bytes, token checks, caps."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import structlog
from aiohttp import web

from telemetryd.school_responder import make_app, parse_listen, read_token_file, serve_responder

TOKEN = "correct-horse-battery-staple"
CAP = 8 * 1024 * 1024


@pytest.fixture
async def responder() -> AsyncIterator[str]:
    """A responder on 127.0.0.1 and a free port; yields its base URL."""
    runner = web.AppRunner(make_app(TOKEN, max_bytes_per_request=CAP), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def bearer(token: str = TOKEN) -> dict[str, str]:
    """The Authorization header for `token`."""
    return {"Authorization": f"Bearer {token}"}


async def test_download_streams_exactly_the_bytes_asked(responder: str) -> None:
    """GET /download?bytes=N returns exactly N bytes of non-constant payload, beyond one buffer length."""
    size = 3 * 256 * 1024 + 12345
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{responder}/download", params={"bytes": size}, headers=bearer()) as response,
    ):
        body = await response.read()
    assert response.status == 200
    assert len(body) == size
    assert len(set(body[:4096])) > 200  # random, so no compression on the way can flatter the link


async def test_download_of_zero_bytes(responder: str) -> None:
    """bytes=0 is an empty 200, not an error."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{responder}/download", params={"bytes": 0}, headers=bearer()) as response,
    ):
        assert response.status == 200
        assert await response.read() == b""


async def test_upload_is_counted(responder: str) -> None:
    """POST /upload answers with the exact byte count of a streamed (chunked) body."""

    async def body() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"x" * 100_000

    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{responder}/upload", data=body(), headers=bearer()) as response,
    ):
        answer = await response.json()
    assert response.status == 200
    assert answer["bytes"] == 1_000_000
    assert answer["seconds"] >= 0


@pytest.mark.parametrize(
    "headers",
    [{}, bearer("wrong"), bearer(TOKEN[:-1]), {"Authorization": f"Basic {TOKEN}"}, bearer(TOKEN + "x")],
    ids=["missing", "wrong", "prefix", "basic-scheme", "longer"],
)
async def test_bad_or_missing_token_is_401_without_echo(responder: str, headers: dict[str, str]) -> None:
    """Every endpoint but /healthz refuses a missing or wrong token with 401, and the body echoes nothing."""
    async with aiohttp.ClientSession() as session:
        for method, path in (("GET", "/download?bytes=10"), ("POST", "/upload")):
            async with session.request(method, f"{responder}{path}", headers=headers, data=b"abc") as response:
                text = await response.text()
            assert response.status == 401, path
            assert text == "unauthorized\n"
            assert "wrong" not in text


async def test_upload_with_bad_token_is_refused_before_the_body(responder: str) -> None:
    """With Expect: 100-continue a wrong token gets 401 before any body byte is sent."""
    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        sent += 1
        yield b"x" * 1000

    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{responder}/upload", data=body(), headers=bearer("wrong"), expect100=True) as response,
    ):
        assert response.status == 401
    assert sent == 0


async def test_healthz_needs_no_token(responder: str) -> None:
    """/healthz answers ok without a token, so a process check needs no secret."""
    async with aiohttp.ClientSession() as session, session.get(f"{responder}/healthz") as response:
        assert response.status == 200
        assert await response.text() == "ok\n"


async def test_download_over_the_cap_is_413(responder: str) -> None:
    """A download larger than max_bytes_per_request is refused with 413 before any payload."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{responder}/download", params={"bytes": CAP + 1}, headers=bearer()) as response,
    ):
        assert response.status == 413
        assert len(await response.read()) < 100


@pytest.mark.parametrize("value", ["", "abc", "-5", "1.5"])
async def test_download_with_a_bad_size_is_400(responder: str, value: str) -> None:
    """A missing, negative or non-integer byte count is a 400."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{responder}/download", params={"bytes": value}, headers=bearer()) as response,
    ):
        assert response.status == 400


async def test_streamed_upload_is_cut_off_at_the_cap(responder: str) -> None:
    """A chunked upload that goes past the cap gets 413 instead of being read to the end."""

    async def body() -> AsyncIterator[bytes]:
        for _ in range(CAP // 65536 + 100):
            yield b"y" * 65536

    async with aiohttp.ClientSession() as session:
        try:
            async with session.post(f"{responder}/upload", data=body(), headers=bearer()) as response:
                status = response.status
        except aiohttp.ClientOSError:
            pytest.skip("the responder closed before the client read its 413 (a race of this loopback)")
    assert status == 413


async def test_upload_declaring_more_than_the_cap_is_refused_up_front(responder: str) -> None:
    """A Content-Length above the cap with Expect: 100-continue is refused with 413 before the body."""
    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        sent += 1
        yield b"z"

    headers = {**bearer(), "Content-Length": str(CAP + 1)}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{responder}/upload", data=body(), headers=headers, expect100=True) as response,
    ):
        assert response.status == 413
    assert sent == 0


async def test_concurrent_downloads_each_get_their_bytes(responder: str) -> None:
    """Four parallel downloads on four connections each receive exactly what they asked for."""
    sizes = [1_000_000, 2_000_000, 3_000_000, 4_000_000]
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def fetch(size: int) -> int:
            async with session.get(f"{responder}/download", params={"bytes": size}, headers=bearer()) as response:
                return len(await response.read())

        assert await asyncio.gather(*(fetch(s) for s in sizes)) == sizes


async def test_token_never_reaches_the_log(responder: str) -> None:
    """A refused request logs the event and peer, never the presented or the expected token."""
    with structlog.testing.capture_logs() as logs:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{responder}/download?bytes=1", headers=bearer("guess-" + TOKEN)) as response,
        ):
            assert response.status == 401
    assert [entry["event"] for entry in logs] == ["speedtest_unauthorized"]
    assert TOKEN not in repr(logs)


async def test_refusals_are_one_summary_line_per_minute(responder: str) -> None:
    """A scanner's 30 refused requests are one log line (the first), counted; the rest wait for the summary."""
    with structlog.testing.capture_logs() as logs:
        async with aiohttp.ClientSession() as session:
            for attempt in range(30):
                async with session.get(f"{responder}/download?bytes=1", headers=bearer(f"guess-{attempt}")) as r:
                    assert r.status == 401
    assert [(entry["event"], entry["count"]) for entry in logs] == [("speedtest_unauthorized", 1)]


async def test_serve_responder_reports_its_port_and_stops() -> None:
    """serve_responder binds port 0, calls ready with the real port, serves, and returns when stop is set."""
    stop = asyncio.Event()
    bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    server = asyncio.create_task(
        serve_responder(
            "127.0.0.1", 0, TOKEN, max_bytes_per_request=CAP, ready=lambda _h, p: bound.set_result(p), stop=stop
        )
    )
    port = await asyncio.wait_for(bound, 5)
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/healthz") as response:
        assert response.status == 200
    stop.set()
    await asyncio.wait_for(server, 5)


def test_make_app_refuses_an_empty_token() -> None:
    """An empty token would let anyone in, so building the app fails."""
    with pytest.raises(ValueError, match="token"):
        make_app("", max_bytes_per_request=CAP)


def test_token_file_and_listen_parsing(tmp_path: Path) -> None:
    """The token file loses its trailing newline; --listen splits host and port, an empty file is an error."""
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    assert read_token_file(path) == TOKEN
    path.write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        read_token_file(path)
    assert parse_listen("0.0.0.0:8088") == ("0.0.0.0", 8088)
    assert parse_listen("[::1]:9000") == ("::1", 9000)
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_listen("8088x")

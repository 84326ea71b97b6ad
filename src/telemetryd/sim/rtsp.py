"""A camera's RTSP stream server, as far as OPTIONS goes: what `probes.rtsp` talks to.

Real Hikvision cameras answer ``OPTIONS rtsp://host:554/`` without authentication with
``RTSP/1.0 200 OK``, the request's ``CSeq`` and a ``Public:`` list; some firmware answers
401 with a digest challenge. `RtspResponder` serves one camera per listening socket,
on loopback only, and counts the requests it saw.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Literal

Mode = Literal["ok", "unauthorized", "garbage", "silent"]

PUBLIC = "OPTIONS, DESCRIBE, PLAY, PAUSE, SETUP, TEARDOWN, SET_PARAMETER, GET_PARAMETER"


@dataclass
class RtspCamera:
    """One simulated stream server and how it behaves."""

    mode: Mode = "ok"
    requests: int = 0
    host: str = ""
    port: int = 0
    _server: asyncio.Server | None = field(default=None, repr=False)


def reply(mode: Mode, cseq: str) -> bytes:
    """The bytes a camera in `mode` sends back to an OPTIONS with this CSeq."""
    if mode == "ok":
        return f"RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nPublic: {PUBLIC}\r\nServer: Rtsp Server/3.0\r\n\r\n".encode()
    if mode == "unauthorized":
        return (
            f'RTSP/1.0 401 Unauthorized\r\nCSeq: {cseq}\r\nWWW-Authenticate: Digest realm="IP Camera(C2183)", '
            f'nonce="{"0" * 32}", stale="FALSE"\r\n\r\n'
        ).encode()
    if mode == "garbage":
        return b"\x00\x17\xfe not an rtsp server \xff\r\n\r\n"
    return b""


class RtspResponder:
    """Serves RTSP cameras on 127.x addresses until closed."""

    def __init__(self) -> None:
        self.cameras: list[RtspCamera] = []

    async def add(self, camera: RtspCamera, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        """Start serving `camera`; returns where it listens."""
        if not host.startswith("127."):
            raise ValueError(f"the simulator binds loopback addresses only, not {host}")

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                camera.requests += 1
                cseq = "1"
                for line in request.decode(errors="replace").split("\r\n"):
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "cseq":
                        cseq = value.strip()
                if camera.mode == "silent":
                    await asyncio.sleep(3600)  # accepts, never answers: the probe must time out
                writer.write(reply(camera.mode, cseq))
                await writer.drain()
            except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        camera._server = await asyncio.start_server(serve, host, port)
        camera.host, camera.port = camera._server.sockets[0].getsockname()[:2]
        self.cameras.append(camera)
        return camera.host, camera.port

    async def close(self) -> None:
        """Stop every camera."""
        for camera in self.cameras:
            if camera._server is not None:
                camera._server.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(camera._server.wait_closed(), 2)
        self.cameras.clear()

    async def __aenter__(self) -> RtspResponder:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

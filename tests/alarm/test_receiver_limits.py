"""The receiver's per-peer share: frame budget, flow control, idle timeout from the last frame, log summaries.

The budget and flow control are driven through a fake transport (what asyncio's and uvloop's
TCP transports do: `write` calls `pause_writing` past the high-water mark); idle timeouts and
caps over real sockets on 127.0.0.0/8.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError
from structlog.testing import capture_logs

from telemetryd.alarm import dc09
from telemetryd.alarm.dc09 import AccountKey, PanelEvent
from telemetryd.alarm.receiver import ReceiverLimits, SiaReceiver, _PanelConnection
from telemetryd.alarm.supervision import SupervisedPanel, Supervision
from telemetryd.config.settings import SiaSettings
from telemetryd.daemon import receiver_limits

PANEL = AccountKey("", "0", "1001")


class FakeTransport:
    """A TCP transport that records what the protocol did and applies the write high-water mark."""

    def __init__(self, protocol: _PanelConnection, *, reader_stalled: bool = False) -> None:
        self.protocol = protocol
        self.written: list[bytes] = []
        self.buffered = 0
        self.high = 64 * 1024
        self.reading = True
        self.reader_stalled = reader_stalled
        """The peer reads nothing: every write stays in the buffer."""
        self.closed = False
        self.write_paused = False

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.7", 40000) if name == "peername" else None

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.high = high if high is not None else self.high

    def write(self, data: bytes) -> None:
        self.written.append(data)
        if self.reader_stalled:
            self.buffered += len(data)
            if self.buffered > self.high and not self.write_paused:
                self.write_paused = True
                self.protocol.pause_writing()

    def drain(self) -> None:
        """The peer read everything."""
        self.buffered = 0
        if self.write_paused:
            self.write_paused = False
            self.protocol.resume_writing()

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_closing(self) -> bool:
        return self.closed

    def abort(self) -> None:
        self.closed = True


def nulls(count: int) -> bytes:
    """`count` heartbeats of PANEL (no timestamp, so always accepted)."""
    return b"".join(dc09.build_null(n % 9999 + 1, prefix="0", account="1001", at=None) for n in range(count))


def connect(receiver: SiaReceiver, **transport: Any) -> tuple[_PanelConnection, FakeTransport]:
    """A panel connection on a fake transport."""
    protocol = _PanelConnection(receiver)
    fake = FakeTransport(protocol, **transport)
    protocol.connection_made(fake)  # type: ignore[arg-type]
    return protocol, fake


def acked(receiver: SiaReceiver) -> int:
    """Frames ACKed over TCP so far."""
    return receiver.counts.frames[("tcp", "ack", "")]


async def turns(count: int = 1) -> None:
    """Let the loop run `count` turns."""
    for _ in range(count):
        await asyncio.sleep(0)


def supervising() -> SiaReceiver:
    """A receiver (no sockets) supervising PANEL, with a frame budget of 16."""
    loop = asyncio.get_running_loop()
    supervision = Supervision([SupervisedPanel(PANEL, 60.0)], started_at=loop.time())
    return SiaReceiver(supervision, clock=loop.time, limits=ReceiverLimits(frame_budget=16))


async def test_one_read_of_many_frames_is_answered_a_budget_per_loop_turn() -> None:
    """100 frames in one read: 16 answered now, reading paused, the rest over the next turns, then reading resumes."""
    receiver = supervising()
    protocol, transport = connect(receiver)
    protocol.data_received(nulls(100))
    assert acked(receiver) == 16
    assert not transport.reading
    await turns()
    assert acked(receiver) == 32
    await turns(10)
    assert acked(receiver) == 100
    assert len(transport.written) == 100
    assert transport.reading
    assert receiver.counts.paused["budget"] == 6


async def test_other_peers_are_served_between_one_peers_turns() -> None:
    """Two peers flooding at once: their answers interleave, a budget each, instead of one after the other."""
    receiver = supervising()
    first, first_transport = connect(receiver)
    second, second_transport = connect(receiver)
    first.data_received(nulls(64))
    second.data_received(nulls(64))
    assert (len(first_transport.written), len(second_transport.written)) == (16, 16)
    await turns()
    assert (len(first_transport.written), len(second_transport.written)) == (32, 32)


async def test_a_peer_not_reading_its_acks_is_paused_until_they_drain() -> None:
    """Past the write high-water mark no more frames are answered nor read; after the drain, the rest are."""
    receiver = supervising()
    receiver.configure(ReceiverLimits(frame_budget=1000, write_buffer=1024))
    protocol, transport = connect(receiver, reader_stalled=True)
    ack_size = len(dc09.build_ack(dc09.parse_frame(nulls(1))))
    protocol.data_received(nulls(500))
    answered = acked(receiver)
    assert answered == 1024 // ack_size + 1  # the answer that crossed the mark, then nothing
    assert not transport.reading
    assert receiver.counts.paused["write"] == 1
    await turns(5)
    assert acked(receiver) == answered  # still paused: the peer has read nothing
    transport.drain()
    await turns(5)
    assert acked(receiver) == 2 * answered  # one more write buffer's worth, then paused again
    while transport.write_paused:
        transport.drain()
        await turns(2)
    await turns(2)
    assert acked(receiver) == 500
    assert transport.reading


async def test_frames_waiting_their_turn_are_not_mistaken_for_an_oversize_line() -> None:
    """A buffer longer than the longest frame is fine while it holds whole frames waiting for the budget."""
    receiver = supervising()
    receiver.configure(ReceiverLimits(frame_budget=1, max_buffer=256))
    protocol, transport = connect(receiver)
    protocol.data_received(nulls(40))
    await turns(45)
    assert acked(receiver) == 40
    assert not transport.closed
    protocol.data_received(b"\n" + b"A" * 300)
    assert transport.closed
    assert receiver.counts.dropped[("tcp", "oversize")] == 1


async def test_idle_timeout_runs_from_the_last_frame_not_the_last_byte() -> None:
    """Frames keep a connection open; bytes that never complete a frame (a slow drip) do not."""
    loop = asyncio.get_running_loop()
    async with SiaReceiver(Supervision(started_at=loop.time()), limits=ReceiverLimits(idle_timeout=0.4)) as rcv:
        await rcv.start("127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", rcv.port)
        for n in range(6):  # 0.9 s of heartbeats every 0.15 s: longer than the timeout, never idle
            writer.write(dc09.build_null(n + 1, prefix="0", account="BEEF", at=None))
            await asyncio.wait_for(reader.readuntil(b"\r"), 2)
            await asyncio.sleep(0.15)
        assert rcv.connections == 1
        opened = loop.time()
        for _ in range(10):  # a byte every 0.1 s, never a whole frame
            writer.write(b"\n")
            await asyncio.sleep(0.1)
            if reader.at_eof():
                break
        assert await asyncio.wait_for(reader.read(), 2) == b""
        assert loop.time() - opened < 0.8
        writer.close()
    assert rcv.counts.dropped[("tcp", "idle")] == 1


async def test_per_source_cap_over_real_sockets() -> None:
    """A third connection from one address displaces that address's idlest; another address's panel stays."""
    loop = asyncio.get_running_loop()
    limits = ReceiverLimits(max_per_source=2)
    async with SiaReceiver(Supervision(started_at=loop.time()), limits=limits) as rcv:
        await rcv.start("127.0.0.1", 0)
        panel_r, panel_w = await asyncio.open_connection("127.0.0.1", rcv.port, local_addr=("127.0.0.2", 0))
        flood = [await asyncio.open_connection("127.0.0.1", rcv.port, local_addr=("127.0.0.3", 0)) for _ in range(3)]
        assert await asyncio.wait_for(flood[0][0].read(), 2) == b""  # the oldest of 127.0.0.3's went
        panel_w.write(dc09.build_null(1, prefix="0", account="BEEF", at=None))
        assert b'"ACK"' in await asyncio.wait_for(panel_r.readuntil(b"\r"), 2)
        assert rcv.connections == 3
        for _, writer in [(panel_r, panel_w), *flood]:
            writer.close()
    assert rcv.counts.dropped[("tcp", "evicted")] == 1


async def test_rejected_frames_are_one_line_per_peer_then_a_summary_with_the_count() -> None:
    """500 bad frames from one peer: one line at once with its reason, one summary at the stop with the rest."""
    loop = asyncio.get_running_loop()
    with capture_logs() as logs:
        async with SiaReceiver(Supervision(started_at=loop.time())) as rcv:
            for n in range(500):
                frame = dc09.build_null(n % 9999 + 1, prefix="0", account="BEEF", at=None)
                bad = frame[:1] + b"0000" + frame[5:] if n % 2 else frame[:-3] + dc09.CR
                rcv.handle(bad, "tcp", f"127.0.0.9:{40000 + n}")  # a new connection each: still one peer
            assert rcv.counts.frames[("tcp", "nak", "crc")] == 250
            assert len([entry for entry in logs if entry["event"] == "sia_frame_rejected"]) == 1
    lines = [entry for entry in logs if entry["event"] == "sia_frame_rejected"]
    assert [line["count"] for line in lines] == [1, 499]
    assert lines[0]["reason"] == "truncated" and lines[0]["detail"]
    assert lines[1]["source"] == "127.0.0.9"
    assert lines[1]["reasons"] == {"crc": 250, "truncated": 249}


async def test_dropped_connections_are_summarised_too() -> None:
    """Connections displaced at a cap are logged once per source per minute, not once each."""
    loop = asyncio.get_running_loop()
    with capture_logs() as logs:
        async with SiaReceiver(Supervision(started_at=loop.time()), limits=ReceiverLimits(max_per_source=1)) as rcv:
            await rcv.start("127.0.0.1", 0)
            streams = [await asyncio.open_connection("127.0.0.1", rcv.port) for _ in range(20)]
            await asyncio.sleep(0.1)
            for _, writer in streams:
                writer.close()
    drops = [entry for entry in logs if entry["event"] == "sia_connection_dropped"]
    assert [line["count"] for line in drops] == [1, 18]
    assert drops[1]["reasons"] == {"evicted": 18}


def test_sia_settings_become_receiver_limits() -> None:
    """Every `sia` limit reaches the receiver under its own name."""
    sia = SiaSettings.model_validate(
        {
            "idle_timeout": "30s",
            "max_connections": 100,
            "max_connections_per_source": 5,
            "frame_budget": 4,
            "write_buffer_bytes": 4096,
        }
    )
    assert receiver_limits(sia) == ReceiverLimits(
        idle_timeout=30.0, max_connections=100, max_per_source=5, frame_budget=4, write_buffer=4096
    )


@pytest.mark.parametrize(
    "field", [{"idle_timeout": "2h"}, {"max_connections": 0}, {"frame_budget": 0}, {"write_buffer_bytes": 10}]
)
def test_sia_limits_out_of_range_are_config_errors(field: dict[str, object]) -> None:
    """An idle timeout of hours or a cap of zero is refused at load, not discovered under attack."""
    with pytest.raises(ValidationError, match=next(iter(field))):
        SiaSettings.model_validate(field)


async def test_resends_and_strangers_events_are_summarised_a_panels_new_events_never() -> None:
    """Every new event of a supervised panel is its own log line; resends and unknown accounts' events are a
    line per source per minute (they are still ACKed and counted)."""
    receiver = supervising()
    wall = datetime.now(UTC)
    with capture_logs() as logs:
        for n in range(200):
            zone = f"{n:03d}"
            receiver.handle(event_frame("1001", n + 1, zone, wall), "tcp", "127.0.0.5:1000")  # the panel, new
            receiver.handle(event_frame("1001", 1, "000", wall), "tcp", "127.0.0.6:1000")  # resends of its first
            receiver.handle(event_frame("BAD1", n + 1, zone, wall), "tcp", "127.0.0.6:1000")  # an unknown account
        await receiver.stop()
    new = [entry for entry in logs if entry["event"] == "sia_panel_event" and entry["account"] == "L0#1001"]
    assert len(new) == 200
    repeated = [entry for entry in logs if entry["event"] == "sia_panel_event_repeated"]
    assert len(repeated) == 1  # the source's first line of the minute
    assert not [entry for entry in logs if entry["event"] == "sia_panel_event" and entry["account"] == "L0#BAD1"]
    (summary,) = [entry for entry in logs if entry["event"] == "sia_panel_events_summarised"]
    assert (summary["source"], summary["count"]) == ("127.0.0.6", 399)
    assert summary["reasons"] == {"repeat": 199, "unknown_account": 200}
    assert receiver.counts.repeats["alarm"] == 200
    assert receiver.counts.events["alarm"] == 400


def event_frame(account: str, sequence: int, zone: str, at: datetime) -> bytes:
    """A burglary alarm of `account`."""
    event = PanelEvent("BA", zone=zone)
    return dc09.build_sia_event(sequence, event, prefix="0", account=account, at=at)

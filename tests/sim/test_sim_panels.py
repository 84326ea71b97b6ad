"""Simulated alarm panels against the real receiver and scripted receivers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import pytest

from telemetryd.alarm import dc09
from telemetryd.alarm.receiver import SiaReceiver
from telemetryd.alarm.supervision import SupervisedPanel, Supervision, SupervisionState
from telemetryd.sim.panels import Outcome, PanelFleet, PanelSpec, ReceiverPath, SimPanel, fleet_specs


@pytest.fixture
async def receiver() -> AsyncIterator[SiaReceiver]:
    """A real receiver on 127.0.0.1 with no panels configured (every account is a stranger, still ACKed)."""
    loop = asyncio.get_running_loop()
    rcv = SiaReceiver(Supervision(started_at=loop.time()), clock=loop.time)
    await rcv.start("127.0.0.1", 0)
    try:
        yield rcv
    finally:
        await rcv.stop()


class ScriptedReceiver:
    """A TCP receiver that records each frame and answers it with `script(frame, index)` (None: stay silent)."""

    def __init__(self, script: Callable[[dc09.Frame, int], bytes | None]) -> None:
        self.script = script
        self.frames: list[dc09.Frame] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> ScriptedReceiver:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while raw := await reader.readuntil(b"\r"):
                    frame = dc09.parse_frame(raw)
                    self.frames.append(frame)
                    if (reply := self.script(frame, len(self.frames) - 1)) is not None:
                        writer.write(reply)
            except asyncio.IncompleteReadError:
                pass
            finally:
                writer.close()

        self._server = await asyncio.start_server(serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._server is not None
        self._server.close()


def one_path_panel(port: int, *, ack_timeout: float, attempts: int = 3, clock_offset: float = 0.0) -> SimPanel:
    """A panel (account 1001, prefix 0) with a single TCP path to 127.0.0.1:`port`."""
    path = ReceiverPath("127.0.0.1", port, "tcp")
    return SimPanel(PanelSpec("1001", (path,), ack_timeout=ack_timeout, attempts=attempts, clock_offset=clock_offset))


async def test_corrupted_frame_is_nakked_then_retried_and_acked(receiver: SiaReceiver) -> None:
    """A frame sent with a bad CRC gets a NAK; the panel retransmits it intact and gets the ACK."""
    sim = one_path_panel(receiver.port, ack_timeout=1.0)
    sim.corrupt_next()
    outcome = await sim.heartbeat()
    await sim.stop()
    stats = sim.stats[sim.spec.paths[0]]
    assert list(outcome.values()) == [Outcome.ACK]
    assert (stats.sent, stats.naks, stats.acks) == (2, 1, 1)
    assert receiver.counts.frames[("tcp", "nak", "crc")] == 1


async def test_nak_timestamp_corrects_a_wrong_panel_clock(receiver: SiaReceiver) -> None:
    """A panel two minutes fast is NAKed, takes the receiver's time from the NAK, and is ACKed on retry."""
    sim = one_path_panel(receiver.port, ack_timeout=1.0, clock_offset=120.0)
    outcome = await sim.heartbeat()
    await sim.stop()
    assert list(outcome.values()) == [Outcome.ACK]
    assert receiver.counts.frames[("tcp", "nak", "timestamp")] == 1
    assert abs(sim.clock_offset) < 2.0


async def test_retries_reuse_the_sequence_and_the_next_message_takes_a_new_one() -> None:
    """Retransmissions carry the same sequence number; the next message carries the next one."""

    def nak_first(frame: dc09.Frame, index: int) -> bytes:
        return dc09.build_nak(datetime.now(UTC)) if index == 0 else dc09.build_ack(frame)

    async with ScriptedReceiver(nak_first) as rcv:
        sim = one_path_panel(rcv.port, ack_timeout=1.0)
        await sim.heartbeat()
        await sim.send_event("FA", zone="02")
        await sim.stop()
    assert [(f.message_type, f.sequence) for f in rcv.frames] == [
        ("NULL", "0001"),
        ("NULL", "0001"),
        ("SIA-DCS", "0002"),
    ]
    assert dc09.events(rcv.frames[2]) == (dc09.PanelEvent("FA", zone="02"),)


async def test_duh_is_final() -> None:
    """After a DUH the panel does not retransmit."""
    async with ScriptedReceiver(lambda frame, _i: dc09.build_duh(frame)) as rcv:
        sim = one_path_panel(rcv.port, ack_timeout=1.0)
        outcome = await sim.heartbeat()
        await sim.stop()
    assert list(outcome.values()) == [Outcome.DUH]
    assert len(rcv.frames) == 1


async def test_ack_for_another_sequence_is_not_taken_as_ours() -> None:
    """An ACK echoing a different sequence is ignored; the panel waits for its own."""

    def stale_then_right(frame: dc09.Frame, _i: int) -> bytes:
        stale = dc09.Frame(frame.message_type, "9999", frame.prefix, frame.receiver, frame.account)
        return dc09.build_ack(stale) + dc09.build_ack(frame)

    async with ScriptedReceiver(stale_then_right) as rcv:
        sim = one_path_panel(rcv.port, ack_timeout=1.0)
        outcome = await sim.heartbeat()
        await sim.stop()
    assert list(outcome.values()) == [Outcome.ACK]
    assert sim.stats[sim.spec.paths[0]].sent == 1


async def test_silent_receiver_ends_in_timeout_after_every_attempt() -> None:
    """A receiver that never answers costs `attempts` sends, each ending in a timeout."""
    async with ScriptedReceiver(lambda _f, _i: None) as rcv:
        sim = one_path_panel(rcv.port, ack_timeout=0.1, attempts=3)
        outcome = await sim.heartbeat()
        await sim.stop()
    stats = sim.stats[sim.spec.paths[0]]
    assert list(outcome.values()) == [Outcome.TIMEOUT]
    assert (stats.sent, stats.timeouts) == (3, 3)


async def test_refusing_receiver_is_an_error() -> None:
    """No listener on the receiver's port ends the message as an error after the attempts."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sim = one_path_panel(port, ack_timeout=0.05, attempts=2)
    outcome = await sim.heartbeat()
    await sim.stop()
    assert list(outcome.values()) == [Outcome.ERROR]
    assert sim.stats[sim.spec.paths[0]].errors == 2


async def test_dual_reporting_over_tcp_and_udp(receiver: SiaReceiver) -> None:
    """A panel with a TCP and a UDP path delivers every message over both and gets both ACKs."""
    paths = (ReceiverPath("127.0.0.1", receiver.port, "tcp"), ReceiverPath("127.0.0.1", receiver.port, "udp"))
    sim = SimPanel(PanelSpec("1001", paths, ack_timeout=1.0))
    outcome = await sim.send_event("BA", zone="01")
    await sim.stop()
    assert outcome == {paths[0]: Outcome.ACK, paths[1]: Outcome.ACK}
    assert receiver.counts.frames[("tcp", "ack", "")] == receiver.counts.frames[("udp", "ack", "")] == 1


async def test_silent_panel_sends_nothing_until_resumed(receiver: SiaReceiver) -> None:
    """go_silent stops every frame; resume lets the next one through."""
    sim = one_path_panel(receiver.port, ack_timeout=1.0)
    sim.go_silent()
    assert list((await sim.heartbeat()).values()) == [Outcome.SILENT]
    assert sum(receiver.counts.frames.values()) == 0
    sim.resume()
    assert list((await sim.heartbeat()).values()) == [Outcome.ACK]
    await sim.stop()


async def test_fleet_of_panels_keeps_every_account_supervised() -> None:
    """Forty panels in one loop, half over TCP and half over UDP, are all ok; one told to go silent is lost."""
    loop = asyncio.get_running_loop()
    sup = Supervision(started_at=loop.time())
    async with SiaReceiver(sup, clock=loop.time) as rcv:
        await rcv.start("127.0.0.1", 0)
        tcp = fleet_specs(20, [ReceiverPath("127.0.0.1", rcv.port, "tcp")], interval=0.3, ack_timeout=1.0)
        udp = fleet_specs(
            20, [ReceiverPath("127.0.0.1", rcv.port, "udp")], interval=0.3, ack_timeout=1.0, first_account=0x2000
        )
        specs = tcp + udp
        sup.configure([SupervisedPanel(s.key, 0.3, grace=0.3) for s in specs], now=loop.time())
        async with PanelFleet(specs) as fleet:
            await asyncio.sleep(0.5)
            assert {s.state for s in sup.status(loop.time()).values()} == {SupervisionState.OK}
            fleet["2005"].go_silent()
            await asyncio.sleep(0.8)
            lost = [k.account for k, s in sup.status(loop.time()).items() if s.state is not SupervisionState.OK]
    assert lost == ["2005"]
    assert rcv.counts.frames[("udp", "ack", "")] > 20 and rcv.counts.frames[("tcp", "ack", "")] > 20


def test_fleet_refuses_duplicate_accounts() -> None:
    """Two panels with one account would be indistinguishable at the receiver."""
    path = ReceiverPath("127.0.0.1", 1)
    with pytest.raises(ValueError, match="two panels"):
        PanelFleet([PanelSpec("1001", (path,)), PanelSpec("1001", (path,))])

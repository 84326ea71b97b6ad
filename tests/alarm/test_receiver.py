"""Alarm-panel supervision (pure, injected clock) and the DC-09 receiver on 127.0.0.1 over TCP and UDP."""

from __future__ import annotations

import asyncio
import collections
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from telemetryd.alarm import dc09
from telemetryd.alarm.dc09 import AccountKey, PanelEvent
from telemetryd.alarm.receiver import Reception, SiaReceiver
from telemetryd.alarm.supervision import MAX_STRANGERS, SupervisedPanel, Supervision, SupervisionState
from telemetryd.sim.panels import PanelSpec, ReceiverPath, SimPanel

SCHOOL_A = AccountKey("", "0", "1001")
SCHOOL_B = AccountKey("1", "0", "1002")


# ---- Supervision -----------------------------------------------------------------------------


def supervision(*keys: AccountKey, interval: float = 60.0, grace: float = 30.0) -> Supervision:
    """Supervision of `keys` starting at t=1000."""
    return Supervision([SupervisedPanel(k, interval, grace) for k in keys], started_at=1000.0)


def test_never_heard_is_not_overdue_until_interval_plus_grace() -> None:
    """A panel not yet heard is never_heard; only past interval + grace since start is it overdue."""
    sup = supervision(SCHOOL_A)
    early, late = sup.status_of(SCHOOL_A, 1090.0), sup.status_of(SCHOOL_A, 1090.5)
    assert (early.state, early.overdue, early.last_heard) == (SupervisionState.NEVER_HEARD, False, None)
    assert (late.state, late.overdue, late.silent_for) == (SupervisionState.NEVER_HEARD, True, 90.5)


def test_heartbeat_keeps_ok_until_interval_plus_grace_then_lost() -> None:
    """After a heartbeat the panel is ok up to interval + grace later, then supervision_lost."""
    sup = supervision(SCHOOL_A)
    assert sup.observe(SCHOOL_A, 1010.0)
    assert sup.status_of(SCHOOL_A, 1100.0).state is SupervisionState.OK  # exactly 60 + 30 later
    lost = sup.status_of(SCHOOL_A, 1100.1)
    assert (lost.state, lost.overdue, lost.last_heard, lost.frames) == (
        SupervisionState.SUPERVISION_LOST,
        True,
        1010.0,
        1,
    )


def test_a_new_heartbeat_recovers_a_lost_panel() -> None:
    """A panel whose supervision was lost is ok again as soon as it is heard."""
    sup = supervision(SCHOOL_A)
    sup.observe(SCHOOL_A, 1000.0)
    assert sup.status_of(SCHOOL_A, 1200.0).state is SupervisionState.SUPERVISION_LOST
    sup.observe(SCHOOL_A, 1200.0)
    assert sup.status_of(SCHOOL_A, 1200.0).state is SupervisionState.OK


def test_late_delivered_observation_does_not_move_last_heard_back() -> None:
    """An older timestamp arriving after a newer one does not make the panel look staler."""
    sup = supervision(SCHOOL_A)
    sup.observe(SCHOOL_A, 1050.0)
    sup.observe(SCHOOL_A, 1040.0)
    assert sup.status_of(SCHOOL_A, 1060.0).last_heard == 1050.0


def test_intervals_are_per_panel() -> None:
    """Each panel is judged against its own heartbeat interval."""
    sup = Supervision([SupervisedPanel(SCHOOL_A, 10.0, 0.0), SupervisedPanel(SCHOOL_B, 3600.0, 0.0)], started_at=0.0)
    sup.observe(SCHOOL_A, 0.0)
    sup.observe(SCHOOL_B, 0.0)
    status = sup.status(100.0)
    assert status[SCHOOL_A].state is SupervisionState.SUPERVISION_LOST
    assert status[SCHOOL_B].state is SupervisionState.OK


def test_unknown_accounts_are_strangers_and_bounded() -> None:
    """Frames from unconfigured accounts are remembered apart, most recent kept, at most MAX_STRANGERS."""
    sup = supervision(SCHOOL_A)
    assert not sup.observe(SCHOOL_B, 1001.0)
    assert sup.strangers == {SCHOOL_B: 1001.0}
    assert SCHOOL_B not in sup.status(1002.0)
    for i in range(MAX_STRANGERS + 5):
        sup.observe(AccountKey("", "0", f"{i:04X}"), 1002.0 + i)
    assert len(sup.strangers) == MAX_STRANGERS
    assert SCHOOL_B not in sup.strangers  # the oldest went first


def test_events_are_recorded_as_last_event() -> None:
    """An alarm is kept as the panel's last event with its time; events count up."""
    sup = supervision(SCHOOL_A)
    assert sup.record_event(SCHOOL_A, PanelEvent("BA", zone="01"), 1005.0)
    assert sup.record_event(SCHOOL_A, PanelEvent("FA", zone="02"), 1006.0)
    assert not sup.record_event(SCHOOL_B, PanelEvent("BA"), 1007.0)
    status = sup.status_of(SCHOOL_A, 1010.0)
    assert (status.last_event, status.last_event_at, status.events) == (PanelEvent("FA", zone="02"), 1006.0, 2)


def test_reconfigure_keeps_history_of_kept_panels() -> None:
    """A reload keeps last-heard for panels still configured, drops removed ones, starts new ones fresh."""
    sup = supervision(SCHOOL_A, SCHOOL_B)
    sup.observe(SCHOOL_A, 1010.0)
    new_panel = AccountKey("", "0", "1003")
    sup.configure([SupervisedPanel(SCHOOL_A, 120.0), SupervisedPanel(new_panel, 60.0)], now=2000.0)
    assert set(sup.keys) == {SCHOOL_A, new_panel}
    kept = sup.status_of(SCHOOL_A, 2000.0)
    assert (kept.last_heard, kept.interval) == (1010.0, 120.0)
    assert sup.status_of(new_panel, 2000.0).since == 2000.0


def test_supervised_panel_rejects_nonsense_intervals() -> None:
    """A zero interval or negative grace is a configuration error."""
    with pytest.raises(ValueError, match="interval"):
        SupervisedPanel(SCHOOL_A, 0.0)
    with pytest.raises(ValueError, match="grace"):
        SupervisedPanel(SCHOOL_A, 60.0, -1.0)


# ---- the receiver on 127.0.0.1 ---------------------------------------------------------------


@pytest.fixture
async def receiver() -> AsyncIterator[SiaReceiver]:
    """A receiver on 127.0.0.1 (one free port, TCP and UDP) supervising SCHOOL_A and SCHOOL_B every 0.3 s."""
    loop = asyncio.get_running_loop()
    sup = Supervision(
        [SupervisedPanel(SCHOOL_A, 0.3, grace=0.2), SupervisedPanel(SCHOOL_B, 0.3, grace=0.2)],
        started_at=loop.time(),
    )
    rcv = SiaReceiver(sup, clock=loop.time)
    await rcv.start("127.0.0.1", 0)
    try:
        yield rcv
    finally:
        await rcv.stop()


async def exchange_tcp(port: int, payload: bytes, replies: int = 1) -> list[bytes]:
    """Send raw bytes over one TCP connection and read `replies` CR-terminated answers."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        return [await asyncio.wait_for(reader.readuntil(b"\r"), 2.0) for _ in range(replies)]
    finally:
        writer.close()


def exchange_udp(port: int, payload: bytes) -> bytes:
    """Send one datagram and wait (blocking, so run it in a thread) for the answer."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.settimeout(2.0)
        udp.sendto(payload, ("127.0.0.1", port))
        return udp.recvfrom(4096)[0]


async def read_to_end(reader: asyncio.StreamReader) -> bytes:
    """Everything until the peer hangs up; an RST counts as hanging up with nothing said."""
    try:
        return await asyncio.wait_for(reader.read(), 2.0)
    except ConnectionResetError:
        return b""


def panel(key: AccountKey, port: int, transport: str, interval: float = 0.1) -> SimPanel:
    """A simulated panel for `key` reporting to the receiver's port."""
    path = ReceiverPath("127.0.0.1", port, "tcp" if transport == "tcp" else "udp")
    return SimPanel(
        PanelSpec(
            key.account, (path,), prefix=key.prefix, receiver=key.receiver or None, interval=interval, ack_timeout=1.0
        )
    )


async def test_tcp_and_udp_share_one_port(receiver: SiaReceiver) -> None:
    """Both transports listen on the receiver's single port."""
    reply = await asyncio.to_thread(
        exchange_udp, receiver.port, dc09.build_null(1, prefix="0", account="1001", at=None)
    )
    assert dc09.parse_frame(reply).message_type == "ACK"
    (tcp_reply,) = await exchange_tcp(receiver.port, dc09.build_null(2, prefix="0", account="1001", at=None))
    assert dc09.parse_frame(tcp_reply).sequence == "0002"


@pytest.mark.parametrize("transport", ["tcp", "udp"])
async def test_heartbeats_are_acked_and_silence_loses_supervision(receiver: SiaReceiver, transport: str) -> None:
    """A panel's NULLs are ACKed and keep it ok; once it stops, supervision is lost after interval + grace."""
    loop = asyncio.get_running_loop()
    sim = panel(SCHOOL_A, receiver.port, transport)
    sim.start()
    await asyncio.sleep(0.35)
    assert receiver.supervision.status_of(SCHOOL_A, loop.time()).state is SupervisionState.OK
    await sim.stop()
    stats = sim.stats[sim.spec.paths[0]]
    assert stats.acks >= 3 and stats.acks == stats.sent
    assert receiver.counts.frames[(transport, "ack", "")] == stats.acks
    await asyncio.sleep(0.3 + 0.2 + 0.1)
    status = receiver.supervision.status_of(SCHOOL_A, loop.time())
    assert status.state is SupervisionState.SUPERVISION_LOST
    assert receiver.supervision.status_of(SCHOOL_B, loop.time()).state is SupervisionState.NEVER_HEARD


async def test_bad_crc_gets_a_nak_and_the_connection_lives_on(receiver: SiaReceiver) -> None:
    """A frame with a bad CRC is NAKed (with the receiver's time) and a good frame after it is ACKed."""
    good = dc09.build_null(5, prefix="0", account="1001", at=datetime.now(UTC))
    bad = good[:1] + b"0000" + good[5:]
    nak, ack = await exchange_tcp(receiver.port, bad + good, replies=2)
    nak_frame = dc09.parse_frame(nak)
    assert nak_frame.message_type == "NAK" and nak_frame.timestamp is not None
    assert abs((nak_frame.timestamp - datetime.now(UTC)).total_seconds()) < 2
    assert dc09.parse_frame(ack).message_type == "ACK"
    assert receiver.counts.frames[("tcp", "nak", "crc")] == 1


async def test_frame_split_across_segments_is_answered_once_complete(receiver: SiaReceiver) -> None:
    """A frame arriving in pieces is reassembled up to its CR and answered once."""
    frame = dc09.build_null(6, prefix="0", account="1001", at=None)
    reader, writer = await asyncio.open_connection("127.0.0.1", receiver.port)
    try:
        writer.write(frame[:10])
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(frame[10:])
        reply = await asyncio.wait_for(reader.readuntil(b"\r"), 2.0)
    finally:
        writer.close()
    assert dc09.parse_frame(reply).sequence == "0006"
    assert receiver.counts.frames[("tcp", "ack", "")] == 1


async def test_skewed_timestamp_is_nakked(receiver: SiaReceiver) -> None:
    """A heartbeat stamped two minutes ahead is NAKed for its timestamp and does not count as life."""
    loop = asyncio.get_running_loop()
    raw = dc09.build_null(7, prefix="0", account="1001", at=datetime.now(UTC) + timedelta(minutes=2))
    (reply,) = await exchange_tcp(receiver.port, raw)
    assert dc09.parse_frame(reply).message_type == "NAK"
    assert receiver.counts.frames[("tcp", "nak", "timestamp")] == 1
    assert receiver.supervision.status_of(SCHOOL_A, loop.time()).state is SupervisionState.NEVER_HEARD


async def test_encrypted_frame_gets_duh(receiver: SiaReceiver) -> None:
    """An encrypted frame is answered DUH with its own sequence."""
    (reply,) = await exchange_tcp(receiver.port, dc09.build_frame('"*NULL"0042L0#1001[B4BC8B40D0E6D959D6BEA78E'))
    duh = dc09.parse_frame(reply)
    assert (duh.message_type, duh.sequence) == ("DUH", "0042")


async def test_alarm_event_becomes_last_event_and_reaches_the_hook() -> None:
    """A burglary alarm is ACKed, stored as the panel's last event and passed to on_reception."""
    loop = asyncio.get_running_loop()
    seen: list[Reception] = []
    sup = Supervision([SupervisedPanel(SCHOOL_B, 60.0)], started_at=loop.time())
    async with SiaReceiver(sup, clock=loop.time, on_reception=seen.append) as rcv:
        await rcv.start("127.0.0.1", 0)
        sim = panel(SCHOOL_B, rcv.port, "tcp")
        outcome = await sim.send_event("BA", zone="03", partition="1")
        await sim.stop()
    assert list(outcome.values()) == ["ack"]
    status = sup.status_of(SCHOOL_B, loop.time())
    assert status.last_event == PanelEvent("BA", zone="03", partition="1")
    assert status.state is SupervisionState.OK  # an alarm is a sign of life too
    assert [(r.key, r.supervised, r.events) for r in seen] == [(SCHOOL_B, True, (status.last_event,))]


async def test_unknown_account_is_acked_and_listed_as_stranger(receiver: SiaReceiver) -> None:
    """A panel not in the configuration is still ACKed (never drop a possible alarm) and listed as a stranger."""
    (reply,) = await exchange_tcp(receiver.port, dc09.build_null(1, prefix="0", account="BEEF", at=None))
    assert dc09.parse_frame(reply).message_type == "ACK"
    assert AccountKey("", "0", "BEEF") in receiver.supervision.strangers


async def test_oversized_line_drops_the_connection() -> None:
    """Bytes without a CR beyond the per-connection cap close the connection and are counted."""
    loop = asyncio.get_running_loop()
    async with SiaReceiver(Supervision(started_at=loop.time()), max_buffer=512) as rcv:
        await rcv.start("127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", rcv.port)
        writer.write(b"\n" + b"A" * 1000)
        await writer.drain()
        assert await read_to_end(reader) == b""  # EOF: the receiver hung up
        writer.close()
    assert rcv.counts.dropped[("tcp", "oversize")] == 1


async def test_idle_connection_is_closed() -> None:
    """A connection silent past the idle timeout is closed by the receiver."""
    loop = asyncio.get_running_loop()
    async with SiaReceiver(Supervision(started_at=loop.time()), idle_timeout=0.2) as rcv:
        await rcv.start("127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", rcv.port)
        assert await read_to_end(reader) == b""
        writer.close()
        assert rcv.connections == 0
    assert rcv.counts.dropped[("tcp", "idle")] == 1


async def test_connection_limit_displaces_the_idle_connection() -> None:
    """At max_connections a new connection is admitted and the idle one is closed: a panel is never refused."""
    loop = asyncio.get_running_loop()
    async with SiaReceiver(Supervision(started_at=loop.time()), max_connections=1) as rcv:
        await rcv.start("127.0.0.1", 0)
        r1, w1 = await asyncio.open_connection("127.0.0.1", rcv.port)
        _r2, w2 = await asyncio.open_connection("127.0.0.1", rcv.port)
        assert await read_to_end(r1) == b""
        assert rcv.connections == 1
        (reply,) = await exchange_tcp(rcv.port, dc09.build_null(1, prefix="0", account="BEEF", at=None))
        assert dc09.parse_frame(reply).message_type == "ACK"
        w1.close()
        w2.close()
    assert rcv.counts.dropped[("tcp", "evicted")] == 2


async def test_stop_closes_listeners_and_connections() -> None:
    """After stop, open panel connections are closed and the port refuses new ones."""
    loop = asyncio.get_running_loop()
    rcv = SiaReceiver(Supervision(started_at=loop.time()))
    await rcv.start("127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", rcv.port)
    await rcv.stop()
    assert await read_to_end(reader) == b""
    writer.close()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", rcv.port)


def test_receiver_acks_under_uvloop() -> None:
    """Under uvloop (the daemon's loop) a TCP heartbeat is ACKed: its transports are not asyncio's classes."""
    import uvloop

    async def run() -> collections.Counter[tuple[str, str, str]]:
        supervision = Supervision(
            [SupervisedPanel(AccountKey("", "0", "1234AB"), 1.0)], started_at=asyncio.get_running_loop().time()
        )
        receiver = SiaReceiver(supervision)
        await receiver.start("127.0.0.1", 0)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", receiver.port)
            writer.write(dc09.build_null(1, account="1234AB", prefix="0", at=datetime.now(UTC)))
            await writer.drain()
            reply = await asyncio.wait_for(reader.readuntil(b"\r"), 5)
            writer.close()
            assert b'"ACK"' in reply
            return collections.Counter(dict(receiver.counts.frames))
        finally:
            await receiver.stop()

    assert uvloop.run(run()) == collections.Counter({("tcp", "ack", ""): 1})

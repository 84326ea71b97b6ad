"""Alarm events at the receiver: counted by class, retransmissions recognised, handed on with their times."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from telemetryd.alarm import dc09
from telemetryd.alarm.dc09 import AccountKey, PanelEvent
from telemetryd.alarm.receiver import REPEAT_WINDOW, Reception, SiaReceiver
from telemetryd.alarm.supervision import SupervisedPanel, Supervision, panel_devices
from telemetryd.model import Contract, Device, DeviceKind, Inventory, ProbeSpec, School, SiaAccount

NOW = datetime(2026, 2, 10, 8, 30, 0, tzinfo=UTC)
PANEL = AccountKey("", "0", "1001")


class Clocks:
    """A monotonic and a wall clock the test moves by hand."""

    def __init__(self) -> None:
        self.mono = 1000.0
        self.wall = NOW

    def advance(self, seconds: float) -> None:
        """Move both clocks forward."""
        self.mono += seconds
        self.wall += timedelta(seconds=seconds)


def receiver(clocks: Clocks, seen: list[Reception]) -> SiaReceiver:
    """A receiver (no sockets) supervising PANEL, driven by `clocks`, reporting into `seen`."""
    sup = Supervision([SupervisedPanel(PANEL, 60.0)], started_at=clocks.mono)
    return SiaReceiver(sup, clock=lambda: clocks.mono, wall_clock=lambda: clocks.wall, on_reception=seen.append)


def sia(seq: int, data: str, at: datetime | None) -> bytes:
    """A SIA-DCS frame from PANEL."""
    return dc09.build_frame(dc09.format_message("SIA-DCS", seq, prefix="0", account="1001", data=data, at=at))


def cid(seq: int, body: str, at: datetime | None = None) -> bytes:
    """An ADM-CID frame from PANEL."""
    return dc09.build_frame(
        dc09.format_message("ADM-CID", seq, prefix="0", account="1001", data=f"#1001|{body}", at=at)
    )


def test_events_are_counted_by_class() -> None:
    """Every event of an ACKed frame counts under its class; heartbeats and NAKed frames count nothing."""
    clocks, seen = Clocks(), []
    rcv = receiver(clocks, seen)
    rcv.handle(sia(1, "#1001|Nri1/BA01/FA02", NOW), "tcp", "127.0.0.1:4000")
    rcv.handle(cid(2, "3130 01 015"), "udp", "127.0.0.1:4001")
    rcv.handle(cid(3, "1602 00 000"), "udp", "127.0.0.1:4001")
    rcv.handle(sia(4, "#1001|NYT", NOW), "tcp", "127.0.0.1:4000")
    rcv.handle(dc09.build_null(5, prefix="0", account="1001", at=NOW), "tcp", "127.0.0.1:4000")
    rcv.handle(sia(6, "#1001|NBA09", NOW + timedelta(minutes=5)), "tcp", "127.0.0.1:4000")  # NAKed: skewed
    assert rcv.counts.events == {"alarm": 2, "restoral": 1, "test": 1, "trouble": 1}
    assert not rcv.counts.repeats
    assert rcv.counts.frames[("tcp", "nak", "timestamp")] == 1
    assert [len(r.events) for r in seen] == [2, 1, 1, 1, 0, 0]


def test_a_resent_frame_is_a_repeat_of_the_first_copy() -> None:
    """A resend (same account, sequence and body, re-stamped, via UDP) is ACKed and counted as a repeat of the first."""
    clocks, seen = Clocks(), []
    rcv = receiver(clocks, seen)
    first_reply = rcv.handle(sia(7, "#1001|NBA03", NOW), "tcp", "127.0.0.1:4000")
    clocks.advance(20.0)
    again_reply = rcv.handle(sia(7, "#1001|NBA03", clocks.wall), "udp", "127.0.0.1:4002")
    assert dc09.parse_frame(first_reply).message_type == dc09.parse_frame(again_reply).message_type == "ACK"
    first, again = seen
    assert (first.received_at, first.repeat_of, first.first_received_at) == (NOW, None, NOW)
    assert again.received_at == NOW + timedelta(seconds=20)
    assert (again.repeat_of, again.first_received_at) == (NOW, NOW)
    assert rcv.counts.events == {"alarm": 1}
    assert rcv.counts.repeats == {"alarm": 1}
    assert rcv.supervision.status_of(PANEL, clocks.mono).events == 1
    assert rcv.supervision.status_of(PANEL, clocks.mono).frames == 2  # still a sign of life


def test_other_content_or_a_late_reuse_of_the_sequence_is_a_new_event() -> None:
    """Another body under the same sequence, or the same frame after the repeat window, is a new event."""
    clocks, seen = Clocks(), []
    rcv = receiver(clocks, seen)
    rcv.handle(sia(8, "#1001|NBA03", None), "tcp", "127.0.0.1:4000")
    rcv.handle(sia(8, "#1001|NBR03", None), "tcp", "127.0.0.1:4000")
    clocks.advance(REPEAT_WINDOW + 1)
    rcv.handle(sia(8, "#1001|NBA03", None), "tcp", "127.0.0.1:4000")
    assert [r.repeat_of for r in seen] == [None, None, None]
    assert rcv.counts.events == {"alarm": 2, "restoral": 1}
    assert seen[2].first_received_at == NOW + timedelta(seconds=REPEAT_WINDOW + 1)


def test_repeat_memory_is_bounded() -> None:
    """A flood of distinct event frames forgets the oldest: memory stays bounded."""
    clocks, seen = Clocks(), []
    rcv = receiver(clocks, seen)
    rcv._recent.limit = 3
    for seq in range(5):
        rcv.handle(sia(seq, "#1001|NBA01", None), "tcp", "127.0.0.1:4000")
    assert len(rcv._recent._seen) == 3
    rcv.handle(sia(0, "#1001|NBA01", None), "tcp", "127.0.0.1:4000")  # forgotten: counted as new
    rcv.handle(sia(4, "#1001|NBA01", None), "tcp", "127.0.0.1:4000")  # remembered: a repeat
    assert [r.repeat_of is not None for r in seen[-2:]] == [False, True]
    assert rcv.counts.events == {"alarm": 6}


def test_panel_devices_maps_accounts_to_school_and_device() -> None:
    """Only devices with `sia:` are in the map, keyed as the receiver keys frames."""
    sia_probe = (ProbeSpec("sia"),)
    panel = Device("s1-panel", "s1", DeviceKind.ALARM_PANEL, "", sia_probe, sia=SiaAccount("1001", receiver="2"))
    camera = Device("s1-cam", "s1", DeviceKind.CAMERA, "10.0.0.5", (ProbeSpec("icmp"),))
    inventory = Inventory.build([School("s1", "School 1", "", Contract(100.0), (panel, camera))])
    assert panel_devices(inventory) == {AccountKey("2", "0", "1001"): ("s1", "s1-panel")}


async def test_events_over_tcp_reach_the_hook_with_their_counts() -> None:
    """A real TCP panel connection on 127.0.0.1: a two-event frame sent twice is one count per event, one repeat."""
    loop = asyncio.get_running_loop()
    seen: list[Reception] = []
    sup = Supervision([SupervisedPanel(PANEL, 60.0)], started_at=loop.time())
    async with SiaReceiver(sup, clock=loop.time, on_reception=seen.append) as rcv:
        await rcv.start("127.0.0.1", 0)
        frame = sia(9, "#1001|Nri2/FA01/PA02", datetime.now(UTC))
        reader, writer = await asyncio.open_connection("127.0.0.1", rcv.port)
        try:
            writer.write(frame + frame)
            replies = [await asyncio.wait_for(reader.readuntil(b"\r"), 2.0) for _ in range(2)]
        finally:
            writer.close()
    assert [dc09.parse_frame(r).message_type for r in replies] == ["ACK", "ACK"]
    assert rcv.counts.events == {"alarm": 2}
    assert rcv.counts.repeats == {"alarm": 2}
    assert seen[0].events == (PanelEvent("FA", "01", "2"), PanelEvent("PA", "02", "2"))
    assert seen[1].repeat_of == seen[0].received_at

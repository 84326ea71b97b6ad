"""Alarm events as history rows: one per event, keyed by identity so a resent frame is one row."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from telemetryd.alarm import dc09
from telemetryd.alarm.dc09 import AccountKey, PanelEvent
from telemetryd.alarm.receiver import Reception, SiaReceiver
from telemetryd.alarm.supervision import SupervisedPanel, Supervision
from telemetryd.config.settings import HistorySettings, Settings
from telemetryd.history import AlarmEventRecord, HistoryWriter, Spool, alarm_records, to_row
from telemetryd.history.recorder import History
from telemetryd.history.records import TABLES, to_copy_record

NOW = datetime(2026, 2, 10, 8, 30, 0, tzinfo=UTC)
PANEL = AccountKey("7", "1", "1001")
SCHOOL_PANEL = ("s1", "s1-panel")


class Feed:
    """A socket-less receiver for PANEL whose clocks the test moves, collecting what it hands on."""

    def __init__(self) -> None:
        self.mono, self.wall = 1000.0, NOW
        self.seen: list[Reception] = []
        sup = Supervision([SupervisedPanel(PANEL, 60.0)], started_at=self.mono)
        self.receiver = SiaReceiver(
            sup, clock=lambda: self.mono, wall_clock=lambda: self.wall, on_reception=self.seen.append
        )

    def send(self, raw: bytes, transport: str = "tcp", peer: str = "127.0.0.1:4000", after: float = 0.0) -> Reception:
        """Deliver one frame `after` seconds on; the Reception it produced."""
        self.mono += after
        self.wall += timedelta(seconds=after)
        self.receiver.handle(raw, transport, peer)
        return self.seen[-1]


def sia(seq: int, data: str, at: datetime | None) -> bytes:
    """A SIA-DCS frame from PANEL."""
    message = dc09.format_message("SIA-DCS", seq, prefix="1", account="1001", receiver="7", data=data, at=at)
    return dc09.build_frame(message)


def rows(reception: Reception, device: tuple[str, str] | None = SCHOOL_PANEL) -> list[dict[str, object]]:
    """The rows of a reception, as dicts of column → value."""
    table = TABLES["alarm_events"]
    out = []
    for record in alarm_records(reception, device):
        row = to_row(record)
        assert row["t"] == "alarm_events"
        out.append(dict(zip(table.columns, row["v"], strict=True)))
    return out


def test_one_record_per_event_with_every_field() -> None:
    """A two-event SIA frame becomes two records carrying account, token, sequence, panel time, transport and peer."""
    reception = Feed().send(sia(42, "#1001|Nri3/BA05^HALL^/FT06", NOW), "udp", "127.0.0.1:5555")
    burglary, fire = rows(reception)
    assert burglary == {
        "time": NOW.timestamp(),
        "receiver": "7",
        "prefix": "1",
        "account": "1001",
        "token": "SIA-DCS",
        "sequence": "0042",
        "event_index": 0,
        "code": "BA",
        "zone": "05",
        "partition": "3",
        "event_text": "HALL",
        "school": "s1",
        "device": "s1-panel",
        "event_class": "alarm",
        "panel_time": NOW.timestamp(),
        "transport": "udp",
        "peer": "127.0.0.1:5555",
        "key": burglary["key"],
    }
    assert (fire["event_index"], fire["code"], fire["event_class"]) == (1, "FT", "trouble")
    assert burglary["key"] != fire["key"]


def test_contact_id_without_timestamp_and_unknown_account() -> None:
    """An unstamped Contact ID restoral from an account not in the inventory has no panel time, school or device."""
    raw = dc09.build_frame(
        dc09.format_message("ADM-CID", 3, prefix="1", account="1001", receiver="7", data="#1001|3130 02 015")
    )
    [row] = rows(Feed().send(raw), device=None)
    assert (row["token"], row["code"], row["zone"], row["partition"]) == ("ADM-CID", "R130", "015", "02")
    assert (row["event_class"], row["panel_time"], row["school"], row["device"]) == ("restoral", None, None, None)


def test_heartbeats_refused_and_encrypted_frames_give_no_record() -> None:
    """NULLs, NAKed frames and encrypted frames (DUH: the key is never known, nothing is stored) give no rows."""
    feed = Feed()
    null = feed.send(dc09.build_null(1, prefix="1", account="1001", receiver="7", at=NOW))
    skewed = feed.send(sia(2, "#1001|NBA01", NOW + timedelta(minutes=3)))
    encrypted = feed.send(dc09.build_frame('"*SIA-DCS"0003R7L1#1001[8A1F0C33D2E4B5A6]'))
    assert encrypted.answer.verdict is dc09.Verdict.DUH
    assert [alarm_records(r, SCHOOL_PANEL) for r in (null, skewed, encrypted)] == [[], [], []]


def test_a_resent_frame_is_the_same_row() -> None:
    """The frame resent 30 s later, re-stamped, over UDP from another port, gives rows with the same key and time."""
    feed = Feed()
    first = feed.send(sia(9, "#1001|NBA03", NOW))
    again = feed.send(sia(9, "#1001|NBA03", NOW + timedelta(seconds=30)), "udp", "127.0.0.1:6000", after=30)
    [a], [b] = rows(first), rows(again)
    assert (a["key"], a["time"]) == (b["key"], b["time"]) == (a["key"], NOW.timestamp())
    assert (b["transport"], b["panel_time"]) == ("udp", (NOW + timedelta(seconds=30)).timestamp())


def test_new_events_get_new_keys() -> None:
    """Another sequence, another code, or the same frame beyond the repeat window, is another row."""
    feed = Feed()
    keys = {
        rows(feed.send(sia(9, "#1001|NBA03", None)))[0]["key"],
        rows(feed.send(sia(10, "#1001|NBA03", None)))[0]["key"],
        rows(feed.send(sia(10, "#1001|NBR03", None)))[0]["key"],
        rows(feed.send(sia(9, "#1001|NBA03", None), after=3600))[0]["key"],
    }
    assert len(keys) == 4


def test_key_is_pinned() -> None:
    """The key of a known alarm event never changes between releases (a change would duplicate replayed rows)."""
    record = AlarmEventRecord(1_770_712_200.0, PANEL, "SIA-DCS", "0042", PanelEvent("BA", "05", "3", "HALL"))
    assert to_row(record)["v"][-1] == "8a0731b0-02f6-0997-3755-ad6fa4756d4c"


def test_copy_record_converts_times_and_keeps_a_missing_panel_time_null() -> None:
    """Both time columns become UTC datetimes, a missing panel time stays None, the key becomes a UUID."""
    table = TABLES["alarm_events"]
    stamped = AlarmEventRecord(1_770_712_200.0, PANEL, "SIA-DCS", "0001", PanelEvent("FA"), panel_time=1_770_712_199.0)
    record = to_copy_record(table, to_row(stamped)["v"])
    assert record[table.columns.index("time")] == datetime.fromtimestamp(1_770_712_200.0, UTC)
    assert record[table.columns.index("panel_time")] == datetime.fromtimestamp(1_770_712_199.0, UTC)
    assert isinstance(record[-1], uuid.UUID)
    unstamped = AlarmEventRecord(1_770_712_200.0, PANEL, "SIA-DCS", "0001", PanelEvent("FA"))
    assert to_copy_record(table, to_row(unstamped)["v"])[table.columns.index("panel_time")] is None


async def test_history_record_reception_queues_one_row_per_event(tmp_path: Path) -> None:
    """History.record_reception submits each event of a reception to the writer and says how many."""
    settings = Settings(history=HistorySettings(dsn="postgresql://postgres@127.0.0.1:1/x", spool_directory="spool"))
    history = History(settings, None)
    writer = HistoryWriter("postgresql://postgres@127.0.0.1:1/x", Spool(tmp_path / "spool"))  # never started
    history.writer = writer
    feed = Feed()
    assert history.record_reception(feed.send(sia(5, "#1001|NBA01/BA02", NOW)), SCHOOL_PANEL) == 2
    assert (
        history.record_reception(feed.send(dc09.build_null(6, prefix="1", account="1001", receiver="7", at=NOW)), None)
        == 0
    )
    queued = [row for row, _ in writer._drain_queue()]
    assert [(r["t"], r["v"][TABLES["alarm_events"].columns.index("zone")]) for r in queued] == [
        ("alarm_events", "01"),
        ("alarm_events", "02"),
    ]
    assert [e.record for e in Spool(tmp_path / "spool").replay()] == queued  # journaled before the ACK goes out

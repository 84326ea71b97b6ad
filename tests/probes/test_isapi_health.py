"""Pure ISAPI judgement: hand-built `xml` documents in, the exact problems (reason, detail, order) out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from telemetryd.probes import isapi
from telemetryd.probes.isapi import client, health, xml
from telemetryd.probes.isapi.health import Problem

NTP_TIME = xml.DeviceTime(time_mode="NTP", local_time=datetime(2026, 9, 27, 8, 37, 11, tzinfo=UTC), time_zone="CST-8")


def _working(*channels: tuple[int, bool | None, bool | None]) -> xml.WorkingStatus:
    """A working status of (channel, recording, signal_lost) entries and no disks."""
    return xml.WorkingStatus(
        channels=tuple(
            xml.ChannelWorkingStatus(channel=n, online=True, recording=rec, record_status=0, signal_lost=lost)
            for n, rec, lost in channels
        ),
        disks=(),
    )


def _zone(number: int, status: str = "online", *, tamper: bool = False) -> xml.AxProZone:
    return xml.AxProZone(id=number, name=f"Zone {number}", status=status, tamper=tamper)


# --- clock -------------------------------------------------------------------------------


@pytest.mark.parametrize("drift", [10.0, -10.0, 0.0, 9.99])
def test_drift_up_to_the_limit_is_fine(drift: float) -> None:
    """A drift of at most max_drift seconds either way, the limit itself included, is no problem."""
    assert health.clock_problems(NTP_TIME, drift, 10.0) == ()


@pytest.mark.parametrize(("drift", "shown"), [(10.01, "+10"), (-10.5, "-10"), (300.4, "+300"), (-301.0, "-301")])
def test_drift_past_the_limit_is_clock_drift(drift: float, shown: str) -> None:
    """Just past the limit either way is one clock_drift with the signed whole seconds and the time mode."""
    assert health.clock_problems(NTP_TIME, drift, 10.0) == (
        Problem("time", "clock_drift", f"clock {shown}s off (timeMode NTP)"),
    )


def test_unreadable_device_time_is_clock_drift_naming_the_zone() -> None:
    """A device time we could not turn into an instant (drift None) is clock_drift naming its time zone."""
    unreadable = xml.DeviceTime(time_mode="manual", local_time=None, time_zone="bogus-zone")
    assert health.clock_problems(unreadable, None, 10.0) == (
        Problem("time", "clock_drift", "device time unreadable (bogus-zone)"),
    )


# --- channels ------------------------------------------------------------------------------


def test_all_channels_online_is_fine() -> None:
    """Online channels raise nothing, and all of them are expected to record, in order."""
    channels = (xml.Channel(3, True), xml.Channel(1, True))
    assert health.channel_problems(channels) == ()
    assert health.online_channels(channels) == [3, 1]


def test_offline_channels_listed_with_and_without_detect_reason() -> None:
    """One channel_offline names each offline channel with its chanDetectResult, or "no reason" when blank."""
    channels = (
        xml.Channel(1, True),
        xml.Channel(2, False, detect_result="netUnreachable"),
        xml.Channel(5, False),
    )
    assert health.channel_problems(channels) == (
        Problem("channels", "channel_offline", "channel(s) offline: 2 (netUnreachable), 5 (no reason)"),
    )
    assert health.online_channels(channels) == [1]


def test_no_channels_is_fine() -> None:
    """An empty (or unread) channel list raises no channel problem and expects no recording."""
    assert health.channel_problems(()) == ()
    assert health.online_channels(()) == []


# --- storage -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "disks",
    [(), (xml.Disk(1, "notexist"),), (xml.Disk(1, "notexist"), xml.Disk(2, "notExist", kind="nas"))],
)
def test_no_present_disk_is_no_disk(disks: tuple[xml.Disk, ...]) -> None:
    """No disk at all, or only empty bays, is exactly one no_disk."""
    assert health.storage_problems(disks) == (Problem("storage", "no_disk", "no disk or NAS to record on"),)


def test_faulty_disks_listed_and_empty_bays_ignored() -> None:
    """Each present disk that cannot record is listed in one disk_fault; healthy disks and empty bays are not."""
    disks = (
        xml.Disk(1, "ok"),
        xml.Disk(2, "error"),
        xml.Disk(3, "notexist"),
        xml.Disk(9, "unformatted", kind="nas"),
    )
    assert health.storage_problems(disks) == (
        Problem("storage", "disk_fault", "disk fault: hdd 2 error, nas 9 unformatted"),
    )


@pytest.mark.parametrize("status", sorted(xml.HEALTHY_DISK_STATES))
def test_healthy_disk_states_are_fine(status: str) -> None:
    """A present disk in any recording-capable state (beside an empty bay) raises nothing."""
    assert health.storage_problems((xml.Disk(1, status), xml.Disk(2, "notexist"))) == ()


# --- recording and video loss ----------------------------------------------------------------


def test_idle_channels_are_not_recording_with_the_window() -> None:
    """Channels that did not record are listed, in order, in one not_recording giving the window in seconds."""
    recording = ((1, True), (3, False), (4, True), (7, False))
    assert health.recording_problems(recording, 3600.0) == (
        Problem("recording", "not_recording", "no recording in the last 3600s on 3, 7"),
    )
    assert health.recording_problems(recording, 90.5)[0].detail == "no recording in the last 90.5s on 3, 7"


@pytest.mark.parametrize("recording", [(), ((1, True), (2, True))])
def test_all_recorded_is_fine(recording: tuple[tuple[int, bool], ...]) -> None:
    """No channels, or every channel recorded, raises no recording problem."""
    assert health.recording_problems(recording, 3600.0) == ()


def test_video_loss_names_channels_with_lost_signal() -> None:
    """Only channels whose signal_lost is true are video loss; false and unknown (None) are not."""
    working = _working((1, True, True), (2, True, False), (3, True, None), (4, False, True))
    assert health.video_loss_channels(working) == (1, 4)
    assert health.video_loss_problems(working) == (Problem("recording", "video_loss", "video loss on channel(s) 1, 4"),)


def test_no_video_loss_is_fine() -> None:
    """A working status without lost signals raises nothing."""
    working = _working((1, True, False), (2, True, None))
    assert health.video_loss_channels(working) == ()
    assert health.video_loss_problems(working) == ()


def test_working_recording_per_online_channel() -> None:
    """Each online channel in the asked order: recording true is True; false, unknown or unlisted is False."""
    working = _working((1, True, False), (2, False, False), (3, None, False), (5, True, False))
    assert health.working_recording(working, [5, 1, 2, 3, 4]) == (
        (5, True),
        (1, True),
        (2, False),
        (3, False),
        (4, False),
    )


# --- AX PRO zones --------------------------------------------------------------------------


def test_faulty_and_tampered_zones_in_that_order() -> None:
    """Offline, broken and heartbeat-less zones make one zone_fault, then tampered zones one tamper."""
    zones = (
        _zone(1),
        _zone(2, "offline"),
        _zone(3, tamper=True),
        _zone(4, "breakDown", tamper=True),
        _zone(5, "heartbeatAbnormal"),
        _zone(6, "trigger"),
    )
    assert health.zone_problems(zones) == (
        Problem(
            "zones",
            "zone_fault",
            "zone(s) not reporting: 2 Zone 2 (offline), 4 Zone 4 (breakDown), 5 Zone 5 (heartbeatAbnormal)",
        ),
        Problem("zones", "tamper", "tamper on zone(s) 3, 4"),
    )


def test_tamper_only_from_a_one_shot_iterable() -> None:
    """A generator of zones is read once for both judgements: a lone tamper is reported without a zone_fault."""
    zones = (z for z in (_zone(1), _zone(2, tamper=True)))
    assert health.zone_problems(zones) == (Problem("zones", "tamper", "tamper on zone(s) 2"),)


@pytest.mark.parametrize("zones", [(), (_zone(1), _zone(2, "trigger"), _zone(3, "notRelated"))])
def test_reporting_zones_are_fine(zones: tuple[xml.AxProZone, ...]) -> None:
    """No zones, or zones that can report (online, triggered, not related), raise nothing."""
    assert health.zone_problems(zones) == ()


# --- summary -------------------------------------------------------------------------------


def test_no_problems_summarize_as_ok() -> None:
    """Without problems the summary is ok with an empty reason and detail."""
    assert health.summarize(()) == (True, "", "")


def test_summary_takes_first_reason_and_at_most_four_details() -> None:
    """Six problems: not ok, the first problem's reason, and only the first four details joined by "; "."""
    problems = [Problem("step", f"reason{n}", f"detail {n}") for n in range(6)]
    summary = health.summarize(problems)
    assert summary == health.Summary(False, "reason0", "detail 0; detail 1; detail 2; detail 3")
    assert health.summarize(problems[:1]) == (False, "reason0", "detail 0")


def test_problem_is_re_exported_from_client_and_package() -> None:
    """The old import paths of Problem and the summary still name health's objects."""
    assert client.Problem is isapi.Problem is health.Problem
    assert isapi.summarize is health.summarize


def test_recorded_since_needs_a_segment_of_the_track_ending_in_the_window() -> None:
    """numOfMatches proves nothing: only a segment of this track (or of no named track) ending in the window counts."""
    since = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    recent, old = since + timedelta(minutes=20), since - timedelta(days=21)

    def search(*segments: tuple[int | None, datetime]) -> xml.RecordingSearch:
        return xml.RecordingSearch(ok=True, status="OK", matches=len(segments) or 1, segments=segments)

    assert health.recorded_since(search((201, recent)), 201, since)
    assert health.recorded_since(search((None, recent)), 201, since)  # the search asked for this track only
    assert not health.recorded_since(search((201, old)), 201, since)  # matched, but weeks before the window
    assert not health.recorded_since(search((301, recent)), 201, since)  # another camera's segment
    assert not health.recorded_since(search(), 201, since)  # numOfMatches 1 and no segment
    assert health.recorded_since(search((201, old), (201, recent)), 201, since)

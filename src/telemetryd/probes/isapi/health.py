"""Judgement of ISAPI replies: parsed documents in, `Problem`s out — pure, no I/O, no clock.

The client (`client`) fetches and parses (`xml`); these functions decide what is wrong,
in the order the check reports it, and `summarize` turns the problems into the result's
``ok``, first reason and detail sentence. Reasons: ``clock_drift``, ``channel_offline``,
``no_disk``, ``disk_fault``, ``video_loss`` (a working-status signal loss or an analog
input's NO VIDEO), ``not_recording``, ``zone_fault``, ``tamper``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from telemetryd.probes.isapi import xml

__all__ = [
    "DETAIL_PROBLEMS",
    "Problem",
    "Summary",
    "channel_problems",
    "clock_problems",
    "input_problems",
    "live_inputs",
    "online_channels",
    "recorded_since",
    "recording_problems",
    "storage_problems",
    "summarize",
    "video_loss_channels",
    "video_loss_problems",
    "working_recording",
    "zone_problems",
]

DETAIL_PROBLEMS = 4
"""Problems whose detail makes up the summary sentence; the rest stay in `problems` only."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong, with the ISAPI step that found it."""

    step: str
    reason: str
    detail: str


class Summary(NamedTuple):
    """A check's verdict: ok when nothing is wrong, else the first reason and the first problems' details."""

    ok: bool
    reason: str
    detail: str


def summarize(problems: Sequence[Problem]) -> Summary:
    """Ok without problems; otherwise the first problem's reason and the details of at most four, joined."""
    return Summary(
        ok=not problems,
        reason=problems[0].reason if problems else "",
        detail="; ".join(p.detail for p in problems[:DETAIL_PROBLEMS]),
    )


def clock_problems(device_time: xml.DeviceTime, drift: float | None, max_drift: float) -> tuple[Problem, ...]:
    """`clock_drift` when the device time is unreadable (`drift` None) or more than `max_drift` seconds off."""
    if drift is None:
        return (Problem("time", "clock_drift", f"device time unreadable ({device_time.time_zone})"),)
    if abs(drift) > max_drift:
        return (Problem("time", "clock_drift", f"clock {drift:+.0f}s off (timeMode {device_time.time_mode})"),)
    return ()


def channel_problems(channels: Iterable[xml.Channel]) -> tuple[Problem, ...]:
    """One `channel_offline` naming every offline channel with its chanDetectResult (or "no reason")."""
    offline = [c for c in channels if not c.online]
    if not offline:
        return ()
    listed = ", ".join(f"{c.id} ({c.detect_result or 'no reason'})" for c in offline)
    return (Problem("channels", "channel_offline", f"channel(s) offline: {listed}"),)


def input_problems(inputs: Iterable[xml.VideoInput]) -> tuple[Problem, ...]:
    """One `video_loss` naming every enabled analog input that reports NO VIDEO."""
    lost = [i for i in inputs if i.enabled and not i.has_video]
    if not lost:
        return ()
    listed = ", ".join(f"{i.id} ({i.name})" if i.name else str(i.id) for i in lost)
    return (Problem("video_inputs", "video_loss", f"no video on analog input(s) {listed}"),)


def live_inputs(inputs: Iterable[xml.VideoInput]) -> list[int]:
    """Numbers of the enabled analog inputs with a signal: expected to be recording, like online IP channels."""
    return [i.id for i in inputs if i.enabled and i.has_video]


def online_channels(channels: Iterable[xml.Channel]) -> list[int]:
    """Numbers of the online channels: the ones expected to be recording."""
    return [c.id for c in channels if c.online]


def storage_problems(disks: Iterable[xml.Disk]) -> tuple[Problem, ...]:
    """`no_disk` when no disk or NAS is present; else one `disk_fault` listing every present, unhealthy disk."""
    present = [d for d in disks if d.present]
    if not present:
        return (Problem("storage", "no_disk", "no disk or NAS to record on"),)
    faulty = [d for d in present if not d.healthy]
    if not faulty:
        return ()
    listed = ", ".join(f"{d.kind} {d.id} {d.status}" for d in faulty)
    return (Problem("storage", "disk_fault", f"disk fault: {listed}"),)


def video_loss_channels(working: xml.WorkingStatus) -> tuple[int, ...]:
    """Channels whose working status reports a lost video signal, in reply order."""
    return tuple(c.channel for c in working.channels if c.signal_lost)


def video_loss_problems(working: xml.WorkingStatus) -> tuple[Problem, ...]:
    """One `video_loss` naming every channel that lost its signal."""
    lost = video_loss_channels(working)
    if not lost:
        return ()
    return (Problem("recording", "video_loss", "video loss on channel(s) " + ", ".join(map(str, lost))),)


def working_recording(working: xml.WorkingStatus, online: Iterable[int]) -> tuple[tuple[int, bool], ...]:
    """(channel, recording) per online channel from the working status; a channel it does not list did not record."""
    by_channel = {c.channel: c for c in working.channels}
    return tuple((number, bool(by_channel[number].recording) if number in by_channel else False) for number in online)


def recorded_since(search: xml.RecordingSearch, track: int, since: datetime) -> bool:
    """Whether a matched segment of `track` ended after `since`.

    `numOfMatches` alone proves nothing: firmware answers a search of the last hour with a
    segment that ended weeks before it. A segment that names another track does not count;
    one that names none does (the search asked for this track only).
    """
    return any(
        end > since and (segment_track is None or segment_track == track) for segment_track, end in search.segments
    )


def recording_problems(recording: Iterable[tuple[int, bool]], window: float) -> tuple[Problem, ...]:
    """One `not_recording` listing every channel that did not record within `window` seconds."""
    idle = [number for number, recorded in recording if not recorded]
    if not idle:
        return ()
    listed = ", ".join(map(str, idle))
    return (Problem("recording", "not_recording", f"no recording in the last {window:g}s on {listed}"),)


def zone_problems(zones: Iterable[xml.AxProZone]) -> tuple[Problem, ...]:
    """`zone_fault` for zones that cannot report, then `tamper` for tampered zones (each at most once)."""
    zones = tuple(zones)
    problems = []
    faulty = [z for z in zones if z.faulty]
    if faulty:
        listed = ", ".join(f"{z.id} {z.name} ({z.status})" for z in faulty)
        problems.append(Problem("zones", "zone_fault", f"zone(s) not reporting: {listed}"))
    tampered = [z.id for z in zones if z.tamper]
    if tampered:
        problems.append(Problem("zones", "tamper", "tamper on zone(s) " + ", ".join(map(str, tampered))))
    return tuple(problems)

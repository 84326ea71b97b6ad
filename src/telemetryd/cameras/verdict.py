"""Why a camera's picture is missing: camera dead, not recorded, LAN fault or NVR down.

Pure: it combines what State knows (the camera's and its NVR's reachability, how many
cameras of the school are down) with the NVR's ISAPI view of the camera's channel.
The verdict is one of a fixed set, so it can be a metric label.

Rules, first match wins:

1. camera not probed yet → ``unknown`` (``not_probed``);
2. camera down, and at least `lan_share` of the school's cameras (and at least `lan_min`
   of them) down together → ``lan_fault``: a switch or the school's LAN, not each camera;
3. camera down → ``camera_down``;
4. camera up, its NVR down → ``nvr_down``: nothing records it;
5. camera up, no NVR named for it → ``unknown`` (``no_nvr``): nothing can show it records;
6. camera up, the NVR gives no view of its channel → ``unknown`` with why
   (`ChannelView.missing`: ``nvr_not_checked``, ``nvr_auth_failed``, ``nvr_cannot_report_channel``);
7. camera up, the NVR sees its channel offline or not recording → ``not_recorded``;
8. camera up, channel online but no recording evidence either way → ``unknown``
   (``no_recording_evidence``: the search failed, or the recorder cannot search);
9. camera up, channel online and a recording inside the window → ``ok``.

So ``ok`` always stands on two pieces of evidence, a channel view and a recording match;
without them the verdict is ``unknown`` with its reason, never a guess.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple

from telemetryd.model import Health


class Verdict(enum.StrEnum):
    """The `verdict` label of `telemetryd_camera_verdict`."""

    OK = "ok"
    CAMERA_DOWN = "camera_down"
    NOT_RECORDED = "not_recorded"
    LAN_FAULT = "lan_fault"
    NVR_DOWN = "nvr_down"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class ChannelView:
    """What the NVR says about the camera's channel (None: not reported); `missing` says why there is no view."""

    online: bool | None = None
    recording: bool | None = None
    reason: str = ""
    missing: str = ""


class Judgement(NamedTuple):
    """A verdict and, for ``unknown``, the missing evidence (a metric label: a fixed set of words)."""

    verdict: Verdict
    reason: str = ""


@dataclass(frozen=True, slots=True)
class SchoolCameras:
    """How many of the school's cameras are down, out of how many known."""

    down: int
    known: int


LAN_SHARE = 0.5
LAN_MIN = 3
REACHABILITY_PROTOCOLS = ("icmp", "tcp", "rtsp")
NO_ANSWER = ("timeout", "refused", "unreachable", "error")
"""ISAPI reasons that mean the device did not answer at all (others: it answered, with a problem)."""


def reachability(probes: dict[str, tuple[Health, str | None]]) -> Health:
    """Whether a device answers, from its probes' health and last reason (probe name → (health, reason)).

    Reachability probes decide when there are any; otherwise an ISAPI check that got an
    answer, even a 401 or a disk fault, shows the device is alive. Health findings do
    not make a device "down" here: that is what the other verdicts are for.
    """
    direct = [health for name, (health, _) in probes.items() if name.split(":")[0] in REACHABILITY_PROTOCOLS]
    if Health.DOWN in direct:
        return Health.DOWN
    if Health.UP in direct:
        return Health.UP
    reasons = [
        reason
        for name, (_, reason) in probes.items()
        if name.split(":")[0] in ("isapi", "isapis") and reason is not None
    ]
    if not reasons:
        return Health.UNKNOWN
    return Health.DOWN if all(reason in NO_ANSWER for reason in reasons) else Health.UP


def attribute(
    camera: Health,
    nvr: Health | None,
    channel: ChannelView | None,
    school: SchoolCameras,
    *,
    lan_share: float = LAN_SHARE,
    lan_min: int = LAN_MIN,
) -> Judgement:
    """The verdict for one camera; `nvr` is None when the inventory names no NVR for it."""
    if camera is Health.UNKNOWN:
        return Judgement(Verdict.UNKNOWN, "not_probed")
    if camera is Health.DOWN:
        if school.known and school.down >= lan_min and school.down / school.known >= lan_share:
            return Judgement(Verdict.LAN_FAULT)
        return Judgement(Verdict.CAMERA_DOWN)
    if nvr is Health.DOWN:
        return Judgement(Verdict.NVR_DOWN)
    if nvr is None:
        return Judgement(Verdict.UNKNOWN, "no_nvr")
    if channel is None or channel.missing:
        return Judgement(Verdict.UNKNOWN, channel.missing if channel is not None else "nvr_not_checked")
    if channel.online is False or channel.recording is False:
        return Judgement(Verdict.NOT_RECORDED)
    if channel.online is None or channel.recording is None:
        return Judgement(Verdict.UNKNOWN, "no_recording_evidence")
    return Judgement(Verdict.OK)

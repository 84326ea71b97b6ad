"""Camera verdicts: camera dead, not recorded, LAN fault or NVR down, from reachability and the NVR's view."""

from __future__ import annotations

import pytest

from telemetryd.cameras.verdict import ChannelView, Judgement, SchoolCameras, Verdict, attribute, reachability
from telemetryd.model import Health

QUIET = SchoolCameras(down=1, known=30)
"""One camera of thirty down: nothing school-wide."""


@pytest.mark.parametrize(
    ("camera", "nvr", "channel", "school", "verdict"),
    [
        (Health.UNKNOWN, Health.UP, None, QUIET, Judgement(Verdict.UNKNOWN, "not_probed")),
        (Health.DOWN, Health.UP, ChannelView(online=False), QUIET, Verdict.CAMERA_DOWN),
        (Health.DOWN, Health.UP, None, SchoolCameras(down=20, known=30), Verdict.LAN_FAULT),
        (Health.DOWN, Health.DOWN, None, SchoolCameras(down=20, known=30), Verdict.LAN_FAULT),
        # Two of three down is a majority, but too few cameras to blame the LAN.
        (Health.DOWN, Health.UP, None, SchoolCameras(down=2, known=3), Verdict.CAMERA_DOWN),
        (Health.DOWN, Health.DOWN, None, QUIET, Verdict.CAMERA_DOWN),
        (Health.UP, Health.DOWN, ChannelView(online=True, recording=True), QUIET, Verdict.NVR_DOWN),
        (Health.UP, Health.UP, ChannelView(online=False, reason="netUnreachable"), QUIET, Verdict.NOT_RECORDED),
        (Health.UP, Health.UP, ChannelView(online=True, recording=False), QUIET, Verdict.NOT_RECORDED),
        (Health.UP, Health.UP, ChannelView(online=True, recording=True), QUIET, Verdict.OK),
        # No evidence, no "ok": each gap is unknown with its reason.
        (Health.UP, None, None, QUIET, Judgement(Verdict.UNKNOWN, "no_nvr")),
        (Health.UP, Health.UP, None, QUIET, Judgement(Verdict.UNKNOWN, "nvr_not_checked")),
        (Health.UP, Health.UNKNOWN, None, QUIET, Judgement(Verdict.UNKNOWN, "nvr_not_checked")),
        (
            Health.UP,
            Health.UP,
            ChannelView(missing="nvr_auth_failed"),
            QUIET,
            Judgement(Verdict.UNKNOWN, "nvr_auth_failed"),
        ),
        (
            Health.UP,
            Health.UP,
            ChannelView(missing="nvr_cannot_report_channel"),
            QUIET,
            Judgement(Verdict.UNKNOWN, "nvr_cannot_report_channel"),
        ),
        (Health.UP, Health.UP, ChannelView(online=True), QUIET, Judgement(Verdict.UNKNOWN, "no_recording_evidence")),
        # A channel the NVR sees offline is not recorded, whatever the recording evidence.
        (Health.UP, Health.UP, ChannelView(online=False, recording=None), QUIET, Verdict.NOT_RECORDED),
    ],
)
def test_verdicts(
    camera: Health, nvr: Health | None, channel: ChannelView | None, school: SchoolCameras, verdict: Verdict | Judgement
) -> None:
    """Each combination of camera, NVR and channel state gets its one verdict, and an unknown its reason."""
    expected = verdict if isinstance(verdict, Judgement) else Judgement(verdict)
    assert attribute(camera, nvr, channel, school) == expected


def test_lan_threshold_is_configurable() -> None:
    """Half the school's cameras down is a LAN fault by default, not with a stricter share."""
    school = SchoolCameras(down=10, known=20)
    assert attribute(Health.DOWN, None, None, school).verdict is Verdict.LAN_FAULT
    assert attribute(Health.DOWN, None, None, school, lan_share=0.8).verdict is Verdict.CAMERA_DOWN


@pytest.mark.parametrize(
    ("probes", "expected"),
    [
        ({}, Health.UNKNOWN),
        ({"icmp": (Health.DOWN, "timeout"), "isapi:80": (Health.UP, "")}, Health.DOWN),
        ({"icmp": (Health.UP, ""), "tcp:554": (Health.UNKNOWN, None)}, Health.UP),
        # Only ISAPI: a 401 or a disk fault is an answer; a timeout is not.
        ({"isapi:80": (Health.DOWN, "auth_failed")}, Health.UP),
        ({"isapi:80": (Health.DOWN, "disk_fault")}, Health.UP),
        ({"isapi:80": (Health.DOWN, "timeout")}, Health.DOWN),
        ({"isapi:80": (Health.UNKNOWN, None)}, Health.UNKNOWN),
    ],
)
def test_reachability_ignores_health_findings(probes: dict[str, tuple[Health, str | None]], expected: Health) -> None:
    """A device is down for attribution only when it does not answer, not when it answers with a problem."""
    assert reachability(probes) is expected

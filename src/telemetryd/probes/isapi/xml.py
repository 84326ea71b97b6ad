"""Pure parsing of Hikvision ISAPI replies: bytes in, frozen dataclasses out, no I/O.

Firmware differs in namespace (hikvision.com ver10/ver20, isapi.org, std-cgi.com, or
none, sometimes mixed inside one document), so every document has its namespaces
stripped before lookup. XML goes through defusedxml with DTDs forbidden: a camera has
no business sending one, and entity expansion (billion laughs) must never reach expat's
expander. Every parser raises `IsapiParseError` on anything it cannot read, and
`IsapiStatusError` when the device answered with a `ResponseStatus` instead of the
document asked for; the client turns both into result reasons (``bad_xml``,
``not_supported``, ``isapi_error``).

Parsing cost is bounded, because it runs on the event loop: a body is measured before it
is parsed (bytes, ``<`` and ``=`` counted at C speed: every tag, comment or CDATA section
needs a ``<``, every attribute an ``=``) and the tree builder stops the parse at the first
element past `MAX_XML_DEPTH` or `MAX_XML_ELEMENTS`. A document over a limit raises
`IsapiLimitError` (an `IsapiParseError` whose `reason` is ``xml_too_large``,
``xml_too_deep``, ``json_too_large`` or ``json_too_deep``) after at most a few
milliseconds, whatever its size; the largest document within the limits parses in about
25 ms. JSON bodies are measured the same way (``{``, ``[`` and ``,`` counted).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from xml.etree.ElementTree import Element, ParseError, TreeBuilder

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser

__all__ = [
    "MAX_JSON_VALUES",
    "MAX_XML_ATTRIBUTES",
    "MAX_XML_BYTES",
    "MAX_XML_DEPTH",
    "MAX_XML_ELEMENTS",
    "MAX_XML_MARKUP",
    "AxProSubsystem",
    "AxProZone",
    "Channel",
    "ChannelWorkingStatus",
    "DeviceIdentity",
    "DeviceStatus",
    "DeviceTime",
    "Disk",
    "IsapiLimitError",
    "IsapiParseError",
    "IsapiStatusError",
    "RecordingSearch",
    "ResponseStatus",
    "SessionLoginCap",
    "UserCheck",
    "WorkingStatus",
    "clock_drift",
    "parse_axpro_subsystems",
    "parse_axpro_zones",
    "parse_channels",
    "parse_device_info",
    "parse_device_status",
    "parse_device_time",
    "parse_posix_offset",
    "parse_response_status",
    "parse_search_result",
    "parse_session_login_cap",
    "parse_storage",
    "parse_uptime",
    "parse_user_check",
    "parse_working_status",
    "rebooted",
    "search_request",
    "session_login_password",
    "session_login_request",
]

MAX_XML_BYTES = 512 << 10
"""Bytes of one XML or JSON body, whatever `probes.isapi.max_body_bytes` allows: a 256-channel NVR sends 120 KB."""
MAX_XML_ELEMENTS = 6144
"""Elements of one document: a 256-channel NVR's channel status list has about 3,300."""
MAX_XML_ATTRIBUTES = MAX_XML_ELEMENTS
"""``=`` signs of one document (an upper bound of its attributes): ISAPI puts a few on the root and lists."""
MAX_XML_MARKUP = 2 * MAX_XML_ELEMENTS + 64
"""``<`` signs of one document: a start and an end tag per element, and a little for the prolog and comments."""
MAX_XML_DEPTH = 32
"""Nesting of elements: ISAPI documents nest five or six deep."""
MAX_JSON_VALUES = 8192
"""``{``, ``[`` and ``,`` signs of one JSON body (an upper bound of its objects, arrays and members):
a 256-channel working status has about 2,000."""

HEALTHY_DISK_STATES = frozenset({"ok", "idle", "sleep", "sleeping", "formating", "formatting"})
"""Disk states that still record or will shortly; anything else (error, unformatted, smartFailed…) is a fault."""
ABSENT_DISK_STATES = frozenset({"notexist", "notExist"})
"""An empty bay (hikvision_next #156): not a fault by itself."""


class IsapiParseError(ValueError):
    """The reply could not be read as the document expected (garbage, truncated, DTD, wrong root)."""


class IsapiLimitError(IsapiParseError):
    """The reply is over a parsing limit (size, elements, attributes, depth): refused before the work is done."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        """``xml_too_large``, ``xml_too_deep``, ``json_too_large`` or ``json_too_deep``: the result's reason."""


class IsapiStatusError(Exception):
    """The device answered with an ISAPI ResponseStatus instead of the document asked for."""

    def __init__(self, status: ResponseStatus) -> None:
        super().__init__(f"{status.status_code} {status.status_string} ({status.sub_status_code})")
        self.status = status


@dataclass(frozen=True, slots=True)
class ResponseStatus:
    """ISAPI `ResponseStatus` (XML or JSON): statusCode 1 is OK, 4 Invalid Operation (often notSupport)."""

    status_code: int | None
    status_string: str = ""
    sub_status_code: str = ""
    request_url: str = ""
    error_code: int | None = None

    @property
    def ok(self) -> bool:
        """StatusCode 0/1 mean success."""
        return self.status_code in (0, 1)

    @property
    def not_supported(self) -> bool:
        """The device does not offer the function (e.g. a camera asked for NVR channels)."""
        return self.sub_status_code.lower() == "notsupport" or self.status_code == 4


@dataclass(frozen=True, slots=True)
class DeviceIdentity:
    """`/ISAPI/System/deviceInfo`: what the device says it is."""

    model: str
    firmware: str
    serial: str
    device_type: str
    mac: str
    name: str = ""
    firmware_build: str = ""


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    """`/ISAPI/System/status`: uptime (seconds, when readable), device clock, CPU and memory if given."""

    uptime: int | None
    uptime_text: str = ""
    current_time: datetime | None = None
    cpu_percent: float | None = None
    memory_usage: float | None = None
    memory_available: float | None = None


@dataclass(frozen=True, slots=True)
class DeviceTime:
    """`/ISAPI/System/time`: how the clock is set and what it reads (aware datetime, or None if unreadable)."""

    time_mode: str
    local_time: datetime | None
    time_zone: str = ""

    @property
    def ntp(self) -> bool:
        """The device syncs from NTP (rather than manual or another source)."""
        return self.time_mode.lower() == "ntp"


@dataclass(frozen=True, slots=True)
class Channel:
    """One NVR IP channel from `InputProxyChannelStatus`: online, and why not (`chanDetectResult`)."""

    id: int
    online: bool
    detect_result: str = ""
    address: str = ""


@dataclass(frozen=True, slots=True)
class VideoInput:
    """One analog input of a DVR or hybrid recorder from `VideoInputChannel`.

    `resolution` is the firmware's ``resDesc``: the detected signal ("1920*1080P25") or
    ``NO VIDEO`` when the camera's signal is gone (cut cable, dead camera, no power).
    """

    id: int
    enabled: bool
    resolution: str
    name: str = ""

    @property
    def has_video(self) -> bool:
        """A signal is present (an input whose resDesc is missing is not judged: assumed present)."""
        return self.resolution.strip().upper().replace("_", " ") != "NO VIDEO"


@dataclass(frozen=True, slots=True)
class Disk:
    """One HDD or NAS from `/ISAPI/ContentMgmt/Storage` (capacity and free space in MB as sent)."""

    id: int
    status: str
    capacity_mb: int | None = None
    free_mb: int | None = None
    name: str = ""
    kind: str = "hdd"
    """``hdd`` or ``nas``."""

    @property
    def present(self) -> bool:
        """A disk sits in the bay (or the NAS is configured)."""
        return self.status not in ABSENT_DISK_STATES

    @property
    def healthy(self) -> bool:
        """The disk can record (ok/idle/sleeping/formatting)."""
        return self.status in HEALTHY_DISK_STATES


@dataclass(frozen=True, slots=True)
class RecordingSearch:
    """A `CMSearchResult`: how many recorded segments matched, and when the newest ended."""

    ok: bool
    status: str
    matches: int
    track_ids: tuple[int, ...] = ()
    latest_end: datetime | None = None
    segments: tuple[tuple[int | None, datetime], ...] = ()
    """(trackID when given, end) of every matched segment with a readable end, UTC."""


@dataclass(frozen=True, slots=True)
class ChannelWorkingStatus:
    """One entry of the JSON working status `ChanStatus`."""

    channel: int
    online: bool | None
    recording: bool | None
    record_status: int | None
    """0 recording, 1 HDD exception, 2 IPC offline, 3 other."""
    signal_lost: bool | None


@dataclass(frozen=True, slots=True)
class WorkingStatus:
    """`/ISAPI/System/workingstatus?format=json`: per-channel record/signal and per-disk state in one reply."""

    channels: tuple[ChannelWorkingStatus, ...]
    disks: tuple[tuple[int, int], ...]
    """(hdNo, status): 0 active, 1 sleep, 2 exception, 3 sleeping HDD error, 4 unformatted, 5 disconnected,
    6 formatting."""

    @property
    def faulty_disks(self) -> tuple[int, ...]:
        """Disk numbers in a state that stops recording."""
        return tuple(number for number, state in self.disks if state in (2, 3, 4, 5))


@dataclass(frozen=True, slots=True)
class UserCheck:
    """`userCheck` (a 200 from /ISAPI/Security/userCheck, or the body of a 401): lock state of our login."""

    status_value: int | None
    status_string: str = ""
    lock_status: str = ""
    unlock_time: int | None = None
    """Seconds until the lock lifts."""
    retry_login_time: int | None = None
    """Failed attempts left before a lock."""

    @property
    def locked(self) -> bool:
        """The device refuses our address until `unlock_time` has passed."""
        return self.lock_status.lower() == "lock"


@dataclass(frozen=True, slots=True)
class EventAlert:
    """One `EventNotificationAlert` from the event stream, as the device wrote it."""

    event_type: str
    """The firmware's word: videoloss, shelteralarm, diskerror, hdFull, illaccess, IO, VMD, …"""
    active: bool
    channel: int
    """channelID / dynChannelID / inputIOPortID; 0 for the device itself (a disk, a login)."""
    at: datetime | None = None
    description: str = ""


# --- XML plumbing ---------------------------------------------------------------------


class _BoundedBuilder:
    """The tree builder defusedxml's parser feeds, stopping at the first element past a limit.

    It strips namespaces as it goes (ver10/ver20/isapi.org/std-cgi/none read alike) and has no
    ``comment``/``pi`` methods, so those are never built.
    """

    __slots__ = ("_builder", "_depth", "_elements", "data")

    def __init__(self) -> None:
        self._builder = TreeBuilder()
        self._depth = 0
        self._elements = 0
        self.data = self._builder.data
        """Text goes to the builder's own method: the parser calls it with no Python frame between."""

    def start(self, tag: str, attrs: dict[str, str]) -> Element:
        self._depth += 1
        self._elements += 1
        if self._depth > MAX_XML_DEPTH:
            raise IsapiLimitError("xml_too_deep", f"XML nested deeper than {MAX_XML_DEPTH} elements")
        if self._elements > MAX_XML_ELEMENTS:
            raise IsapiLimitError("xml_too_large", f"XML of more than {MAX_XML_ELEMENTS} elements")
        return self._builder.start(tag.rpartition("}")[2], attrs)

    def end(self, tag: str) -> Element:
        self._depth -= 1
        return self._builder.end(tag)

    def close(self) -> Element:
        return self._builder.close()


def _signs(body: bytes | str, signs: str) -> int:
    """How many of these characters the body holds (a C-speed scan per sign)."""
    if isinstance(body, str):
        return sum(body.count(sign) for sign in signs)
    return sum(body.count(sign.encode()) for sign in signs)


def _measure_xml(body: bytes | str) -> None:
    """Refuse a body whose size or markup alone exceeds the limits, before any parsing."""
    if len(body) > MAX_XML_BYTES:
        raise IsapiLimitError("xml_too_large", f"XML body of {len(body)} bytes over the {MAX_XML_BYTES} limit")
    if (markup := _signs(body, "<")) > MAX_XML_MARKUP:
        raise IsapiLimitError("xml_too_large", f"XML with {markup} tags over the {MAX_XML_MARKUP} limit")
    if (attributes := _signs(body, "=")) > MAX_XML_ATTRIBUTES:
        raise IsapiLimitError("xml_too_large", f"XML with {attributes} attributes over the {MAX_XML_ATTRIBUTES} limit")


def _root(body: bytes | str) -> Element:
    """Parse safely and within the limits, namespaces stripped."""
    _measure_xml(body)
    parser = DefusedXMLParser(target=_BoundedBuilder(), forbid_dtd=True)
    try:
        parser.feed(body)
        root: Element = parser.close()
    except (ParseError, DefusedXmlException) as exc:
        raise IsapiParseError(f"not well-formed XML: {type(exc).__name__}: {_short(str(exc))}") from None
    except IsapiLimitError:
        raise
    except (ValueError, LookupError) as exc:
        # An encoding declaration on a str, one Python does not know ("TF-8") or one that is not a text
        # encoding ("hex", "zlib"): expat asks Python's codecs, whose errors are not ParseErrors.
        raise IsapiParseError(f"unreadable XML: {_short(str(exc))}") from None
    return root


def _expect(body: bytes | str, *names: str) -> Element:
    root = _root(body)
    if root.tag in names:
        return root
    if root.tag == "ResponseStatus":
        raise IsapiStatusError(_response_status_from(root))
    raise IsapiParseError(f"expected <{names[0]}>, got <{_short(root.tag)}>")


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _text(element: Element, path: str) -> str:
    return (element.findtext(path) or "").strip()


def _int(element: Element, path: str) -> int | None:
    text = _text(element, path)
    try:
        return int(text)
    except ValueError:
        return None


def _float(element: Element, path: str) -> float | None:
    text = _text(element, path)
    try:
        return float(text)
    except ValueError:
        return None


def _bool(text: str) -> bool | None:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    return None


def _datetime(text: str) -> datetime | None:
    """ISO 8601 as ISAPI writes it; naive values are returned naive for the caller to place."""
    text = text.strip()
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


# --- documents --------------------------------------------------------------------------


def _response_status_from(root: Element) -> ResponseStatus:
    return ResponseStatus(
        status_code=_int(root, "statusCode"),
        status_string=_text(root, "statusString"),
        sub_status_code=_text(root, "subStatusCode"),
        request_url=_text(root, "requestURL"),
        error_code=_int(root, "errorCode"),
    )


def parse_response_status(body: bytes | str) -> ResponseStatus:
    """An ISAPI `ResponseStatus` error body, XML or JSON (``{"statusCode":4,...}``)."""
    stripped = body.lstrip()
    if stripped[:1] in (b"{", "{"):
        document = _json(body)
        status = document.get("ResponseStatus", document) if isinstance(document, dict) else None
        if not isinstance(status, dict):
            raise IsapiParseError("JSON error body is not an object")
        return ResponseStatus(
            status_code=_as_int(status.get("statusCode")),
            status_string=str(status.get("statusString", "")),
            sub_status_code=str(status.get("subStatusCode", "")),
            request_url=str(status.get("requestURL", "")),
            error_code=_as_int(status.get("errorCode")),
        )
    root = _root(body)
    if root.tag != "ResponseStatus":
        raise IsapiParseError(f"expected <ResponseStatus>, got <{_short(root.tag)}>")
    return _response_status_from(root)


def parse_device_info(body: bytes | str) -> DeviceIdentity:
    """`/ISAPI/System/deviceInfo` → model, firmware, serial, deviceType, MAC."""
    root = _expect(body, "DeviceInfo")
    model = _text(root, "model")
    if not model:
        raise IsapiParseError("DeviceInfo without <model>")
    return DeviceIdentity(
        model=model,
        firmware=_text(root, "firmwareVersion"),
        serial=_text(root, "serialNumber"),
        device_type=_text(root, "deviceType"),
        mac=_text(root, "macAddress").lower(),
        name=_text(root, "deviceName"),
        firmware_build=_text(root, "firmwareReleasedDate"),
    )


_UPTIME_UNITS = {
    "天": 86400, "日": 86400, "d": 86400, "day": 86400, "days": 86400,
    "时": 3600, "小时": 3600, "h": 3600, "hr": 3600, "hour": 3600, "hours": 3600,
    "分": 60, "分钟": 60, "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "秒": 1, "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
}  # fmt: skip
_UPTIME_PART = re.compile(r"(\d+)\s*([^\d\s,.:]+)")
_UPTIME_CLOCK = re.compile(r"(?:(\d+)\s*[^\d\s]*[\s,]+)?(\d+):(\d{2}):(\d{2})$")


def parse_uptime(text: str) -> int | None:
    """Seconds of uptime from `deviceUpTime`: "173358", "87天0时55分59秒", "3 days 4 hours…", "2 days, 01:02:03"."""
    text = text.strip()
    if not text:
        return None
    if text.isdigit():
        return int(text)
    clock = _UPTIME_CLOCK.search(text)
    if clock:
        days, hours, minutes, seconds = clock.groups()
        return int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + int(seconds)
    total, found = 0, False
    for number, unit in _UPTIME_PART.findall(text):
        factor = _UPTIME_UNITS.get(unit.lower())
        if factor is None:
            return None  # an unknown unit would make the sum meaningless
        total += int(number) * factor
        found = True
    return total if found else None


def parse_device_status(body: bytes | str) -> DeviceStatus:
    """`/ISAPI/System/status` → uptime in seconds (also from localized strings), clock, CPU, memory."""
    root = _expect(body, "DeviceStatus")
    uptime_text = _text(root, "deviceUpTime")
    return DeviceStatus(
        uptime=parse_uptime(uptime_text),
        uptime_text=uptime_text,
        current_time=_datetime(_text(root, "currentDeviceTime")),
        cpu_percent=_float(root, "CPUList/CPU/cpuUtilization"),
        memory_usage=_float(root, "MemoryList/Memory/memoryUsage"),
        memory_available=_float(root, "MemoryList/Memory/memoryAvailable"),
    )


def rebooted(previous_uptime: int | None, previous_at: float | None, uptime: int | None, at: float) -> bool:
    """Did the device restart between two status reads? Uptime grew less than the time that passed.

    A two-second slack absorbs request latency and uptime rounding; unknown values never claim a reboot.
    """
    if previous_uptime is None or previous_at is None or uptime is None:
        return False
    return uptime + 2 < previous_uptime + (at - previous_at)


_POSIX_TZ = re.compile(r"^[A-Za-z<>+\-0-9]*?[A-Za-z>]([+-]?)(\d{1,2})(?::(\d{1,2}))?(?::(\d{1,2}))?")


def parse_posix_offset(zone: str) -> timedelta | None:
    """UTC offset of a POSIX TZ string as Hikvision sends it: "CST-8:00:00" is UTC+8 (the sign is inverted)."""
    match = _POSIX_TZ.match(zone.strip())
    if not match:
        return None
    sign, hours, minutes, seconds = match.groups()
    offset = timedelta(hours=int(hours), minutes=int(minutes or 0), seconds=int(seconds or 0))
    return offset if sign == "-" else -offset


def parse_device_time(body: bytes | str) -> DeviceTime:
    """`/ISAPI/System/time` → timeMode and localTime as an aware datetime (offset from timeZone if absent)."""
    root = _expect(body, "Time")
    zone = _text(root, "timeZone")
    local = _datetime(_text(root, "localTime"))
    if local is not None and local.tzinfo is None:
        offset = parse_posix_offset(zone)
        local = local.replace(tzinfo=timezone(offset)) if offset is not None else None
    return DeviceTime(time_mode=_text(root, "timeMode"), local_time=local, time_zone=zone)


def clock_drift(device_time: datetime | None, server_time: float) -> float | None:
    """Seconds the device clock runs ahead of `server_time` (epoch seconds); negative when behind."""
    if device_time is None or device_time.tzinfo is None:
        return None
    return device_time.timestamp() - server_time


def parse_channels(body: bytes | str) -> tuple[Channel, ...]:
    """`/ISAPI/ContentMgmt/InputProxy/channels/status` (list) or `…/channels/<id>/status` (one)."""
    root = _expect(body, "InputProxyChannelStatusList", "InputProxyChannelStatus")
    entries = [root] if root.tag == "InputProxyChannelStatus" else root.findall("InputProxyChannelStatus")
    channels = []
    for entry in entries:
        number = _int(entry, "id")
        online = _bool(_text(entry, "online"))
        if number is None or online is None:
            raise IsapiParseError("InputProxyChannelStatus without a numeric <id> and boolean <online>")
        channels.append(
            Channel(
                id=number,
                online=online,
                detect_result=_text(entry, "chanDetectResult"),
                address=_text(entry, "sourceInputPortDescriptor/ipAddress"),
            )
        )
    return tuple(channels)


def parse_video_inputs(body: bytes | str) -> tuple[VideoInput, ...]:
    """`/ISAPI/System/Video/inputs/channels` (`VideoInputChannelList`): a DVR's analog inputs.

    An IP camera answers the same path with its one sensor (``resDesc`` absent or a
    resolution), an NVR without analog inputs an empty list or ``notSupport``.
    """
    root = _expect(body, "VideoInputChannelList", "VideoInputChannel")
    entries = [root] if root.tag == "VideoInputChannel" else root.findall("VideoInputChannel")
    inputs = []
    for entry in entries:
        number = _int(entry, "id")
        if number is None:
            raise IsapiParseError("VideoInputChannel without a numeric <id>")
        enabled = _bool(_text(entry, "videoInputEnabled"))
        inputs.append(
            VideoInput(
                id=number,
                enabled=enabled is not False,
                resolution=_text(entry, "resDesc"),
                name=_text(entry, "name"),
            )
        )
    return tuple(inputs)


def parse_storage(body: bytes | str) -> tuple[Disk, ...]:
    """`/ISAPI/ContentMgmt/Storage` (`storage` with hddList and nasList) or `…/Storage/hdd` (bare `hddList`)."""
    root = _expect(body, "storage", "hddList")
    disks = []
    for kind, path in (("hdd", ".//hdd"), ("nas", ".//nas")):
        for entry in root.iterfind(path):
            number = _int(entry, "id")
            status = _text(entry, "status")
            if number is None or not status:
                raise IsapiParseError(f"<{kind}> without a numeric <id> and a <status>")
            disks.append(
                Disk(
                    id=number,
                    status=status,
                    capacity_mb=_int(entry, "capacity"),
                    free_mb=_int(entry, "freeSpace"),
                    name=_text(entry, "hddName") or _text(entry, "path"),
                    kind=kind,
                )
            )
    return tuple(disks)


def search_request(track_id: int, start: datetime, end: datetime, *, search_id: str, max_results: int = 1) -> bytes:
    """A `CMSearchDescription` asking for recorded video on one track in [start, end] (UTC).

    One result is enough to prove recording, and keeps the reply small.
    """
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<CMSearchDescription version="1.0" xmlns="http://www.hikvision.com/ver20/XMLSchema">'
        f"<searchID>{search_id}</searchID><trackIDList><trackID>{track_id}</trackID></trackIDList>"
        f"<timeSpanList><timeSpan><startTime>{start.astimezone(UTC).strftime(fmt)}</startTime>"
        f"<endTime>{end.astimezone(UTC).strftime(fmt)}</endTime></timeSpan></timeSpanList>"
        f"<maxResults>{max_results}</maxResults><searchResultPosition>0</searchResultPosition>"
        "<metadataList><metadataDescriptor>//recordType.meta.std-cgi.com</metadataDescriptor></metadataList>"
        "</CMSearchDescription>"
    ).encode()


def parse_search_result(body: bytes | str) -> RecordingSearch:
    """`POST /ISAPI/ContentMgmt/search` reply → number of recorded segments and the newest segment end."""
    root = _expect(body, "CMSearchResult")
    ok = _bool(_text(root, "responseStatus"))
    status = _text(root, "responseStatusStrg")
    items = root.findall("matchList/searchMatchItem")
    matches = _int(root, "numOfMatches")
    if matches is None:
        matches = len(items)
    segments = tuple(
        (_int(item, "trackID"), end if end.tzinfo else end.replace(tzinfo=UTC))
        for item in items
        if (end := _datetime(_text(item, "timeSpan/endTime"))) is not None
    )
    tracks = sorted({track for item in items if (track := _int(item, "trackID")) is not None})
    aware_ends = [end for _, end in segments]
    return RecordingSearch(
        ok=bool(ok) or status.upper() in ("OK", "MORE", "NO MATCHES"),
        status=status,
        matches=matches,
        track_ids=tuple(tracks),
        latest_end=max(aware_ends, default=None),
        segments=segments,
    )


def parse_user_check(body: bytes | str) -> UserCheck:
    """A `userCheck` document: statusValue, lockStatus, unlockTime (s) and retryLoginTime (attempts left)."""
    root = _expect(body, "userCheck", "UserCheck")
    return UserCheck(
        status_value=_int(root, "statusValue"),
        status_string=_text(root, "statusString"),
        lock_status=_text(root, "lockStatus"),
        unlock_time=_int(root, "unlockTime"),
        retry_login_time=_int(root, "retryLoginTime"),
    )


_ALERT_FIELD = re.compile(
    rb"<(?:\w+:)?(eventType|eventState|channelID|dynChannelID|inputIOPortID|dateTime|eventDescription)>"
    rb"([^<]{0,200})</"
)
_ALERT_CHANNELS = ("channelID", "dynChannelID", "inputIOPortID")


def parse_event_alert(body: bytes | str) -> EventAlert:
    """An `EventNotificationAlert` part of `/ISAPI/Event/notification/alertStream`, XML or JSON."""
    text = body.lstrip() if isinstance(body, bytes) else body.lstrip().encode("utf-8", "replace")
    if text.startswith(b"{"):
        document = _json(text)
        alert = _find_key(document, "EventNotificationAlert")
        fields = alert if isinstance(alert, dict) else document
        if not isinstance(fields, dict):
            raise IsapiParseError("JSON event without an object")
        event_type = str(fields.get("eventType", "")).strip()
        state = str(fields.get("eventState", "")).strip().lower()
        channel = next(
            (
                n
                for key in ("channelID", "dynChannelID", "inputIOPortID")
                if (n := _as_int(fields.get(key))) is not None
            ),
            0,
        )
        when = _datetime(str(fields.get("dateTime", "")))
        description = str(fields.get("eventDescription", ""))
    else:
        # Every 10 s from every device: the few flat fields are read by pattern, not by building a tree
        # (several times cheaper, and nothing like a DTD or an entity is ever interpreted).
        if b"EventNotificationAlert" not in text[:512]:
            raise IsapiParseError("not an EventNotificationAlert")
        fields = {m.group(1).decode(): m.group(2) for m in _ALERT_FIELD.finditer(text)}
        event_type = fields.get("eventType", b"").decode("utf-8", "replace").strip()
        state = fields.get("eventState", b"").decode("ascii", "replace").strip().lower()
        channel = next((int(n) for key in _ALERT_CHANNELS if (n := fields.get(key, b"").strip()).isdigit()), 0)
        when = _datetime(fields.get("dateTime", b"").decode("ascii", "replace"))
        description = fields.get("eventDescription", b"").decode("utf-8", "replace").strip()
    if not event_type or state not in ("active", "inactive"):
        raise IsapiParseError("event without an eventType and an eventState of active/inactive")
    return EventAlert(_short(event_type, 40), state == "active", channel, when, _short(description))


# --- JSON ---------------------------------------------------------------------------------


def _json(body: bytes | str) -> Any:
    """Parse within the limits: size and values counted first; nesting is bounded by json's recursion guard."""
    if len(body) > MAX_XML_BYTES:
        raise IsapiLimitError("json_too_large", f"JSON body of {len(body)} bytes over the {MAX_XML_BYTES} limit")
    if (values := _signs(body, "{[,")) > MAX_JSON_VALUES:
        raise IsapiLimitError("json_too_large", f"JSON with {values} values over the {MAX_JSON_VALUES} limit")
    try:
        return json.loads(body)
    except RecursionError:
        raise IsapiLimitError("json_too_deep", "JSON nested too deep to read") from None
    except ValueError as exc:
        raise IsapiParseError(f"not JSON: {_short(str(exc))}") from None


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _find_key(document: Any, key: str, depth: int = 0) -> Any:
    """The first value under `key` at any depth: the wrapper object differs by firmware."""
    if depth > 8:
        return None
    if isinstance(document, dict):
        if key in document:
            return document[key]
        for value in document.values():
            if (found := _find_key(value, key, depth + 1)) is not None:
                return found
    elif isinstance(document, list):
        for value in document:
            if (found := _find_key(value, key, depth + 1)) is not None:
                return found
    return None


def _flag(value: Any) -> bool | None:
    number = _as_int(value)
    return None if number is None else number != 0


def parse_working_status(body: bytes | str) -> WorkingStatus:
    """`/ISAPI/System/workingstatus?format=json` → per-channel online/record/signal and per-disk state."""
    document = _json(body)
    if isinstance(document, dict) and "statusCode" in document and "ChanStatus" not in document:
        raise IsapiStatusError(parse_response_status(body))
    channel_entries = _find_key(document, "ChanStatus")
    disk_entries = _find_key(document, "HDStatus") or []
    if not isinstance(channel_entries, list) or not isinstance(disk_entries, list):
        raise IsapiParseError("working status without a ChanStatus list")
    channels = []
    for entry in channel_entries:
        number = _as_int(entry.get("chanNo")) if isinstance(entry, dict) else None
        if number is None:
            raise IsapiParseError("ChanStatus entry without chanNo")
        channels.append(
            ChannelWorkingStatus(
                channel=number,
                online=_flag(entry.get("online")),
                recording=_flag(entry.get("record")),
                record_status=_as_int(entry.get("recordStatus")),
                signal_lost=_flag(entry.get("signal")),
            )
        )
    disks = []
    for entry in disk_entries:
        number = _as_int(entry.get("hdNo")) if isinstance(entry, dict) else None
        state = _as_int(entry.get("status")) if isinstance(entry, dict) else None
        if number is None or state is None:
            raise IsapiParseError("HDStatus entry without hdNo and status")
        disks.append((number, state))
    return WorkingStatus(channels=tuple(channels), disks=tuple(disks))


# --- AX PRO (SecurityCP) ----------------------------------------------------------------------
# Session login and status shapes follow third-party clients (hikaxpro, node-red-contrib-hikvision-ultimate)
# as summarised in the reference; the password hashing below is unverified against a real panel.


@dataclass(frozen=True, slots=True)
class SessionLoginCap:
    """`/ISAPI/Security/sessionLogin/capabilities`: what the panel wants hashed for a session login."""

    session_id: str
    challenge: str
    iterations: int
    irreversible: bool
    salt: str = ""
    salt2: str = ""
    session_id_version: str = ""


@dataclass(frozen=True, slots=True)
class AxProZone:
    """One alarm zone from `/ISAPI/SecurityCP/status/zones?format=json`."""

    id: int
    name: str
    status: str
    """online, trigger, offline, breakDown, heartbeatAbnormal, notRelated."""
    tamper: bool = False
    bypassed: bool = False
    alarm: bool = False
    armed: bool = False

    @property
    def faulty(self) -> bool:
        """The detector cannot report: offline, broken, or missing heartbeats."""
        return self.status in ("offline", "breakDown", "heartbeatAbnormal")


@dataclass(frozen=True, slots=True)
class AxProSubsystem:
    """One area from `/ISAPI/SecurityCP/status/subSystems?format=json`."""

    id: int
    name: str
    arming: str
    """away, stay, vacation, disarm, arming."""
    alarm: bool = False
    enabled: bool = True


def parse_session_login_cap(body: bytes | str) -> SessionLoginCap:
    """`SessionLoginCap` → the session id, challenge, iterations and salts for `session_login_password`."""
    root = _expect(body, "SessionLoginCap")
    session_id, challenge, iterations = _text(root, "sessionID"), _text(root, "challenge"), _int(root, "iterations")
    if not session_id or not challenge or iterations is None or iterations < 1:
        raise IsapiParseError("SessionLoginCap without sessionID, challenge and iterations")
    return SessionLoginCap(
        session_id=session_id,
        challenge=challenge,
        iterations=iterations,
        irreversible=_bool(_text(root, "isIrreversible")) is True,
        salt=_text(root, "salt"),
        salt2=_text(root, "salt2"),
        session_id_version=_text(root, "sessionIDVersion"),
    )


def session_login_password(cap: SessionLoginCap, username: str, password: str) -> str:
    """The iterated SHA-256 the panel expects in `SessionLogin/password` (per third-party clients; unverified)."""

    def sha256(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()

    if cap.irreversible:
        result = sha256(f"{username}{cap.salt}{password}")
        result = sha256(f"{username}{cap.salt2}{result}")
        result = sha256(f"{result}{cap.challenge}")
        for _ in range(2, cap.iterations):
            result = sha256(result)
        return result
    result = sha256(password) + cap.challenge
    for _ in range(1, cap.iterations):
        result = sha256(result)
    return result


def session_login_request(cap: SessionLoginCap, username: str, password: str) -> bytes:
    """The `SessionLogin` body answering `cap`."""
    return (
        f"<SessionLogin><userName>{_escape(username)}</userName>"
        f"<password>{session_login_password(cap, username, password)}</password>"
        f"<sessionID>{_escape(cap.session_id)}</sessionID><isSessionIDValidLongTerm>false</isSessionIDValidLongTerm>"
        f"<sessionIDVersion>{_escape(cap.session_id_version)}</sessionIDVersion></SessionLogin>"
    ).encode()


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _entries(document: Any, list_key: str, item_key: str) -> list[dict[str, Any]]:
    entries = _find_key(document, list_key)
    if not isinstance(entries, list):
        raise IsapiParseError(f"no {list_key} list")
    items = [entry.get(item_key, entry) if isinstance(entry, dict) else None for entry in entries]
    if not all(isinstance(item, dict) for item in items):
        raise IsapiParseError(f"{list_key} entries are not objects")
    return [item for item in items if isinstance(item, dict)]


def parse_axpro_zones(body: bytes | str) -> tuple[AxProZone, ...]:
    """`{"ZoneList":[{"Zone":{id,name,status,tamperEvident,bypassed,alarm,armed,…}}]}` → zones."""
    zones = []
    for zone in _entries(_json(body), "ZoneList", "Zone"):
        number = _as_int(zone.get("id"))
        if number is None:
            raise IsapiParseError("zone without id")
        zones.append(
            AxProZone(
                id=number,
                name=str(zone.get("name", "")),
                status=str(zone.get("status", "")),
                tamper=zone.get("tamperEvident") is True,
                bypassed=zone.get("bypassed") is True,
                alarm=zone.get("alarm") is True,
                armed=zone.get("armed") is True,
            )
        )
    return tuple(zones)


def parse_axpro_subsystems(body: bytes | str) -> tuple[AxProSubsystem, ...]:
    """`{"SubSysList":[{"SubSys":{id,arming,alarm,enabled,name}}]}` → areas."""
    areas = []
    for area in _entries(_json(body), "SubSysList", "SubSys"):
        number = _as_int(area.get("id"))
        if number is None:
            raise IsapiParseError("subsystem without id")
        areas.append(
            AxProSubsystem(
                id=number,
                name=str(area.get("name", "")),
                arming=str(area.get("arming", "")),
                alarm=area.get("alarm") is True,
                enabled=area.get("enabled") is not False,
            )
        )
    return tuple(areas)

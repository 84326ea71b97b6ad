"""Pure ISAPI parsing: every document, every namespace variant, and hostile or broken input."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from telemetryd.probes.isapi import xml

NAMESPACES = [
    ' xmlns="http://www.hikvision.com/ver20/XMLSchema"',
    ' xmlns="http://www.hikvision.com/ver10/XMLSchema"',
    ' xmlns="http://www.isapi.org/ver20/XMLSchema"',
    ' xmlns="http://www.std-cgi.com/ver10/XMLSchema"',
    ' xmlns="http://www.std-cgi.com/ver20/XMLSchema"',
    "",
]

DEVICE_INFO = """<?xml version="1.0" encoding="UTF-8"?>
<DeviceInfo version="2.0"{ns}>
<deviceName>yard</deviceName><deviceID>6aff4000-1f90-00b0-0000-000c00000000</deviceID>
<model>DS-2CD2386G2-IU</model><serialNumber>DS-2CD2386G2-IU00000000AAWRJ00000000</serialNumber>
<macAddress>14:92:3C:4F:F8:42</macAddress><firmwareVersion>V5.7.14</firmwareVersion>
<firmwareReleasedDate>build 231028</firmwareReleasedDate><deviceType>IPCamera</deviceType></DeviceInfo>"""

STATUS = """<DeviceStatus version="1.0"{ns}>
<currentDeviceTime>2026-09-27T08:37:11+08:00</currentDeviceTime><deviceUpTime>173358</deviceUpTime>
<CPUList><CPU><cpuUtilization>17</cpuUtilization></CPU></CPUList>
<MemoryList><Memory><memoryDescription>DDR Memory</memoryDescription>
<memoryUsage>
387.093750</memoryUsage><memoryAvailable>
562.992188</memoryAvailable></Memory></MemoryList></DeviceStatus>"""

TIME = """<Time version="2.0"{ns}>
<timeMode>manual</timeMode><localTime>2026-10-04T04:01:27+08:00</localTime><timeZone>CST-8:00:00</timeZone></Time>"""

CHANNELS = """<InputProxyChannelStatusList version="1.0"{ns}>
<InputProxyChannelStatus><id>1</id><sourceInputPortDescriptor><ipAddress>10.1.1.11</ipAddress>
</sourceInputPortDescriptor><online>true</online><chanDetectResult>connect</chanDetectResult></InputProxyChannelStatus>
<InputProxyChannelStatus><id>2</id><online>false</online><chanDetectResult>netUnreachable</chanDetectResult>
</InputProxyChannelStatus>
<InputProxyChannelStatus><id>3</id><online>false</online><chanDetectResult>errorUserNameOrPasswd</chanDetectResult>
</InputProxyChannelStatus></InputProxyChannelStatusList>"""

STORAGE = """<storage version="2.0"{ns}>
<hddList version="1.0" xmlns="http://www.hikvision.com/ver10/XMLSchema" size="8"><hdd><id>1</id>
<hddName>hdde</hddName><hddPath></hddPath><hddType>SATA</hddType><status>ok</status>
<capacity>30436</capacity><freeSpace>27392</freeSpace><property>RW</property></hdd>
<hdd><id>2</id><hddName>hddf</hddName><status>error</status><capacity>30436</capacity><freeSpace>0</freeSpace></hdd>
<hdd><id>3</id><status>notexist</status></hdd></hddList>
<nasList version="1.0" size="8"><nas><id>9</id><path>/nas</path><status>offline</status></nas></nasList>
<workMode>quota</workMode></storage>"""

SEARCH = """<CMSearchResult version="2.0"{ns}><searchID>{{C}}</searchID><responseStatus>true</responseStatus>
<responseStatusStrg>OK</responseStatusStrg><numOfMatches>2</numOfMatches><matchList>
<searchMatchItem><sourceID>x</sourceID><trackID>101</trackID><timeSpan><startTime>2026-09-27T00:12:02Z</startTime>
<endTime>2026-09-27T00:29:38Z</endTime></timeSpan></searchMatchItem>
<searchMatchItem><trackID>101</trackID><timeSpan><startTime>2026-09-27T00:29:38Z</startTime>
<endTime>2026-09-27T00:45:00Z</endTime></timeSpan></searchMatchItem></matchList></CMSearchResult>"""

RESPONSE_STATUS = """<ResponseStatus version="1.0"{ns}>
<requestURL>/ISAPI/Streaming/channels/101/picture</requestURL><statusCode>6</statusCode>
<statusString>Invalid XML Content</statusString><subStatusCode>badXmlContent</subStatusCode></ResponseStatus>"""

LOCKED = """<userCheck{ns}><statusValue>401</statusValue><statusString>Unauthorized</statusString>
<lockStatus>lock</lockStatus><unlockTime>210</unlockTime><retryLoginTime>0</retryLoginTime></userCheck>"""

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<DeviceInfo><model>&lol3;</model></DeviceInfo>"""

EXTERNAL_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]><DeviceInfo><model>&x;</model></DeviceInfo>"""


@pytest.mark.parametrize("ns", NAMESPACES)
def test_device_info_reads_identity_in_every_namespace(ns: str) -> None:
    """deviceInfo gives model, firmware, serial, type and a lower-cased MAC whatever the namespace."""
    info = xml.parse_device_info(DEVICE_INFO.format(ns=ns).encode())
    assert info == xml.DeviceIdentity(
        model="DS-2CD2386G2-IU",
        firmware="V5.7.14",
        serial="DS-2CD2386G2-IU00000000AAWRJ00000000",
        device_type="IPCamera",
        mac="14:92:3c:4f:f8:42",
        name="yard",
        firmware_build="build 231028",
    )


@pytest.mark.parametrize("ns", NAMESPACES)
def test_status_reads_uptime_clock_and_memory(ns: str) -> None:
    """System/status gives uptime seconds, the device clock and memory despite newlines inside values."""
    status = xml.parse_device_status(STATUS.format(ns=ns))
    assert status.uptime == 173358
    assert status.current_time == datetime(2026, 9, 27, 0, 37, 11, tzinfo=UTC)
    assert status.cpu_percent == 17
    assert status.memory_usage == pytest.approx(387.09375)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("173358", 173358),
        ("87天0时55分59秒", 87 * 86400 + 55 * 60 + 59),
        ("3天2小时1分钟", 3 * 86400 + 7200 + 60),
        ("3 days 4 hours 5 minutes 6 seconds", 3 * 86400 + 4 * 3600 + 5 * 60 + 6),
        ("2 days, 01:02:03", 2 * 86400 + 3723),
        ("01:02:03", 3723),
        ("", None),
        ("a long time", None),
        ("5 fortnights", None),
    ],
)
def test_uptime_formats(text: str, seconds: int | None) -> None:
    """Uptime is read from plain seconds, Chinese and English unit strings and clock notation, else None."""
    assert xml.parse_uptime(text) == seconds


def test_status_with_localized_uptime_keeps_the_text() -> None:
    """A localized deviceUpTime is converted and the original text kept for the status page."""
    body = "<DeviceStatus><deviceUpTime>87天0时55分59秒</deviceUpTime></DeviceStatus>"
    status = xml.parse_device_status(body)
    assert (status.uptime, status.uptime_text) == (7520159, "87天0时55分59秒")


def test_reboot_detection() -> None:
    """A reboot is uptime growing less than wall time; steady growth or unknowns are not reboots."""
    assert xml.rebooted(1000, 0.0, 30, 60.0)
    assert not xml.rebooted(1000, 0.0, 1060, 60.0)
    assert not xml.rebooted(1000, 0.0, 1059, 60.0)  # rounding slack
    assert not xml.rebooted(None, None, 30, 60.0)
    assert not xml.rebooted(1000, 0.0, None, 60.0)


@pytest.mark.parametrize("ns", NAMESPACES)
def test_time_reads_mode_and_aware_local_time(ns: str) -> None:
    """System/time gives the mode and an aware datetime; drift is measured against our epoch time."""
    device_time = xml.parse_device_time(TIME.format(ns=ns))
    assert device_time.time_mode == "manual" and not device_time.ntp
    assert device_time.local_time == datetime(2026, 10, 3, 20, 1, 27, tzinfo=UTC)
    server = datetime(2026, 10, 3, 20, 0, 0, tzinfo=UTC).timestamp()
    assert xml.clock_drift(device_time.local_time, server) == pytest.approx(87)


def test_naive_local_time_takes_the_posix_zone() -> None:
    """A localTime without offset is placed with timeZone, whose POSIX sign is inverted (CST-8 is UTC+8)."""
    body = (
        "<Time><timeMode>NTP</timeMode><localTime>2026-10-04T04:01:27</localTime>"
        "<timeZone>CST-8:00:00</timeZone></Time>"
    )
    device_time = xml.parse_device_time(body)
    assert device_time.ntp
    assert device_time.local_time == datetime(2026, 10, 3, 20, 1, 27, tzinfo=UTC)


@pytest.mark.parametrize(
    ("zone", "hours"),
    [("CST-8:00:00", 8), ("CET-1", 1), ("EST5EDT", -5), ("GMT+0", 0), ("IST-5:30:00", 5.5), ("garbage", None)],
)
def test_posix_offsets(zone: str, hours: float | None) -> None:
    """POSIX zone strings become UTC offsets with the sign flipped; unreadable ones give None."""
    offset = xml.parse_posix_offset(zone)
    assert offset == (None if hours is None else timedelta(hours=hours))


def test_unsynced_clock_shows_as_huge_drift_and_unknown_time_as_none() -> None:
    """A 2004 clock is decades of drift; an unreadable localTime gives no drift rather than a wrong one."""
    old = xml.parse_device_time("<Time><timeMode>manual</timeMode><localTime>2004-01-01T00:00:00Z</localTime></Time>")
    assert xml.clock_drift(old.local_time, datetime(2026, 1, 1, tzinfo=UTC).timestamp()) < -20 * 365 * 86400
    bad = xml.parse_device_time("<Time><timeMode>manual</timeMode><localTime>yesterday</localTime></Time>")
    assert bad.local_time is None and xml.clock_drift(bad.local_time, 0.0) is None


@pytest.mark.parametrize("ns", NAMESPACES)
def test_channels_online_and_offline_with_reasons(ns: str) -> None:
    """NVR channel status gives each channel's online flag, chanDetectResult and camera address."""
    channels = xml.parse_channels(CHANNELS.format(ns=ns))
    assert channels == (
        xml.Channel(1, True, "connect", "10.1.1.11"),
        xml.Channel(2, False, "netUnreachable"),
        xml.Channel(3, False, "errorUserNameOrPasswd"),
    )


def test_single_channel_status_document() -> None:
    """The per-channel endpoint's single InputProxyChannelStatus (as captured from a DS-7708N-I4) parses too."""
    body = (
        '<InputProxyChannelStatus version="1.0" xmlns="http://www.hikvision.com/ver20/XMLSchema">'
        "<id>1</id><online>true</online><chanDetectResult>connect</chanDetectResult></InputProxyChannelStatus>"
    )
    assert xml.parse_channels(body) == (xml.Channel(1, True, "connect"),)


def test_channel_without_online_flag_is_a_parse_error() -> None:
    """A channel entry missing <online> is refused rather than guessed."""
    with pytest.raises(xml.IsapiParseError):
        xml.parse_channels(
            "<InputProxyChannelStatusList><InputProxyChannelStatus><id>1</id>"
            "</InputProxyChannelStatus></InputProxyChannelStatusList>"
        )


@pytest.mark.parametrize("ns", NAMESPACES)
def test_storage_disks_with_mixed_namespaces(ns: str) -> None:
    """Storage lists HDDs (ver10 inside a ver20 parent) and NAS with status, capacity and free MB."""
    disks = xml.parse_storage(STORAGE.format(ns=ns))
    assert [(d.kind, d.id, d.status, d.capacity_mb, d.free_mb) for d in disks] == [
        ("hdd", 1, "ok", 30436, 27392),
        ("hdd", 2, "error", 30436, 0),
        ("hdd", 3, "notexist", None, None),
        ("nas", 9, "offline", None, None),
    ]
    assert [(d.present, d.healthy) for d in disks] == [(True, True), (True, False), (False, False), (True, False)]


def test_bare_hdd_list_and_empty_camera_card_slot() -> None:
    """/Storage/hdd's bare hddList parses; a camera without a card gives no disks."""
    bare = '<hddList version="1.0"><hdd version="1.0"><id>1</id><status>unformatted</status></hdd></hddList>'
    (disk,) = xml.parse_storage(bare)
    assert disk.status == "unformatted" and not disk.healthy
    assert xml.parse_storage("<storage><hddList/></storage>") == ()


@pytest.mark.parametrize("ns", NAMESPACES)
def test_search_result_counts_recordings(ns: str) -> None:
    """A CMSearchResult gives the match count, tracks and the newest segment end."""
    result = xml.parse_search_result(SEARCH.format(ns=ns))
    assert result.ok and result.matches == 2 and result.track_ids == (101,)
    assert result.latest_end == datetime(2026, 9, 27, 0, 45, tzinfo=UTC)


def test_search_without_matches() -> None:
    """NO MATCHES is a successful search that found nothing."""
    body = (
        "<CMSearchResult><responseStatus>true</responseStatus><responseStatusStrg>NO MATCHES</responseStatusStrg>"
        "<numOfMatches>0</numOfMatches><matchList/></CMSearchResult>"
    )
    result = xml.parse_search_result(body)
    assert (result.ok, result.matches, result.latest_end) == (True, 0, None)


def test_search_request_names_track_and_utc_window() -> None:
    """The search request asks one track over the UTC window and parses back as XML."""
    start = datetime(2026, 1, 1, 8, 0, tzinfo=UTC)
    body = xml.search_request(201, start, start + timedelta(hours=1), search_id="ABC")
    text = body.decode()
    assert "<trackID>201</trackID>" in text
    assert "<startTime>2026-01-01T08:00:00Z</startTime><endTime>2026-01-01T09:00:00Z</endTime>" in text
    assert "<maxResults>1</maxResults>" in text


def test_working_status_json() -> None:
    """The JSON working status gives per-channel record/signal and the faulty disks."""
    body = (
        '{"WorkingStatus":{"ChanStatus":[{"chanNo":1,"online":1,"record":1,"recordStatus":0,"signal":0},'
        '{"chanNo":2,"online":1,"record":0,"recordStatus":3,"signal":1}],'
        '"HDStatus":[{"hdNo":1,"status":0},{"hdNo":2,"status":4}]}}'
    )
    status = xml.parse_working_status(body)
    assert status.channels[1] == xml.ChannelWorkingStatus(2, True, False, 3, True)
    assert status.faulty_disks == (2,)


def test_working_status_not_supported_is_a_status_error() -> None:
    """A JSON notSupport reply to the working status raises the ResponseStatus, not a parse error."""
    body = '{"statusCode":4,"statusString":"Invalid Operation","subStatusCode":"notSupport","errorCode":1073741825}'
    with pytest.raises(xml.IsapiStatusError) as caught:
        xml.parse_working_status(body)
    assert caught.value.status.not_supported and caught.value.status.error_code == 1073741825


@pytest.mark.parametrize("body", ["not json", '{"ChanStatus": 5}', '{"ChanStatus": [{"online": 1}]}', "[" * 100000])
def test_bad_working_status_is_a_parse_error(body: str) -> None:
    """Garbage, wrong shapes and absurd nesting are parse errors, never crashes."""
    with pytest.raises(xml.IsapiParseError):
        xml.parse_working_status(body)


@pytest.mark.parametrize("ns", NAMESPACES)
def test_response_status_xml(ns: str) -> None:
    """ResponseStatus error bodies give code, string and sub-code."""
    status = xml.parse_response_status(RESPONSE_STATUS.format(ns=ns))
    assert (status.status_code, status.status_string, status.sub_status_code) == (
        6,
        "Invalid XML Content",
        "badXmlContent",
    )
    assert not status.ok and not status.not_supported


def test_response_status_where_a_document_was_expected() -> None:
    """A camera answering the NVR channel endpoint with notSupport raises IsapiStatusError."""
    body = (
        '<ResponseStatus version="1.0" xmlns="http://www.isapi.org/ver20/XMLSchema"><statusCode>4</statusCode>'
        "<statusString>Invalid Operation</statusString><subStatusCode>notSupport</subStatusCode></ResponseStatus>"
    )
    with pytest.raises(xml.IsapiStatusError) as caught:
        xml.parse_channels(body)
    assert caught.value.status.not_supported


@pytest.mark.parametrize("ns", NAMESPACES)
def test_user_check_lock(ns: str) -> None:
    """A userCheck lock body gives the lock, seconds to unlock and attempts left."""
    check = xml.parse_user_check(LOCKED.format(ns=ns))
    assert check.locked and check.unlock_time == 210 and check.retry_login_time == 0


def test_user_check_pre_lock() -> None:
    """Before a lock userCheck says unlock with the attempts left."""
    body = (
        '<userCheck version="2.0" xmlns="http://www.isapi.org/ver20/XMLSchema"><statusValue>401</statusValue>'
        "<statusString>Unauthorized</statusString><isActivated>true</isActivated><lockStatus>unlock</lockStatus>"
        "<unlockTime>0</unlockTime><retryLoginTime>4</retryLoginTime></userCheck>"
    )
    check = xml.parse_user_check(body)
    assert not check.locked and check.retry_login_time == 4


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\x00\xff<<not xml>>",
        b"<html><body>Access Error: 404 -- Not Found</body></html>",
        b'<?xml version="1.0"?><DeviceInfo><model>DS-2CD',
        BILLION_LAUGHS.encode(),
        EXTERNAL_ENTITY.encode(),
        b"<DeviceInfo><deviceName>no model</deviceName></DeviceInfo>",
        "<?xml version='1.0' encoding='UTF-8'?><DeviceInfo/>",
    ],
    ids=["empty", "garbage", "html", "truncated", "billion-laughs", "external-entity", "no-model", "str-with-decl"],
)
def test_bad_device_info_is_a_parse_error(body: bytes | str) -> None:
    """Garbage, truncated, HTML, DTD/entity bombs and incomplete documents raise IsapiParseError only."""
    with pytest.raises(xml.IsapiParseError):
        xml.parse_device_info(body)


@pytest.mark.parametrize(
    "parse",
    [
        xml.parse_device_status,
        xml.parse_device_time,
        xml.parse_channels,
        xml.parse_storage,
        xml.parse_search_result,
        xml.parse_user_check,
        xml.parse_response_status,
    ],
)
def test_every_parser_rejects_entity_expansion(parse: object) -> None:
    """No parser expands entities: the billion-laughs document is a parse error everywhere."""
    with pytest.raises(xml.IsapiParseError):
        parse(BILLION_LAUGHS.encode())  # type: ignore[operator]


def test_wrong_document_is_a_parse_error() -> None:
    """Asking for deviceInfo and getting a Time document is an error naming what came."""
    with pytest.raises(xml.IsapiParseError, match="<Time>"):
        xml.parse_device_info(TIME.format(ns=""))


def test_session_login_cap_and_password_hash() -> None:
    """SessionLoginCap parses, and the iterated hash depends on every input and the iteration count."""
    body = (
        '<SessionLoginCap version="2.0" xmlns="http://www.isapi.org/ver20/XMLSchema"><sessionID>s1</sessionID>'
        "<challenge>c1</challenge><iterations>100</iterations><isIrreversible>true</isIrreversible>"
        "<salt>salt-a</salt><salt2>salt-b</salt2><sessionIDVersion>2.1</sessionIDVersion></SessionLoginCap>"
    )
    cap = xml.parse_session_login_cap(body)
    assert (cap.session_id, cap.iterations, cap.irreversible, cap.salt2) == ("s1", 100, True, "salt-b")
    hashed = xml.session_login_password(cap, "admin", "pw")
    assert len(hashed) == 64 and "pw" not in xml.session_login_request(cap, "admin", "pw").decode()
    assert hashed != xml.session_login_password(cap, "admin", "pw2")
    assert hashed != xml.session_login_password(
        xml.SessionLoginCap("s1", "c2", 100, True, "salt-a", "salt-b"), "admin", "pw"
    )
    reversible = xml.SessionLoginCap("s1", "c1", 1, False)
    assert xml.session_login_password(reversible, "admin", "pw").endswith("c1")


def test_axpro_zones_and_subsystems() -> None:
    """AX PRO JSON status gives zones with fault and tamper flags and areas with their arming state."""
    zones = xml.parse_axpro_zones(
        '{"ZoneList":[{"Zone":{"id":1,"name":"Hall","status":"online","tamperEvident":false}},'
        '{"Zone":{"id":2,"name":"Gym","status":"offline","tamperEvident":true,"bypassed":true}}]}'
    )
    assert [(z.id, z.faulty, z.tamper, z.bypassed) for z in zones] == [(1, False, False, False), (2, True, True, True)]
    (area,) = xml.parse_axpro_subsystems('{"SubSysList":[{"SubSys":{"id":1,"arming":"stay","alarm":true}}]}')
    assert (area.arming, area.alarm, area.enabled) == ("stay", True, True)
    with pytest.raises(xml.IsapiParseError):
        xml.parse_axpro_zones('{"ZoneList":[5]}')


# --- parsing limits -------------------------------------------------------------------------


def _nested(depth: int) -> bytes:
    return b"<DeviceInfo><model>m</model>" + b"<a>" * (depth - 1) + b"</a>" * (depth - 1) + b"</DeviceInfo>"


def _siblings(count: int) -> bytes:
    return b"<DeviceInfo><model>m</model>" + b"<x/>" * (count - 2) + b"</DeviceInfo>"


def _nvr_channels(channels: int) -> bytes:
    """A channel status list as a real 256-channel NVR writes it (13 elements per channel)."""
    entry = (
        "<InputProxyChannelStatus><id>{n}</id><sourceInputPortDescriptor><proxyProtocol>HIKVISION</proxyProtocol>"
        "<addressingFormatType>ipaddress</addressingFormatType><ipAddress>10.0.{n}.64</ipAddress>"
        "<managePortNo>8000</managePortNo><srcInputPort>1</srcInputPort><userName>admin</userName>"
        "<streamType>auto</streamType><deviceID></deviceID></sourceInputPortDescriptor><online>true</online>"
        "<chanDetectResult>connect</chanDetectResult></InputProxyChannelStatus>"
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?><InputProxyChannelStatusList version="2.0" '
        'xmlns="http://www.hikvision.com/ver20/XMLSchema">'
        + "".join(entry.format(n=n) for n in range(1, channels + 1))
        + "</InputProxyChannelStatusList>"
    ).encode()


def _limit(body: bytes | str, parse: object = xml.parse_device_info) -> xml.IsapiLimitError:
    with pytest.raises(xml.IsapiLimitError) as caught:
        parse(body)  # type: ignore[operator]
    return caught.value


def test_the_largest_real_document_is_within_the_limits() -> None:
    """A 256-channel NVR's channel list (the largest reply ISAPI sends us) parses, with room to spare."""
    body = _nvr_channels(256)
    assert len(body) < xml.MAX_XML_BYTES // 4 and body.count(b"<") < xml.MAX_XML_MARKUP * 0.6
    assert len(xml.parse_channels(body)) == 256


def test_depth_limit_is_exact() -> None:
    """MAX_XML_DEPTH levels parse; one more is `xml_too_deep`, as bytes and as str."""
    assert xml.parse_device_info(_nested(xml.MAX_XML_DEPTH)).model == "m"
    assert _limit(_nested(xml.MAX_XML_DEPTH + 1)).reason == "xml_too_deep"
    assert _limit(_nested(xml.MAX_XML_DEPTH + 1).decode()).reason == "xml_too_deep"


def test_element_limit_is_exact() -> None:
    """MAX_XML_ELEMENTS elements parse; one more is `xml_too_large`, found while parsing."""
    assert xml.parse_device_info(_siblings(xml.MAX_XML_ELEMENTS)).model == "m"
    refused = _limit(_siblings(xml.MAX_XML_ELEMENTS + 1))
    assert refused.reason == "xml_too_large" and "elements" in str(refused)


@pytest.mark.parametrize(
    ("body", "names"),
    [
        (_nested(100_000), "bytes"),
        (_nested(20_000), "tags"),
        (b"<DeviceInfo><model>m</model>" + b"<!---->" * xml.MAX_XML_MARKUP + b"</DeviceInfo>", "tags"),
        (b"<DeviceInfo " + b'a="v" ' * 20_000 + b"><model>m</model></DeviceInfo>", "attributes"),
        (b"<DeviceInfo><model>" + b"x" * xml.MAX_XML_BYTES + b"</model></DeviceInfo>", "bytes"),
    ],
    ids=["100000-deep", "20000-deep", "comments", "attributes", "size"],
)
def test_documents_over_a_limit_are_refused_before_parsing(body: bytes, names: str) -> None:
    """Counting alone refuses them (`xml_too_large`, the count named) in a few milliseconds."""
    started = time.perf_counter()
    refused = _limit(body)
    assert time.perf_counter() - started < 0.02
    assert refused.reason == "xml_too_large" and names in str(refused)


def test_a_limit_error_is_a_parse_error() -> None:
    """Callers that catch IsapiParseError (the event stream, the lock reader) keep working."""
    assert issubclass(xml.IsapiLimitError, xml.IsapiParseError)
    assert _limit(_nested(50), xml.parse_user_check).reason == "xml_too_deep"


def test_json_limits() -> None:
    """JSON with too many values is refused by counting; nested past the recursion limit is `json_too_deep`."""
    entries = ",".join(f'{{"chanNo":{n},"online":1}}' for n in range(1, 3000))
    assert _limit('{"ChanStatus":[' + entries + "]}", xml.parse_working_status).reason == "json_too_large"
    assert _limit("[" * 100_000, xml.parse_working_status).reason == "json_too_large"
    deep = '{"a":' * 5000 + "1" + "}" * 5000  # no commas, no brackets: only the recursion guard stops it
    assert _limit(deep, xml.parse_axpro_zones).reason == "json_too_deep"
    assert _limit(b'{"ZoneList":["' + b"x" * xml.MAX_XML_BYTES + b'"]}', xml.parse_axpro_zones).reason == (
        "json_too_large"
    )


@pytest.mark.parametrize("encoding", ["TF-8", "hex", "zlib", "rot13", "mbcs", "x" * 300])
def test_unknown_or_non_text_encoding_is_a_parse_error(encoding: str) -> None:
    """An encoding Python lacks, or a codec that is no text encoding, is `bad_xml`, not a LookupError crash."""
    body = f'<?xml version="1.0" encoding="{encoding}"?><DeviceInfo><model>m</model></DeviceInfo>'.encode()
    with pytest.raises(xml.IsapiParseError, match="unreadable XML"):
        xml.parse_device_info(body)


def test_event_alert_as_str_with_a_lone_surrogate_is_a_parse_error() -> None:
    """A str body that cannot be UTF-8 encoded is read with replacement, never a UnicodeEncodeError."""
    with pytest.raises(xml.IsapiParseError):
        xml.parse_event_alert("\udc80<EventNotificationAlert/>")
    alert = xml.parse_event_alert(
        "<EventNotificationAlert><eventType>IO\udc80</eventType><eventState>active</eventState></EventNotificationAlert>"
    )
    assert alert.active and alert.event_type.startswith("IO")

"""The event stream's parts and events, on hand-built bytes: bounded, odd firmware included."""

from __future__ import annotations

import pytest

from telemetryd.probes.isapi import alerts, xml

ALERT = (
    b'<?xml version="1.0" encoding="UTF-8"?>\r\n<EventNotificationAlert version="2.0" '
    b'xmlns="http://www.hikvision.com/ver20/XMLSchema">\r\n<ipAddress>10.0.0.1</ipAddress>\r\n'
    b"<channelID>%d</channelID>\r\n<dateTime>2026-12-02T17:00:00+05:00</dateTime>\r\n"
    b"<activePostCount>1</activePostCount>\r\n<eventType>%s</eventType>\r\n<eventState>%s</eventState>\r\n"
    b"<eventDescription>alarm</eventDescription>\r\n</EventNotificationAlert>\r\n"
)


def _alert(event: bytes, state: bytes, channel: int = 1) -> bytes:
    return ALERT % (channel, event, state)


def _part(body: bytes, content_type: bytes = b"application/xml", *, length: bool = True) -> bytes:
    header = b"Content-Length: %d\r\n" % len(body) if length else b""
    return b"--boundary\r\nContent-Type: " + content_type + b"\r\n" + header + b"\r\n" + body + b"\r\n"


def _read(stream: bytes, step: int) -> tuple[list[alerts.Part], alerts.MultipartReader]:
    reader = alerts.MultipartReader(b"boundary")
    parts = []
    for at in range(0, len(stream), step):
        parts.extend(reader.feed(stream[at : at + step]))
    return parts, reader


@pytest.mark.parametrize("step", [1, 7, 100, 1 << 20])
@pytest.mark.parametrize("length", [True, False], ids=["with-length", "no-length"])
def test_parts_come_out_whole_however_the_bytes_arrive(step: int, length: bool) -> None:
    """Byte by byte or all at once, with or without Content-Length, an image between: the same two events."""
    stream = (
        _part(_alert(b"shelteralarm", b"active"), length=length)
        + _part(b"\xff\xd8" + b"\x00" * 5000 + b"\xff\xd9", b"image/jpeg", length=length)
        + _part(_alert(b"videoloss", b"inactive"), length=length)
        + b"--boundary\r\n"  # the next part has not arrived yet
    )
    parts, reader = _read(stream, step)
    found = [xml.parse_event_alert(part.body) for part in parts]
    assert [(a.event_type, a.active, a.channel) for a in found] == [("shelteralarm", True, 1), ("videoloss", False, 1)]
    assert reader.skipped == 1 and reader.parts == 2


def test_an_endless_part_is_skipped_in_bounded_memory() -> None:
    """A part that never ends (no length, no boundary) never holds more than the cap."""
    reader = alerts.MultipartReader(b"boundary", max_part_bytes=4096)
    assert not list(reader.feed(b"--boundary\r\nContent-Type: application/xml\r\n\r\n"))
    for _ in range(2000):
        assert not list(reader.feed(b"<x>" + b"A" * 1021))
        assert reader.buffered <= 4096 + 64
    parts = list(reader.feed(b"\r\n" + _part(_alert(b"diskerror", b"active", 0))))
    assert [xml.parse_event_alert(p.body).event_type for p in parts] == ["diskerror"]
    assert reader.skipped == 1


def test_garbage_and_huge_headers_do_not_stop_the_stream() -> None:
    """Bytes before the first boundary, a header block without end: skipped, the next event still read."""
    reader = alerts.MultipartReader(b"boundary")
    assert not list(reader.feed(b"\x00\xffnot multipart at all" * 100))
    assert not list(reader.feed(b"--boundary\r\n" + b"X-Junk: " + b"j" * 10_000))
    assert reader.buffered < 8192 and reader.malformed == 1
    parts = list(reader.feed(_part(_alert(b"IO", b"active", 2))))
    assert [xml.parse_event_alert(p.body).event_type for p in parts] == ["IO"]


def test_json_parts_of_newer_firmware() -> None:
    """A JSON EventNotificationAlert reads like the XML one."""
    body = b'{"ipAddress":"10.0.0.1","channelID":3,"dateTime":"2026-12-02T17:00:00+05:00","eventType":"videoloss",'
    body += b'"eventState":"active","eventDescription":"videoloss alarm"}'
    alert = xml.parse_event_alert(body)
    assert (alert.event_type, alert.active, alert.channel) == ("videoloss", True, 3)
    with pytest.raises(xml.IsapiParseError):
        xml.parse_event_alert(b'{"eventType":"videoloss"}')


def test_the_heartbeat_never_ends_a_video_loss() -> None:
    """`videoloss inactive` is the firmware's heartbeat: a video loss ends when its repeats stop."""
    book = alerts.EventBook(hold=60)
    lost = xml.EventAlert("videoloss", True, 1)
    heartbeat = xml.EventAlert("videoloss", False, 1)
    assert book.apply(heartbeat, 0.0) is None  # nothing was active: a plain heartbeat
    assert book.apply(lost, 1.0) == alerts.Change("video_loss", 1, True, 1.0)
    assert book.apply(heartbeat, 10.0) is None and book.apply(lost, 30.0) is None
    assert book.expire(89.0) == []
    assert book.expire(90.0) == [alerts.Change("video_loss", 1, False, 90.0)]


def test_tampering_ends_on_its_inactive_and_untracked_events_are_ignored() -> None:
    """shelteralarm active → tampering; its inactive ends it at once; motion detection is not tracked."""
    book = alerts.EventBook()
    assert book.apply(xml.EventAlert("shelteralarm", True, 2), 5.0) == alerts.Change("tampering", 2, True, 5.0)
    assert book.apply(xml.EventAlert("VMD", True, 2), 6.0) is None
    assert book.apply(xml.EventAlert("shelteralarm", False, 2), 7.0) == alerts.Change("tampering", 2, False, 7.0)
    assert book.seen == {("tampering", 2)} and not book.active


@pytest.mark.parametrize(
    ("content_type", "boundary"),
    [
        ("multipart/mixed; boundary=boundary", b"boundary"),
        ('multipart/mixed;boundary="MIME_boundary"', b"MIME_boundary"),
        ("application/xml", None),
        ("multipart/mixed", None),
    ],
)
def test_boundary_of(content_type: str, boundary: bytes | None) -> None:
    """The boundary, quoted or not; none for a body that is not multipart."""
    assert alerts.boundary_of(content_type) == boundary


def test_an_event_part_with_a_dtd_expands_nothing() -> None:
    """Entities in an event part are never interpreted: the billion laughs reads as text, cheaply."""
    body = (
        b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>'
        b"<EventNotificationAlert><eventType>&b;</eventType><eventState>active</eventState></EventNotificationAlert>"
    )
    alert = xml.parse_event_alert(body)
    assert alert.event_type == "&b;" and alerts.event_name(alert.event_type) is None
    with pytest.raises(xml.IsapiParseError):
        xml.parse_event_alert(b"<DeviceInfo><eventType>videoloss</eventType></DeviceInfo>")

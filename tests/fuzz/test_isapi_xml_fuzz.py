"""Every ISAPI parser on arbitrary bytes and on mutated real documents: a value or the documented error.

The documented errors are `IsapiParseError` (its subclass `IsapiLimitError` carrying one of the
limit reasons) and `IsapiStatusError`; anything else escaping a parser would end a probe run
with a crash instead of a result, so it is a bug.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from telemetryd.probes.isapi import xml
from telemetryd.sim.hikvision import _BILLION_LAUGHS, _HOSTILE_XML
from tests.fuzz.strategies import FUZZ, mutated
from tests.probes import test_isapi_xml as samples

LIMIT_REASONS = {"xml_too_large", "xml_too_deep", "json_too_large", "json_too_deep"}

DOCUMENT_PARSERS: dict[str, Callable[[bytes | str], Any]] = {
    name: getattr(xml, name)
    for name in sorted(dir(xml))
    if name.startswith("parse_") and name not in ("parse_uptime", "parse_posix_offset")
}
"""Every public parse_* that reads a reply body."""
TEXT_PARSERS: dict[str, Callable[[str], Any]] = {
    "parse_uptime": xml.parse_uptime,
    "parse_posix_offset": xml.parse_posix_offset,
}
"""The parsers of one field's text: they answer None for what they cannot read, never raise."""

XML_SAMPLES = (
    *(
        template.format(ns=ns).encode()
        for template in (
            samples.DEVICE_INFO,
            samples.STATUS,
            samples.TIME,
            samples.CHANNELS,
            samples.STORAGE,
            samples.SEARCH,
            samples.RESPONSE_STATUS,
            samples.LOCKED,
        )
        for ns in (samples.NAMESPACES[0], "")
    ),
    b'<VideoInputChannelList version="2.0"><VideoInputChannel version="2.0"><id>1</id><inputPort>1</inputPort>'
    b"<videoInputEnabled>true</videoInputEnabled><name>Camera 01</name><resDesc>NO VIDEO</resDesc>"
    b"</VideoInputChannel></VideoInputChannelList>",
    b'<SessionLoginCap version="2.0" xmlns="http://www.isapi.org/ver20/XMLSchema"><sessionID>s1</sessionID>'
    b"<challenge>c1</challenge><iterations>100</iterations><isIrreversible>true</isIrreversible>"
    b"<salt>salt-a</salt><salt2>salt-b</salt2><sessionIDVersion>2.1</sessionIDVersion></SessionLoginCap>",
    b'<EventNotificationAlert version="2.0" xmlns="http://www.isapi.org/ver20/XMLSchema"><ipAddress>10.0.0.1'
    b"</ipAddress><portNo>80</portNo><channelID>1</channelID><dateTime>2026-10-05T10:12:30+08:00</dateTime>"
    b"<activePostCount>1</activePostCount><eventType>videoloss</eventType><eventState>inactive</eventState>"
    b"<eventDescription>videoloss alarm</eventDescription></EventNotificationAlert>",
)
JSON_SAMPLES = (
    b'{"WorkingStatus":{"ChanStatus":[{"chanNo":1,"online":1,"record":1,"recordStatus":0,"signal":0}],'
    b'"HDStatus":[{"hdNo":1,"status":0}]}}',
    b'{"ZoneList":[{"Zone":{"id":1,"name":"Hall","status":"online","tamperEvident":false}}]}',
    b'{"SubSysList":[{"SubSys":{"id":1,"arming":"stay","alarm":true}}]}',
    b'{"statusCode":4,"statusString":"Invalid Operation","subStatusCode":"notSupport"}',
    b'{"ipAddress":"10.0.0.1","channelID":2,"dateTime":"2026-10-05T10:12:30+08:00","eventType":"shelteralarm",'
    b'"eventState":"active","EventNotificationAlert":{"eventType":"shelteralarm","eventState":"active"}}',
)
SAMPLES = XML_SAMPLES + JSON_SAMPLES + (_BILLION_LAUGHS,)


def _documented(parse: Callable[[bytes | str], Any], body: bytes | str) -> None:
    """Run `parse`; only a value or a documented error may come out."""
    reason = None
    try:
        parse(body)
    except xml.IsapiLimitError as exc:
        reason = exc.reason
    except (xml.IsapiParseError, xml.IsapiStatusError):
        pass
    assert reason is None or reason in LIMIT_REASONS, reason


def test_every_public_parser_is_fuzzed() -> None:
    """A parser added to xml.py later is covered without editing this file (and none takes other arguments)."""
    assert {"parse_device_info", "parse_event_alert", "parse_working_status", "parse_video_inputs"} <= set(
        DOCUMENT_PARSERS
    )
    for parse in (*DOCUMENT_PARSERS.values(), *TEXT_PARSERS.values()):
        assert len(inspect.signature(parse).parameters) == 1, parse


def _every_parser(body: bytes | str) -> None:
    for parse in DOCUMENT_PARSERS.values():
        _documented(parse, body)


@FUZZ
@given(body=st.binary(max_size=4096))
def test_arbitrary_bytes(body: bytes) -> None:
    """Random bytes, to every parser."""
    _every_parser(body)


@FUZZ
@given(body=mutated(SAMPLES))
@example(body=_HOSTILE_XML["nested"])
@example(body=_HOSTILE_XML["deep"])
@example(body=b"[" * 5000)
@example(body=b'{"a":' * 5000 + b"1" + b"}" * 5000)
@example(body=b'<?xml version="1.0" encoding="TF-8"?>')  # found by this test: LookupError escaped the parsers
@example(body=b'<?xml version="1.0" encoding="hex"?><DeviceInfo><model>m</model></DeviceInfo>')
def test_mutated_real_documents(body: bytes) -> None:
    """Real replies of every kind, cut, spliced and salted with DTDs, entities, deep nesting and bad encodings."""
    _every_parser(body)


@FUZZ
@given(body=st.one_of(st.text(max_size=2000), mutated(SAMPLES).map(lambda b: b.decode("utf-8", "surrogateescape"))))
@example(body='<?xml version="1.0" encoding="UTF-16"?><DeviceInfo><model>m</model></DeviceInfo>')
@example(body="\udc80<EventNotificationAlert/>")  # found by this test: a lone surrogate escaped parse_event_alert
def test_text_bodies(body: str) -> None:
    """Bodies given as str (including lone surrogates and encoding declarations that do not match)."""
    _every_parser(body)


@pytest.mark.parametrize("name", sorted(TEXT_PARSERS))
@FUZZ
@given(text=st.one_of(st.text(max_size=200), st.from_regex(r"[0-9 天时分秒dayshourminutesc,:.+\-A-Z<>]{0,40}")))
def test_field_parsers_answer_none_or_a_value(name: str, text: str) -> None:
    """Uptime and POSIX zone strings of any shape: a value or None."""
    TEXT_PARSERS[name](text)

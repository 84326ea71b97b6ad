"""The event stream's multipart reader under arbitrary chunking, garbage, lying headers and tiny caps.

Real streams (parts as the simulator writes them for every firmware line: XML or JSON, with or
without Content-Length, snapshots between) must give the same parts however TCP cuts them.
Garbage must never raise and never make the reader hold more than its caps allow.
"""

from __future__ import annotations

import contextlib
import dataclasses

from hypothesis import example, given
from hypothesis import strategies as st

from telemetryd.probes.isapi import alerts, xml
from telemetryd.sim.hikvision import _JPEG, FIRMWARE, SimDevice, _alert_part
from tests.fuzz.strategies import FUZZ_STREAMS, chunked

BOUNDARY = b"boundary"
HEADER_LIMIT = 4096
"""The reader's cap on one part's headers (alerts._HEADER_LIMIT)."""

EVENT_FIRMWARE = [
    *(fw for fw in FIRMWARE.values() if fw.event_json or fw.event_images or not fw.event_lengths),
    FIRMWARE["ipc-v5"],
    dataclasses.replace(FIRMWARE["ipc-v5"], event_lengths=False),  # XML parts without Content-Length
    dataclasses.replace(FIRMWARE["nvr-snapshots"], event_lengths=False),
]
"""Every way the simulated firmware lines write their parts."""


def held_limit(reader: alerts.MultipartReader) -> int:
    """What the reader may hold between feeds: one part's body, one header block, a boundary's tail."""
    return reader.max_part_bytes + HEADER_LIMIT + len(BOUNDARY) + 8


@st.composite
def real_stream(draw: st.DrawFn) -> tuple[bytes, list[tuple[str, bool]]]:
    """Parts as one simulated device writes them, and the (eventType, active) each text part carries."""
    firmware = draw(st.sampled_from(EVENT_FIRMWARE))
    device = SimDevice(kind="camera", firmware=firmware)
    data, expected = b"", []
    for _ in range(draw(st.integers(1, 6))):
        event = draw(st.sampled_from(["videoloss", "shelteralarm", "diskerror", "VMD", "IO"]))
        active = draw(st.booleans())
        data += _alert_part(device, event, draw(st.integers(0, 64)), active, 1)
        expected.append((event, active))
    return data, expected


def _read(reader: alerts.MultipartReader, pieces: list[bytes]) -> list[alerts.Part]:
    parts = []
    for piece in pieces:
        parts.extend(reader.feed(piece))
        assert reader.buffered <= held_limit(reader), (reader.buffered, held_limit(reader))
    return parts


@FUZZ_STREAMS
@given(data=st.data(), stream=real_stream())
def test_real_streams_read_the_same_however_they_are_cut(
    data: st.DataObject, stream: tuple[bytes, list[tuple[str, bool]]]
) -> None:
    """Every text part comes out once, whole, in order, whatever the chunking; snapshots are skipped."""
    body, expected = stream
    whole = _read(alerts.MultipartReader(BOUNDARY), [body])
    reader = alerts.MultipartReader(BOUNDARY)
    cut = _read(reader, data.draw(chunked(body)))
    assert cut == whole
    assert [(a.event_type, a.active) for a in map(xml.parse_event_alert, (p.body for p in cut))] == expected
    assert reader.malformed == 0


fragments = st.sampled_from(
    [
        b"--boundary",
        b"--boundary\r\n",
        b"\r\n--boundary\r\n",
        b"\n--boundary--\n",
        b"Content-Type: application/xml\r\n",
        b"Content-Type: application/json\r\n",
        b"Content-Type: image/jpeg\r\n",
        b"Content-Length: 10\r\n",
        b"Content-Length: 99999999999999999999\r\n",
        b"Content-Length: -5\r\n",
        b"Content-Length: \xd9\xa3\r\n",  # a non-ASCII digit: str.isdigit() is True for it
        b"\r\n\r\n",
        b"\n\n",
        b"{",
        b"}",
        b"[" * 3000,
        b"{" * 3000 + b"}" * 3000,
        b'{"a":' * 3000 + b"1" + b"}" * 3000,
        b"</EventNotificationAlert>",
        b"<EventNotificationAlert><eventType>IO</eventType><eventState>active</eventState>",
        _JPEG[:200],
    ]
)
garbage = st.lists(st.one_of(fragments, st.binary(max_size=300), st.binary(min_size=4000, max_size=9000)), max_size=12)


@FUZZ_STREAMS
@given(data=st.data(), pieces=garbage, cap=st.sampled_from([64, 1024, 64 * 1024]))
@example(data=None, pieces=[b"--boundary\r\n\r\n", b'{"a":' * 3000 + b"1" + b"}" * 3000], cap=64 * 1024)
@example(data=None, pieces=[b"x" * 9000 + b"--boundary"], cap=64)
def test_garbage_never_raises_and_memory_stays_bounded(
    data: st.DataObject | None, pieces: list[bytes], cap: int
) -> None:
    """Any bytes, any chunking, any cap: feed never raises, holds at most its caps, yields parts within the cap."""
    stream = b"".join(pieces)
    reader = alerts.MultipartReader(BOUNDARY, max_part_bytes=cap)
    chunks = data.draw(chunked(stream)) if data is not None else [stream]
    for part in _read(reader, chunks):
        assert len(part.body) <= cap
        with contextlib.suppress(xml.IsapiParseError):
            xml.parse_event_alert(part.body)

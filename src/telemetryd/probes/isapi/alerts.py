"""The event stream's bytes to events, and events to active/inactive state — pure, no I/O, no clock.

`/ISAPI/Event/notification/alertStream` is one endless ``multipart/mixed`` reply. Each part
is an `EventNotificationAlert` (XML, or JSON on newer firmware), and some firmware follows an
event with an ``image/jpeg`` part (a snapshot). Parts carry ``Content-Length`` on most
firmware and not on some, so a part ends at its length or at the next boundary.

`MultipartReader` takes the bytes as they arrive and yields the text parts; it never holds
more than `max_part_bytes` of one part (a bigger part is skipped to its end and counted),
and it skips image parts byte by byte without keeping them, so a stream's memory is bounded
whatever the device sends.

`EventBook` keeps which (event, channel) is active since when. Real firmware sends
``videoloss`` / ``inactive`` as its heartbeat, every ~10 s, whatever the channels do: so an
inactive video loss is never taken as a resolution — a video loss ends when the device stops
repeating it (`hold`, 60 s by default). Other events end on their ``inactive`` part, or after
`hold` without a repeat (firmware that only ever sends ``active`` while an event lasts).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from telemetryd.probes.isapi import xml

__all__ = [
    "EVENTS",
    "HEARTBEAT",
    "Change",
    "EventBook",
    "MultipartReader",
    "Part",
    "boundary_of",
    "event_name",
]

EVENTS: dict[str, str] = {
    "videoloss": "video_loss",
    "shelteralarm": "tampering",
    "tamperdetection": "tampering",
    "diskerror": "disk_error",
    "hderror": "disk_error",
    "hdderror": "disk_error",
    "diskfull": "disk_full",
    "hdfull": "disk_full",
    "illaccess": "illegal_access",
    "illegalaccess": "illegal_access",
    "io": "io_alarm",
    "alarminput": "io_alarm",
}
"""The firmware's eventType (lower case) → the `event` label; any other type (motion, line crossing…) is not kept."""
HEARTBEAT = "videoloss"
"""The event type firmware sends as ``inactive`` for a heartbeat."""
_HEADER_LIMIT = 4096
_BOUNDARY = re.compile(rb'boundary="?([^";,\s]+)"?', re.IGNORECASE)


def event_name(event_type: str) -> str | None:
    """The `event` label of a firmware eventType, or None for events telemetryd does not track."""
    return EVENTS.get(event_type.lower())


def boundary_of(content_type: str) -> bytes | None:
    """The boundary of a ``multipart/…; boundary=…`` Content-Type (None: not multipart, or none given)."""
    if not content_type.lower().startswith("multipart/"):
        return None
    found = _BOUNDARY.search(content_type.encode("latin-1", "replace"))
    return found.group(1) if found else None


class Part(NamedTuple):
    """One text part of the stream: its Content-Type and body (at most `max_part_bytes`)."""

    content_type: str
    body: bytes


@dataclass(slots=True)
class MultipartReader:
    """Incremental, bounded ``multipart/mixed`` reader: feed it bytes, take the text parts."""

    boundary: bytes
    max_part_bytes: int = 64 * 1024
    parts: int = 0
    """Text parts yielded."""
    skipped: int = 0
    """Image parts and oversized parts skipped without being kept."""
    malformed: int = 0
    """Part headers that could not be read (too long, or no blank line)."""
    _buffer: bytearray = field(default_factory=bytearray)
    _state: str = "boundary"
    _type: str = ""
    _keep: bool = False
    _left: int | None = None
    """Body bytes still to come when the part gave a Content-Length."""
    _body: bytearray = field(default_factory=bytearray)
    _oversize: bool = False

    @property
    def buffered(self) -> int:
        """Bytes held now (the unparsed tail and a part's body so far): bounded by the caps."""
        return len(self._buffer) + len(self._body)

    def feed(self, data: bytes) -> Iterator[Part]:
        """The text parts completed by `data`."""
        self._buffer += data
        while True:
            if self._state == "boundary":
                if not self._find_boundary():
                    return
            elif self._state == "headers":
                if not self._read_headers():
                    return
            else:
                part = self._read_body()
                if part is None:
                    return
                if part.body or part.content_type:
                    yield part

    # --- states -----------------------------------------------------------------------------

    def _find_boundary(self) -> bool:
        delimiter = b"--" + self.boundary
        at = self._buffer.find(delimiter)
        if at < 0:
            del self._buffer[: max(0, len(self._buffer) - len(delimiter) - 2)]  # keep a tail that may start it
            return False
        line_end = self._buffer.find(b"\n", at)
        if line_end < 0:
            del self._buffer[:at]  # what came before the delimiter is junk: hold only the delimiter's line
            if len(self._buffer) > _HEADER_LIMIT:
                self.malformed += 1
                self._buffer.clear()
            return False
        del self._buffer[: line_end + 1]
        self._state = "headers"
        return True

    def _read_headers(self) -> bool:
        end = self._buffer.find(b"\r\n\r\n")
        size = 4
        if end < 0:
            end, size = self._buffer.find(b"\n\n"), 2
        if end < 0:
            if len(self._buffer) > _HEADER_LIMIT:
                self.malformed += 1
                self._buffer.clear()
                self._state = "boundary"
            return False
        if end > _HEADER_LIMIT:
            self.malformed += 1
            del self._buffer[: end + size]
            self._state = "boundary"
            return True
        headers = bytes(self._buffer[:end]).decode("latin-1")
        del self._buffer[: end + size]
        content_type, length = "", None
        for line in headers.splitlines():
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-type":
                content_type = value.strip()
            elif name == "content-length" and value.strip().isdigit():
                length = int(value.strip())
        self._type = content_type
        lowered = content_type.lower()
        self._keep = "xml" in lowered or "json" in lowered or not lowered
        self._left = length
        self._oversize = self._keep and length is not None and length > self.max_part_bytes
        if self._oversize:
            self._keep = False
        self._body.clear()
        self._state = "body"
        return True

    def _read_body(self) -> Part | None:
        if self._left is not None:
            take = min(self._left, len(self._buffer))
            if self._keep:
                self._body += self._buffer[:take]
            del self._buffer[:take]
            self._left -= take
            if self._left:
                return None
            return self._finish()
        # No length: the part runs to the next boundary.
        delimiter = b"\n--" + self.boundary
        at = self._buffer.find(delimiter)
        if at < 0:
            if self._keep and _may_end(self._body, self._buffer) and _complete(self._body + self._buffer):
                # Without a length the part would only end at the next boundary, the next heartbeat
                # seconds away: a document that is already whole is taken now.
                self._take(len(self._buffer))
                return self._finish()
            safe = max(0, len(self._buffer) - len(delimiter))
            self._take(safe)
            return None
        self._take(at)
        return self._finish()

    def _take(self, count: int) -> None:
        if self._keep:
            if len(self._body) + count > self.max_part_bytes:
                self._keep, self._oversize = False, True
                self._body.clear()
            else:
                self._body += self._buffer[:count]
        del self._buffer[:count]

    def _finish(self) -> Part | None:
        self._state = "boundary"
        if not self._keep:
            self.skipped += 1
            self._body.clear()
            return Part("", b"")
        body = bytes(self._body).strip()
        self._body.clear()
        self.parts += 1
        return Part(self._type, body)


_ENDINGS = (b"</EventNotificationAlert>", b"}")


def _may_end(body: bytearray, buffer: bytearray) -> bool:
    """Whether the bytes just read could end the document: a look at the last 256 bytes before the whole is copied.

    Without it a device trickling a part a byte at a time would cost a copy of the part per byte. Bytes
    that end in whitespace only leave the document's end where the last look saw it.
    """
    tail = bytes(buffer[-256:])
    if len(tail) < 256:  # a closing tag may have begun in what the body already holds
        tail = bytes(body[max(0, len(body) - 256 + len(tail)) :]) + tail
    return tail.rstrip().endswith(_ENDINGS)


def _complete(body: bytearray) -> bool:
    """Whether a part without a length already holds a whole event document."""
    text = bytes(body).rstrip()
    if text.endswith(b"</EventNotificationAlert>"):
        return True
    if text.startswith(b"{") and text.endswith(b"}"):
        try:
            json.loads(text)
        except ValueError:
            return False
        except RecursionError:
            # Nested past what json reads: it never will be, so the part ends here (and is refused as
            # json_too_deep) rather than the error ending the reader, and with it the device's stream.
            return True
        return True
    return False


class Change(NamedTuple):
    """An event that became active or ended, with the time (ours) it did."""

    event: str
    channel: int
    active: bool
    at: float


@dataclass(slots=True)
class EventBook:
    """Which tracked events of one device are active, since when, and when each was last repeated."""

    hold: float = 60.0
    active: dict[tuple[str, int], tuple[float, float]] = field(default_factory=dict)
    """(event, channel) → (active since, last seen active)."""
    seen: set[tuple[str, int]] = field(default_factory=set)
    """Every (event, channel) ever active: exported at 0 once it ends."""

    def apply(self, alert: xml.EventAlert, now: float) -> Change | None:
        """The change an alert makes (None: a repeat, a heartbeat, or an event not tracked)."""
        event = event_name(alert.event_type)
        if event is None:
            return None
        key = (event, alert.channel)
        held = self.active.get(key)
        if alert.active:
            if held is not None:
                self.active[key] = (held[0], now)
                return None
            self.active[key] = (now, now)
            self.seen.add(key)
            return Change(event, alert.channel, True, now)
        if held is None or alert.event_type.lower() == HEARTBEAT:
            return None  # heartbeat, or the end of something we never saw begin
        del self.active[key]
        return Change(event, alert.channel, False, now)

    def expire(self, now: float) -> list[Change]:
        """Events not repeated for `hold` seconds end now."""
        ended = [key for key, (_, last) in self.active.items() if now - last >= self.hold]
        for key in ended:
            del self.active[key]
        return [Change(event, channel, False, now) for event, channel in ended]

    def clear(self, now: float) -> list[Change]:
        """Everything ends (the device left the inventory, or its stream is gone for good)."""
        changes = [Change(event, channel, False, now) for event, channel in self.active]
        self.active.clear()
        return changes

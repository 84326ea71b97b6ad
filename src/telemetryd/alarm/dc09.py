"""SIA DC-09 (ANSI/SIA DC-09-2013/2021) frames: parse, check, build, and what to answer.

Pure functions only; the receiver (`telemetryd.alarm.receiver`) and the simulated panels
(`telemetryd.sim.panels`) do the I/O. A frame on the wire is::

    <LF> CRC 0LLL "id" seq [Rrcvr] Lpref [#acct] [data][ext...] [_HH:MM:SS,MM-DD-YYYY] <CR>

CRC is CRC-16/ARC as 4 hex digits and 0LLL the message length as ``0`` plus 3 hex
digits, both over the message: from the first ``"`` up to the byte before CR. Only
unencrypted messages are understood; an encrypted one (``"*SIA-DCS"``) is answered DUH,
which tells the panel not to retry, as the standard asks of a receiver without the key.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

LF = b"\n"
CR = b"\r"
MAX_MESSAGE = 0xFFF
"""The length field has three hex digits."""
MAX_FRAME = 1 + 4 + 4 + MAX_MESSAGE + 1
"""LF, CRC, length, message, CR: the longest frame a receiver ever has to buffer."""
SKEW_AHEAD = timedelta(seconds=20)
SKEW_BEHIND = timedelta(seconds=40)
"""DC-09 accepts a message stamped from 40 s before to 20 s after the receiver's clock, NAKs the rest."""


class MessageType(enum.StrEnum):
    """The ``"id"`` tokens this implementation understands."""

    NULL = "NULL"
    """Supervision heartbeat: no event, proves the path and the panel are alive."""
    SIA_DCS = "SIA-DCS"
    ADM_CID = "ADM-CID"
    """Ademco Contact ID carried in DC-09."""
    ACK = "ACK"
    NAK = "NAK"
    DUH = "DUH"
    """"Don't understand here": received intact but not processable; the panel must not retry."""


EVENT_TYPES = frozenset({MessageType.SIA_DCS, MessageType.ADM_CID})
RECEIVER_TYPES = frozenset({MessageType.NULL, MessageType.SIA_DCS, MessageType.ADM_CID})
"""What a receiver accepts from a panel."""
ANSWER_TYPES = frozenset({MessageType.ACK, MessageType.NAK, MessageType.DUH})


class FrameError(ValueError):
    """A frame that cannot be trusted; `reason` is ``truncated``, ``length``, ``crc`` or ``format``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class AccountKey(NamedTuple):
    """Who a message is from: receiver number, account prefix (line) and account, upper-case hex.

    `receiver` is ``""`` when the panel sends no ``R`` field.
    """

    receiver: str
    prefix: str
    account: str

    def __str__(self) -> str:
        return f"R{self.receiver}L{self.prefix}#{self.account}" if self.receiver else f"L{self.prefix}#{self.account}"


@dataclass(frozen=True, slots=True)
class Frame:
    """One checked DC-09 message (CRC and length already verified)."""

    message_type: str
    """A MessageType value, or whatever unsupported token the sender used."""
    sequence: str
    """Four decimal digits, kept as text so answers echo it exactly."""
    prefix: str
    receiver: str | None = None
    account: str | None = None
    data: str = ""
    """The first ``[...]`` block without brackets; for an encrypted frame, the cipher text."""
    extended: tuple[str, ...] = ()
    """Further ``[...]`` blocks (``[Vvideo-url]``, ``[Mmac]``, ...), without brackets."""
    timestamp: datetime | None = None
    """UTC; unencrypted messages may leave it out."""
    encrypted: bool = False

    @property
    def key(self) -> AccountKey | None:
        """The account this message is from; None when it names no account."""
        account = self.account or _data_account(self.data)
        if account is None:
            return None
        return AccountKey(self.receiver or "", self.prefix, account)


@dataclass(frozen=True, slots=True)
class PanelEvent:
    """One event carried by a SIA-DCS or ADM-CID message.

    `code` is the SIA two-letter code (``BA``) or, for Contact ID, qualifier letter plus
    the three-digit event (``E130`` new, ``R130`` restore, ``P130`` still present).
    """

    code: str
    zone: str = ""
    partition: str = ""
    text: str = ""

    @property
    def description(self) -> str:
        """What the code means, for logs and the status page; ``""`` when we do not know it."""
        if len(self.code) == 4 and self.code[0] in "ERP":
            return CID_EVENTS.get(self.code[1:], "")
        return SIA_CODES.get(self.code, "")

    @property
    def event_class(self) -> EventClass:
        """Alarm, trouble, restoral, test or other (see `event_class`)."""
        return event_class(self.code)


SIA_CODES: dict[str, str] = {
    "AT": "AC trouble",
    "AR": "AC restoral",
    "BA": "burglary alarm",
    "BR": "burglary restoral",
    "CL": "closing (armed)",
    "OP": "opening (disarmed)",
    "FA": "fire alarm",
    "FR": "fire restoral",
    "HA": "holdup alarm",
    "MA": "medical alarm",
    "PA": "panic alarm",
    "RP": "automatic test",
    "TA": "tamper alarm",
    "TR": "tamper restoral",
    "WA": "water alarm",
    "YT": "battery trouble",
    "YR": "battery restoral",
}
"""The SIA codes a school panel commonly sends; others are kept raw, never refused."""

CID_EVENTS: dict[str, str] = {
    "100": "medical",
    "110": "fire",
    "120": "panic",
    "121": "duress",
    "122": "silent holdup",
    "130": "burglary",
    "137": "tamper",
    "301": "AC loss",
    "302": "low battery",
    "401": "open/close by user",
    "602": "periodic test",
}


class EventClass(enum.StrEnum):
    """What kind of event a code reports, for history and metrics (low-cardinality label values)."""

    ALARM = "alarm"
    TROUBLE = "trouble"
    RESTORAL = "restoral"
    TEST = "test"
    OTHER = "other"
    """Openings and closings, bypasses, access, and every code we do not know."""


_SIA_CLASSES: dict[str, EventClass] = {
    "RP": EventClass.TEST,  # automatic test
    "RX": EventClass.TEST,  # manual test
    "TX": EventClass.TEST,  # test report
    "TS": EventClass.TEST,  # test start
    "TE": EventClass.TEST,  # test end
}
_SIA_ZONE_FAMILIES = frozenset("BFPHMTWGKQSZU")
"""Burglary, fire, panic, holdup, medical, tamper, water, gas, heat, emergency, sprinkler, freeze, untyped."""
_SIA_ZONE_SUFFIXES: dict[str, EventClass] = {
    "A": EventClass.ALARM,
    "M": EventClass.ALARM,  # cross-point alarm
    "V": EventClass.ALARM,  # verified alarm
    "R": EventClass.RESTORAL,
    "H": EventClass.RESTORAL,  # alarm restore
    "J": EventClass.RESTORAL,  # trouble restore
    "T": EventClass.TROUBLE,
    "S": EventClass.TROUBLE,  # supervisory
    "X": EventClass.TEST,
}
_SIA_POWER_FAMILIES = frozenset("AYXLNE")
"""AC power, system battery, transmitter battery, phone line, network, expansion module: only T and R."""


def event_class(code: str) -> EventClass:
    """The class of a `PanelEvent.code`: a SIA two-letter code or a Contact ID ``E130``/``R130``/``P130``.

    SIA: RP/RX/TX/TS/TE are tests; for a zone family (first letter B F P H M T W G K Q S Z U)
    the second letter says it: A/M/V alarm, R/H/J restoral, T/S trouble, X test; for AC,
    batteries, phone line, network and expansion (A Y X L N E) T is trouble and R restoral.
    Contact ID: 1xx alarms, 2xx supervisory and 3xx troubles (restorals with qualifier R),
    60x/61x tests; P (still present) classes as E. Anything else — openings, closings,
    bypasses, unknown codes — is other.
    """
    code = code.strip().upper()
    if len(code) == 4 and code[0] in "ERP" and code[1:].isdigit():
        group, restore = code[1], code[0] == "R"
        if group == "1":
            return EventClass.RESTORAL if restore else EventClass.ALARM
        if group in "23":
            return EventClass.RESTORAL if restore else EventClass.TROUBLE
        if group == "6" and code[2] in "01":
            return EventClass.TEST
        return EventClass.OTHER
    if len(code) != 2:
        return EventClass.OTHER
    if code in _SIA_CLASSES:
        return _SIA_CLASSES[code]
    family, suffix = code[0], code[1]
    if family in _SIA_ZONE_FAMILIES and suffix in _SIA_ZONE_SUFFIXES:
        return _SIA_ZONE_SUFFIXES[suffix]
    if family in _SIA_POWER_FAMILIES:
        return {"T": EventClass.TROUBLE, "R": EventClass.RESTORAL}.get(suffix, EventClass.OTHER)
    return EventClass.OTHER


# ---- CRC, timestamps -------------------------------------------------------------------------


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc16(message: bytes) -> int:
    """CRC-16/ARC (poly 0x8005 reflected, init 0), the DC-09 check: ``crc16(b"123456789") == 0xBB3D``."""
    crc = 0
    for byte in message:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ byte) & 0xFF]
    return crc


def format_timestamp(at: datetime) -> str:
    """``_HH:MM:SS,MM-DD-YYYY`` in UTC, as DC-09 stamps messages."""
    at = at.astimezone(UTC) if at.tzinfo else at
    return at.strftime("_%H:%M:%S,%m-%d-%Y")


def parse_timestamp(text: str) -> datetime:
    """The UTC datetime of ``_HH:MM:SS,MM-DD-YYYY`` (leading underscore optional)."""
    return datetime.strptime(text.lstrip("_"), "%H:%M:%S,%m-%d-%Y").replace(tzinfo=UTC)


def skew_ok(stamp: datetime, now: datetime) -> bool:
    """True when a message stamped `stamp` falls in the receiver's acceptance window around `now`."""
    return -SKEW_BEHIND <= stamp - now <= SKEW_AHEAD


# ---- parsing ---------------------------------------------------------------------------------

# The prefix is matched lazily so that the fixed NAK body ``R0L0A0`` reads as prefix 0 and no account.
_HEADER = re.compile(
    r'"(?P<star>\*?)(?P<id>[A-Z0-9-]{1,16})"(?P<seq>[0-9]{4})'
    r"(?:R(?P<rcvr>[0-9A-F]{1,6}))?L(?P<pref>[0-9A-F]{1,6}?)(?:#(?P<acct>[0-9A-F]{3,16})|A0)?\[",
    re.IGNORECASE,
)
_TAIL = re.compile(r"(?P<blocks>(?:\[[^\[\]]*\])*)(?P<ts>_\d\d:\d\d:\d\d,\d\d-\d\d-\d{4})?")
_SEQUENCE = re.compile(r"[0-9]{4}")
_HEX_1_6 = re.compile(r"[0-9A-Fa-f]{1,6}")
_ACCOUNT = re.compile(r"[0-9A-Fa-f]{3,16}")
_BLOCK = re.compile(r"\[([^\[\]]*)\]")
_DATA_ACCOUNT = re.compile(r"#([0-9A-Fa-f]{3,16})\|")


def parse_frame(raw: bytes) -> Frame:
    """Check and parse one frame, LF and CR optional; raises FrameError saying what is wrong.

    Checked in order: the 8-character CRC and length header, the length (``truncated``
    when fewer bytes came than it announces), the CRC, then the message's format.
    """
    if raw.startswith(LF):
        raw = raw[1:]
    if raw.endswith(CR):
        raw = raw[:-1]
    if len(raw) < 9:
        raise FrameError("truncated", f"{len(raw)} bytes, shorter than the CRC and length header")
    header, message = raw[:8], raw[8:]
    try:
        header_text = header.decode("ascii")
        declared_crc = int(header_text[:4], 16)
        declared_length = int(header_text[4:], 16)
    except ValueError:
        raise FrameError("format", f"CRC/length header {header!r} is not 8 hex digits") from None
    if header_text[4] != "0":
        raise FrameError("format", f"length field {header_text[4:]!r} does not start with 0")
    if len(message) < declared_length:
        raise FrameError("truncated", f"message has {len(message)} of the {declared_length} bytes announced")
    if len(message) > declared_length:
        raise FrameError("length", f"message has {len(message)} bytes, the header announces {declared_length}")
    actual_crc = crc16(message)
    if actual_crc != declared_crc:
        raise FrameError("crc", f"CRC {actual_crc:04X} computed, {declared_crc:04X} sent")
    try:
        text = message.decode("ascii")
    except UnicodeDecodeError:
        raise FrameError("format", "message is not ASCII") from None
    return parse_message(text)


def parse_message(text: str) -> Frame:
    """Parse the message part (from the first quote on) of a frame whose CRC has been checked."""
    head = _HEADER.match(text)
    if head is None:
        raise FrameError("format", f"no DC-09 header in {text[:40]!r}")
    encrypted = bool(head["star"])
    message_type, sequence = head["id"].upper(), head["seq"]
    prefix = head["pref"].upper()
    receiver = head["rcvr"].upper() if head["rcvr"] else None
    account = head["acct"].upper() if head["acct"] else None
    rest = text[head.end() - 1 :]  # from the opening bracket
    if encrypted:
        # Everything after the bracket, timestamp included, is cipher text we cannot read.
        return Frame(message_type, sequence, prefix, receiver, account, data=rest[1:].rstrip("]"), encrypted=True)
    tail = _TAIL.fullmatch(rest)
    if tail is None or not tail["blocks"]:
        raise FrameError("format", f"bad data blocks or timestamp in {rest[:60]!r}")
    blocks = _BLOCK.findall(tail["blocks"])
    stamp = None
    if tail["ts"]:
        try:
            stamp = parse_timestamp(tail["ts"])
        except ValueError:
            raise FrameError("format", f"impossible timestamp {tail['ts']!r}") from None
    return Frame(message_type, sequence, prefix, receiver, account, blocks[0], tuple(blocks[1:]), stamp)


def _data_account(data: str) -> str | None:
    match = _DATA_ACCOUNT.match(data)
    return match[1].upper() if match else None


_SIA_MODIFIER = re.compile(r"[a-z]{2}[0-9:]*")
_SIA_EVENT = re.compile(r"(?P<code>[A-Z]{2})(?P<zone>[0-9]*)(?P<text>.*)")
_CID = re.compile(r"(?P<q>[136])(?P<event>[0-9A-F]{3}) (?P<part>[0-9A-F]{2}) (?P<zone>[0-9A-F]{3})", re.IGNORECASE)


def events(frame: Frame) -> tuple[PanelEvent, ...]:
    """The events a SIA-DCS or ADM-CID frame carries; ``()`` for anything else or an unreadable body.

    SIA-DCS bodies look like ``#1234|Nri1/BA01`` or ``|Nri1CL0^FRONT ^``: modifiers are two
    lower-case letters (``ri`` area, ``id`` user, ``ti`` time), events two upper-case letters
    plus a zone. Contact ID bodies are ``#1234|1130 01 015`` (qualifier, event, partition, zone).
    """
    if frame.encrypted:
        return ()
    body = frame.data.split("|", 1)[1] if "|" in frame.data else frame.data
    if frame.message_type == MessageType.ADM_CID:
        match = _CID.fullmatch(body.strip())
        if match is None:
            return ()
        qualifier = {"1": "E", "3": "R", "6": "P"}[match["q"]]
        return (PanelEvent(qualifier + match["event"], zone=match["zone"], partition=match["part"]),)
    if frame.message_type != MessageType.SIA_DCS:
        return ()
    if body[:1] in ("N", "O") and body[1:3].isalpha():  # N new / O old event marker, not a code like NR
        body = body[1:]
    found = []
    area = ""
    for token in body.split("/"):
        rest = token
        while (modifier := _SIA_MODIFIER.match(rest)) is not None:
            if rest.startswith("ri"):
                area = modifier[0][2:]
            rest = rest[modifier.end() :]
        match = _SIA_EVENT.fullmatch(rest)
        if match is not None:
            found.append(PanelEvent(match["code"], zone=match["zone"], partition=area, text=match["text"].strip("^ ")))
    return tuple(found)


# ---- building --------------------------------------------------------------------------------


def build_frame(message: str) -> bytes:
    """Wrap a message (``"id"seq...``) in LF, CRC, length and CR."""
    body = message.encode("ascii")
    if len(body) > MAX_MESSAGE:
        raise ValueError(f"DC-09 message of {len(body)} bytes exceeds {MAX_MESSAGE}")
    return LF + f"{crc16(body):04X}0{len(body):03X}".encode("ascii") + body + CR


def format_message(
    message_type: str,
    sequence: int | str,
    *,
    prefix: str,
    account: str | None,
    receiver: str | None = None,
    data: str = "",
    extended: tuple[str, ...] = (),
    at: datetime | None = None,
) -> str:
    """The message text ``"id"seqRrcvrLpref#acct[data][ext]_timestamp`` (no timestamp when `at` is None)."""
    seq = sequence if isinstance(sequence, str) else f"{sequence:04d}"
    if not (_SEQUENCE.fullmatch(seq) and _HEX_1_6.fullmatch(prefix)) or (receiver and not _HEX_1_6.fullmatch(receiver)):
        raise ValueError(f"DC-09 needs a 4-digit sequence and 1-6 hex digit prefix/receiver: {seq!r} L{prefix!r}")
    if account and not _ACCOUNT.fullmatch(account):
        raise ValueError(f"DC-09 accounts are 3-16 hex digits: {account!r}")
    parts = [f'"{message_type}"{seq}']
    if receiver:
        parts.append(f"R{receiver}")
    parts.append(f"L{prefix}")
    if account:
        parts.append(f"#{account}")
    parts.append(f"[{data}]")
    parts.extend(f"[{block}]" for block in extended)
    if at is not None:
        parts.append(format_timestamp(at))
    return "".join(parts)


def build_null(sequence: int, *, prefix: str, account: str, receiver: str | None = None, at: datetime | None) -> bytes:
    """A NULL supervision message from a panel."""
    return build_frame(format_message("NULL", sequence, prefix=prefix, account=account, receiver=receiver, at=at))


def build_sia_event(
    sequence: int,
    event: PanelEvent,
    *,
    prefix: str,
    account: str,
    receiver: str | None = None,
    at: datetime | None,
) -> bytes:
    """A SIA-DCS message carrying one new event, e.g. ``[#1234|Nri1/BA01]``."""
    area = f"ri{event.partition}/" if event.partition else ""
    text = f"^{event.text}^" if event.text else ""
    data = f"#{account}|N{area}{event.code}{event.zone}{text}"
    return build_frame(
        format_message("SIA-DCS", sequence, prefix=prefix, account=account, receiver=receiver, data=data, at=at)
    )


def build_ack(frame: Frame, *, at: datetime | None = None) -> bytes:
    """ACK echoing the frame's sequence, receiver, prefix and account."""
    return build_frame(
        format_message(
            "ACK", frame.sequence, prefix=frame.prefix, account=frame.account, receiver=frame.receiver, at=at
        )
    )


def build_duh(frame: Frame) -> bytes:
    """DUH echoing the frame's sequence, receiver, prefix and account: understood as a frame, not processable."""
    return build_frame(
        format_message("DUH", frame.sequence, prefix=frame.prefix, account=frame.account, receiver=frame.receiver)
    )


def build_nak(at: datetime) -> bytes:
    """NAK with the fixed body ``"NAK"0000R0L0A0[]`` and the receiver's time, so the panel can fix its clock."""
    return build_frame(f'"NAK"0000R0L0A0[]{format_timestamp(at)}')


# ---- the receiver's decision -----------------------------------------------------------------


class Verdict(enum.StrEnum):
    """What a receiver answers a frame with."""

    ACK = "ack"
    NAK = "nak"
    DUH = "duh"
    IGNORE = "ignore"
    """An ACK/NAK/DUH sent to us: answering it could start a loop with a confused peer."""


@dataclass(frozen=True, slots=True)
class Answer:
    """The receiver's decision about one frame: the verdict, the bytes to send back, and why."""

    verdict: Verdict
    reply: bytes
    reason: str = ""
    """``""`` for ACK; ``truncated``/``length``/``crc``/``format``/``timestamp`` (NAK);
    ``encrypted``/``unsupported``/``no_account`` (DUH); ``answer`` (IGNORE)."""
    detail: str = ""
    frame: Frame | None = None


def answer(raw: bytes, now: datetime) -> Answer:
    """Decide how a receiver answers `raw` (one frame) at wall-clock time `now` (UTC)."""
    try:
        frame = parse_frame(raw)
    except FrameError as exc:
        return Answer(Verdict.NAK, build_nak(now), exc.reason, exc.detail)
    if frame.message_type in ANSWER_TYPES:
        return Answer(Verdict.IGNORE, b"", "answer", f"{frame.message_type} sent to a receiver", frame)
    if frame.encrypted:
        return Answer(Verdict.DUH, build_duh(frame), "encrypted", "encrypted DC-09 is not supported", frame)
    if frame.message_type not in RECEIVER_TYPES:
        return Answer(Verdict.DUH, build_duh(frame), "unsupported", f"message type {frame.message_type!r}", frame)
    if frame.key is None:
        return Answer(Verdict.DUH, build_duh(frame), "no_account", "message names no account", frame)
    if frame.timestamp is not None and not skew_ok(frame.timestamp, now):
        offset = (frame.timestamp - now).total_seconds()
        return Answer(Verdict.NAK, build_nak(now), "timestamp", f"timestamp {offset:+.0f}s off the receiver", frame)
    return Answer(Verdict.ACK, build_ack(frame), frame=frame)

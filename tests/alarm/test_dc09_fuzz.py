"""Property tests of the DC-09 parser: whatever a school LAN sends, only the documented errors come out.

`parse_frame` and `parse_message` raise `FrameError` and nothing else; `answer` never raises
and always answers with a well-formed frame (or nothing, for an answer sent to us); `events`
never raises on anything that parsed. Inputs: arbitrary bytes, arbitrary text, and valid frames
mutated, with and without their CRC and length fixed up afterwards (so the mutation reaches the
message parser instead of stopping at the CRC). Bounded: a few hundred examples each, a deadline
per example, a few seconds in all.
"""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from telemetryd.alarm import dc09
from telemetryd.alarm.dc09 import FrameError, PanelEvent, Verdict

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
BOUNDED = settings(max_examples=300, deadline=200, suppress_health_check=[HealthCheck.too_slow])


def check_answer(raw: bytes) -> None:
    """`answer` decides without raising; its reply is empty only for IGNORE and otherwise parses."""
    result = dc09.answer(raw, NOW)
    if result.verdict is Verdict.IGNORE:
        assert result.reply == b""
        return
    reply = dc09.parse_frame(result.reply)
    assert reply.message_type == result.verdict.value.upper()
    if result.frame is not None:
        dc09.events(result.frame)


def parse_or_frame_error(raw: bytes) -> dc09.Frame | None:
    """The frame, or None for a FrameError; any other exception fails the test."""
    try:
        frame = dc09.parse_frame(raw)
    except FrameError as exc:
        reason = exc.reason
    else:
        dc09.events(frame)
        _ = frame.key
        return frame
    assert reason in {"truncated", "length", "crc", "format"}
    return None


def sealed(message: bytes) -> bytes:
    """`message` with a correct CRC and length header around it (as a well-behaved but lying sender would)."""
    return dc09.LF + b"%04X0%03X" % (dc09.crc16(message), len(message) & 0xFFF) + message + dc09.CR


@st.composite
def valid_frames(draw: st.DrawFn) -> bytes:
    """A heartbeat, a SIA-DCS event or a Contact ID event, with or without receiver and timestamp."""
    account = draw(st.text("0123456789ABCDEF", min_size=3, max_size=16))
    prefix = draw(st.text("0123456789ABCDEF", min_size=1, max_size=6))
    receiver = draw(st.none() | st.text("0123456789ABCDEF", min_size=1, max_size=6))
    sequence = draw(st.integers(0, 9999))
    at = draw(st.none() | st.just(NOW))
    kind = draw(st.sampled_from(["null", "sia", "cid"]))
    if kind == "null":
        return dc09.build_null(sequence, prefix=prefix, account=account, receiver=receiver, at=at)
    if kind == "sia":
        code = draw(st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=2, max_size=2))
        zone = draw(st.text("0123456789", max_size=4))
        text = draw(st.text("abcdefgh XYZ-", max_size=20))
        event = PanelEvent(code, zone=zone, text=text)
        return dc09.build_sia_event(sequence, event, prefix=prefix, account=account, receiver=receiver, at=at)
    body = draw(st.from_regex(r"[136][0-9A-F]{3} [0-9A-F]{2} [0-9A-F]{3}", fullmatch=True))
    message = dc09.format_message(
        "ADM-CID", sequence, prefix=prefix, account=account, receiver=receiver, data=f"#{account}|{body}", at=at
    )
    return dc09.build_frame(message)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid frame with bytes flipped, inserted or deleted; often re-sealed so the CRC matches the damage."""
    frame = bytearray(draw(valid_frames()))
    for _ in range(draw(st.integers(1, 6))):
        position = draw(st.integers(0, len(frame)))
        action = draw(st.sampled_from(["flip", "insert", "delete"]))
        byte = draw(st.sampled_from([*b'"[]_#|/^,:-*LR0\r\n\x00\xff', *range(256)]))
        if action == "insert":
            frame[position:position] = bytes([byte])
        elif position < len(frame):
            if action == "flip":
                frame[position] = byte
            else:
                del frame[position]
    if draw(st.booleans()) and len(frame) > 10:
        return sealed(bytes(frame[9:-1]))
    return bytes(frame)


@st.composite
def redigited(draw: st.DrawFn) -> bytes:
    """A valid frame with a few of its digits changed, re-sealed: its shape intact, so the damage reaches
    the sequence, account, event and timestamp checks (``_25:61:00,13-32-2026``) instead of the format's."""
    frame = bytearray(draw(valid_frames()))
    message = frame[9:-1]
    digits = [i for i, b in enumerate(message) if 0x30 <= b <= 0x39]
    for _ in range(draw(st.integers(1, 4))):
        if digits:
            message[draw(st.sampled_from(digits))] = draw(st.sampled_from(b"0123456789"))
    return sealed(bytes(message))


@BOUNDED
@given(st.binary(max_size=600))
def test_arbitrary_bytes_raise_only_frame_error(raw: bytes) -> None:
    """Random bytes never raise anything but FrameError, and the receiver always answers them."""
    parse_or_frame_error(raw)
    check_answer(raw)


@BOUNDED
@given(st.binary(max_size=300))
def test_arbitrary_sealed_messages_reach_the_message_parser_safely(message: bytes) -> None:
    """Random bytes with a correct CRC and length (the parser's inner half) raise only FrameError."""
    raw = sealed(message[: dc09.MAX_MESSAGE])
    parse_or_frame_error(raw)
    check_answer(raw)


@BOUNDED
@given(st.text(max_size=300))
def test_arbitrary_text_to_parse_message_raises_only_frame_error(text: str) -> None:
    """`parse_message` on any text: a Frame or a FrameError."""
    try:
        frame = dc09.parse_message(text)
    except FrameError:
        return
    dc09.events(frame)


@settings(BOUNDED, max_examples=200)
@given(mutated())
def test_mutated_valid_frames_raise_only_frame_error(raw: bytes) -> None:
    """Damaged frames, re-sealed or not: only FrameError, and a well-formed answer."""
    parse_or_frame_error(raw)
    check_answer(raw)


@settings(BOUNDED, max_examples=200)
@given(redigited())
def test_frames_with_changed_digits_raise_only_frame_error(raw: bytes) -> None:
    """Digits changed inside a sealed frame (an impossible date, a sequence of another message): only FrameError."""
    parse_or_frame_error(raw)
    check_answer(raw)


@settings(BOUNDED, max_examples=100)
@given(valid_frames())
def test_valid_frames_are_acked(raw: bytes) -> None:
    """The generator's frames are valid: each parses and is ACKed (so the mutations start from real frames)."""
    assert parse_or_frame_error(raw) is not None
    assert dc09.answer(raw, NOW).verdict is Verdict.ACK

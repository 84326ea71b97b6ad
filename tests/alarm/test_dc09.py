"""SIA DC-09 framing, parsing, building and the receiver's ACK/NAK/DUH decision: pure, no sockets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from telemetryd.alarm import dc09
from telemetryd.alarm.dc09 import AccountKey, FrameError, PanelEvent, Verdict

NOW = datetime(2024, 7, 30, 10, 10, 18, tzinfo=UTC)

# The examples printed in ANSI/SIA DC-09-2013 (CRC and length as published).
SPEC_SIA_DCS = b'\nCE110032"SIA-DCS"9876R579BDFL789ABC#12345A[#12345A|NFA129]\r'
SPEC_ADM_CID = b'\n87CD0037"ADM-CID"9876R579BDFL789ABC#12345A[#12345A|1110 00 129]\r'
# NAKs captured from real receivers, as quoted in public DC-09 implementations' tests.
REAL_NAKS = (
    b'\nE5630025"NAK"0000R0L0A0[]_10:10:18,07-30-2024\r',
    b'\n3C830025"NAK"0000R0L0A0[]_16:09:09,04-14-2015\r',
)


def frame_of(message: str) -> bytes:
    """A correctly framed message (test shorthand)."""
    return dc09.build_frame(message)


def test_crc16_check_value() -> None:
    """CRC-16/ARC of the standard check string is 0xBB3D, and of nothing is 0."""
    assert dc09.crc16(b"123456789") == 0xBB3D
    assert dc09.crc16(b"") == 0


def test_spec_sia_dcs_example_parses_with_its_published_crc() -> None:
    """The standard's SIA-DCS example passes CRC and length checks and yields its fields."""
    frame = dc09.parse_frame(SPEC_SIA_DCS)
    assert frame.message_type == "SIA-DCS"
    assert (frame.sequence, frame.receiver, frame.prefix, frame.account) == ("9876", "579BDF", "789ABC", "12345A")
    assert frame.data == "#12345A|NFA129"
    assert frame.timestamp is None and not frame.encrypted
    assert frame.key == AccountKey("579BDF", "789ABC", "12345A")
    assert dc09.events(frame) == (PanelEvent("FA", zone="129"),)


def test_spec_adm_cid_example_parses_to_a_contact_id_fire_alarm() -> None:
    """The standard's ADM-CID example is a new fire alarm (E110) in partition 00, zone 129."""
    frame = dc09.parse_frame(SPEC_ADM_CID)
    (event,) = dc09.events(frame)
    assert event == PanelEvent("E110", zone="129", partition="00")
    assert event.description == "fire"


@pytest.mark.parametrize("raw", REAL_NAKS)
def test_real_naks_parse_and_are_rebuilt_byte_for_byte(raw: bytes) -> None:
    """Real NAKs parse (prefix 0, no account) and build_nak reproduces them exactly from their timestamp."""
    frame = dc09.parse_frame(raw)
    assert (frame.message_type, frame.sequence, frame.prefix, frame.account) == ("NAK", "0000", "0", None)
    assert frame.timestamp is not None
    assert dc09.build_nak(frame.timestamp) == raw


def test_null_roundtrip_keeps_every_field() -> None:
    """A NULL built by build_null parses back to the same sequence, ids and timestamp."""
    raw = dc09.build_null(42, prefix="1A", account="00123", receiver="7", at=NOW)
    assert raw.startswith(b"\n") and raw.endswith(b"\r")
    frame = dc09.parse_frame(raw)
    assert frame == dc09.Frame("NULL", "0042", "1A", "7", "00123", "", (), NOW)


def test_build_frame_length_field_is_zero_plus_three_hex_digits() -> None:
    """The length field is ``0LLL``, upper-case hex, counting from the first quote to before CR."""
    message = '"NULL"0001L0#ABC[]'
    raw = dc09.build_frame(message)
    assert raw[5:9] == f"0{len(message):03X}".encode()
    assert raw[1:5] == f"{dc09.crc16(message.encode()):04X}".encode()


def test_build_frame_refuses_messages_longer_than_the_length_field() -> None:
    """A message over 0xFFF bytes cannot be framed."""
    with pytest.raises(ValueError, match="exceeds"):
        dc09.build_frame('"SIA-DCS"0001L0#ABC[' + "x" * 0xFFF + "]")


def test_frames_without_lf_and_cr_are_accepted() -> None:
    """LF and CR are optional for parse_frame (the receiver splits on CR; some senders omit LF)."""
    assert dc09.parse_frame(SPEC_SIA_DCS.strip()).account == "12345A"


def test_bad_crc_is_reported_with_both_values() -> None:
    """A frame whose CRC does not match is a ``crc`` error naming computed and sent values."""
    raw = b"\nCE120032" + SPEC_SIA_DCS[9:]
    with pytest.raises(FrameError) as caught:
        dc09.parse_frame(raw)
    assert caught.value.reason == "crc"
    assert "CE11 computed, CE12 sent" in caught.value.detail


def test_truncated_frame_is_truncated_not_crc() -> None:
    """A frame cut short is reported as truncated, before any CRC check."""
    with pytest.raises(FrameError) as caught:
        dc09.parse_frame(SPEC_SIA_DCS[:30])
    assert caught.value.reason == "truncated"
    assert "of the 50 bytes" in caught.value.detail


def test_frame_shorter_than_its_header_is_truncated() -> None:
    """Fewer bytes than CRC plus length header is truncated."""
    with pytest.raises(FrameError) as caught:
        dc09.parse_frame(b"\nCE11\r")
    assert caught.value.reason == "truncated"


def test_extra_bytes_are_a_length_error() -> None:
    """More message bytes than the length field announces is a ``length`` error."""
    raw = SPEC_SIA_DCS[:-1] + b"X\r"
    with pytest.raises(FrameError) as caught:
        dc09.parse_frame(raw)
    assert caught.value.reason == "length"


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"\nZZZZ0032" + SPEC_SIA_DCS[9:], "not 8 hex digits"),
        (b"\nCE111032" + SPEC_SIA_DCS[9:], "does not start with 0"),
        (frame_of('"NULL"0001L0#ABC'), "no DC-09 header"),
        (frame_of('"NULL"1L0#ABC[]'), "no DC-09 header"),
        (frame_of('"NULL"0001#ABC[]'), "no DC-09 header"),
        (frame_of('"NULL"0001L0#ABC[]junk'), "bad data blocks"),
        (frame_of('"NULL"0001L0#ABC[]_10:10:18,13-30-2024'), "impossible timestamp"),
        (dc09.LF + b"00000003\xff\xfe\xfd" + dc09.CR, None),
    ],
)
def test_malformed_frames_are_format_errors(raw: bytes, fragment: str | None) -> None:
    """Bad header digits, missing fields or brackets, junk and impossible dates are ``format`` errors."""
    if fragment is None:  # the non-ASCII case needs its real CRC to get past the CRC check
        body = b"\xff\xfe\xfd"
        raw = dc09.LF + f"{dc09.crc16(body):04X}0003".encode() + body + dc09.CR
        fragment = "not ASCII"
    with pytest.raises(FrameError) as caught:
        dc09.parse_frame(raw)
    assert caught.value.reason == "format"
    assert fragment in caught.value.detail


def test_extended_data_blocks_and_timestamp_are_split_out() -> None:
    """Blocks after the data block go to `extended`; the trailing timestamp is parsed as UTC."""
    raw = frame_of('"SIA-DCS"0007L0#AAA[|Nri1/CL501][M0026B9E4268B][Vrtsp://x]_14:12:04,09-25-2019')
    frame = dc09.parse_frame(raw)
    assert frame.extended == ("M0026B9E4268B", "Vrtsp://x")
    assert frame.timestamp == datetime(2019, 9, 25, 14, 12, 4, tzinfo=UTC)


def test_account_only_inside_the_data_block_still_keys_the_frame() -> None:
    """A SIA-DCS frame without ``#acct`` in its header is attributed to the account in its data."""
    frame = dc09.parse_frame(frame_of('"SIA-DCS"4738R0001L0001[#006969|Nri04/OP001NM]'))
    assert frame.account is None
    assert frame.key == AccountKey("0001", "0001", "006969")
    assert dc09.events(frame) == (PanelEvent("OP", zone="001", partition="04", text="NM"),)


def test_lower_case_hex_is_normalised_to_upper_case() -> None:
    """Receiver, prefix and account compare case-insensitively (normalised to upper case)."""
    frame = dc09.parse_frame(frame_of('"NULL"0001Rab1Lc0#dead[]'))
    assert frame.key == AccountKey("AB1", "C0", "DEAD")


def test_encrypted_frame_is_marked_and_keeps_its_clear_header() -> None:
    """An encrypted frame (``"*SIA-DCS"``) is flagged, its cipher text kept, its clear ids still read."""
    frame = dc09.parse_frame(frame_of('"*SIA-DCS"5994L0#AAA[5AB718E008C616BF16F6468033A11326'))
    assert frame.encrypted
    assert (frame.message_type, frame.sequence, frame.account) == ("SIA-DCS", "5994", "AAA")
    assert frame.data == "5AB718E008C616BF16F6468033A11326"
    assert dc09.events(frame) == ()


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("#1234|Nri1/BA01", (PanelEvent("BA", zone="01", partition="1"),)),
        ("#123456|Nri1CL0^VX FRONTE ^", (PanelEvent("CL", zone="0", partition="1", text="VX FRONTE"),)),
        ("Nri1/WA000", (PanelEvent("WA", zone="000", partition="1"),)),
        ("|Nti10:30/id12/ri2/BA01/FA02", (PanelEvent("BA", "01", "2"), PanelEvent("FA", "02", "2"))),
        ("#1234|NFA129", (PanelEvent("FA", zone="129"),)),
        ("#1234|NR01", (PanelEvent("NR", zone="01"),)),
        ("#1234|", ()),
    ],
)
def test_sia_dcs_event_bodies(data: str, expected: tuple[PanelEvent, ...]) -> None:
    """SIA-DCS bodies yield their event codes, zones, areas and text; modifiers are not events."""
    frame = dc09.Frame("SIA-DCS", "0001", "0", account="1234", data=data)
    assert dc09.events(frame) == expected


@pytest.mark.parametrize(
    ("data", "code"),
    [("#1234|1130 01 015", "E130"), ("#1234|3130 01 015", "R130"), ("1602 00 000", "E602"), ("#1234|9999", None)],
)
def test_contact_id_qualifiers(data: str, code: str | None) -> None:
    """Contact ID qualifier 1 is a new event (E), 3 a restore (R); an unreadable body yields nothing."""
    found = dc09.events(dc09.Frame("ADM-CID", "0001", "0", account="1234", data=data))
    assert [e.code for e in found] == ([code] if code else [])


def test_null_frames_carry_no_events() -> None:
    """A heartbeat is not an event."""
    assert dc09.events(dc09.Frame("NULL", "0001", "0", account="1234")) == ()


def test_event_descriptions() -> None:
    """Known SIA and Contact ID codes have descriptions; unknown ones an empty string."""
    assert PanelEvent("BA").description == "burglary alarm"
    assert PanelEvent("R130").description == "burglary"
    assert PanelEvent("ZZ").description == ""


def test_timestamp_format_is_utc() -> None:
    """Timestamps are rendered in UTC whatever zone the datetime is in, and parse back."""
    local = datetime(2024, 7, 30, 12, 10, 18, tzinfo=UTC).astimezone(__import__("zoneinfo").ZoneInfo("Europe/Athens"))
    assert dc09.format_timestamp(local) == "_12:10:18,07-30-2024"
    assert dc09.parse_timestamp("_12:10:18,07-30-2024") == datetime(2024, 7, 30, 12, 10, 18, tzinfo=UTC)


@pytest.mark.parametrize(
    ("offset", "accepted"), [(0, True), (20, True), (21, False), (-40, True), (-41, False), (3600, False)]
)
def test_skew_window_is_plus_20_minus_40_seconds(offset: int, accepted: bool) -> None:
    """A message may be stamped up to 20 s ahead of or 40 s behind the receiver's clock."""
    assert dc09.skew_ok(NOW + timedelta(seconds=offset), NOW) is accepted


def test_answer_acks_a_valid_null_echoing_its_ids() -> None:
    """A valid NULL is ACKed with the same sequence, receiver, prefix and account."""
    result = dc09.answer(dc09.build_null(7, prefix="3", account="4711", receiver="2", at=NOW), NOW)
    assert (result.verdict, result.reason) == (Verdict.ACK, "")
    ack = dc09.parse_frame(result.reply)
    assert (ack.message_type, ack.sequence, ack.receiver, ack.prefix, ack.account) == ("ACK", "0007", "2", "3", "4711")
    assert ack.data == ""


def test_answer_naks_a_bad_crc_with_the_receivers_time() -> None:
    """A damaged frame gets a NAK stamped with the receiver's clock."""
    result = dc09.answer(b"\nCE120032" + SPEC_SIA_DCS[9:], NOW)
    assert (result.verdict, result.reason, result.frame) == (Verdict.NAK, "crc", None)
    assert dc09.parse_frame(result.reply).timestamp == NOW.replace(microsecond=0)


@pytest.mark.parametrize("offset", [25, -45])
def test_answer_naks_a_timestamp_outside_the_window(offset: int) -> None:
    """A well-formed message stamped outside +20/-40 s is NAKed for its timestamp."""
    raw = dc09.build_null(1, prefix="0", account="ABC", at=NOW + timedelta(seconds=offset))
    result = dc09.answer(raw, NOW)
    assert (result.verdict, result.reason) == (Verdict.NAK, "timestamp")
    assert f"{offset:+d}s" in result.detail


def test_answer_accepts_an_unstamped_message() -> None:
    """Unencrypted messages may carry no timestamp; that is no reason to refuse them."""
    assert dc09.answer(dc09.build_null(1, prefix="0", account="ABC", at=None), NOW).verdict is Verdict.ACK


def test_answer_duhs_an_encrypted_message_echoing_its_sequence() -> None:
    """Encrypted DC-09 is answered DUH (no retry), with the frame's sequence and account."""
    result = dc09.answer(frame_of('"*NULL"0003R1L0#AAAB[B4BC8B40D0E6D959'), NOW)
    assert (result.verdict, result.reason) == (Verdict.DUH, "encrypted")
    duh = dc09.parse_frame(result.reply)
    assert (duh.message_type, duh.sequence, duh.receiver, duh.account) == ("DUH", "0003", "1", "AAAB")


def test_answer_duhs_unsupported_types_and_accountless_messages() -> None:
    """A message type we do not speak, or a message naming no account, is DUH with the reason."""
    unknown = dc09.answer(frame_of('"M-ACRON"0001L0#ABC[x]'), NOW)
    anonymous = dc09.answer(frame_of('"NULL"0001L0[]'), NOW)
    assert (unknown.verdict, unknown.reason) == (Verdict.DUH, "unsupported")
    assert (anonymous.verdict, anonymous.reason) == (Verdict.DUH, "no_account")


def test_answer_ignores_answers_sent_to_the_receiver() -> None:
    """An ACK arriving at the receiver gets no reply at all (no ping-pong with a confused peer)."""
    result = dc09.answer(frame_of('"ACK"0001L0#ABC[]'), NOW)
    assert (result.verdict, result.reply) == (Verdict.IGNORE, b"")


def test_sia_event_builder_roundtrip() -> None:
    """build_sia_event produces a frame the receiver ACKs and whose event parses back."""
    raw = dc09.build_sia_event(9, PanelEvent("BA", zone="03", partition="1"), prefix="0", account="077", at=NOW)
    result = dc09.answer(raw, NOW)
    assert result.verdict is Verdict.ACK and result.frame is not None
    assert dc09.events(result.frame) == (PanelEvent("BA", zone="03", partition="1"),)


def test_account_key_text() -> None:
    """An account key prints the way DC-09 writes it, without R when there is no receiver number."""
    assert str(AccountKey("1", "0", "ABC")) == "R1L0#ABC"
    assert str(AccountKey("", "0", "ABC")) == "L0#ABC"


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"prefix": "0", "account": "77"}, "3-16 hex"),
        ({"prefix": "0", "account": "XYZ1"}, "3-16 hex"),
        ({"prefix": "", "account": "777"}, "prefix"),
        ({"prefix": "0", "account": "777", "receiver": "1234567"}, "prefix/receiver"),
    ],
)
def test_builders_refuse_ids_a_receiver_could_not_parse(kwargs: dict[str, str], fragment: str) -> None:
    """Accounts must be 3-16 hex digits and prefix/receiver 1-6: the builder refuses what the parser would."""
    with pytest.raises(ValueError, match=fragment):
        dc09.build_null(1, at=None, **kwargs)

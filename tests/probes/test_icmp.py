"""ICMP prober: packet parsing (pure) and the shared socket against 127.0.0.1 (root)."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from typing import Any

from telemetryd.config.settings import Settings
from telemetryd.model import Device, DeviceKind, ProbeSpec
from telemetryd.probes import ProbeContext, icmp
from telemetryd.probes.icmp import CATCH_UP, Pinger, checksum, echo_request, kernel_timestamp, parse_packet

from ..conftest import require_root


def _ip_header(payload_len: int, src: str = "10.0.0.1", dst: str = "10.0.0.2") -> bytes:
    return struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + payload_len,
        0,
        0,
        64,
        1,
        0,
        socket.inet_aton(src),
        socket.inet_aton(dst),
    )


def test_echo_request_checksum_verifies() -> None:
    """A packet we build sums to zero under the Internet checksum, as receivers check."""
    packet = echo_request(0x1234, 77, b"tlmd\x01\x02\x03\x04")
    assert checksum(packet) == 0
    assert packet[0] == 8 and struct.unpack("!HH", packet[4:8]) == (0x1234, 77)


class _RecordingSocket(socket.socket):
    """A real (unused) UDP socket whose sendto records packets instead of sending them."""

    sent: list[tuple[bytes, str]]

    def sendto(self, data: Any, address: Any) -> int:  # type: ignore[override]
        self.sent.append((bytes(data), address[0]))
        return len(data)


async def test_sent_packets_match_the_reference_builder() -> None:
    """The inlined send path's incremental checksum gives the reference bytes for every sequence, across the wrap."""
    sock = _RecordingSocket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.sent = []
    sock.setblocking(False)
    pinger = Pinger(sock, "raw", max_packets_per_second=1_000_000)
    pinger._seq = 65533
    try:
        results = await pinger.ping_many(["127.0.0.1", "127.0.0.2", "127.0.0.3"], count=2, spacing=0.01, timeout=0.05)
    finally:
        pinger.close()
    assert [r.reason for r in results] == ["timeout"] * 3
    assert [r.sent for r in results] == [2, 2, 2]
    sequences = [struct.unpack("!H", packet[6:8])[0] for packet, _ in sock.sent]
    assert sequences == [65534, 65535, 0, 1, 2, 3]
    for packet, _host in sock.sent:
        seq = struct.unpack("!H", packet[6:8])[0]
        assert packet == echo_request(pinger._ident, seq, pinger._payload)
        assert checksum(packet) == 0


def test_parse_echo_reply_with_and_without_ip_header() -> None:
    """Raw sockets deliver an IP header, ping sockets do not; both parse to ident/seq/payload."""
    icmp_part = struct.pack("!BBHHH", 0, 0, 0, 0x4242, 9) + b"tlmd1234"
    raw = parse_packet(_ip_header(len(icmp_part)) + icmp_part, has_ip_header=True)
    dgram = parse_packet(icmp_part, has_ip_header=False)
    assert raw is not None and dgram is not None
    assert (raw.ident, raw.seq, raw.error, raw.payload) == (0x4242, 9, False, b"tlmd1234")
    assert (dgram.ident, dgram.seq) == (0x4242, 9)


def test_parse_unreachable_quoting_our_request() -> None:
    """Destination unreachable quoting our echo request maps back to its ident/seq as an error."""
    original = echo_request(0x0101, 5, b"tlmd0000")
    quoted = _ip_header(len(original), "10.0.0.2", "10.9.9.9") + original[:8]
    error = struct.pack("!BBHI", 3, 1, 0, 0) + quoted
    reply = parse_packet(_ip_header(len(error)) + error, has_ip_header=True)
    assert reply is not None and (reply.ident, reply.seq, reply.error) == (0x0101, 5, True)


def test_parse_ignores_garbage_and_other_types() -> None:
    """Truncated packets, echo requests and other ICMP types are not replies."""
    assert parse_packet(b"", has_ip_header=True) is None
    assert parse_packet(b"\x45\x00", has_ip_header=True) is None
    assert parse_packet(echo_request(1, 1, b"x" * 8), has_ip_header=False) is None
    assert parse_packet(struct.pack("!BBHHH", 13, 0, 0, 1, 1), has_ip_header=False) is None


def test_kernel_timestamp_from_ancillary_data() -> None:
    """SCM_TIMESTAMPNS ancillary data decodes to float seconds; absent data gives None."""
    data = struct.pack("@qq", 1_700_000_000, 250_000_000)
    assert kernel_timestamp([(socket.SOL_SOCKET, icmp.SCM_TIMESTAMPNS, data)]) == 1_700_000_000.25
    assert kernel_timestamp([]) is None


async def test_ping_loopback_many_packets() -> None:
    """Three echo requests to 127.0.0.1 all come back with a small RTT and no loss."""
    require_root("a raw ICMP socket (ping_group_range is closed on this machine)")
    pinger = Pinger.open()
    try:
        result = await pinger.ping("127.0.0.1", count=3, spacing=0.01, timeout=1.0)
    finally:
        pinger.close()
    assert result.ok and (result.sent, result.received, result.loss) == (3, 3, 0.0)
    assert result.rtt is not None and 0 < result.rtt < 0.05


async def test_rtt_not_inflated_by_event_loop_lag() -> None:
    """RTT comes from the kernel receive timestamp: a 300 ms stall of the loop does not show up in it."""
    require_root("a raw ICMP socket")
    pinger = Pinger.open()
    try:
        task = asyncio.create_task(pinger.ping("127.0.0.1", count=1, timeout=2.0))
        await asyncio.sleep(0)  # let it send
        await asyncio.sleep(0)
        time.sleep(0.3)  # the loop is blocked while the reply sits in the socket buffer
        result = await task
    finally:
        pinger.close()
    assert result.ok
    assert result.rtt is not None and result.rtt < 0.05
    assert result.duration >= 0.3


async def test_ping_many_matches_replies_to_hosts() -> None:
    """One sweep over many loopback addresses returns one result per host, in order, all answered."""
    require_root("a raw ICMP socket")
    hosts = [f"127.0.{i // 200}.{i % 200 + 1}" for i in range(1000)]
    pinger = Pinger.open(max_packets_per_second=20000)
    try:
        results = await pinger.ping_many(hosts, count=1, timeout=2.0)
    finally:
        pinger.close()
    assert len(results) == 1000
    assert all(r.ok and r.received == 1 for r in results)
    assert pinger.in_flight == 0


async def test_pacing_spreads_sends() -> None:
    """At 1,000 packets/s a 300-host sweep takes about 0.3 s less the 50 ms catch-up: paced, not burst."""
    require_root("a raw ICMP socket")
    pinger = Pinger.open(max_packets_per_second=1000)
    try:
        started = time.monotonic()
        results = await pinger.ping_many([f"127.1.{i // 200}.{i % 200 + 1}" for i in range(300)], count=1, timeout=1.0)
        elapsed = time.monotonic() - started
    finally:
        pinger.close()
    assert all(r.ok for r in results)
    assert 0.3 - CATCH_UP - 0.01 <= elapsed < 1.0


async def test_probe_without_socket_is_an_error_result() -> None:
    """Without an ICMP socket (no privilege) the probe reports why instead of raising."""
    device = Device("r", "s1", DeviceKind.ROUTER, "127.0.0.1", (ProbeSpec("icmp"),))
    result = await icmp.probe(device, ProbeSpec("icmp"), ProbeContext(Settings()))
    assert not result.ok and result.reason == "error" and "CAP_NET_RAW" in result.detail

"""SNMP poll of router interfaces: pure parsing on hand-built varbinds, then a real snmpd on 127.0.0.1."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest
from aiosnmp.exceptions import SnmpErrorTooBig, SnmpTimeoutError
from aiosnmp.message import SnmpVarbind

from telemetryd.probes import snmp
from telemetryd.probes.snmp import (
    IF_HC_IN_OCTETS,
    IF_HC_OUT_OCTETS,
    IF_HIGH_SPEED,
    IF_IN_OCTETS,
    IF_NAME,
    IF_OPER_STATUS,
    IF_OUT_OCTETS,
    SYS_UPTIME,
    SnmpSessions,
    chunks,
    name_table,
    no_such_interface_detail,
    parse_interface,
    poll_router,
    request_oids,
    resolve_interfaces,
    timeout_detail,
)
from telemetryd.sim.router import Snmpd

from ..conftest import require_binary

COMMUNITY = "s3cret-community"

# --- pure ---------------------------------------------------------------------------------


def test_name_table_maps_names_to_indices_and_skips_foreign_rows() -> None:
    """An ifName walk becomes name → ifIndex; bytes decode; rows outside ifName and empty values are ignored."""
    walk = [
        (f"{IF_NAME}.1", b"lo"),
        (f"{IF_NAME}.7", b"wan0"),
        (f"{IF_NAME}.9", "alarm0"),
        (f"{IF_NAME}.10", None),
        (".1.3.6.1.2.1.31.1.1.1.18.7", b"uplink to ISP"),
        (f"{IF_NAME}.11", b"wan0"),
    ]
    assert name_table(walk) == {"lo": 1, "wan0": 7, "alarm0": 9}


def test_request_has_uptime_then_nine_columns_per_interface() -> None:
    """One GET asks sysUpTime once and each interface's nine columns; 32-bit octets only where needed."""
    oids = request_oids([3, 4], needs_32bit=[4])
    assert oids[0] == SYS_UPTIME
    assert len(oids) == 1 + 9 + 11
    assert f"{IF_HC_IN_OCTETS}.3" in oids and f"{IF_IN_OCTETS}.3" not in oids
    assert f"{IF_IN_OCTETS}.4" in oids and f"{IF_OUT_OCTETS}.4" in oids


def test_four_interfaces_fit_one_get() -> None:
    """WAN plus three segments is one GET, not several."""
    assert len(chunks(request_oids([1, 2, 3, 4]), snmp.MAX_VARBINDS_PER_GET)) == 1
    assert [len(part) for part in chunks(list("abcde"), 2)] == [2, 2, 1]


def _row(index: int, **columns: object) -> dict[str, object]:
    return {f"{column}.{index}": value for column, value in columns.items()}


def test_hc_counters_are_read_as_64_bit() -> None:
    """With ifHCIn/OutOctets present the counters are 64-bit and every field is filled."""
    values = {
        f"{IF_NAME}.4": b"edu0",
        f"{IF_HC_IN_OCTETS}.4": 2**40,
        f"{IF_HC_OUT_OCTETS}.4": 7,
        f"{IF_HIGH_SPEED}.4": 100,
        f"{IF_OPER_STATUS}.4": 2,
    }
    parsed = parse_interface(4, values, name="edu0")
    assert parsed.counters is not None
    assert (parsed.counters.in_octets, parsed.counters.out_octets, parsed.counters.counter_bits) == (2**40, 7, 64)
    assert parsed.counters.speed_mbps == 100
    assert parsed.counters.oper_up is False
    assert parsed.counters.in_errors is None  # missing optional columns stay None, not 0
    assert parsed.reported_name == "edu0"


def test_missing_hc_counters_fall_back_to_32_bit() -> None:
    """Without HC counters the 32-bit ifIn/OutOctets are used and marked counter_bits=32."""
    values = {f"{IF_HC_IN_OCTETS}.2": None, f"{IF_IN_OCTETS}.2": 1234, f"{IF_OUT_OCTETS}.2": 5678}
    parsed = parse_interface(2, values)
    assert parsed.counters is not None
    assert parsed.counters.counter_bits == 32
    assert parsed.counters.in_octets == 1234
    assert parsed.counters.name == "2"  # no name asked and none reported: the index names it


def test_no_octet_counters_at_all_are_reported_missing() -> None:
    """With neither HC nor 32-bit counters the parse lists exactly the missing OIDs."""
    parsed = parse_interface(5, {f"{IF_HC_IN_OCTETS}.5": 10})
    assert parsed.counters is None
    assert parsed.missing == (f"{IF_HC_OUT_OCTETS}.5", f"{IF_IN_OCTETS}.5", f"{IF_OUT_OCTETS}.5")


def test_zero_high_speed_means_unknown() -> None:
    """ifHighSpeed 0 (virtual interfaces) is reported as unknown, so no glitch ceiling of 0."""
    values = {f"{IF_HC_IN_OCTETS}.1": 1, f"{IF_HC_OUT_OCTETS}.1": 1, f"{IF_HIGH_SPEED}.1": 0}
    parsed = parse_interface(1, values)
    assert parsed.counters is not None
    assert parsed.counters.speed_mbps is None


def test_resolve_by_name_and_index_and_list_unknown_names() -> None:
    """Names resolve through the table, ints pass through, and unknown names are listed."""
    resolved, unknown = resolve_interfaces({"wan": "wan0", "alarm": 9, "video": "vid0"}, {"wan0": 3})
    assert resolved == {"wan": 3, "alarm": 9}
    assert unknown == ["vid0"]
    detail = no_such_interface_detail("10.0.0.1", unknown, {"wan0": 3, "lo": 1})
    assert "'vid0'" in detail and "lo, wan0" in detail


def test_timeout_detail_explains_v2c_ambiguity() -> None:
    """The timeout sentence names the host and says down-or-wrong-community."""
    detail = timeout_detail("10.1.2.3")
    assert "10.1.2.3" in detail and "down" in detail and "community is wrong" in detail


# --- with a scripted agent (no sockets) ---------------------------------------------------


class ScriptedAgent:
    """Answers like aiosnmp.Snmp from a fixed OID → value table, counting requests."""

    def __init__(self, table: Mapping[str, object], *, max_varbinds: int = 1000, silent: bool = False) -> None:
        self.table = dict(table)
        self.max_varbinds = max_varbinds
        self.silent = silent
        self.gets: list[list[str]] = []
        self.walks = 0
        self.is_closed = False

    async def get(self, oids: str | list[str]) -> list[SnmpVarbind]:
        oids = [oids] if isinstance(oids, str) else oids
        if self.silent:
            raise SnmpTimeoutError
        if len(oids) > self.max_varbinds:
            raise SnmpErrorTooBig(1)
        self.gets.append(oids)
        return [SnmpVarbind(oid, self.table.get(oid)) for oid in oids]  # type: ignore[arg-type]

    async def bulk_walk(self, oid: str, **_: object) -> list[SnmpVarbind]:
        if self.silent:
            raise SnmpTimeoutError
        self.walks += 1
        return [SnmpVarbind(k, v) for k, v in sorted(self.table.items()) if k.startswith(oid + ".")]  # type: ignore[arg-type]

    def close(self) -> None:
        self.is_closed = True


class ScriptedSessions(SnmpSessions):
    """SnmpSessions that hand out one scripted agent instead of opening sockets."""

    def __init__(self, agent: ScriptedAgent) -> None:
        super().__init__()
        self.agent = agent

    def session(self, host: str, port: int, community: str, timeout: float, retries: int) -> ScriptedAgent:  # type: ignore[override]
        return self.agent


def _agent_table(rows: Sequence[tuple[int, str]], *, hc: bool = True) -> dict[str, object]:
    table: dict[str, object] = {SYS_UPTIME: 4242}
    for index, name in rows:
        table[f"{IF_NAME}.{index}"] = name.encode()
        table[f"{IF_OPER_STATUS}.{index}"] = 1
        table[f"{IF_IN_OCTETS}.{index}"] = 100 + index
        table[f"{IF_OUT_OCTETS}.{index}"] = 200 + index
        if hc:
            table[f"{IF_HC_IN_OCTETS}.{index}"] = 10_000 + index
            table[f"{IF_HC_OUT_OCTETS}.{index}"] = 20_000 + index
    return table


async def test_name_table_is_cached_between_polls() -> None:
    """The second poll of a router does not walk ifName again and still sends one GET."""
    agent = ScriptedAgent(_agent_table([(3, "wan0"), (4, "edu0")]))
    sessions = ScriptedSessions(agent)
    for _ in range(2):
        sample = await poll_router("r1", COMMUNITY, {"wan": "wan0", "education": "edu0"}, session_cache=sessions)
        assert sample.ok, sample.detail
    assert agent.walks == 1
    assert len(agent.gets) == 2
    assert dict(sample.interfaces)["education"].in_octets == 10_004


async def test_renumbered_interface_is_resolved_again() -> None:
    """When ifIndex changes (reboot), the ifName read back differs, so the table is walked again."""
    agent = ScriptedAgent(_agent_table([(3, "wan0")]))
    sessions = ScriptedSessions(agent)
    assert (await poll_router("r1", COMMUNITY, {"wan": "wan0"}, session_cache=sessions)).ok
    agent.table = _agent_table([(8, "wan0"), (3, "alarm0")])
    sample = await poll_router("r1", COMMUNITY, {"wan": "wan0"}, session_cache=sessions)
    assert sample.ok
    assert dict(sample.interfaces)["wan"].index == 8
    assert agent.walks == 2


async def test_agent_without_hc_counters_gives_32_bit_and_asks_up_front_next_time() -> None:
    """An agent lacking ifHC counters yields 32-bit counters; later polls get them in the one GET."""
    agent = ScriptedAgent(_agent_table([(2, "wan0")], hc=False))
    sessions = ScriptedSessions(agent)
    sample = await poll_router("r1", COMMUNITY, {"wan": "wan0"}, session_cache=sessions)
    assert sample.ok
    assert dict(sample.interfaces)["wan"].counter_bits == 32
    assert dict(sample.interfaces)["wan"].in_octets == 102
    agent.gets.clear()
    assert (await poll_router("r1", COMMUNITY, {"wan": "wan0"}, session_cache=sessions)).ok
    assert len(agent.gets) == 1


async def test_missing_counters_are_reported_as_missing_oid() -> None:
    """An interface with no octet counters at all gives missing_oid naming the role and OIDs; others are kept."""
    table = _agent_table([(2, "wan0"), (3, "alarm0")])
    for column in (IF_HC_IN_OCTETS, IF_HC_OUT_OCTETS, IF_IN_OCTETS, IF_OUT_OCTETS):
        del table[f"{column}.3"]
    sample = await poll_router(
        "r1", COMMUNITY, {"wan": "wan0", "alarm": "alarm0"}, session_cache=ScriptedSessions(ScriptedAgent(table))
    )
    assert not sample.ok
    assert sample.reason == "missing_oid"
    assert f"{IF_HC_IN_OCTETS}.3" in sample.detail and "alarm" in sample.detail
    assert [role for role, _ in sample.interfaces] == ["wan"]


async def test_too_big_answer_splits_the_get() -> None:
    """An agent answering tooBig gets the same OIDs in smaller GETs, and the poll still succeeds."""
    agent = ScriptedAgent(_agent_table([(1, "a"), (2, "b"), (3, "c"), (4, "d")]), max_varbinds=20)
    sample = await poll_router(
        "r1",
        COMMUNITY,
        {"wan": "a", "alarm": "b", "video": "c", "education": "d"},
        session_cache=ScriptedSessions(agent),
    )
    assert sample.ok, sample.detail
    assert len(agent.gets) >= 3 and all(len(oids) <= 20 for oids in agent.gets)


async def test_silent_agent_is_a_timeout_result_not_an_exception() -> None:
    """A silent agent becomes reason timeout with the explanatory detail."""
    sample = await poll_router(
        "r9", COMMUNITY, {"wan": "wan0"}, session_cache=ScriptedSessions(ScriptedAgent({}, silent=True))
    )
    assert not sample.ok
    assert sample.reason == "timeout"
    assert sample.detail == timeout_detail("r9")


# --- against a real snmpd on 127.0.0.1 -----------------------------------------------------


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Snmpd]:
    """A real net-snmp snmpd on a random high UDP port of 127.0.0.1 (loopback `lo` has ifName "lo")."""
    require_binary("snmpd", "snmpd")
    workdir: Path = tmp_path_factory.mktemp("snmpd")
    daemon = Snmpd("127.0.0.1", _free_udp_port(), COMMUNITY, "127.0.0.1", workdir)
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


async def test_real_agent_gives_counters_of_lo(agent: Snmpd) -> None:
    """Polling `lo` by name returns 64-bit counters, its ifIndex, status up and a sysUpTime."""
    sessions = SnmpSessions()
    try:
        sample = await poll_router(
            "127.0.0.1", COMMUNITY, {"wan": "lo"}, port=agent.port, timeout=1.0, retries=2, session_cache=sessions
        )
    finally:
        sessions.close()
    assert sample.ok, sample.detail
    assert sample.uptime_ticks is not None and sample.uptime_ticks >= 0
    lo = dict(sample.interfaces)["wan"]
    assert (lo.name, lo.counter_bits, lo.oper_up) == ("lo", 64, True)
    assert lo.index == socket.if_nametoindex("lo")
    assert lo.in_octets > 0 and lo.in_errors is not None


async def test_real_agent_counters_advance_between_polls(agent: Snmpd) -> None:
    """Traffic on lo between two polls (the polls themselves) shows as a larger in-octet counter."""
    sessions = SnmpSessions()
    try:
        first = await poll_router(
            "127.0.0.1", COMMUNITY, {"lo": 1}, port=agent.port, timeout=1.0, retries=2, session_cache=sessions
        )
        time.sleep(0.2)  # Snmpd turned net-snmp's 3 s interface cache off: counters are live
        second = await poll_router(
            "127.0.0.1", COMMUNITY, {"lo": 1}, port=agent.port, timeout=1.0, retries=2, session_cache=sessions
        )
    finally:
        sessions.close()
    assert first.ok and second.ok
    assert dict(second.interfaces)["lo"].in_octets > dict(first.interfaces)["lo"].in_octets
    assert second.uptime_ticks is not None and first.uptime_ticks is not None
    assert second.uptime_ticks > first.uptime_ticks


async def test_real_agent_unknown_name_is_no_such_interface(agent: Snmpd) -> None:
    """An ifName the router lacks gives no_such_interface naming it and listing the router's names."""
    sample = await poll_router("127.0.0.1", COMMUNITY, {"video": "video9"}, port=agent.port, timeout=1.0, retries=2)
    assert not sample.ok
    assert sample.reason == "no_such_interface"
    assert "'video9'" in sample.detail and "lo" in sample.detail


async def test_real_agent_unknown_index_is_no_such_interface(agent: Snmpd) -> None:
    """An ifIndex the router lacks gives no_such_interface, not missing_oid."""
    sample = await poll_router("127.0.0.1", COMMUNITY, {"video": 65000}, port=agent.port, timeout=1.0, retries=2)
    assert sample.reason == "no_such_interface"
    assert "65000" in sample.detail


async def test_wrong_community_is_timeout_without_the_community(agent: Snmpd) -> None:
    """A wrong community times out in about timeout x retries, and neither community is in the detail."""
    started = time.monotonic()
    sample = await poll_router("127.0.0.1", "wrong-guess", {"wan": "lo"}, port=agent.port, timeout=0.3, retries=2)
    elapsed = time.monotonic() - started
    assert sample.reason == "timeout"
    assert "community is wrong" in sample.detail
    assert "wrong-guess" not in sample.detail and COMMUNITY not in sample.detail
    assert 0.55 <= elapsed < 1.0


async def test_stopped_agent_is_timeout() -> None:
    """A port where no agent listens gives timeout (ICMP port unreachable is ignored by aiosnmp) in bounded time."""
    started = time.monotonic()
    sample = await poll_router("127.0.0.1", COMMUNITY, {"wan": "lo"}, port=_free_udp_port(), timeout=0.2, retries=2)
    assert sample.reason == "timeout"
    assert time.monotonic() - started < 0.8

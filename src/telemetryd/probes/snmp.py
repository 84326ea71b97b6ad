"""SNMP v2c poll of a school router's interface counters (the passive half of issue 3).

One poll is, at most, one bulk walk of ifName (only when the name → ifIndex table of
that router is not cached yet, or no longer matches) and ONE GET of sysUpTime plus, per
interface, the 64-bit octet counters, speed, status, errors and discards. Counters are
returned raw; turning them into rates is `telemetryd.link.counters`' job.

aiosnmp quirks this module works around (see docs in /work/shared/reference):
`Snmp` must be created inside a running loop; `retries` is the TOTAL number of sends;
decoded values lose their SNMP type (Counter32 and Counter64 are both plain ints), so
the width of a counter is known from which OID was read, not from the value.

A wrong community and a dead router look the same under v2c (a silent agent), so both
are reported as ``timeout`` with a detail that says so. The community never appears in
a detail or a log line.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import aiosnmp
from aiosnmp.exceptions import SnmpErrorStatus, SnmpErrorTooBig, SnmpException, SnmpTimeoutError

from telemetryd.model import InterfaceCounters, SnmpSample

SYS_UPTIME = ".1.3.6.1.2.1.1.3.0"
IF_NAME = ".1.3.6.1.2.1.31.1.1.1.1"
IF_HC_IN_OCTETS = ".1.3.6.1.2.1.31.1.1.1.6"
IF_HC_OUT_OCTETS = ".1.3.6.1.2.1.31.1.1.1.10"
IF_HIGH_SPEED = ".1.3.6.1.2.1.31.1.1.1.15"
IF_IN_OCTETS = ".1.3.6.1.2.1.2.2.1.10"
IF_OUT_OCTETS = ".1.3.6.1.2.1.2.2.1.16"
IF_OPER_STATUS = ".1.3.6.1.2.1.2.2.1.8"
IF_IN_DISCARDS = ".1.3.6.1.2.1.2.2.1.13"
IF_IN_ERRORS = ".1.3.6.1.2.1.2.2.1.14"
IF_OUT_DISCARDS = ".1.3.6.1.2.1.2.2.1.19"
IF_OUT_ERRORS = ".1.3.6.1.2.1.2.2.1.20"

INTERFACE_COLUMNS: tuple[str, ...] = (
    IF_NAME,
    IF_HC_IN_OCTETS,
    IF_HC_OUT_OCTETS,
    IF_HIGH_SPEED,
    IF_OPER_STATUS,
    IF_IN_ERRORS,
    IF_OUT_ERRORS,
    IF_IN_DISCARDS,
    IF_OUT_DISCARDS,
)
"""Read per interface in the one GET; ifName is there to notice a renumbered ifIndex."""
FALLBACK_COLUMNS: tuple[str, ...] = (IF_IN_OCTETS, IF_OUT_OCTETS)
"""32-bit octet counters, read only for interfaces whose agent lacks the HC ones."""

OPER_UP = 1
MAX_VARBINDS_PER_GET = 48
"""4 interfaces x 9 columns + sysUpTime fit one GET whose answer stays under a 1,472-byte datagram."""
WALK_REPETITIONS = 25
DEFAULT_TIMEOUT = 1.0
DEFAULT_RETRIES = 2
"""Total sends: a dead router costs timeout x retries = 2 s per poll, not aiosnmp's 6 s."""

InterfaceRef = str | int
"""How the inventory names an interface: its ifName (str) or its ifIndex (int)."""


# --- pure parsing -------------------------------------------------------------------------


def oid_index(oid: str, column: str) -> int | None:
    """The ifIndex at the end of `oid` when it is a row of `column`, else None."""
    prefix = column + "."
    normalised = oid if oid.startswith(".") else "." + oid
    if not normalised.startswith(prefix):
        return None
    rest = normalised[len(prefix) :]
    return int(rest) if rest.isdigit() else None


def text_value(value: object) -> str | None:
    """An OCTET STRING as text (aiosnmp gives bytes), None when absent."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def int_value(value: object) -> int | None:
    """A numeric varbind as int, None when absent (noSuchInstance) or not a number."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def name_table(varbinds: Iterable[tuple[str, object]]) -> dict[str, int]:
    """ifName → ifIndex from the varbinds of an ifName walk; the first index wins on duplicates."""
    table: dict[str, int] = {}
    for oid, value in varbinds:
        index = oid_index(oid, IF_NAME)
        name = text_value(value)
        if index is not None and name is not None:
            table.setdefault(name, index)
    return table


def interface_oids(index: int, *, with_32bit: bool = False) -> list[str]:
    """The OIDs the poll GETs for one interface, the 32-bit octet counters only when asked."""
    columns = INTERFACE_COLUMNS + FALLBACK_COLUMNS if with_32bit else INTERFACE_COLUMNS
    return [f"{column}.{index}" for column in columns]


def request_oids(indices: Iterable[int], *, needs_32bit: Iterable[int] = ()) -> list[str]:
    """sysUpTime followed by every interface's OIDs, in one list for one GET."""
    fallback = set(needs_32bit)
    oids = [SYS_UPTIME]
    for index in dict.fromkeys(indices):
        oids += interface_oids(index, with_32bit=index in fallback)
    return oids


def chunks(oids: Sequence[str], size: int) -> list[list[str]]:
    """`oids` split into GETs of at most `size` varbinds."""
    return [list(oids[i : i + size]) for i in range(0, len(oids), max(1, size))]


@dataclass(frozen=True, slots=True)
class ParsedInterface:
    """What the GET said about one interface: the counters, or which OIDs were missing."""

    counters: InterfaceCounters | None
    missing: tuple[str, ...] = ()
    """OIDs that came back noSuchInstance/noSuchObject and that the counters needed."""
    reported_name: str | None = None
    """ifName.N as the agent answered it; differs from the asked name when ifIndex was renumbered."""


def parse_interface(index: int, values: Mapping[str, object], *, name: str | None = None) -> ParsedInterface:
    """One interface's counters from the GET answer (OID → value); 32-bit counters when HC ones are missing.

    `name` is the ifName the inventory asked for; without it the agent's ifName (or the
    index) names the interface.
    """

    def get(column: str) -> object:
        return values.get(f"{column}.{index}")

    reported_name = text_value(get(IF_NAME))
    hc_in, hc_out = int_value(get(IF_HC_IN_OCTETS)), int_value(get(IF_HC_OUT_OCTETS))
    bits = 64
    in_octets, out_octets = hc_in, hc_out
    if in_octets is None or out_octets is None:
        in_octets, out_octets = int_value(get(IF_IN_OCTETS)), int_value(get(IF_OUT_OCTETS))
        bits = 32
        if in_octets is None or out_octets is None:
            missing = [
                f"{column}.{index}"
                for column in (IF_HC_IN_OCTETS, IF_HC_OUT_OCTETS, *FALLBACK_COLUMNS)
                if int_value(get(column)) is None
            ]
            return ParsedInterface(None, tuple(missing), reported_name)
    status = int_value(get(IF_OPER_STATUS))
    counters = InterfaceCounters(
        name=name or reported_name or str(index),
        index=index,
        in_octets=in_octets,
        out_octets=out_octets,
        counter_bits=bits,
        speed_mbps=int_value(get(IF_HIGH_SPEED)) or None,  # 0 means "unknown" for virtual interfaces
        oper_up=None if status is None else status == OPER_UP,
        in_errors=int_value(get(IF_IN_ERRORS)),
        out_errors=int_value(get(IF_OUT_ERRORS)),
        in_discards=int_value(get(IF_IN_DISCARDS)),
        out_discards=int_value(get(IF_OUT_DISCARDS)),
    )
    return ParsedInterface(counters, (), reported_name)


def resolve_interfaces(
    interfaces: Mapping[str, InterfaceRef], table: Mapping[str, int]
) -> tuple[dict[str, int], list[str]]:
    """Role → ifIndex using the name table, and the names the table lacks."""
    resolved: dict[str, int] = {}
    unknown: list[str] = []
    for role, ref in interfaces.items():
        if isinstance(ref, int):
            resolved[role] = ref
        elif ref in table:
            resolved[role] = table[ref]
        else:
            unknown.append(ref)
    return resolved, unknown


def no_such_interface_detail(host: str, unknown: Sequence[str], table: Mapping[str, int]) -> str:
    """The sentence for names the router does not have, listing the names it does have."""
    have = ", ".join(sorted(table)) or "none"
    names = ", ".join(repr(name) for name in unknown)
    return f"{host} has no interface named {names}; its interfaces are: {have}"


def timeout_detail(host: str) -> str:
    """The sentence for a silent agent; v2c cannot tell a dead router from a wrong community."""
    return f"no answer from {host}: the router is down or the community is wrong (SNMP v2c cannot tell them apart)"


# --- sessions and cached tables -----------------------------------------------------------


@dataclass(slots=True)
class _RouterTables:
    names: dict[str, int] = field(default_factory=dict)
    needs_32bit: set[int] = field(default_factory=set)
    """ifIndex values whose agent answered without HC counters: read the 32-bit ones up front."""


class SnmpSessions:
    """Long-lived SNMP sockets (one per router) and each router's ifName → ifIndex table.

    Create it inside the running loop that polls, pass it to every `poll_router`, and
    `close()` it at shutdown. A session is keyed by (host, port, community, timeout,
    retries), so a changed community or timeout after a reload opens a fresh one; the
    key never leaves this object.
    """

    def __init__(self) -> None:
        self._sessions: dict[tuple[str, int, str, float, int], aiosnmp.Snmp] = {}
        self._tables: dict[tuple[str, int], _RouterTables] = {}

    def session(self, host: str, port: int, community: str, timeout: float, retries: int) -> aiosnmp.Snmp:
        """The cached session for this router and settings, opened on first use."""
        key = (host, port, community, timeout, retries)
        session = self._sessions.get(key)
        if session is None or session.is_closed:
            for old in [k for k in self._sessions if k[:2] == (host, port)]:
                self._sessions.pop(old).close()
            session = _open(host, port, community, timeout, retries)
            self._sessions[key] = session
        return session

    def tables(self, host: str, port: int) -> _RouterTables:
        """The cached name table and HC-counter knowledge of one router."""
        return self._tables.setdefault((host, port), _RouterTables())

    def forget(self, host: str, port: int = 161) -> None:
        """Drop a router's session and tables (removed from the inventory)."""
        for key in [k for k in self._sessions if k[:2] == (host, port)]:
            self._sessions.pop(key).close()
        self._tables.pop((host, port), None)

    def routers(self) -> set[tuple[str, int]]:
        """(host, port) of every router with a session or a cached table."""
        return {key[:2] for key in self._sessions} | set(self._tables)

    def close(self) -> None:
        """Close every socket; the tables are kept (they hold no resources)."""
        for session in self._sessions.values():
            session.close()
        self._sessions.clear()

    def __len__(self) -> int:
        return len(self._sessions)


def _open(host: str, port: int, community: str, timeout: float, retries: int) -> aiosnmp.Snmp:
    # Both set explicitly: aiosnmp's defaults (1 s x 6 sends) make a dead router cost 6 s.
    return aiosnmp.Snmp(
        host=host, port=port, community=community, timeout=timeout, retries=max(1, retries), max_repetitions=25
    )


# --- the poll -------------------------------------------------------------------------------


class _PollFailed(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


async def poll_router(
    host: str,
    community: str,
    interfaces: Mapping[str, InterfaceRef],
    *,
    port: int = 161,
    timeout: float = DEFAULT_TIMEOUT,
    retries: int = DEFAULT_RETRIES,
    session_cache: SnmpSessions | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> SnmpSample:
    """Read sysUpTime and the counters of a router's WAN and segment interfaces in one GET.

    `interfaces` maps a role (``wan`` or a Segment value) to an ifName or ifIndex.
    Without `session_cache` a one-off socket is opened and the name table is walked on
    every poll. Never raises for device faults: the sample says ``timeout``,
    ``no_such_interface``, ``missing_oid`` or ``error`` with a detail sentence.
    """
    started = clock()
    own = session_cache is None
    cache = SnmpSessions() if own else session_cache
    assert cache is not None
    try:
        session = cache.session(host, port, community, timeout, retries)
        tables = cache.tables(host, port)
        uptime, parsed, resolved = await _poll(session, host, interfaces, tables)
    except _PollFailed as failure:
        return SnmpSample(False, clock(), clock() - started, reason=failure.reason, detail=failure.detail)
    finally:
        if own:
            cache.close()
    at = clock()
    read = tuple((role, p.counters) for role, p in parsed.items() if p.counters is not None)
    missing = [oid for p in parsed.values() for oid in p.missing]
    if uptime is None:
        missing.insert(0, SYS_UPTIME)
    if missing:
        roles = ", ".join(f"{role} (ifIndex {resolved[role]})" for role, p in parsed.items() if p.missing)
        detail = f"{host} did not return {', '.join(missing)}" + (f" for {roles}" if roles else "")
        return SnmpSample(False, at, at - started, uptime, read, reason="missing_oid", detail=detail)
    return SnmpSample(True, at, at - started, uptime, read)


async def _poll(
    session: aiosnmp.Snmp, host: str, interfaces: Mapping[str, InterfaceRef], tables: _RouterTables
) -> tuple[int | None, dict[str, ParsedInterface], dict[str, int]]:
    walked = False
    if any(isinstance(ref, str) and ref not in tables.names for ref in interfaces.values()):
        tables.names = await _walk_names(session, host)
        walked = True
    while True:
        resolved, unknown = resolve_interfaces(interfaces, tables.names)
        if unknown:
            raise _PollFailed("no_such_interface", no_such_interface_detail(host, unknown, tables.names))
        values = await _get(session, host, request_oids(resolved.values(), needs_32bit=tables.needs_32bit))
        parsed = {
            role: parse_interface(index, values, name=ref if isinstance(ref, str) else None)
            for (role, index), ref in zip(resolved.items(), interfaces.values(), strict=True)
        }
        # A reboot or a recreated interface can renumber ifIndex: the name read back says so.
        renamed = [
            ref for role, ref in interfaces.items() if isinstance(ref, str) and parsed[role].reported_name != ref
        ]
        if renamed and not walked:
            tables.names = await _walk_names(session, host)
            walked = True
            continue
        if renamed:
            raise _PollFailed("no_such_interface", no_such_interface_detail(host, renamed, tables.names))
        lacking_hc = {
            index
            for role, index in resolved.items()
            if parsed[role].counters is None and index not in tables.needs_32bit
        }
        if lacking_hc:
            # Old agents have no ifXTable counters: ask for the 32-bit ones, and from now on up front.
            tables.needs_32bit |= lacking_hc
            continue
        absent = [
            f"ifIndex {ref}"
            for role, ref in interfaces.items()
            if isinstance(ref, int) and parsed[role].counters is None and parsed[role].reported_name is None
        ]
        if absent:
            raise _PollFailed("no_such_interface", no_such_interface_detail(host, absent, tables.names))
        return int_value(values.get(SYS_UPTIME)), parsed, resolved


async def _walk_names(session: aiosnmp.Snmp, host: str) -> dict[str, int]:
    try:
        varbinds = await session.bulk_walk(IF_NAME, max_repetitions=WALK_REPETITIONS)
    except SnmpTimeoutError:
        raise _PollFailed("timeout", timeout_detail(host)) from None
    except (SnmpException, OSError) as exc:
        raise _PollFailed("error", f"walking ifName on {host} failed: {_describe(exc)}") from None
    return name_table((vb.oid, vb.value) for vb in varbinds)


async def _get(session: aiosnmp.Snmp, host: str, oids: Sequence[str]) -> dict[str, object]:
    """Every OID's value (None when the agent lacks it), in as few GETs as the PDU size allows."""
    size = MAX_VARBINDS_PER_GET
    while True:
        try:
            answers = await asyncio.gather(*(session.get(part) for part in chunks(oids, size)))
        except SnmpErrorTooBig:
            if size == 1:
                raise _PollFailed("error", f"{host} answers tooBig even for one OID") from None
            size = max(1, size // 2)
            continue
        except SnmpTimeoutError:
            raise _PollFailed("timeout", timeout_detail(host)) from None
        except (SnmpException, OSError) as exc:
            raise _PollFailed("error", f"GET on {host} failed: {_describe(exc)}") from None
        return {vb.oid: vb.value for answer in answers for vb in answer}


def _describe(exc: BaseException) -> str:
    if isinstance(exc, SnmpErrorStatus):
        return f"error-status {type(exc).__name__.removeprefix('SnmpError')} ({exc})"
    if isinstance(exc, OSError):
        return f"{type(exc).__name__}: {exc.strerror or exc}"
    return type(exc).__name__


__all__ = [
    "DEFAULT_RETRIES",
    "DEFAULT_TIMEOUT",
    "InterfaceRef",
    "ParsedInterface",
    "SnmpSessions",
    "interface_oids",
    "name_table",
    "parse_interface",
    "poll_router",
    "request_oids",
    "resolve_interfaces",
]

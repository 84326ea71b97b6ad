"""`telemetryd probe TARGET` and `telemetryd speedtest SCHOOL`: one run now, printed for a person."""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path
from typing import TextIO

from telemetryd.config import ConfigError, Settings, load_config
from telemetryd.config.inventory import parse_probe
from telemetryd.model import Device, DeviceKind, Direction, ProbeResult, ProbeSpec, SpeedResult
from telemetryd.probes import PROBERS, ProbeContext, speedtest
from telemetryd.probes.icmp import Pinger
from telemetryd.secrets import SecretMissing, Secrets


def format_result(spec: ProbeSpec, result: ProbeResult) -> str:
    """One line: probe, verdict, timing, and the reason when it failed."""
    if result.ok:
        parts = [f"{spec.name:<10} OK"]
        if result.rtt is not None:
            parts.append(f"rtt {result.rtt * 1000:.2f} ms")
        if result.sent:
            parts.append(f"{result.received}/{result.sent} replies, loss {result.loss or 0:.0%}")
        return "  ".join(parts)
    return f"{spec.name:<10} FAIL  {result.reason}: {result.detail}  ({result.duration:.2f} s)"


def _specs(names: list[str] | None, default: tuple[ProbeSpec, ...]) -> tuple[ProbeSpec, ...]:
    if not names:
        return default
    specs = []
    for name in names:
        parsed = parse_probe(name)
        assert isinstance(parsed, dict)
        specs.append(ProbeSpec(parsed["protocol"], parsed.get("port")))
    return tuple(specs)


async def run_probe(target: str, config_path: Path | None, probe_names: list[str] | None) -> int:
    """Probe a device id (needs the config) or an address; exit 0 when every probe passed."""
    settings = Settings()
    device: Device | None = None
    if config_path is not None:
        try:
            config = load_config(config_path)
        except ConfigError as exc:
            print("\n".join(str(p) for p in exc.problems), file=sys.stderr)
            return 2
        settings = config.settings
        device = config.inventory.devices_by_id.get(target)
    if device is None:
        try:
            host = str(ipaddress.IPv4Address(target))
        except ValueError:
            hint = "" if config_path else " (pass -c CONFIG to look device ids up)"
            print(
                f"{target!r} is neither a device id in the inventory nor an IPv4 address{hint}",
                file=sys.stderr,
            )
            return 2
        device = Device(id=host, school_id="-", kind=DeviceKind.ROUTER, host=host, probes=(ProbeSpec("icmp"),))
    try:
        specs = _specs(probe_names, device.probes)
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    for spec in specs:
        if spec.protocol not in PROBERS:
            print(f"unknown probe {spec.name!r}; known: {', '.join(PROBERS)}", file=sys.stderr)
            return 2

    ctx = ProbeContext(settings)
    if any(s.protocol == "icmp" for s in specs):
        try:
            ctx.pinger = Pinger.open()
        except PermissionError as exc:
            print(f"icmp: {exc}", file=sys.stderr)
    title = f"{device.id} ({device.kind.value}, {device.host})" if device.id != device.host else device.host
    print(title)
    failures = 0
    try:
        for spec in specs:
            result = await PROBERS[spec.protocol](device, spec, ctx)
            failures += not result.ok
            print("  " + format_result(spec, result))
    finally:
        if ctx.pinger is not None:
            ctx.pinger.close()
    return 1 if failures else 0


class _ProgressBar:
    """A one-line progress bar on stderr: time spent against the budget, bytes moved."""

    def __init__(self, label: str, max_seconds: float, *, stream: TextIO = sys.stderr) -> None:
        self.label = label
        self.max_seconds = max_seconds
        self.stream = stream
        self.tty = stream.isatty()

    def __call__(self, elapsed: float, moved: int) -> None:
        if not self.tty:
            return
        done = min(1.0, elapsed / self.max_seconds)
        bar = "#" * int(done * 30)
        self.stream.write(f"\r  {self.label:<9}[{bar:<30}] {elapsed:5.1f} s {moved / 1e6:8.1f} MB")
        self.stream.flush()

    def finish(self) -> None:
        if self.tty:
            self.stream.write("\r" + " " * 72 + "\r")
            self.stream.flush()


def format_speed(result: SpeedResult, contract_mbps: float, below_ratio: float) -> str:
    """One line per direction: measured rate against the contract, or why it failed."""
    if not result.ok:
        return f"{result.direction.value:<9} FAIL  {result.reason}: {result.detail}  ({result.duration:.1f} s)"
    ratio = result.mbps / contract_mbps if contract_mbps else 0.0
    verdict = "OK" if ratio >= below_ratio else f"BELOW CONTRACT (under {below_ratio:.0%})"
    return (
        f"{result.direction.value:<9} {result.mbps:8.1f} Mbps of {contract_mbps:g} contracted ({ratio:.0%})  {verdict}"
        f"  [{result.bytes_used / 1e6:.1f} MB, {result.duration:.1f} s, {result.streams} streams"
        f"{', settled early' if result.stable else ''}]"
    )


async def run_speedtest(school_id: str, config_path: Path, streams: int | None) -> int:
    """`telemetryd speedtest SCHOOL`: one test now; exit 0 compliant, 1 below contract or failed."""
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        print("\n".join(str(p) for p in exc.problems), file=sys.stderr)
        return 2
    school = config.inventory.schools_by_id.get(school_id)
    if school is None:
        print(f"no school {school_id!r} in the inventory (shard {config.settings.shard})", file=sys.stderr)
        return 2
    if school.speedtest is None:
        print(f"school {school_id!r} has no `speedtest:` (url and credentials of its responder)", file=sys.stderr)
        return 2
    try:
        token = Secrets(config.settings.credentials_directory).get(school.speedtest.credentials)
    except SecretMissing as exc:
        print(str(exc), file=sys.stderr)
        return 2
    options = config.settings.speedtest
    contract = school.contract.total_mbps
    print(
        f"{school.id} {school.name} ({school.district}): contract {contract:g} Mbps, responder {school.speedtest.url}"
    )
    failures = 0
    for direction in Direction:
        bar = _ProgressBar(direction.value, options.max_seconds)
        try:
            result = await speedtest.measure(
                school.speedtest.url,
                token,
                direction,
                streams=streams or options.streams,
                max_bytes=options.max_bytes,
                max_seconds=options.max_seconds,
                progress=bar,
            )
        finally:
            bar.finish()
        print("  " + format_speed(result, contract, options.below_contract_ratio))
        failures += not result.ok or result.mbps < contract * options.below_contract_ratio
        if result.reason == "unauthorized":
            break  # never retry a rejected token
    return 1 if failures else 0

"""`telemetryd probe TARGET` and `telemetryd speedtest SCHOOL`: one run now, printed for a person."""

from __future__ import annotations

import ipaddress
import sys
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TextIO

from pydantic import ValidationError

from telemetryd import logs
from telemetryd.config import ConfigError, Settings, load_config
from telemetryd.config.inventory import ProbeEntry, parse_probe
from telemetryd.model import Device, DeviceKind, Direction, ProbeResult, ProbeSpec, SpeedResult
from telemetryd.probes import PROBERS, ProbeContext, open_resources, speedtest
from telemetryd.probes.isapi import AxProStatus, IsapiHealth
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


def format_finding(result: ProbeResult) -> list[str]:
    """What an ISAPI check found beyond ok/fail (model, firmware, clock, channels, disks); AX PRO areas and zones."""
    found = result.finding
    if isinstance(found, AxProStatus):
        lines = [f"area {a.id} {a.name}: {a.arming}" + (" ALARM" if a.alarm else "") for a in found.subsystems]
        lines += [
            f"zone {z.id} {z.name}: {z.status}" + (" tamper" if z.tamper else "") + (" ALARM" if z.alarm else "")
            for z in found.zones
        ]
        return lines + [f"problem [{p.step}] {p.reason}: {p.detail}" for p in found.problems]
    if not isinstance(found, IsapiHealth):
        return []
    lines = []
    if found.identity is not None:
        identity = found.identity
        lines.append(
            f"model {identity.model}, firmware {identity.firmware}, serial {identity.serial}"
            + (f", type {identity.device_type}" if identity.device_type else "")
        )
    if found.certificate:
        lines.append(
            f"certificate {found.certificate} (pinned)"
            + (" - the device shows another" if found.certificate_changed else "")
        )
    if found.clock_drift is not None:
        lines.append(f"clock {found.clock_drift:+.1f} s against this machine")
    if found.channels:
        offline = [str(c.id) for c in found.channels if not c.online]
        lines.append(f"channels: {len(found.channels)}, offline: {', '.join(offline) or 'none'}")
    if found.inputs:
        lost = [str(i.id) for i in found.inputs if i.enabled and not i.has_video]
        lines.append(f"analog inputs: {len(found.inputs)}, no video: {', '.join(lost) or 'none'}")
    for disk in found.disks:
        if disk.present:
            lines.append(f"disk {disk.id}: {disk.status}" + ("" if disk.healthy else " (fault)"))
    if found.recording:
        idle = [str(channel) for channel, recorded in found.recording if not recorded]
        recorded = len(found.recording) - len(idle)
        lines.append(f"recording: {recorded}/{len(found.recording)} channels, idle: {', '.join(idle) or 'none'}")
    if found.unsupported:
        lines.append("not offered (judged without): " + ", ".join(found.unsupported))
    lines.extend(f"problem [{p.step}] {p.reason}: {p.detail}" for p in found.problems)
    return lines


def _specs(names: list[str] | None, default: tuple[ProbeSpec, ...]) -> tuple[ProbeSpec, ...]:
    """`-p` probes checked as the inventory loader checks them (a tcp probe needs a port); ValueError says why."""
    if not names:
        return default
    specs = []
    for name in names:
        try:
            specs.append(ProbeEntry.model_validate(parse_probe(name)).spec)
        except ValidationError as exc:
            raise ValueError(f"-p {name}: {exc.errors()[0]['msg'].removeprefix('Value error, ')}") from None
    return tuple(specs)


async def run_probe(target: str, config_path: Path | None, probe_names: list[str] | None) -> int:
    """Probe a device id (needs the config) or an address; exit 0 when every probe passed."""
    logs.configure("console", "warning", stream=sys.stderr)  # stdout is the result; the probers' log lines are not
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

    title = f"{device.id} ({device.kind.value}, {device.host})" if device.id != device.host else device.host
    print(title)
    failures = 0
    # The same path as the daemon: each prober module opens what it holds, the stack closes it.
    ctx = ProbeContext(settings, Secrets(settings.credentials_directory))
    async with AsyncExitStack() as stack:
        unavailable = await open_resources(stack, ctx, {s.protocol for s in specs})
        for protocol, problem in unavailable.items():
            print(f"{protocol}: {problem}", file=sys.stderr)
        for spec in specs:
            result = await PROBERS[spec.protocol](device, spec, ctx)
            failures += not result.ok
            print("  " + format_result(spec, result))
            for line in format_finding(result):
                print("    " + line)
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

"""`telemetryd probe TARGET`: run probes once and print a result a person can read."""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path

from telemetryd.config import ConfigError, Settings, load_config
from telemetryd.config.inventory import parse_probe
from telemetryd.model import Device, DeviceKind, ProbeResult, ProbeSpec
from telemetryd.probes import PROBERS, ProbeContext
from telemetryd.probes.icmp import Pinger


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

"""Compare what the daemon exports with what the simulator knows to be true."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from telemetryd.sim.city import City

UpKey = tuple[str, str | None]
"""(device id, probe name), or (device id, None) for the device as a whole."""


def exported_up(metrics_text: str) -> dict[UpKey, float]:
    """`telemetryd_device_up` and `telemetryd_probe_up` samples from a /metrics body."""
    out: dict[UpKey, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == "telemetryd_device_up":
                out[(sample.labels["device"], None)] = sample.value
            elif sample.name == "telemetryd_probe_up":
                out[(sample.labels["device"], sample.labels["probe"])] = sample.value
    return out


@dataclass(slots=True)
class Agreement:
    """How many (device, probe) verdicts were compared and which disagreed."""

    compared: int = 0
    wrong: list[str] = field(default_factory=list)
    devices_compared: int = 0
    devices_agreeing: int = 0

    @property
    def agreeing(self) -> int:
        """Verdicts that matched the truth."""
        return self.compared - len(self.wrong)


def compare(city: City, exported: dict[UpKey, float], at: float, *, margin: float) -> Agreement:
    """Check every device and probe whose truth is certain at `at`.

    `margin` should cover how stale the exported state can be (one probe interval
    plus a timeout): flapping devices that changed within it are left out.
    """
    result = Agreement()
    for device in city.inventory.devices_by_id.values():
        truths = [city.expected(device.id, spec.name, at, margin=margin) for spec in device.probes]
        device_ok = True
        for spec, truth in zip(device.probes, truths, strict=True):
            if truth is None:
                continue
            result.compared += 1
            got = exported.get((device.id, spec.name))
            if got != (1.0 if truth else 0.0):
                device_ok = False
                result.wrong.append(f"{device.id} {spec.name}: truth {'up' if truth else 'down'}, exported {got}")
        if all(t is not None for t in truths):
            result.compared += 1
            result.devices_compared += 1
            want = 1.0 if all(truths) else 0.0
            got = exported.get((device.id, None))
            if got != want:
                device_ok = False
                result.wrong.append(f"{device.id}: truth {'up' if want else 'down'}, exported {got}")
            result.devices_agreeing += device_ok
    return result

"""The simulated city: generated schools and devices, brought up on real addresses.

`generate_city` makes the schools, their inventory and the truth about every device
(alive, dead, refusing ports, flapping); `Fleet` makes the devices answer on the
network as that truth says, in a network namespace (root) or on loopback.
"""

from telemetryd.sim.city import City, Condition, DeviceTruth, generate_city
from telemetryd.sim.fleet import (
    LOOPBACK_BASE,
    NETNS_BASE,
    Fleet,
    FleetError,
    default_base,
    port_offset_for,
    resolve_mode,
    route_leads_into,
)
from telemetryd.sim.schedule import FlapSchedule

__all__ = [
    "LOOPBACK_BASE",
    "NETNS_BASE",
    "City",
    "Condition",
    "DeviceTruth",
    "FlapSchedule",
    "Fleet",
    "FleetError",
    "default_base",
    "generate_city",
    "port_offset_for",
    "resolve_mode",
    "route_leads_into",
]

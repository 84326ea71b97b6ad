"""A few schools with real shaped links and a real SNMP router, as inventory the daemon loads.

`LinkLab` starts `ShapedLinks` (a namespace per school, `tc` on both ends of its veth,
a speed-test responder inside) and one `SimRouter` (net-snmp `snmpd`, one interface per
segment shaped to its allocation, a known load on each), then writes:

* ``<inventory>/links.yaml``: one school per shaped link, contract 150 = 20/30/100,
  `speedtest:` pointing at its responder; the first school's router is the SimRouter
  with `snmp:` naming its interfaces;
* ``<credentials>/speedtest-<school>`` and ``<credentials>/snmp-<school>``: the secrets.

Root only (namespaces, `tc`). The demo and the end-to-end tests use it; the truth is
`LinkLab.rates` (link rate per school) and `SimRouter.load_mbps` (load per segment).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import yaml

from telemetryd.sim.router import SimRouter
from telemetryd.sim.shaped_links import ShapedLinks

DEMO_LINKS: tuple[tuple[str, float], ...] = (
    ("shy-link-020", 20.0),
    ("shy-link-150", 150.0),
    ("shy-link-100", 100.0),
)
"""One school delivered 20 Mbit/s of its 150 (the audit's finding), one compliant, one at 100."""


class LinkLab:
    """Shaped schools plus one SNMP router, written out as inventory and credentials."""

    def __init__(
        self,
        inventory_dir: Path,
        credentials_dir: Path,
        *,
        schools: Sequence[tuple[str, float]] = DEMO_LINKS,
        router_load_mbps: dict[str, float] | None = None,
        delay_ms: float = 5.0,
    ) -> None:
        self.inventory_dir = inventory_dir
        self.credentials_dir = credentials_dir
        self.rates = dict(schools)
        self.links = ShapedLinks(list(schools), delay_ms=delay_ms)
        self.community = "c-" + secrets.token_hex(8)
        self.router = SimRouter(community=self.community, load_mbps=router_load_mbps)
        self.router_school = schools[0][0]

    def start(self) -> LinkLab:
        """Bring the links and the router up and write inventory and credentials."""
        try:
            self.links.start()
            self.router.start()
            self._write()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Tear everything down (safe to repeat)."""
        try:
            self.router.stop()
        finally:
            self.links.stop()

    def __enter__(self) -> LinkLab:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _write(self) -> None:
        self.inventory_dir.mkdir(parents=True, exist_ok=True)
        self.credentials_dir.mkdir(parents=True, exist_ok=True)
        schools = []
        for link in self.links.schools:
            token_name = f"speedtest-{link.school_id}"
            _write_secret(self.credentials_dir / token_name, link.token)
            if link.school_id == self.router_school:
                community_name = f"snmp-{link.school_id}"
                _write_secret(self.credentials_dir / community_name, self.community)
                router = {
                    "id": f"{link.school_id}-router",
                    "kind": "router",
                    "host": self.router.host,
                    "credentials": community_name,
                    "snmp": {"interfaces": self.router.interfaces},
                }
            else:
                router = {"id": f"{link.school_id}-router", "kind": "router", "host": link.address}
            schools.append(
                {
                    "id": link.school_id,
                    "name": f"Shaped link school ({link.rate_mbit:g} Mbit/s delivered)",
                    "district": "Simulated links",
                    "contract": {"total_mbps": 150, "segments": {"alarm": 20, "video": 30, "education": 100}},
                    "speedtest": {"url": link.url, "credentials": token_name},
                    "devices": [router],
                }
            )
        text = "# Written by telemetryd.sim.linklab: shaped links and a simulated SNMP router.\n"
        text += yaml.safe_dump({"schools": schools}, sort_keys=False)
        (self.inventory_dir / "links.yaml").write_text(text, encoding="utf-8")


def _write_secret(path: Path, value: str) -> None:
    path.touch(mode=0o600, exist_ok=True)
    path.write_text(value + "\n", encoding="utf-8")

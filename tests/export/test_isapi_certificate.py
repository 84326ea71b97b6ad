"""Exporter: an HTTPS device's certificate state (`telemetryd_isapi_certificate_changed`) and its probe label."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from telemetryd.export.app import Exposition
from tests.export.test_findings import NOW, _daemon, get, nvr_health, scrape


def test_certificate_changed_is_exported_for_pinned_https_devices_only(tmp_path: Path) -> None:
    """A pinned HTTPS NVR exports 0, then 1 when its certificate changed; a plain-HTTP NVR exports no such series."""
    https = {"id": "s1-nvr", "kind": "nvr", "host": "127.0.1.2", "credentials": "hik", "probes": ["icmp", "isapis"]}
    plain = {"id": "s1-nvr2", "kind": "nvr", "host": "127.0.1.4", "credentials": "hik", "probes": ["isapi"]}
    daemon = _daemon(tmp_path, [https, plain])
    registry = Exposition(daemon.export_sources())
    pinned = dataclasses.replace(nvr_health(), certificate="sha256:0011223344556677")
    daemon.state.apply("s1-nvr", "isapis:443", pinned.probe_result(), NOW)
    daemon.state.apply("s1-nvr2", "isapi:80", nvr_health("SN-0002").probe_result(), NOW)
    labels = {"school": "s1", "device": "s1-nvr", "kind": "nvr"}
    scraped = scrape(registry)
    assert get(scraped, "telemetryd_isapi_certificate_changed", **labels) == 0.0
    assert not [
        key for key in scraped if key[0] == "telemetryd_isapi_certificate_changed" and ("device", "s1-nvr2") in key[1]
    ]

    changed = dataclasses.replace(
        pinned, ok=False, reason="certificate_changed", certificate_changed=True, identity=None, channels=(), disks=()
    )
    daemon.state.apply("s1-nvr", "isapis:443", changed.probe_result(), NOW + 300)
    scraped = scrape(registry)
    assert get(scraped, "telemetryd_isapi_certificate_changed", **labels) == 1.0
    assert ("telemetryd_probe_up", frozenset({**labels, "probe": "isapis:443"}.items())) in scraped

"""The real Prometheus scrapes telemetryd over TLS with basic auth, as the shipped scrape block says.

A CA and a server certificate for 127.0.0.1 are made with `openssl` (`telemetryd.sim.certs`);
the web config is the exporter-toolkit file Prometheus' own exporters read. Two jobs scrape
the same target: one with `tls_config` and `basic_auth` (up 1), one with TLS but without
credentials (up 0, its last error the 401). Then the certificate is replaced on disk by one
from the same CA and the next connection is served with it, without a restart.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import yaml

from telemetryd.sim.certs import certificate_authority, issued_by
from tests.conftest import require_binary
from tests.daemon_process import DaemonProcess, metric
from tests.helpers import write_config

pytestmark = pytest.mark.integration

USER, PASSWORD = "prometheus", "noc-scraper-Oof4ieM8"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _https(url: str, ca: Path, *, authorization: str | None = None) -> tuple[int, str]:
    context = ssl.create_default_context(cafile=str(ca))
    request = urllib.request.Request(url)
    if authorization:
        request.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _targets(prom_port: int) -> dict[str, dict[str, Any]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{prom_port}/api/v1/targets", timeout=5) as response:
        active = json.load(response)["data"]["activeTargets"]
    return {t["labels"]["job"]: t for t in active}


def test_prometheus_scrapes_over_tls_with_basic_auth(tmp_path: Path) -> None:
    """up is 1 with tls_config + basic_auth, 0 (401) without credentials; a rotated certificate is picked up."""
    prometheus_bin = require_binary("prometheus", "prometheus")
    ca = certificate_authority(tmp_path)
    server = issued_by(ca, tmp_path, "127.0.0.1")
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10)).decode()
    (tmp_path / "web-config.yml").write_text(
        yaml.safe_dump(
            {
                "tls_server_config": {"cert_file": server.cert.name, "key_file": server.key.name},
                "basic_auth_users": {USER: hashed},
            }
        )
    )
    (tmp_path / "scrape-password").write_text(PASSWORD + "\n")
    port = _free_port()
    config = write_config(tmp_path, [], listen=f"127.0.0.1:{port}", web_config_file="web-config.yml")
    prom_port = _free_port()
    tls_config = {"ca_file": str(ca.cert)}
    target = {"targets": [f"127.0.0.1:{port}"]}
    prometheus_yml = tmp_path / "prometheus.yml"
    prometheus_yml.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "scrape_timeout": "900ms"},
                "scrape_configs": [
                    {
                        "job_name": "telemetryd",
                        "scheme": "https",
                        "tls_config": tls_config,
                        "basic_auth": {"username": USER, "password_file": str(tmp_path / "scrape-password")},
                        "static_configs": [target],
                    },
                    {"job_name": "stranger", "scheme": "https", "tls_config": tls_config, "static_configs": [target]},
                ],
            }
        )
    )
    with DaemonProcess(config, tee=tmp_path / "daemon.log") as daemon:
        listening = daemon.wait_event("http_listening")
        assert listening["tls"] is True and listening["basic_auth"] is True
        base = f"https://127.0.0.1:{port}"
        assert _https(f"{base}/metrics", ca.cert)[0] == 401
        assert _https(f"{base}/healthz", ca.cert)[0] == 401  # every path, as in exporter-toolkit
        auth = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        status, body = _https(f"{base}/metrics", ca.cert, authorization=auth)
        assert status == 200 and "telemetryd_http_connection_limit" in body

        prometheus = subprocess.Popen(
            [
                prometheus_bin,
                f"--config.file={prometheus_yml}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
            stdout=(tmp_path / "prometheus.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 30
            targets: dict[str, dict[str, Any]] = {}
            while time.monotonic() < deadline:
                try:
                    targets = _targets(prom_port)
                except OSError:
                    targets = {}
                healthy = targets.get("telemetryd", {}).get("health") == "up"
                refused = "401" in targets.get("stranger", {}).get("lastError", "")
                if healthy and refused:
                    break
                time.sleep(0.5)
            log = (tmp_path / "prometheus.log").read_text()[-2000:]
            assert targets.get("telemetryd", {}).get("health") == "up", (targets, log)
            assert targets["stranger"]["health"] == "down"
            assert "401" in targets["stranger"]["lastError"], targets["stranger"]
        finally:
            prometheus.terminate()
            prometheus.wait(timeout=15)

        # Certificate rotation: new files in place of the old; the next connection gets the new certificate.
        renewed = issued_by(ca, tmp_path, "127.0.0.1")
        server.cert.write_bytes(renewed.cert.read_bytes())
        server.key.write_bytes(renewed.key.read_bytes())
        time.sleep(1.2)  # the web config's files are looked at once a second
        _https(f"{base}/metrics", ca.cert, authorization=auth)  # notices the change (served before it)
        served = ssl.get_server_certificate(("127.0.0.1", port))
        assert served.strip() == renewed.cert.read_text().strip()
        text = _https(f"{base}/metrics", ca.cert, authorization=auth)[1]
        assert metric(text, "telemetryd_http_web_config_reloads_total", result="ok") == 1.0
        assert PASSWORD not in daemon.text()

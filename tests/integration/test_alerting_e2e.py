"""End to end: daemon → real Prometheus with the repo's rules → real Alertmanager with the repo's routing → webhook.

The daemon watches a shaped 20 Mbit/s school, a school with a dead camera and a school
whose link is down. The repo's rule and Alertmanager files are used as shipped, except
what a test must change: `for:` durations and grouping waits are shortened, and every
receiver is pointed at this test's webhook (nothing may leave the machine).
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml
from aiohttp import web

from telemetryd.history import migrate
from telemetryd.sim.healthlab import SCHOOL as HEALTH_SCHOOL
from telemetryd.sim.healthlab import HealthLab
from telemetryd.sim.linklab import LinkLab

from ..conftest import require_binary, require_root
from ..daemon_process import DaemonProcess

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
RULES = sorted((REPO / "config" / "prometheus" / "rules").glob("*.yml"))
ALERTMANAGER = REPO / "config" / "alertmanager" / "alertmanager.yml"
DASHBOARDS = sorted((REPO / "grafana" / "dashboards").glob("*.json"))


def panel_queries() -> list[tuple[str, str, str]]:
    """(dashboard, panel title, PromQL) of every Prometheus target, rows' nested panels included."""
    found = []
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        stack = list(dashboard.get("panels", []))
        while stack:
            panel = stack.pop()
            stack.extend(panel.get("panels", []))
            for target in panel.get("targets", []):
                if target.get("expr"):
                    found.append((path.stem, str(panel.get("title", "")), str(target["expr"])))
    return found


def substitute(expr: str, *, schools: list[str], instance: str) -> str:
    """Template variables as Grafana renders them: a multi-value `$school` becomes a regex alternation."""
    alternation = "|".join(schools)
    expr = re.sub(r'school\s*=\s*"\$\{?school\}?"', f'school=~"{alternation}"', expr)
    expr = re.sub(r'school\s*=~\s*"\$\{?school\}?"', f'school=~"{alternation}"', expr)
    expr = re.sub(r'instance\s*=~?\s*"\$\{?instance\}?"', f'instance="{instance}"', expr)
    for variable, value in (("$__rate_interval", "1m"), ("$__interval", "5s"), ("$__range", "5m")):
        expr = expr.replace(variable, value).replace("${" + variable[1:] + "}", value)
    return expr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


SPEEDUP = 30
"""`for:` durations are divided by this: 2m becomes 4 s, 5m 10 s, keeping their order (which inhibition needs)."""


def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    total, number = 0.0, ""
    for part in re.findall(r"(\d+)(ms|s|m|h|d)", duration):
        number, unit = part
        total += int(number) * units[unit]
    return total


def _short_rules(directory: Path) -> list[Path]:
    """The shipped rules with every `for:` divided by SPEEDUP, so the pipeline is tested in seconds."""
    out = []
    for path in RULES:
        data = yaml.safe_load(path.read_text())
        for group in data["groups"]:
            group["interval"] = "1s"
            for rule in group["rules"]:
                if "for" in rule:
                    rule["for"] = f"{max(1, round(_seconds(str(rule['for'])) / SPEEDUP))}s"
        target = directory / path.name
        target.write_text(yaml.safe_dump(data, sort_keys=False))
        out.append(target)
    return out


def _local_alertmanager(directory: Path, webhook: str) -> Path:
    """The shipped routing and inhibitions, every receiver replaced by this test's webhook, waits shortened."""
    data = yaml.safe_load(ALERTMANAGER.read_text())
    data["receivers"] = [
        {"name": r["name"], "webhook_configs": [{"url": webhook, "send_resolved": True}]} for r in data["receivers"]
    ]
    data.pop("templates", None)
    global_section = data.setdefault("global", {})
    for key in [k for k in global_section if k.startswith(("smtp_", "telegram_"))]:
        del global_section[key]

    def shorten(route: dict[str, Any]) -> None:
        for key, value in (("group_wait", "1s"), ("group_interval", "2s"), ("repeat_interval", "1h")):
            if key in route or route is data["route"]:
                route[key] = value
        for child in route.get("routes", []):
            shorten(child)

    shorten(data["route"])
    path = directory / "alertmanager.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _tails(directory: Path) -> str:
    """The end of every process log, for a failure message."""
    return "".join(p.read_text()[-3000:] for p in directory.glob("*.log"))


def _start(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def _stop(process: subprocess.Popen[Any]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


async def test_alerts_reach_the_webhook_with_inhibition_and_resolution(tmp_path: Path, pg_dsn: str) -> None:
    """SchoolLinkBelowContract and CameraDown arrive with their labels; the school whose link is down sends no
    camera alerts (inhibited); restoring the dead camera sends the resolved notice."""
    require_root("a shaped school link (network namespace and tc)")
    prometheus_bin = require_binary("prometheus", "prometheus")
    alertmanager_bin = require_binary("prometheus-alertmanager", "prometheus-alertmanager")
    require_binary("snmpd", "snmpd")
    require_binary("iperf3", "iperf3")
    assert RULES and ALERTMANAGER.exists()

    # Webhook receiver: every notification Alertmanager sends.
    received: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/alerts", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    hook_port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", hook_port).start()

    # Devices on their own loopback addresses (the loader refuses shared ones): listeners make some alive; the
    # dead camera refuses until a listener starts on its address; the link-down school refuses everywhere.
    up_port, camera_port, closed_port = _free_port(), _free_port(), _free_port()
    alive = [socket.create_server((host, up_port)) for host in ("127.0.3.1", "127.0.3.2")]
    inventory = tmp_path / "inventory"
    sia_port = _free_port()
    health = HealthLab(inventory, tmp_path / "credentials")
    lab = LinkLab(inventory, tmp_path / "credentials", schools=[("slow-020", 20.0)])
    devices_dead_cam = [
        {"id": "s-cam-router", "kind": "router", "host": "127.0.3.1", "probes": [f"tcp:{up_port}"]},
        {"id": "s-cam-ok", "kind": "camera", "host": "127.0.3.2", "probes": [f"tcp:{up_port}"]},
        {"id": "s-cam-dead", "kind": "camera", "host": "127.0.3.3", "probes": [f"tcp:{camera_port}"]},
    ]
    devices_link_down = [
        {"id": "s-link-router", "kind": "router", "host": "127.0.4.1", "probes": [f"tcp:{closed_port}"]},
        *(
            {"id": f"s-link-cam-{n}", "kind": "camera", "host": f"127.0.4.{n + 2}", "probes": [f"tcp:{closed_port}"]}
            for n in range(3)
        ),
    ]
    schools = [
        {
            "id": "s-cam",
            "name": "Dead camera school",
            "district": "Abay",
            "location": {"latitude": 42.34, "longitude": 69.63},
            "devices": devices_dead_cam,
        },
        {
            "id": "s-link",
            "name": "Link down school",
            "district": "Al-Farabi",
            "location": {"latitude": 42.31, "longitude": 69.58},
            "devices": devices_link_down,
        },
    ]
    await migrate(pg_dsn)
    prom_port, am_port = _free_port(), _free_port()
    processes: list[subprocess.Popen[Any]] = []
    camera_listener: socket.socket | None = None
    daemon: DaemonProcess | None = None
    with lab:
        (inventory / "loopback.yaml").write_text(yaml.safe_dump({"schools": schools}, sort_keys=False))
        daemon_port = _free_port()
        config = tmp_path / "telemetryd.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "listen": f"127.0.0.1:{daemon_port}",
                    "inventory": "inventory",
                    "credentials_directory": "credentials",
                    "probes": {
                        "tcp": {"interval": 1, "timeout": 1},
                        "icmp": {"interval": 1, "timeout": 1},
                        "rtsp": {"interval": 2, "timeout": 1},
                        "isapi": {"interval": 2, "timeout": 5},
                        "axpro": {"interval": 2, "timeout": 5},
                        "snmp": {"interval": 2, "timeout": 1},
                    },
                    "hysteresis": {"down_after": 1, "up_after": 1},
                    "speedtest": {"interval": 30, "confirm_after": 2, "max_seconds": 6},
                    "sia": {"listen": f"127.0.0.1:{sia_port}", "grace": 2},
                    # History into a real PostgreSQL, so the history panels have data too.
                    "history": {"dsn": pg_dsn, "spool_directory": "history", "batch_seconds": 0.5},
                    "logging": {"format": "json"},
                }
            )
        )
        prometheus_yml = tmp_path / "prometheus.yml"
        rules = _short_rules(tmp_path)
        prometheus_yml.write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(p) for p in rules],
                    "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]},
                    "scrape_configs": [
                        {"job_name": "telemetryd", "static_configs": [{"targets": [f"127.0.0.1:{daemon_port}"]}]}
                    ],
                }
            )
        )
        am_config = _local_alertmanager(tmp_path, f"http://127.0.0.1:{hook_port}/alerts")
        try:
            health.start(sia_port)
            daemon = DaemonProcess(config, tee=tmp_path / "daemon.log")
            processes.append(daemon.proc)  # stopped with SIGTERM like the others, in reverse order
            await asyncio.to_thread(daemon.started)  # a daemon that cannot start fails here, with its output
            processes.append(
                _start(
                    [
                        alertmanager_bin,
                        f"--config.file={am_config}",
                        f"--storage.path={tmp_path / 'am'}",
                        f"--web.listen-address=127.0.0.1:{am_port}",
                        "--cluster.listen-address=",
                    ],
                    tmp_path / "alertmanager.log",
                )
            )
            processes.append(
                _start(
                    [
                        prometheus_bin,
                        f"--config.file={prometheus_yml}",
                        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                        f"--web.listen-address=127.0.0.1:{prom_port}",
                    ],
                    tmp_path / "prometheus.log",
                )
            )

            def firing() -> dict[tuple[str, str], dict[str, Any]]:
                alerts: dict[tuple[str, str], dict[str, Any]] = {}
                for message in received:
                    for alert in message["alerts"]:
                        labels = alert["labels"]
                        key = (labels["alertname"], labels.get("device", labels.get("school", "")))
                        alerts[key] = alert
                return alerts

            deadline = time.monotonic() + 150
            while time.monotonic() < deadline:
                seen = firing()
                if ("CameraDown", "s-cam-dead") in seen and any(k[0] == "SchoolLinkBelowContract" for k in seen):
                    break
                await asyncio.sleep(1)
            seen = firing()
            logs = _tails(tmp_path)
            assert ("CameraDown", "s-cam-dead") in seen, (sorted(seen), logs)
            below = next(a for k, a in seen.items() if k[0] == "SchoolLinkBelowContract")
            assert below["labels"]["school"] == "slow-020"
            assert below["labels"]["severity"] in {"critical", "warning"}
            assert below["status"] == "firing"
            assert seen[("CameraDown", "s-cam-dead")]["labels"]["school"] == "s-cam"
            assert any(k[0] == "SchoolLinkDown" for k in seen), sorted(seen)
            # SchoolLinkDown inhibits the school's camera alerts: nothing else about s-link reached the webhook.
            about_link_school = {
                alert["labels"]["alertname"]
                for message in received
                for alert in message["alerts"]
                if alert["labels"].get("school") == "s-link"
            }
            assert about_link_school == {"SchoolLinkDown"}, sorted(seen)

            # Every Grafana panel's query returns data from this Prometheus.
            async def query(expr: str) -> list[Any]:
                def fetch() -> list[Any]:
                    url = f"http://127.0.0.1:{prom_port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
                    try:
                        with urllib.request.urlopen(url, timeout=10) as response:
                            return list(json.loads(response.read())["data"]["result"])
                    except urllib.error.HTTPError as exc:
                        raise AssertionError(f"Prometheus refused {expr!r}: {exc.read().decode()}") from None

                return await asyncio.to_thread(fetch)

            queries = panel_queries()
            assert len(queries) > 40
            empty: list[tuple[str, str, str]] = queries
            deadline = time.monotonic() + 90
            while empty and time.monotonic() < deadline:
                await asyncio.sleep(3)
                empty = []
                for dashboard, title, expr in queries:
                    rendered = substitute(
                        expr, schools=["slow-020", "s-cam", HEALTH_SCHOOL], instance=f"127.0.0.1:{daemon_port}"
                    )
                    if not await query(rendered):
                        empty.append((dashboard, title, rendered))
            assert not empty, "panels without data:\n" + "\n".join(f"{d} / {t}: {e}" for d, t, e in empty)

            # Clear the fault: the dead camera starts answering, and the resolved notice must arrive.
            camera_listener = socket.create_server(("127.0.3.3", camera_port))
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if firing()[("CameraDown", "s-cam-dead")]["status"] == "resolved":
                    break
                await asyncio.sleep(1)
            assert firing()[("CameraDown", "s-cam-dead")]["status"] == "resolved"
        finally:
            for process in reversed(processes):
                _stop(process)
            if daemon is not None:
                daemon.stop()  # the child has exited: join the log reader, close the pipe
            health.stop()
            for listener in [*alive, camera_listener]:
                if listener is not None:
                    listener.close()
            await runner.cleanup()
    assert json.dumps(received).count("s3cret") == 0

    # The same run, as the history recorded it (the daemon flushed on SIGTERM).
    conn = await asyncpg.connect(pg_dsn)
    try:
        tests = await conn.fetch("SELECT * FROM speedtests WHERE school = 'slow-020' AND ok ORDER BY time")
        assert {(r["confirmation"], r["contract_mbps"], r["floor_ratio"]) for r in tests} >= {
            (False, 150.0, 0.9),
            (True, 150.0, 0.9),
        }
        assert all(r["mbps"] < 0.9 * 150 for r in tests)  # the 20 Mbit/s link never reaches the floor
        samples = await conn.fetch("SELECT * FROM link_samples WHERE school = 'slow-020' AND segment = 'wan'")
        assert {r["direction"] for r in samples} == {"download", "upload"}
        assert all(r["allocation_mbps"] == 150.0 and r["samples"] >= 1 for r in samples)
        dead = await conn.fetch(
            "SELECT new FROM state_changes WHERE device = 's-cam-dead' AND probe IS NULL ORDER BY time"
        )
        assert [r["new"] for r in dead][:1] == ["down"] and dead[-1]["new"] == "up"
        last = await conn.fetchval("SELECT max(seq) FROM history_chain")
        assert await conn.fetch("SELECT * FROM telemetryd_chain_verify(1, $1)", last) == []
    finally:
        await conn.close()

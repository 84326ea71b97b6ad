"""`telemetryd demo`: a simulated city plus the daemon watching it, until Ctrl-C.

The daemon runs as its own process (`telemetryd run`), exactly as in production; only
its inventory comes from the simulator. Everything the demo created is removed on exit.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

from telemetryd.config.settings import parse_duration
from telemetryd.sim import postgres
from telemetryd.sim.city import City, generate_city
from telemetryd.sim.fleet import Fleet
from telemetryd.sim.healthlab import FAULTS, HealthLab
from telemetryd.sim.linklab import DEMO_LINKS, LinkLab
from telemetryd.sim.truth import compare, exported_up


def free_port() -> int:
    """A TCP and UDP port free on 127.0.0.1 now (for the demo's SIA receiver)."""
    with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        tcp.bind(("127.0.0.1", 0))
        port = int(tcp.getsockname()[1])
        udp.bind(("127.0.0.1", port))
        return port


def write_demo_config(
    workdir: Path, *, listen: str, interval: str, sia_port: int = 0, history_dsn: str | None = None
) -> Path:
    """Daemon settings for the demo: the generated inventory, short intervals, console logs.

    Speed tests run every 3 minutes (production: hourly) so the demo shows verdicts soon;
    link samples are 1-minute buckets (production: 5) so the history fills visibly.
    """
    config = {
        "listen": listen,
        "inventory": "inventory",
        "credentials_directory": "credentials",
        "state_directory": "state",
        "probes": {
            "icmp": {"interval": interval, "timeout": "2s"},
            "tcp": {"interval": interval, "timeout": "2s"},
            "snmp": {"interval": "10s", "timeout": "1s", "retries": 2},
            "isapi": {"interval": "20s", "timeout": "10s"},
            "axpro": {"interval": "20s", "timeout": "10s"},
        },
        "sia": {"listen": f"127.0.0.1:{sia_port}", "grace": "5s"},
        "speedtest": {"interval": "3m", "confirm_after": "20s", "max_seconds": "8s"},
        "hysteresis": {"down_after": 2, "up_after": 2},
        "logging": {"format": "auto", "level": "info"},
    }
    if history_dsn is not None:
        config["history"] = {"dsn": history_dsn, "spool_directory": "history", "sample_interval": "1m"}
    path = workdir / "telemetryd.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _wait_ready(address: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"http://{address}/-/ready", timeout=1) as response:
                if response.status == 200:
                    return True
        except OSError:
            time.sleep(0.2)
    return False


AGREEMENT_EVERY = 60.0


def agreement_line(city: City, listen: str, margin: float) -> str:
    """One line comparing the daemon's /metrics with the simulator's truth, device by device."""
    try:
        with urllib.request.urlopen(f"http://{listen}/metrics", timeout=10) as response:
            text = response.read().decode()
    except OSError as exc:
        return f"truth check: cannot scrape /metrics: {exc}"
    result = compare(city, exported_up(text), time.time(), margin=margin)
    line = (
        f"truth check: {result.devices_agreeing}/{result.devices_compared} devices agree with the simulator "
        f"({city.inventory.device_count - result.devices_compared} flapping devices mid-transition not judged)"
    )
    if result.wrong:
        line += f"; first disagreements: {', '.join(result.wrong[:3])}"
    return line


def links_line(listen: str, school_ids: list[str]) -> str:
    """One line with each shaped school's measured speed and verdict, from /api/v1/status."""
    try:
        with urllib.request.urlopen(f"http://{listen}/api/v1/status", timeout=10) as response:
            status = json.loads(response.read())
    except (OSError, ValueError) as exc:
        return f"links: cannot read /api/v1/status: {exc}"
    parts = []
    for school in status["schools"]:
        if school["id"] not in school_ids or not school.get("link"):
            continue
        link = school["link"]
        down = link["speedtest"].get("download") or {}
        up = link["speedtest"].get("upload") or {}
        speeds = (
            f"↓{down['mbps']:.1f} ↑{up['mbps']:.1f} Mbit/s"
            if down.get("mbps") is not None and up.get("mbps") is not None
            else "not measured yet"
        )
        parts.append(f"{school['id']} {speeds} of {school['contract']['total_mbps']:g}: {link['compliance']}")
    return "links: " + "; ".join(parts)


def start_history(workdir: Path) -> tuple[postgres.PgServer | None, str | None]:
    """A throwaway PostgreSQL with the schema migrated, when we are root and it is installed."""
    if not postgres.available():
        return None, None
    import asyncio  # noqa: PLC0415 - only for the one migration

    from telemetryd.history import migrate  # noqa: PLC0415

    shutil.rmtree(workdir / "history", ignore_errors=True)  # a previous demo's spool belongs to its own database
    server = postgres.started_server()
    try:
        dsn = server.create_database()
        asyncio.run(migrate(dsn))
    except Exception:
        server.kill()
        shutil.rmtree(server.root, ignore_errors=True)
        raise
    return server, dsn


REPORT_EVERY = 300.0


def write_report(config: Path, workdir: Path) -> str:
    """Render the running month's SLA report next to the inventory; one line saying where or why not."""
    output = workdir / "sla-{month}.html"
    command = [sys.executable, "-m", "telemetryd", "report", "sla", "--month", "current", "--save"]
    done = subprocess.run(
        [*command, "-o", str(output), "-c", str(config)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    written = sorted(workdir.glob("sla-*.html"))
    if done.returncode != 0 or not written:
        return f"SLA report: failed ({done.stderr.strip().splitlines()[-1:] or done.returncode})"
    return f"SLA report for the running month: {written[-1]} (updated every {REPORT_EVERY / 60:.0f} min)"


def history_line(listen: str) -> str:
    """Rows the daemon has written to PostgreSQL so far, from its own /metrics."""
    try:
        with urllib.request.urlopen(f"http://{listen}/metrics", timeout=10) as response:
            text = response.read().decode()
    except OSError as exc:
        return f"history: cannot scrape /metrics: {exc}"
    values = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in {"telemetryd_history_rows_written_total", "telemetryd_history_spool_bytes"}:
            values[name] = float(value)
    return (
        f"history: {values.get('telemetryd_history_rows_written_total', 0):.0f} rows written to PostgreSQL, "
        f"{values.get('telemetryd_history_spool_bytes', 0):.0f} bytes spooled"
    )


def run_demo(
    *, schools: int, devices_per_school: int, seed: int, mode: str, workdir: Path, listen: str, interval: str
) -> int:
    """Bring up the city, start the daemon against it, print where to look, clean up on Ctrl-C."""
    workdir.mkdir(parents=True, exist_ok=True)
    city = generate_city(schools, devices_per_school, seed=seed)
    inventory_dir = workdir / "inventory"
    city.write_inventory(inventory_dir)
    sia_port = free_port()
    database, history_dsn = start_history(workdir)
    config = write_demo_config(workdir, listen=listen, interval=interval, sia_port=sia_port, history_dsn=history_dsn)
    stop = False

    def on_signal(_signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    fleet = Fleet(city, mode=mode)
    lab: LinkLab | None = None
    health = HealthLab(inventory_dir, workdir / "credentials")
    (inventory_dir / "links.yaml").unlink(missing_ok=True)  # a previous run's shaped links are gone
    daemon: subprocess.Popen[bytes] | None = None
    try:
        print(
            f"bringing up {city.inventory.device_count} simulated devices in {len(city.inventory.schools)} schools ..."
        )
        fleet.start()
        if fleet.mode == "netns":
            print(f"shaping {len(DEMO_LINKS)} school links and starting a simulated SNMP router ...")
            lab = LinkLab(inventory_dir, workdir / "credentials").start()
        health.start(sia_port)
        # Its own session: Ctrl-C reaches the demo only, which then stops the daemon with SIGTERM.
        daemon = subprocess.Popen(
            [sys.executable, "-m", "telemetryd", "run", "--config", str(config)], start_new_session=True
        )
        if not _wait_ready(listen, daemon):
            print("the daemon did not become ready; see its log above", file=sys.stderr)
            return 1
        truth = ", ".join(f"{count} {condition.value}" for condition, count in city.counts().items())
        print(
            "\n"
            f"telemetryd demo is running ({fleet.mode} mode).\n"
            f"  simulated city: {len(city.inventory.schools)} schools, {city.inventory.device_count} devices "
            f"({truth})\n"
            f"  status page:    http://{listen}/status\n"
            f"  metrics:        http://{listen}/metrics\n"
            f"  JSON status:    http://{listen}/api/v1/status\n"
            + (
                "  shaped links:   "
                + ", ".join(f"{school} {rate:g} Mbit/s" for school, rate in DEMO_LINKS)
                + " (150 contracted each; the first is under-delivered and has the SNMP router)\n"
                if lab is not None
                else "  shaped links:   none (needs root)\n"
            )
            + "  device faults:  "
            + "\n                  ".join(f"{device}: {fault}" for device, fault in FAULTS.items())
            + "\n"
            + f"  inventory:      {inventory_dir}\n"
            f"  config:         {config}\n"
            + (
                f"  history:        PostgreSQL 15 at {history_dsn} (throwaway); while the demo runs:\n"
                f"                  telemetryd report sla --month current -c {config} --format html -o sla.html\n"
                if history_dsn is not None
                else "  history:        none (PostgreSQL 15 needs root and the postgresql-15 package)\n"
            )
            + ""
            "Press Ctrl-C to stop and clean up.\n",
            flush=True,
        )
        interval_seconds = parse_duration(interval)
        assert isinstance(interval_seconds, float)  # the settings model validated it already
        margin = interval_seconds + 2.5  # exported state is up to one interval plus a timeout old
        next_check = time.monotonic() + 3 * interval_seconds
        next_report = time.monotonic() + 90.0
        while not stop and daemon.poll() is None:
            time.sleep(0.5)
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + AGREEMENT_EVERY
                print(agreement_line(city, listen, margin), flush=True)
                if lab is not None:
                    print(links_line(listen, list(lab.rates)), flush=True)
                if history_dsn is not None:
                    print(history_line(listen), flush=True)
            if history_dsn is not None and time.monotonic() >= next_report:
                next_report = time.monotonic() + REPORT_EVERY
                print(write_report(config, workdir), flush=True)
        return 0 if stop else 1
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=15)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
        if lab is not None:
            lab.stop()
        health.stop()
        fleet.stop()
        if database is not None:
            database.kill()
            shutil.rmtree(database.root, ignore_errors=True)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        print("demo stopped; simulated devices removed", file=sys.stderr)


__all__ = ["run_demo", "write_demo_config"]

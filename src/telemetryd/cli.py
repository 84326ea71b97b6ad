"""`telemetryd`: run, check-config, probe, speedtest, pins, db, report, responder, inventory, demo, simulate."""

from __future__ import annotations

import argparse
import asyncio
import os
import stat
import sys
from pathlib import Path

from telemetryd import __version__

DEFAULT_CONFIG = Path("/etc/telemetryd/telemetryd.yaml")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="telemetryd",
        description="Monitoring daemon for school networks: link speed against contract, cameras, NVRs, alarm panels.",
    )
    parser.add_argument("--version", action="version", version=f"telemetryd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon")
    run.add_argument(
        "-c", "--config", type=Path, default=DEFAULT_CONFIG, help=f"settings file (default {DEFAULT_CONFIG})"
    )

    check = sub.add_parser("check-config", help="validate settings and inventory; list every problem")
    check.add_argument(
        "path",
        type=Path,
        nargs="?",
        default=DEFAULT_CONFIG,
        help="settings file, or an inventory file or directory",
    )

    probe = sub.add_parser("probe", help="probe one device or address now and print the result")
    probe.add_argument("target", help="device id from the inventory, or an IPv4 address")
    probe.add_argument("-c", "--config", type=Path, default=None, help="settings file (for device ids and timeouts)")
    probe.add_argument(
        "-p",
        "--probe",
        action="append",
        default=None,
        help="probe to run, e.g. icmp or tcp:554 (repeatable; default: the device's probes, or icmp)",
    )

    pins = sub.add_parser("pins", help="certificates trusted for HTTPS devices (isapis probes)")
    pins_sub = pins.add_subparsers(dest="pins_command", required=True, metavar="ACTION")
    pins_list = pins_sub.add_parser("list", help="every pinned HOST:PORT with its SHA-256 prefix")
    pins_list.add_argument("-c", "--config", type=Path, default=DEFAULT_CONFIG)
    forget = pins_sub.add_parser("forget", help="re-trust a replaced device: its next check pins what it shows")
    forget.add_argument("endpoint", metavar="HOST:PORT")
    forget.add_argument("-c", "--config", type=Path, default=DEFAULT_CONFIG)

    inventory = sub.add_parser("inventory", help="inventory tools")
    inv_sub = inventory.add_subparsers(dest="inventory_command", required=True, metavar="ACTION")
    imp = inv_sub.add_parser("import", help="turn a spreadsheet export (CSV, one row per device) into inventory YAML")
    imp.add_argument("csv", type=Path)
    imp.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        help="directory to write one YAML file per district (default: YAML on stdout)",
    )

    speed = sub.add_parser("speedtest", help="run one speed test of a school now and compare it with its contract")
    speed.add_argument("school", help="school id from the inventory")
    speed.add_argument("-c", "--config", type=Path, default=DEFAULT_CONFIG)
    speed.add_argument("--streams", type=int, default=None, help="parallel TCP streams (default: from settings)")

    db = sub.add_parser("db", help="the PostgreSQL history database")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    for action, helptext in (
        ("migrate", "apply pending schema migrations (safe to run from several shards at once)"),
        ("check", "list pending migrations; exit 1 when there are any"),
    ):
        cmd = db_sub.add_parser(action, help=helptext)
        cmd.add_argument("-c", "--config", type=Path, default=DEFAULT_CONFIG)

    report = sub.add_parser("report", help="reports from the history database")
    report_sub = report.add_subparsers(dest="report_command", required=True, metavar="REPORT")
    sla = report_sub.add_parser("sla", help="monthly SLA report per school: link, speed, cameras, alarm panels")
    sla.add_argument("--month", required=True, help="YYYY-MM in the city's local time, or current / previous")
    sla.add_argument(
        "--school",
        action="append",
        default=None,
        help="school id (repeatable; default: every school); HTML and PDF are then the school pages alone",
    )
    sla.add_argument(
        "--summary-only", action="store_true", help="HTML and PDF stop after the all-schools table (no school pages)"
    )
    sla.add_argument("--format", choices=["html", "pdf", "csv", "json"], default="html")
    sla.add_argument(
        "--lang", choices=["en", "ru", "kk"], default=None, help="language of HTML and PDF (default: report.language)"
    )
    sla.add_argument(
        "-o", "--output", type=Path, default=None, help="file to write (default: stdout); {month} becomes YYYY-MM"
    )
    sla.add_argument(
        "--save", action="store_true", help="also store the figures in sla_monthly (Grafana SLA dashboard)"
    )
    sla.add_argument("-c", "--config", type=Path, default=DEFAULT_CONFIG)

    sub.add_parser(
        "responder",
        help="run the school-side speed-test responder (see `telemetryd responder --help`)",
        add_help=False,
    )

    for name, helptext, schools in (
        ("demo", "run the daemon against a simulated city (Ctrl-C to stop and clean up)", 300),
        ("simulate", "bring up a simulated city only (for a daemon you run yourself)", 300),
    ):
        cmd = sub.add_parser(name, help=helptext)
        cmd.add_argument("--schools", type=int, default=schools)
        cmd.add_argument("--devices-per-school", type=int, default=35)
        cmd.add_argument("--seed", type=int, default=1)
        cmd.add_argument(
            "--mode",
            choices=["auto", "netns", "loopback"],
            default="auto",
            help="netns needs root; loopback uses 127.x addresses (no ICMP truth)",
        )
        cmd.add_argument("--dir", type=Path, default=Path(".demo"), help="where the generated inventory goes")
        if name == "demo":
            cmd.add_argument("--listen", default="127.0.0.1:9817")
            cmd.add_argument("--interval", default="15s", help="probe interval for the demo")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `telemetryd` console script."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["responder"]:
        from telemetryd.school_responder import main as responder_main  # noqa: PLC0415 - its own options

        return responder_main(argv[1:])
    args = _parser().parse_args(argv)
    if args.command == "run":
        from telemetryd.daemon import run  # noqa: PLC0415 - keep other commands light

        return run(args.config)
    if args.command == "check-config":
        return check_config(args.path)
    if args.command == "speedtest":
        from telemetryd.commands.probe import run_speedtest  # noqa: PLC0415

        return asyncio.run(run_speedtest(args.school, args.config, args.streams))
    if args.command == "probe":
        from telemetryd.commands.probe import run_probe  # noqa: PLC0415

        return asyncio.run(run_probe(args.target, args.config, args.probe))
    if args.command == "db":
        from telemetryd.history.dbcli import run_db  # noqa: PLC0415

        return run_db(args.db_command, args.config)
    if args.command == "report":
        from telemetryd.report.command import run_report  # noqa: PLC0415

        return run_report(args)
    if args.command == "pins":
        from telemetryd.commands.pins import run_pins  # noqa: PLC0415

        return run_pins(args.pins_command, args.config, getattr(args, "endpoint", None))
    if args.command == "inventory":
        from telemetryd.config.csv_import import run_import  # noqa: PLC0415

        return run_import(args.csv, args.output)
    if args.command == "simulate":
        from telemetryd.sim.cli import run_simulate  # noqa: PLC0415

        return run_simulate(args.schools, args.devices_per_school, args.dir, args.seed, args.mode)
    if args.command == "demo":
        from telemetryd.commands.demo import run_demo  # noqa: PLC0415

        return run_demo(
            schools=args.schools,
            devices_per_school=args.devices_per_school,
            seed=args.seed,
            mode=args.mode,
            workdir=args.dir,
            listen=args.listen,
            interval=args.interval,
        )
    raise AssertionError(args.command)


def check_config(path: Path) -> int:
    """Validate a settings file (with its inventory), or an inventory file/directory alone."""
    from telemetryd.config import ConfigError, load_config, load_inventory  # noqa: PLC0415

    try:
        if path.is_dir() or _looks_like_inventory(path):
            inventory = load_inventory(path)
            print(f"{path}: OK: {len(inventory.schools)} schools, {inventory.device_count} devices")
        else:
            config = load_config(path)
            print(
                f"{path}: OK: {config.total_schools} schools in the inventory, "
                f"{len(config.inventory.schools)} in shard {config.settings.shard}, "
                f"{config.inventory.device_count} devices"
            )
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{len(exc.problems)} problem{'s' if len(exc.problems) != 1 else ''} found", file=sys.stderr)
        return 1
    return 0


def _looks_like_inventory(path: Path) -> bool:
    try:
        # Non-blocking and only the head: the path may be a FIFO or huge (the loader then says so).
        with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as file:
            if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
                return False
            head = file.read(65536).decode("utf-8", errors="replace")
    except OSError:
        return False
    # A top-level `schools:` key or a bare list is an inventory; anything else is settings.
    return any(line.startswith(("schools:", "- ")) for line in head.splitlines())

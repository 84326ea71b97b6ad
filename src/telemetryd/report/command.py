"""`telemetryd report sla`: read one month of history, compute the SLA figures, render, optionally save.

Exit codes:

* 0 — the report was written;
* 1 — the history database is unreachable, failing or lacks migrations;
* 2 — the settings, the month or the output file are unusable;
* 3 — the report was written (and saved with `--save`) but verifying the history hash
  chain found problems; the report lists them, and so does stderr. A script running
  the report monthly notices tampering without parsing the report.

Messages go to stderr and never hold the database password.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import asyncpg

from telemetryd.config import ConfigError
from telemetryd.config.loader import Config, load_inventory
from telemetryd.config.settings import Settings
from telemetryd.history.dbcli import describe, load_with_database
from telemetryd.report.figures import (
    ChainStatus,
    MaintenanceRow,
    Period,
    Report,
    ReportInput,
    SchoolRow,
    build_report,
    month_period,
    schools_to_report,
)
from telemetryd.report.pdf import render_pdf
from telemetryd.report.queries import (
    MonthRows,
    SchemaOutdated,
    chain_status,
    fetch_month,
    require_schema,
    save,
)
from telemetryd.report.render import RENDERERS, render_html
from telemetryd.report.summary import previous_period, summarize
from telemetryd.templating import language

CONNECT_TIMEOUT = 10.0
COMMAND_TIMEOUT = 900.0
"""A month of a whole city is a few large scans; give them time."""
CHAIN_PROBLEMS = 3


def _inventory_schools(config: Config) -> list[SchoolRow]:
    """Every inventory school (all shards: the report covers the city, not this instance's share)."""
    inventory = config.inventory
    if config.settings.shard.count > 1:
        path = Path(config.settings.inventory)
        inventory = load_inventory(path if path.is_absolute() else config.path.parent / path)
    return [SchoolRow(s.id, s.name, s.district, s.contract.total_mbps) for s in inventory.schools]


async def _build(
    dsn: str,
    password: str | None,
    period: Period,
    *,
    wanted: Sequence[str] | None,
    config: Config,
    inventory: list[SchoolRow],
    now: float,
    store: bool,
    with_previous: bool = False,
) -> tuple[Report, Report | None, list[str]]:
    """The report, the previous month's (for the first page's changes, when asked), and the wanted school ids
    found nowhere (for a warning)."""
    settings = config.settings
    conn = await asyncpg.connect(dsn, password=password, timeout=CONNECT_TIMEOUT, command_timeout=COMMAND_TIMEOUT)
    try:
        await require_schema(conn)
        rows = await fetch_month(conn, period, wanted)
        chain = await chain_status(conn, period)
        seen = {*(d.school_id for d in rows.devices), *(t.school_id for t in rows.speedtests)}
        seen |= {s.school_id for s in rows.saturation}
        schools = schools_to_report(rows.schools, inventory, seen, wanted)
        known = {*(s.id for s in rows.schools), *(s.id for s in inventory), *seen}
        report = build_report(_input(period, schools, rows, settings, chain), generated_at=now)
        previous = None
        if with_previous:
            # This month's schools, like with like; the chain is verified by this month's report, not again.
            before = previous_period(period)
            earlier = await fetch_month(conn, before, wanted)
            previous = build_report(_input(before, schools, earlier, settings, None), generated_at=now)
        if store:
            await save(conn, report)
    finally:
        await conn.close()
    return report, previous, [s for s in wanted or [] if s not in known]


def _input(
    period: Period, schools: list[SchoolRow], rows: MonthRows, settings: Settings, chain: ChainStatus | None
) -> ReportInput:
    maintenance = [
        MaintenanceRow(w.start.timestamp(), w.end.timestamp(), tuple(w.schools), w.reason)
        for w in settings.history.maintenance
    ]
    return ReportInput(
        period=period,
        schools=schools,
        devices=rows.devices,
        changes=rows.changes,
        gaps=rows.gaps,
        maintenance=maintenance,
        speedtests=rows.speedtests,
        saturation=rows.saturation,
        below_contract_ratio=settings.speedtest.below_contract_ratio,
        chain=chain,
    )


def run_report(args: argparse.Namespace, *, now: float | None = None) -> int:
    """Run `telemetryd report sla` with parsed arguments; returns the exit code."""
    loaded = load_with_database(args.config)
    if loaded is None:
        return 2
    config, dsn, password = loaded
    try:
        inventory = _inventory_schools(config)
    except ConfigError as exc:  # another shard's inventory file broke since the daemon loaded it
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    wall = time.time() if now is None else now
    try:
        period = month_period(args.month, config.settings.speedtest.utc_offset_hours, wall)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        # The first page (HTML and PDF of the whole city) compares with the month before.
        first_page = args.format in ("html", "pdf") and not args.school
        report, previous, unknown = asyncio.run(
            _build(
                dsn,
                password,
                period,
                wanted=args.school,
                config=config,
                inventory=inventory,
                now=wall,
                store=args.save,
                with_previous=first_page,
            )
        )
    except SchemaOutdated as exc:
        print(f"history database: {exc}", file=sys.stderr)
        return 1
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        print(f"history database: {describe(exc)}", file=sys.stderr)
        return 1
    for school_id in unknown:
        print(
            f"school {school_id!r} is neither in the history nor in the inventory: reported as no data", file=sys.stderr
        )
    lang = language(args.lang or config.settings.report.language)
    # --school: the school pages alone, the version a principal or district office is sent.
    pages = {"summary_only": args.summary_only, "schools_only": bool(args.school) and not args.summary_only}
    summary = summarize(report, previous) if first_page else None
    if args.format == "pdf":
        body = render_pdf(report, lang=lang, summary=summary, **pages)
    else:
        text = (
            render_html(report, lang=lang, summary=summary, **pages)
            if args.format == "html"
            else RENDERERS[args.format](report)
        )
        body = text.encode()
    if args.output is None:
        if args.format == "pdf":
            sys.stdout.flush()
            sys.stdout.buffer.write(body)
        else:
            sys.stdout.write(text)
    else:
        # `{month}` lets a timer write sla-{month}.html for `--month previous` without shell arithmetic.
        output = Path(str(args.output).replace("{month}", period.month))
        try:
            output.write_bytes(body)
        except OSError as exc:
            print(f"{output}: cannot write the report: {exc.strerror or exc}", file=sys.stderr)
            return 2
    if args.save:
        print(f"saved {len(report.schools)} school(s) to sla_monthly for {period.month}", file=sys.stderr)
    if report.chain is not None and not report.chain.ok:
        print(f"history hash chain: {report.chain.summary}", file=sys.stderr)
        for found in report.chain.problems:
            print(f"  {found}", file=sys.stderr)
        return CHAIN_PROBLEMS
    return 0

"""SLA report benchmark: one month of a whole city's history, against reading that month once.

Starts a throwaway PostgreSQL 15 as the postgres user (needs root) and fills October 2026
(31 days, UTC+5) for a city of `--schools` schools x 35 devices (1 router, 30 cameras,
2 NVRs, 2 alarm panels) the way the daemon would have written it:

* per device: up at the start, 4 outages of 10-120 min a month (device and probe level);
* 5-minute link samples for wan + 3 segments x 2 directions (300 schools: 21 M rows);
* an hourly speed test per school, both directions, one in ten low and re-tested;
* every row sealed into the hash chain in links of 1,000 rows, as the writer does.

Then it times `telemetryd report sla --month 2026-10 --format json` (chain verification
included), the same with `--format pdf --lang ru`, and in-process the PDF alone from the
built figures (summary, WeasyPrint layout in worker processes, join); and, as the peer,
the cost of reading the same month of evidence once:
`COPY (SELECT * FROM <each history table> WHERE <in the month>) TO STDOUT` into
/dev/null. The ratio says how far the report is from the floor of touching the data.

    sudo .venv/bin/python bench/report.py [--schools 300]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import asyncpg
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from telemetryd.config.settings import Settings
from telemetryd.history import migrate
from telemetryd.report.command import _build
from telemetryd.report.figures import month_period
from telemetryd.report.pdf import render_pdf, workers
from telemetryd.report.summary import summarize
from telemetryd.sim.postgres import PgServer, started_server

MONTH = "2026-10"
START = "2026-09-30 19:00:00+00"  # 1 October 00:00 at UTC+5
DAYS = 31
CHAIN_LINK_ROWS = 1000

_FILL = """
INSERT INTO schools (id, name, district, contract_mbps)
SELECT format('sch-%s', s), format('School No. %s', s), format('District %s', s % 4), 150
FROM generate_series(1, {schools}) s;

INSERT INTO devices (id, school, kind, host)
SELECT format('sch-%s-%s', s, d), format('sch-%s', s),
       CASE WHEN d = 0 THEN 'router' WHEN d <= 30 THEN 'camera' WHEN d <= 32 THEN 'nvr' ELSE 'alarm_panel' END,
       format('10.%s.%s.%s', s / 250, s % 250, d + 1)
FROM generate_series(1, {schools}) s, generate_series(0, 34) d;

-- First result the day before the month, then 4 outages: down at a hashed time, up 10-120 min later.
INSERT INTO state_changes (time, school, device, kind, probe, old, new, reason, detail, key)
SELECT t, school, id, kind, probe, old, new, reason, '', md5(concat_ws('|', t, id, probe, new))::uuid
FROM (
    SELECT timestamptz '{start}' - interval '1 day' AS t, d.school, d.id, d.kind, p.probe,
           'unknown' AS old, 'up' AS new, '' AS reason
    FROM devices d, (VALUES (NULL), ('icmp')) p(probe)
    UNION ALL
    SELECT timestamptz '{start}' + (o.k * 7 + (hashtext(d.id || o.k) & 1023) % 6) * interval '1 day'
               + ((hashtext(d.id) & 65535) % 1440) * interval '1 minute'
               + CASE WHEN ud.up THEN (10 + (hashtext(d.id || o.k || 'len') & 1023) % 111) * interval '1 minute'
                      ELSE interval '0' END,
           d.school, d.id, d.kind, p.probe,
           CASE WHEN ud.up THEN 'down' ELSE 'up' END, CASE WHEN ud.up THEN 'up' ELSE 'down' END,
           CASE WHEN ud.up THEN '' ELSE 'timeout' END
    FROM devices d, generate_series(0, 3) o(k), (VALUES (false), (true)) ud(up), (VALUES (NULL), ('icmp')) p(probe)
) c;

INSERT INTO link_samples (time, school, segment, direction, avg_mbps, max_mbps, bytes, samples,
                          allocation_mbps, saturated_seconds, key)
SELECT t, sc.id, r.role, dir.direction, a.avg, a.avg * 1.3, (a.avg * 37500000)::bigint, 5, r.allocation,
       CASE WHEN a.avg >= 0.95 * r.allocation THEN 300 ELSE 0 END,
       md5(concat_ws('|', t, sc.id, r.role, dir.direction))::uuid
FROM schools sc,
     generate_series(timestamptz '{start}', timestamptz '{start}' + interval '{days} days' - interval '5 minutes',
                     interval '5 minutes') t,
     (VALUES ('wan', 150.0), ('alarm', 20.0), ('video', 30.0), ('education', 100.0)) r(role, allocation),
     (VALUES ('download'), ('upload')) dir(direction),
     LATERAL (SELECT r.allocation * ((hashtext(sc.id || t::text || r.role || dir.direction) & 1023) / 1023.0)
             AS avg) a;

-- Hourly tests; one in ten low (120 Mbps of 150) and re-tested 2 minutes later at 140.
INSERT INTO speedtests (time, school, direction, mbps, bytes, duration, streams, ok, reason, detail,
                        contract_mbps, floor_ratio, confirmation, key)
SELECT t + CASE WHEN retest THEN interval '2 minutes' ELSE interval '0' END, sc.id, dir.direction,
       CASE WHEN retest THEN 140 WHEN low THEN 120 ELSE 143 END, 28000000, 1.6, 4, true, '', '', 150, 0.9, retest,
       md5(concat_ws('|', t, sc.id, dir.direction, retest))::uuid
FROM schools sc,
     generate_series(timestamptz '{start}', timestamptz '{start}' + interval '{days} days' - interval '1 hour',
                     interval '1 hour') t,
     (VALUES ('download'), ('upload')) dir(direction),
     LATERAL (SELECT (hashtext(sc.id || t::text) & 1023) % 10 = 0 AS low) l,
     LATERAL (SELECT false AS retest UNION ALL SELECT true WHERE l.low) rt(retest);
"""

PEER = [
    "SELECT * FROM state_changes WHERE time >= $1 AND time < $2",
    "SELECT * FROM link_samples WHERE time >= $1 AND time < $2",
    "SELECT * FROM speedtests WHERE time >= $1 AND time < $2",
]


async def fill(dsn: str, schools: int) -> dict[str, int]:
    """The month's rows, chained in links of CHAIN_LINK_ROWS; returns rows per table."""
    await migrate(dsn)
    conn = await asyncpg.connect(dsn, command_timeout=3600)
    try:
        await conn.execute("SELECT telemetryd_ensure_partitions(timestamptz '2026-08-01', timestamptz '2026-12-01')")
        await conn.execute(_FILL.format(schools=schools, start=START, days=DAYS))
        counts: dict[str, int] = {}
        offset = 1
        for table, order in (
            ("state_changes", "time, key"),
            ("speedtests", "time, key"),
            ("link_samples", "time, key"),
        ):
            counts[table] = await conn.fetchval(f"SELECT count(*) FROM {table}")
            # Links of CHAIN_LINK_ROWS rows in time order, as the writer's batches would have been.
            await conn.execute(
                f"""
                WITH n AS (SELECT key, time, row_number() OVER (ORDER BY {order}) - 1 AS rn FROM {table})
                UPDATE {table} t SET chain_seq = {offset} + n.rn / {CHAIN_LINK_ROWS}
                FROM n WHERE t.key = n.key AND t.time = n.time
                """
            )
            offset += (counts[table] + CHAIN_LINK_ROWS - 1) // CHAIN_LINK_ROWS
        await conn.execute("VACUUM ANALYZE")
        await conn.execute(
            "SELECT telemetryd_chain_seal(s, (SELECT count(*)::int FROM state_changes WHERE chain_seq = s)"
            " + (SELECT count(*)::int FROM speedtests WHERE chain_seq = s)"
            " + (SELECT count(*)::int FROM link_samples WHERE chain_seq = s)) FROM generate_series(1, $1) s",
            offset - 1,
        )
        counts["chain links"] = offset - 1
        return counts
    finally:
        await conn.close()


async def peer(dsn: str) -> float:
    """Seconds to read the month's rows of every history table once (COPY to nothing)."""
    conn = await asyncpg.connect(dsn, command_timeout=3600)
    start = await conn.fetchval(f"SELECT timestamptz '{START}'")
    end = await conn.fetchval(f"SELECT timestamptz '{START}' + interval '{DAYS} days'")
    started = time.perf_counter()
    try:
        for query in PEER:
            await conn.copy_from_query(query, start, end, output=_discard)
    finally:
        await conn.close()
    return time.perf_counter() - started


async def _discard(_chunk: bytes) -> None:
    return None


def report(dsn: str, workdir: Path, *options: str) -> float:
    """Seconds for `telemetryd report sla` of the month with `options`; exits when the report fails."""
    (workdir / "inventory.yaml").write_text("schools: []\n")
    settings = {"inventory": "inventory.yaml", "history": {"dsn": dsn, "spool_directory": str(workdir / "spool")}}
    (workdir / "telemetryd.yaml").write_text(yaml.safe_dump(settings))
    command = [sys.executable, "-m", "telemetryd", "report", "sla", "--month", MONTH, *options]
    started = time.perf_counter()
    done = subprocess.run(
        [*command, "-c", str(workdir / "telemetryd.yaml"), "-o", str(workdir / "report.out")],
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"report failed ({done.returncode}): {done.stderr}")
    return elapsed


async def render(dsn: str) -> float:
    """Seconds to turn the month's figures into the PDF (ru) in-process: what --format pdf adds to JSON."""
    settings = Settings.model_validate({"inventory": "inventory.yaml"})
    config = SimpleNamespace(settings=settings)  # _build reads only the settings of a Config
    period = month_period(MONTH, settings.speedtest.utc_offset_hours, time.time())
    built, previous, _ = await _build(
        dsn, None, period, wanted=None, config=config, inventory=[], now=time.time(), store=False, with_previous=True
    )
    started = time.perf_counter()
    render_pdf(built, lang="ru", summary=summarize(built, previous))
    return time.perf_counter() - started


def _pages(pdf: Path) -> int:
    """The PDF's page count, from poppler's pdfinfo."""
    info = subprocess.run(["pdfinfo", str(pdf)], check=True, capture_output=True, text=True).stdout
    return int(next(line.split()[1] for line in info.splitlines() if line.startswith("Pages:")))


def main() -> None:
    """Fill, measure, print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--schools", type=int, default=300)
    args = parser.parse_args()
    server: PgServer = started_server()
    workdir = Path(tempfile.mkdtemp(prefix="telemetryd-report-bench-"))
    try:
        dsn = server.create_database()
        started = time.perf_counter()
        counts = asyncio.run(fill(dsn, args.schools))
        fill_seconds = time.perf_counter() - started
        peer_seconds = asyncio.run(peer(dsn))
        report_seconds = report(dsn, workdir, "--format", "json")
        pdf_seconds = report(dsn, workdir, "--format", "pdf", "--lang", "ru")
        pages = _pages(workdir / "report.out")
        render_seconds = asyncio.run(render(dsn))
        rows = sum(v for k, v in counts.items() if k != "chain links")
        print(f"{args.schools} schools x 35 devices, {MONTH} ({DAYS} days), PostgreSQL 15 on loopback (fsync off)")
        for table, count in counts.items():
            print(f"  {table:<16}{count:>12,}")
        print(f"  filled and sealed in {fill_seconds:.0f} s")
        for label, seconds in (
            ("read the month once (COPY, peer)", peer_seconds),
            ("telemetryd report sla (JSON, chain verified)", report_seconds),
        ):
            print(f"{label:<46}{seconds:>8.1f} s  {rows / seconds:>12,.0f} rows/s")
        print(f"report / peer: {report_seconds / peer_seconds:.2f}x")
        print(f"{'telemetryd report sla (PDF, ru)':<46}{pdf_seconds:>8.1f} s  {pages} pages")
        print(f"{'  of which the PDF (summary, layout, join)':<46}{render_seconds:>8.1f} s  ({workers()} processes)")
    finally:
        server.kill()
        shutil.rmtree(server.root, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

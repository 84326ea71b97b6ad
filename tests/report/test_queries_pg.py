"""`telemetryd report sla` end to end: the fixture month written by HistoryWriter into PostgreSQL 15.

The expected figures are the hand-computed ones of test_report.py (same fixture,
tests/report/sla_fixture.py); here they must come out of the real queries: the last
change before the look-back window, probe-level rows left out, devices known only from
state_changes, schools only in the inventory, local-month boundaries on UTC partitions.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
from datetime import date
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml

from telemetryd.cli import main
from telemetryd.history import HistoryWriter, Spool, migrate
from tests.report import sla_fixture as fx

pytestmark = pytest.mark.integration

DEAD_DSN = "postgresql://postgres@127.0.0.1:1/postgres"


async def _load(dsn: str, spool: Path) -> None:
    """Migrate, write the fixture through the history writer (several chain links), add schools and devices."""
    await migrate(dsn)
    writer = HistoryWriter(dsn, Spool(spool), batch_seconds=0.05)
    writer.start()
    events = fx.events()
    half = len(events) // 2
    for event in events[:half]:
        writer.submit(event)
    await asyncio.sleep(0.3)  # let the first half commit as its own links
    for event in events[half:]:
        writer.submit(event)
    await writer.close()
    # The stats say which path spooled, should this ever fail again (it did once on CI, unexplained).
    assert writer.spool_bytes == 0, writer.stats
    conn = await asyncpg.connect(dsn)
    try:
        await conn.executemany(
            "INSERT INTO schools (id, name, district, contract_mbps) VALUES ($1, $2, $3, $4)", fx.SCHOOLS_TABLE
        )
        await conn.executemany("INSERT INTO devices (id, school, kind) VALUES ($1, $2, $3)", fx.DEVICES_TABLE)
    finally:
        await conn.close()


async def _query(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


def await_rows(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    """Run one query from a synchronous test."""
    return asyncio.run(_query(dsn, sql, *args))


def _config(tmp_path: Path, dsn: str | None) -> Path:
    (tmp_path / "inventory.yaml").write_text(yaml.safe_dump({"schools": fx.INVENTORY}, sort_keys=False))
    history: dict[str, Any] = {"spool_directory": "spool", "maintenance": fx.MAINTENANCE}
    if dsn is not None:
        history["dsn"] = dsn
    settings = {
        "inventory": "inventory.yaml",
        "history": history,
        "speedtest": {"below_contract_ratio": fx.SETTINGS_RATIO, "utc_offset_hours": fx.OFFSET_HOURS},
    }
    path = tmp_path / "telemetryd.yaml"
    path.write_text(yaml.safe_dump(settings, sort_keys=False))
    return path


@pytest.fixture
def loaded(pg_dsn: str, tmp_path: Path) -> tuple[str, Path]:
    """A database holding the fixture month, and a settings file pointing at it."""
    asyncio.run(_load(pg_dsn, tmp_path / "writer-spool"))
    return pg_dsn, _config(tmp_path, pg_dsn)


def _report(config: Path, tmp_path: Path, *extra: str, fmt: str = "json") -> tuple[int, str]:
    out = tmp_path / f"report.{fmt}"
    code = main(["report", "sla", "--month", fx.MONTH, "--format", fmt, "-o", str(out), "-c", str(config), *extra])
    return code, out.read_text(encoding="utf-8") if out.exists() else ""


def _school(doc: dict[str, Any], school_id: str) -> dict[str, Any]:
    return next(s for s in doc["schools"] if s["school"] == school_id)


def test_json_report_has_the_hand_computed_figures(loaded: tuple[str, Path], tmp_path: Path) -> None:
    """Every figure of the pure test comes out of PostgreSQL too, and the untouched chain verifies."""
    _, config = loaded
    code, text = _report(config, tmp_path)
    assert code == 0
    doc = json.loads(text)
    assert doc["period"]["start"] == "2026-02-01T00:00:00+05:00"
    assert doc["period"]["end"] == "2026-03-01T00:00:00+05:00"
    assert doc["period"]["seconds"] == 2_419_200
    assert [s["school"] for s in doc["schools"]] == ["shy-001", "shy-002", "shy-003"]

    one = _school(doc, "shy-001")
    assert (one["name"], one["district"], one["contract_mbps"]) == ("School No. 1", "Al-Farabi", 150.0)
    assert one["link"]["basis"] == "router"
    assert one["link"]["monitored_seconds"] == pytest.approx(2_395_800)
    assert one["link"]["down_seconds"] == pytest.approx(18_000)
    assert one["link"]["availability"] == pytest.approx(2_377_800 / 2_395_800)
    assert [(o["start"], o["end"], o["counted_seconds"]) for o in one["outages"]] == [
        ("2026-01-31T22:00:00+05:00", "2026-02-01T02:00:00+05:00", pytest.approx(7_200)),
        ("2026-02-13T01:00:00+05:00", "2026-02-13T03:00:00+05:00", pytest.approx(3_600)),
        ("2026-02-20T09:00:00+05:00", "2026-02-20T10:00:00+05:00", pytest.approx(3_600)),
        ("2026-02-28T23:00:00+05:00", "2026-03-01T03:00:00+05:00", pytest.approx(3_600)),
    ]
    assert one["outage_count"] == 4
    # cam1's only change before the month's look-back is Dec 15; its Feb 15 icmp-probe row is not a device change.
    assert one["availability"]["camera"]["availability"] == pytest.approx((2_395_800 + 2_374_200) / 4_791_600)
    assert one["availability"]["nvr"]["availability"] == pytest.approx(2_394_000 / 2_395_800)
    assert one["availability"]["alarm_panel"]["monitored_seconds"] == pytest.approx(2_394_000)
    assert one["availability"]["alarm_panel"]["availability"] == pytest.approx(1.0)
    assert [(o["device"], o["counted_seconds"]) for o in one["device_outages"]] == [
        ("cam2", pytest.approx(21_600)),
        ("nvr1", pytest.approx(1_800)),
    ]
    download, upload = one["speedtests"]["download"], one["speedtests"]["upload"]
    assert (download["tests"], download["failed"], download["rounds"], download["compliant_rounds"]) == (10, 2, 8, 5)
    assert (download["min_mbps"], download["median_mbps"]) == (50, 140)
    assert download["compliance"] == pytest.approx(0.625)
    assert (upload["rounds"], upload["compliant_rounds"], upload["forgiven_rounds"]) == (8, 7, 1)
    assert (upload["min_mbps"], upload["median_mbps"]) == (45, 139.5)
    assert upload["compliance"] == pytest.approx(0.875)
    assert one["saturation"]["saturated_seconds"] == pytest.approx(670)
    assert [(x["segment"], x["saturated_seconds"]) for x in one["saturation"]["segments"]] == [
        ("education", 250),
        ("video", 420),
        ("wan", 100),
    ]
    assert one["maintenance"]["seconds"] == pytest.approx(14_400)
    assert [w["reason"] for w in one["maintenance"]["windows"]] == ["router firmware upgrade"]
    assert one["gaps"]["seconds"] == pytest.approx(7_200)

    two = _school(doc, "shy-002")
    assert (two["name"], two["contract_mbps"]) == ("School No. 2 <Abay>", 100.0)  # from the inventory
    assert two["link"]["basis"] == "devices"  # devices only seen in state_changes
    assert two["link"]["availability"] == pytest.approx(1_927_800 / 2_064_600)
    assert [(o["start"], o["end"], o["ongoing"]) for o in two["outages"]] == [("2026-02-27T10:00:00+05:00", None, True)]
    assert two["availability"]["camera"]["availability"] == pytest.approx(1_924_200 / 2_064_600)
    assert two["availability"]["alarm_panel"]["availability"] == pytest.approx(1_886_400 / 2_023_200)

    three = _school(doc, "shy-003")
    assert three["has_data"] is False
    assert three["gaps"]["seconds"] == pytest.approx(3 * 3_600)

    [head] = await_rows(
        loaded[0], "SELECT seq, encode(head, 'hex') AS head FROM history_chain ORDER BY seq DESC LIMIT 1"
    )
    assert doc["chain"]["head"] == head["head"]
    assert doc["chain"]["ok"] is True
    assert doc["chain"]["summary"] == f"{doc['chain']['links_verified']} links verified, OK"
    assert doc["chain"]["links_verified"] >= 2


def test_school_filter(loaded: tuple[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--school limits the report; an id found nowhere is reported as no data, with a warning."""
    _, config = loaded
    code, text = _report(config, tmp_path, "--school", "shy-002", "--school", "nowhere")
    assert code == 0
    doc = json.loads(text)
    assert [s["school"] for s in doc["schools"]] == ["nowhere", "shy-002"]
    assert _school(doc, "shy-002")["link"]["availability"] == pytest.approx(1_927_800 / 2_064_600)
    assert _school(doc, "nowhere")["has_data"] is False
    assert "'nowhere' is neither in the history nor in the inventory" in capsys.readouterr().err


def test_html_and_csv(loaded: tuple[str, Path], tmp_path: Path) -> None:
    """HTML names every school and the chain head; CSV parses to one row per school."""
    dsn, config = loaded
    [head] = await_rows(dsn, "SELECT encode(head, 'hex') AS head FROM history_chain ORDER BY seq DESC LIMIT 1")
    code, page = _report(config, tmp_path, fmt="html")
    assert code == 0
    assert page.startswith("<!DOCTYPE html>")
    assert "School No. 1" in page
    assert "School No. 2 &lt;Abay&gt;" in page
    assert head["head"] in page
    assert "links verified, OK" in page
    code, text = _report(config, tmp_path, fmt="csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["school"] for r in rows] == ["shy-001", "shy-002", "shy-003"]
    assert float(rows[0]["link_availability"]) == pytest.approx(2_377_800 / 2_395_800)
    assert rows[0]["chain_head"] == head["head"]


def test_save_upserts_sla_monthly(loaded: tuple[str, Path], tmp_path: Path) -> None:
    """--save writes one row per school for 2026-02-01; saving again replaces, not duplicates."""
    dsn, config = loaded
    assert _report(config, tmp_path, "--save")[0] == 0
    assert _report(config, tmp_path, "--save")[0] == 0
    rows = await_rows(dsn, "SELECT * FROM sla_monthly ORDER BY school")
    assert [(r["month"], r["school"]) for r in rows] == [
        (date(2026, 2, 1), s) for s in ("shy-001", "shy-002", "shy-003")
    ]
    one = rows[0]
    assert one["district"] == "Al-Farabi"
    assert one["link_availability"] == pytest.approx(2_377_800 / 2_395_800)
    assert one["link_monitored_seconds"] == pytest.approx(2_395_800)
    assert one["link_down_seconds"] == pytest.approx(18_000)
    assert one["outages"] == 4
    assert one["download_compliance"] == pytest.approx(0.625)
    assert one["upload_compliance"] == pytest.approx(0.875)
    assert (one["download_min_mbps"], one["download_median_mbps"]) == (50, 140)
    assert one["speedtests"] == 20  # successful measurements, both directions
    assert one["saturated_seconds"] == pytest.approx(670)
    assert one["maintenance_seconds"] == pytest.approx(14_400)
    assert one["gap_seconds"] == pytest.approx(7_200)
    [head] = await_rows(dsn, "SELECT encode(head, 'hex') AS head FROM history_chain ORDER BY seq DESC LIMIT 1")
    assert one["chain_head"] == head["head"]
    three = rows[2]
    assert three["link_availability"] is None
    assert three["camera_availability"] is None


def test_tampered_row_fails_verification(
    loaded: tuple[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An edited state change and a row slipped in outside the chain are listed; the exit code is 3."""
    dsn, config = loaded
    [edited] = await_rows(
        dsn, "UPDATE state_changes SET new = 'up' WHERE device = 'cam2' AND new = 'down' RETURNING chain_seq"
    )
    await_rows(
        dsn,
        "INSERT INTO speedtests (time, school, direction, mbps, bytes, duration, streams, ok, key) "
        "VALUES ('2026-02-18 10:00+05', 'shy-001', 'download', 150, 1, 1, 1, true, gen_random_uuid())",
    )
    code, text = _report(config, tmp_path)
    assert code == 3
    chain = json.loads(text)["chain"]
    assert chain["ok"] is False
    assert chain["problems"] == [
        "1 speedtests row(s) of the period are outside the chain (chain_seq is NULL)",
        f"link {edited['chain_seq']}: rows changed since they were sealed",
    ]
    err = capsys.readouterr().err
    assert "history hash chain:" in err
    assert f"link {edited['chain_seq']}: rows changed since they were sealed" in err


def test_errors_are_clear_and_never_leak_a_password(
    pg_dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No DSN or a bad month: exit 2; unreachable or unmigrated database: exit 1; a message on stderr each time."""
    assert main(["report", "sla", "--month", fx.MONTH, "-c", str(_config(tmp_path, None))]) == 2
    assert "history.dsn is not set" in capsys.readouterr().err
    assert main(["report", "sla", "--month", "2026-13", "-c", str(_config(tmp_path, pg_dsn))]) == 2
    assert "expected YYYY-MM" in capsys.readouterr().err
    assert main(["report", "sla", "--month", fx.MONTH, "-c", str(_config(tmp_path, pg_dsn))]) == 1
    assert "run `telemetryd db migrate`" in capsys.readouterr().err
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "history-db").write_text("s3cret-pass\n")
    config = _config(tmp_path, DEAD_DSN)
    settings = yaml.safe_load(config.read_text())
    settings["history"]["credentials"] = "history-db"
    settings["credentials_directory"] = "secrets"
    config.write_text(yaml.safe_dump(settings))
    assert main(["report", "sla", "--month", fx.MONTH, "-c", str(config)]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("history database: ")
    assert "s3cret" not in captured.err + captured.out


def test_language_from_flag_and_settings(loaded: tuple[str, Path], tmp_path: Path) -> None:
    """--lang picks the report's language; without it settings' report.language does; English by default."""
    _, config = loaded
    code, page = _report(config, tmp_path, "--lang", "ru", fmt="html")
    assert code == 0
    assert '<html lang="ru">' in page
    assert "Отчёт о соблюдении SLA за февраль 2026 г." in page
    assert _report(config, tmp_path, fmt="html")[1].count("SLA report February 2026") == 2  # <title> and <h1>
    settings = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump({**settings, "report": {"language": "kk"}}, sort_keys=False))
    code, page = _report(config, tmp_path, fmt="html")
    assert code == 0
    assert "SLA сақталуы туралы есеп: 2026 жылғы ақпан" in page
    assert '<html lang="en">' in _report(config, tmp_path, "--lang", "en", fmt="html")[1]


def test_pdf_written_with_output(loaded: tuple[str, Path], tmp_path: Path) -> None:
    """--format pdf -o FILE writes an A4 PDF in the asked language; {month} names the file."""
    _, config = loaded
    out = tmp_path / "sla-{month}.pdf"
    args = ["report", "sla", "--month", fx.MONTH, "--format", "pdf", "--lang", "ru", "-o", str(out), "-c", str(config)]
    assert main(args) == 0
    pdf = (tmp_path / f"sla-{fx.MONTH}.pdf").read_bytes()
    assert pdf.startswith(b"%PDF-")
    assert pdf.rstrip().endswith(b"%%EOF")


def test_school_pages_alone_and_summary_only(loaded: tuple[str, Path], tmp_path: Path) -> None:
    """--school gives that school's page alone (no table, no chain page); --summary-only gives the table alone."""
    _, config = loaded
    code, page = _report(config, tmp_path, "--school", "shy-002", "--lang", "kk", fmt="html")
    assert code == 0
    assert page.count('<section class="school"') == 1
    assert 'id="school-shy-002"' in page
    assert 'class="summary"' not in page and '<section class="chain"' not in page
    code, page = _report(config, tmp_path, "--summary-only", fmt="html")
    assert code == 0
    assert 'class="summary"' in page and '<section class="school"' not in page
    assert '<section class="first-page"' in page  # the whole city's HTML opens with the answer
    assert page.split('<table class="summary">', 1)[1].count("<small>shy-00") == 3

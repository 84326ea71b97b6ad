"""Grafana: provisioning files and dashboards are consistent, and every PromQL expression parses (promtool).

The SQL dashboard (sla.json) is checked for structure here; tests/test_grafana_sla.py runs its queries.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import require_binary

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "telemetryd.yml"
PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "telemetryd.yml"

EXPECTED_DASHBOARDS = {"city-overview.json", "school.json", "camera-fleet.json", "telemetryd.json", "sla.json"}
# Dashboards over PostgreSQL (uid postgres) rather than Prometheus.
SQL_DASHBOARDS = {"sla.json"}
PROMQL_DASHBOARDS = [path for path in DASHBOARDS if path.name not in SQL_DASHBOARDS]
SLA = GRAFANA / "dashboards" / "sla.json"

# Values for template variables of the PromQL dashboards; a new variable must be added here so its
# queries get checked (the SQL dashboard's values are in tests/test_grafana_sla.py).
VARIABLES = {"school": "s1", "instance": "127.0.0.1:9464"}
GRAFANA_MACROS = {"__rate_interval": "1m", "__interval": "30s", "__range": "1h"}

# The exported families (README "Metrics"); histograms add _bucket/_sum/_count.
_FAMILIES = """
        device_up device_info probe_up school_link_rtt_seconds school_link_loss_ratio
        school_info school_latitude_degrees
        school_longitude_degrees school_contract_bytes_per_second segment_contract_bytes_per_second
        school_devices school_devices_up school_devices_down speedtest_bytes_per_second
        speedtest_contract_ratio speedtest_up speedtest_last_success_timestamp_seconds
        speedtest_transferred_bytes_total speedtests_total school_below_contract school_link_compliance
        snmp_up interface_octets_total interface_errors_total interface_discards_total interface_up
        interface_speed_bytes_per_second router_uptime_seconds segment_throughput_bytes_per_second
        segment_utilisation_ratio segment_saturated snmp_polls_total speedtests_running
        speedtest_budget_reserved_bytes_per_second speedtest_budget_bytes_per_second
        speedtests_deferred_total device_hardware_info isapi_auth_ok isapi_locked_until_timestamp_seconds
        isapi_certificate_changed
        device_clock_drift_seconds device_time_ntp device_uptime_seconds nvr_channel_up
        nvr_channel_recording nvr_disk_healthy nvr_disk_capacity_bytes nvr_disk_free_bytes camera_verdict
        alarm_panel_heartbeat_age_seconds sia_frames_total probes_total probe_slots_skipped_total
        probe_errors_total probes_in_flight scheduled_probes inventory_schools inventory_devices
        config_last_reload_successful config_last_reload_success_timestamp_seconds build_info shard_info
        icmp_socket_info history_db_up history_schema_pending_migrations history_queue_rows
        history_spool_bytes history_spool_max_bytes history_rows_written_total history_rows_replayed_total
        history_rows_spooled_total history_rows_dropped_total history_rows_rejected_total
        history_write_failures_total history_chain_links_total gc_seconds_total gc_passes_total
        gc_longest_pause_seconds gc_frozen_objects
        """
KNOWN_METRICS = {
    *(f"telemetryd_{name}" for name in _FAMILIES.split()),
    *(
        f"telemetryd_{h}_{s}"
        for h in (
            "schedule_lag_seconds",
            "event_loop_lag_seconds",
            "history_write_duration_seconds",
            "probe_duration_seconds",
            "probe_rtt_seconds",
        )
        for s in ("bucket", "sum", "count")
    ),
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_open_fds",
    "process_max_fds",
    "process_start_time_seconds",
}


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """All panels, rows' nested panels included (rows themselves excluded)."""
    out: list[dict[str, Any]] = []
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            out.extend(panel.get("panels", []))
        else:
            out.append(panel)
    return out


def _datasource_uids() -> dict[str, str]:
    config = yaml.safe_load(DATASOURCES.read_text())
    return {ds["uid"]: ds["type"] for ds in config["datasources"]}


def _substitute(expr: str) -> str:
    """Replace Grafana macros and template variables ($x, ${x}, ${x:fmt}, [[x]]) with concrete values."""
    values = {**GRAFANA_MACROS, **VARIABLES}

    def value(match: re.Match[str]) -> str:
        name = match.group("a") or match.group("b") or match.group("c")
        assert name in values, f"unknown template variable {name!r} in {expr!r}: add it to VARIABLES"
        return values[name]

    out = re.sub(r"\$\{(?P<a>\w+)(?::\w+)?\}|\$(?P<b>\w+)|\[\[(?P<c>\w+)\]\]", value, expr)
    assert "$" not in out, out
    return out


def _expressions() -> list[tuple[str, str]]:
    """(id, expr) for every target of every PromQL dashboard, variables substituted."""
    exprs = []
    for path in PROMQL_DASHBOARDS:
        for panel in _panels(_load(path)):
            for target in panel.get("targets", []):
                key = f"{path.stem}:{panel.get('id')}:{panel.get('title')}:{target.get('refId')}"
                exprs.append((key, _substitute(target.get("expr", ""))))
    return exprs


EXPRESSIONS = _expressions()


def _promtool_check(tmp_path: Path, exprs: list[str]) -> subprocess.CompletedProcess[str]:
    """Write the expressions as recording rules and run `promtool check rules` on them."""
    promtool = require_binary("promtool", "prometheus")
    rules = [{"record": f"dashboard:expr_{i}:check", "expr": expr} for i, expr in enumerate(exprs)]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}, sort_keys=False))
    return subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False)


# --- provisioning -------------------------------------------------------------------------------


def test_datasources_provisioning() -> None:
    """Prometheus (uid prometheus) and PostgreSQL (uid postgres); the password comes from a file."""
    config = yaml.safe_load(DATASOURCES.read_text())
    assert config["apiVersion"] == 1
    by_uid = {ds["uid"]: ds for ds in config["datasources"]}
    assert by_uid["prometheus"]["type"] == "prometheus"
    assert by_uid["postgres"]["type"] in {"postgres", "grafana-postgresql-datasource"}
    assert by_uid["postgres"]["secureJsonData"]["password"].startswith("$__file{")
    assert sum(bool(ds.get("isDefault")) for ds in config["datasources"]) == 1
    assert len({ds["name"] for ds in config["datasources"]}) == len(config["datasources"])


def test_dashboards_provisioning_points_at_the_dashboards() -> None:
    """One file provider whose path is where grafana/dashboards/ is installed."""
    config = yaml.safe_load(PROVIDERS.read_text())
    assert config["apiVersion"] == 1
    [provider] = config["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"].rstrip("/").endswith("grafana/dashboards")
    assert {p.name for p in DASHBOARDS} == EXPECTED_DASHBOARDS


# --- dashboard structure ------------------------------------------------------------------------


def test_dashboard_uids_unique_and_schema() -> None:
    """Each dashboard has a unique uid (≤ 40 chars), a title and schemaVersion 39."""
    uids = []
    for path in DASHBOARDS:
        dashboard = _load(path)
        assert dashboard["schemaVersion"] == 39, path.name
        assert dashboard["title"], path.name
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", dashboard["uid"]), path.name
        assert "id" not in dashboard or dashboard["id"] is None, f"{path.name}: drop the instance-specific id"
        uids.append(dashboard["uid"])
    assert len(uids) == len(set(uids)), uids


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_panels_are_well_formed(path: Path) -> None:
    """Unique panel ids, a gridPos inside 24 columns without overlaps, known datasource uids, targets with a query."""
    dashboard = _load(path)
    uids = _datasource_uids()
    ids = [p["id"] for p in dashboard["panels"]] + [p["id"] for p in _panels(dashboard) if p not in dashboard["panels"]]
    assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
    cells: dict[tuple[int, int], str] = {}
    for panel in [*dashboard["panels"], *(p for p in _panels(dashboard) if p not in dashboard["panels"])]:
        where = f"{path.name}: panel {panel.get('id')} {panel.get('title')!r}"
        assert panel.get("title"), where
        grid = panel["gridPos"]
        assert all(isinstance(grid[k], int) for k in ("x", "y", "w", "h")), where
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, where
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{where} overlaps {cells[(x, y)]}"
                cells[(x, y)] = where
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] in uids, where
        assert panel["targets"], f"{where}: no targets"
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), where
        for target in panel["targets"]:
            datasource = target.get("datasource", panel["datasource"])
            assert datasource["uid"] in uids, where
            assert datasource["type"] == uids[datasource["uid"]], where
            if datasource["type"] == "prometheus":
                assert target.get("expr", "").strip(), f"{where}: target {target['refId']} without expr"
            else:
                assert target.get("rawSql", "").strip(), f"{where}: target {target['refId']} without rawSql"
                assert target["rawQuery"] is True and target["editorMode"] == "code", where
                assert target["format"] in {"table", "time_series"}, where


@pytest.mark.parametrize("path", PROMQL_DASHBOARDS, ids=lambda p: p.stem)
def test_template_variables(path: Path) -> None:
    """Query variables use a known datasource and a known metric; every used variable is defined."""
    dashboard = _load(path)
    uids = _datasource_uids()
    defined = set()
    for var in dashboard["templating"]["list"]:
        defined.add(var["name"])
        assert var["name"] in VARIABLES, var["name"]
        if var["type"] == "query":
            assert var["datasource"]["uid"] in uids
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            match = re.fullmatch(r"label_values\((\w+), *(\w+)\)", query)
            assert match, query
            assert match[1] in KNOWN_METRICS, query
    used = set(re.findall(r"\$\{?(\w+)", json.dumps(_panels(dashboard))))
    assert used - set(GRAFANA_MACROS) <= defined, path.name


def test_school_dashboard_is_templated_on_school() -> None:
    """`$school` comes from label_values(telemetryd_school_info, school) and every query filters on it."""
    dashboard = _load(GRAFANA / "dashboards" / "school.json")
    [var] = dashboard["templating"]["list"]
    assert var["name"] == "school"
    assert var["query"]["query"] == "label_values(telemetryd_school_info, school)"
    for panel in _panels(dashboard):
        for target in panel["targets"]:
            assert 'school="$school"' in target["expr"], (panel["title"], target["expr"])


def test_expected_content() -> None:
    """The panels the issue asks for are there (by the metrics they query)."""
    text = {path.name: path.read_text() for path in DASHBOARDS}
    city = _load(GRAFANA / "dashboards" / "city-overview.json")
    assert any(p["type"] == "geomap" for p in _panels(city))
    for metric in ("telemetryd_school_latitude_degrees", "telemetryd_school_longitude_degrees"):
        assert metric in text["city-overview.json"]
    assert "telemetryd_school_below_contract" in text["city-overview.json"]
    for metric in ("telemetryd_speedtest_bytes_per_second", "telemetryd_segment_throughput_bytes_per_second"):
        assert metric in text["school.json"]
    for segment in ("alarm", "video", "education"):
        assert f'segment=\\"{segment}\\"' in text["school.json"]
    for metric in ("telemetryd_nvr_disk_healthy", "telemetryd_nvr_channel_recording", "telemetryd_camera_verdict"):
        assert metric in text["school.json"]
    for metric in (
        "telemetryd_device_hardware_info",
        "telemetryd_device_clock_drift_seconds",
        "telemetryd_isapi_auth_ok",
    ):
        assert metric in text["camera-fleet.json"]
    for metric in (
        "telemetryd_probes_total",
        "telemetryd_schedule_lag_seconds_bucket",
        "telemetryd_event_loop_lag_seconds",
    ):
        assert metric in text["telemetryd.json"]
    assert "telemetryd_config_last_reload_successful" in text["telemetryd.json"]
    assert "telemetryd_probes_in_flight" in text["telemetryd.json"]


# --- the SLA dashboard (PostgreSQL) ----------------------------------------------------------------

# The one variable syntax sla.json uses (rendered by tests/test_grafana_sla.py) and the macros it may use.
SQL_VARIABLE = re.compile(r"\$\{(\w+):sqlstring\}")
SQL_MACROS = {"__timeFilter"}


def _sla_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, SQL) of every variable query and panel target."""
    found = [(f"variable {var['name']}", var["query"]) for var in dashboard["templating"]["list"]]
    for panel in _panels(dashboard):
        for target in panel["targets"]:
            found.append((f"panel {panel['id']} {panel['title']!r} {target['refId']}", target["rawSql"]))
    return found


def test_sla_dashboard_reads_postgres_only() -> None:
    """sla.json: its title and uid; every panel, target and variable uses the postgres data source."""
    dashboard = _load(SLA)
    assert dashboard["title"] == "telemetryd — SLA (monthly)"
    assert dashboard["uid"] == "telemetryd-sla"
    postgres = {"type": _datasource_uids()["postgres"], "uid": "postgres"}
    assert _panels(dashboard)
    for panel in _panels(dashboard):
        assert panel["datasource"] == postgres, panel["title"]
        for target in panel["targets"]:
            assert target.get("datasource", postgres) == postgres, panel["title"]
            assert "expr" not in target, panel["title"]
    for var in dashboard["templating"]["list"]:
        assert var["datasource"] == postgres, var["name"]


def test_sla_variables() -> None:
    """month (one, from sla_monthly), then district and school (multi, All = every option, chained)."""
    variables = {var["name"]: var for var in _load(SLA)["templating"]["list"]}
    assert list(variables) == ["month", "district", "school"]
    month = variables["month"]
    assert month["type"] == "query"
    assert month["query"] == "SELECT DISTINCT to_char(month, 'YYYY-MM') FROM sla_monthly ORDER BY 1 DESC"
    assert not month["multi"] and not month["includeAll"]
    for name in ("district", "school"):
        var = variables[name]
        assert var["type"] == "query" and var["multi"] and var["includeAll"], name
        # No custom all value: Grafana then sends every option, quoted by `sqlstring`.
        assert not var.get("allValue"), name
        assert var["refresh"] in {1, 2}, name
    assert "FROM schools" in variables["district"]["query"]
    assert "FROM schools" in variables["school"]["query"]
    assert "${district:sqlstring}" in variables["school"]["query"]


def test_sla_queries_use_one_variable_syntax() -> None:
    """Every `$` in sla.json's SQL is `${name:sqlstring}` of an earlier variable or a known macro."""
    dashboard = _load(SLA)
    defined: list[str] = []
    for var in dashboard["templating"]["list"]:
        assert set(SQL_VARIABLE.findall(var["query"])) <= set(defined), var["name"]
        defined.append(var["name"])
    for where, sql in _sla_queries(dashboard):
        assert set(SQL_VARIABLE.findall(sql)) <= set(defined), where
        rest = SQL_VARIABLE.sub("", sql)
        assert set(re.findall(r"\$(__\w+)\(", rest)) <= SQL_MACROS, where
        assert "$" not in re.sub(r"\$__\w+\(", "", rest), f"{where}: use ${{name:sqlstring}}: {sql}"
        assert "[[" not in sql, where


def test_sla_expected_content() -> None:
    """The panels the issue asks for are there (by the tables and columns they read)."""
    dashboard = _load(SLA)
    sql = {panel["title"]: " ".join(t["rawSql"] for t in panel["targets"]) for panel in _panels(dashboard)}
    by_type = {panel["title"]: panel["type"] for panel in _panels(dashboard)}
    assert sum(by_type[title] == "stat" for title in sql) >= 3
    everything = " ".join(sql.values())
    for column in (
        "link_availability",
        "link_monitored_seconds",
        "camera_availability",
        "alarm_panel_availability",
        "download_compliance",
        "upload_compliance",
    ):
        assert column in everything, column
    outages = [title for title, text in sql.items() if "FROM device_outages" in text]
    assert {"o.kind = 'router'", "o.kind = 'alarm_panel'"} <= {
        kind for title in outages for kind in re.findall(r"o\.kind = '\w+'", sql[title])
    }
    for title in outages:
        assert "interval '5 hours'" in sql[title], f"{title}: the month is local time, UTC+05:00"
    [speed] = [title for title, text in sql.items() if "FROM speedtests" in text]
    assert by_type[speed] == "timeseries"
    assert "$__timeFilter(t.time)" in sql[speed] and "contract_mbps * t.floor_ratio" in sql[speed]
    assert any("FROM monitoring_gaps" in text for text in sql.values())
    # Availability is coloured red below 99 % and green from 99.5 %.
    steps = [
        [step["value"] for step in prop["value"]["steps"]]
        for panel in _panels(dashboard)
        for override in panel["fieldConfig"]["overrides"]
        for prop in override["properties"]
        if prop["id"] == "thresholds" and override["matcher"]["options"] == "availability"
    ]
    assert steps == [[None, 99, 99.5]]


# --- PromQL ------------------------------------------------------------------------------------


def test_there_are_expressions() -> None:
    """Sanity: the collection found the dashboards' queries."""
    assert len(EXPRESSIONS) >= 40
    assert len(PROMQL_DASHBOARDS) == 4


@pytest.mark.parametrize(("key", "expr"), EXPRESSIONS, ids=[key for key, _ in EXPRESSIONS])
def test_expression_uses_known_metrics(key: str, expr: str) -> None:
    """Only exported metric names (plus process_*) appear in the query."""
    names = set(re.findall(r"\b(?:telemetryd|process)_\w+", expr))
    assert names, f"{key}: no metric in {expr!r}"
    assert names <= KNOWN_METRICS, f"{key}: unknown {sorted(names - KNOWN_METRICS)}"


@pytest.mark.parametrize(("key", "expr"), EXPRESSIONS, ids=[key for key, _ in EXPRESSIONS])
def test_expression_is_valid_promql(tmp_path: Path, key: str, expr: str) -> None:
    """`promtool check rules` parses the expression (as a recording rule)."""
    proc = _promtool_check(tmp_path, [expr])
    assert proc.returncode == 0, f"{key}: {expr}\n{proc.stdout}{proc.stderr}"


def test_promtool_rejects_broken_promql(tmp_path: Path) -> None:
    """Sanity: the check above does catch a syntax error."""
    proc = _promtool_check(tmp_path, ['sum by (school (telemetryd_device_up{kind="camera"})'])
    assert proc.returncode != 0
    assert "parse error" in proc.stdout + proc.stderr


def test_substitution_covers_grafana_forms() -> None:
    """$x, ${x}, ${x:regex} and [[x]] are all replaced."""
    assert _substitute('x{school="$school"}[$__rate_interval]') == 'x{school="s1"}[1m]'
    assert _substitute('x{instance=~"${instance:regex}"}[${__range}] [[school]] $__interval') == (
        'x{instance=~"127.0.0.1:9464"}[1h] s1 30s'
    )

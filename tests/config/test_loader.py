"""The loader names file, line and field for every mistake, and lists them all."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from telemetryd.config import ConfigError, apply_shard, load_config, load_inventory, shard_of
from telemetryd.config.settings import Shard
from telemetryd.model import DeviceKind, ProbeSpec, Segment
from tests.helpers import school, write_config

TESTDATA = Path(__file__).parent / "testdata"
BAD = sorted((TESTDATA / "bad").glob("*.yaml"))
REPO = Path(__file__).resolve().parents[2]
EXPECT = re.compile(r"^# expect: (\d+) (\S*) ?:: (.+)$")


def expectations(path: Path) -> list[tuple[int, str, str]]:
    """The `# expect: LINE FIELD :: message` lines at the top of a corpus file."""
    found = []
    for line in path.read_text().splitlines():
        match = EXPECT.match(line)
        if match:
            found.append((int(match.group(1)), match.group(2), match.group(3)))
    return found


def test_corpus_covers_at_least_eight_distinct_mistakes() -> None:
    """The bad-inventory corpus has at least eight files and each states its expected problems in `# expect:` lines."""
    assert len(BAD) >= 8
    assert all(expectations(p) for p in BAD), "every corpus file states what it expects"


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_inventory_file_reports_file_line_field(path: Path) -> None:
    """Each bad corpus file raises exactly its `# expect:` problems, each with file, line, field and message."""
    with pytest.raises(ConfigError) as caught:
        load_inventory(path)
    problems = caught.value.problems
    expected = expectations(path)
    # Exactly the stated problems, each at its line and field, none extra and none missing.
    assert len(problems) == len(expected), "\n".join(map(str, problems))
    for problem, (line, field, message) in zip(problems, expected, strict=True):
        assert problem.file == str(path)
        assert problem.line == line, str(problem)
        assert problem.field == field, str(problem)
        assert message in problem.message, str(problem)


def test_duplicates_across_files_name_both_places() -> None:
    """A school id, device id and address repeated in b.yaml are each reported with the a.yaml line using it."""
    across = TESTDATA / "bad_across"
    with pytest.raises(ConfigError) as caught:
        load_inventory(across)
    text = [str(p) for p in caught.value.problems]
    assert text == [
        f"{across}/b.yaml:2: schools[0].id: duplicate school id 'shy-school-001', already used at {across}/a.yaml:2",
        f"{across}/b.yaml:6: schools[0].devices[0].id: duplicate device id 'shy-001-router', "
        f"already used at {across}/a.yaml:6",
        f"{across}/b.yaml:6: schools[0].devices[0].host: duplicate address '10.1.0.1', "
        f"already used at {across}/a.yaml:6",
    ]


def test_problems_from_every_file_of_a_directory_are_listed(tmp_path: Path) -> None:
    """Loading a directory of three bad files lists problems from all three, in file-name order."""
    for name in ("bad_address.yaml", "unknown_kind.yaml", "segments_over_total.yaml"):
        (tmp_path / name).write_text((TESTDATA / "bad" / name).read_text())
    with pytest.raises(ConfigError) as caught:
        load_inventory(tmp_path)
    files = [Path(p.file).name for p in caught.value.problems]
    # Every file's own mistake is listed (plus the duplicates between them), in file order.
    assert {"bad_address.yaml", "segments_over_total.yaml", "unknown_kind.yaml"} == set(files)
    assert files == sorted(files)
    assert any("more than the total 150 Mbps" in p.message for p in caught.value.problems)


def test_check_config_exits_non_zero_and_lists_every_problem() -> None:
    """`check-config` on many_mistakes.yaml exits 1, listing lines 12, 13, 14, 16, 19 and "5 problems found"."""
    path = TESTDATA / "bad" / "many_mistakes.yaml"
    result = subprocess.run(
        [sys.executable, "-m", "telemetryd", "check-config", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == "5 problems found"
    assert [int(line.split(":")[1]) for line in lines[:-1]] == [12, 13, 14, 16, 19]


def test_check_config_accepts_the_shipped_example() -> None:
    """`check-config` on the shipped example exits 0 and reports 2 schools in the inventory."""
    result = subprocess.run(
        [sys.executable, "-m", "telemetryd", "check-config", str(REPO / "config" / "telemetryd.example.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "OK: 2 schools in the inventory" in result.stdout


def test_example_inventory_loads_with_defaults_filled_in() -> None:
    """The example gets the 150 = 20/30/100 contract; a camera without probes gets icmp and tcp:554."""
    inventory = load_inventory(REPO / "config" / "inventory" / "example")
    school_087 = inventory.schools_by_id["shy-school-087"]
    assert school_087.contract.total_mbps == 150
    assert dict(school_087.contract.segments_mbps) == {Segment.ALARM: 20, Segment.VIDEO: 30, Segment.EDUCATION: 100}
    camera = next(d for d in school_087.devices if d.kind is DeviceKind.CAMERA)
    # A camera with no `probes:` gets ping and its RTSP port, what the NVR records from.
    assert camera.probes == (ProbeSpec("icmp"), ProbeSpec("tcp", 554))
    assert camera.credentials == "hik-camera"


@pytest.mark.parametrize(
    ("settings", "line", "field", "message"),
    [
        ({"listen": "9817"}, 1, "listen", "expected host:port"),
        ({"shard": "3/2"}, 1, "shard", "need 0 <= k < N"),
        ({"shard": "half"}, 1, "shard", "expected k/N"),
        ({"probes": {"icmp": {"intervall": "30s"}}}, 3, "probes.icmp.intervall", "unknown key 'intervall'"),
        ({"probes": {"tcp": {"timeout": "3 seconds"}}}, 3, "probes.tcp.timeout", "duration"),
        ({"hysteresis": {"down_after": 0}}, 2, "hysteresis.down_after", "greater than or equal to 1"),
        ({"speedtest": {"quiet_windows": ["8-14"]}}, 3, "speedtest.quiet_windows[0]", "expected HH:MM-HH:MM"),
        ({"speedtest": {"quiet_windows": ["08:00-25:00"]}}, 3, "speedtest.quiet_windows[0]", "hours 0-24"),
        ({"speedtest": {"below_contract_ratio": 1.5}}, 2, "speedtest.below_contract_ratio", "less than or equal to 1"),
        ({"probes": {"snmp": {"retries": 0}}}, 3, "probes.snmp.retries", "greater than or equal to 1"),
        ({"history": {"dsn": "postgresql://t:hunter2@db/t"}}, 2, "history.dsn", "must not be in the URL"),
        ({"history": {"dsn": "postgresql://t@db/t?password=hunter2"}}, 2, "history.dsn", "must not be in the URL"),
        ({"history": {"dsn": "mysql://t@db/t"}}, 2, "history.dsn", "expected postgresql://"),
        (
            {"history": {"maintenance": [{"start": "2026-11-14T22:00:00", "end": "2026-11-15T02:00:00+05:00"}]}},
            3,
            "history.maintenance[0].start",
            "timezone",
        ),
        (
            {"history": {"maintenance": [{"start": "2026-11-15T02:00+05:00", "end": "2026-11-14T22:00+05:00"}]}},
            3,
            "history.maintenance[0]",
            "ends (2026-11-14T22:00:00+05:00) before it starts",
        ),
    ],
)
def test_bad_settings_name_line_and_field(
    tmp_path: Path, settings: dict[str, object], line: int, field: str, message: str
) -> None:
    """Each invalid settings value yields a single problem at its file, line and field, never echoing a DSN password."""
    path = tmp_path / "telemetryd.yaml"
    path.write_text(yaml.safe_dump(settings, sort_keys=False))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    [problem] = caught.value.problems
    assert (problem.file, problem.line, problem.field) == (str(path), line, field), str(problem)
    assert message in problem.message, str(problem)
    assert "hunter2" not in str(problem)  # a password in a bad DSN is never echoed


def test_link_settings_and_inventory_reach_the_domain(tmp_path: Path) -> None:
    """Quiet windows become minutes of the day; a router's `snmp:` and a school's `speedtest:` reach the model."""
    router = {
        "id": "r1",
        "kind": "router",
        "host": "10.0.0.1",
        "credentials": "snmp-ro",
        "snmp": {"port": 1161, "interfaces": {"wan": "ge-0/0/0", "alarm": 7}},
    }
    speed = {"url": "http://10.0.0.10:8088/", "credentials": "speed-token"}
    path = write_config(
        tmp_path, [school("s1", [router], speedtest=speed)], speedtest={"quiet_windows": ["08:00-14:00", "22:30-06:00"]}
    )
    config = load_config(path)
    assert config.settings.speedtest.quiet_windows == [(480, 840), (1350, 360)]
    s1 = config.inventory.schools_by_id["s1"]
    assert s1.speedtest is not None and s1.speedtest.url == "http://10.0.0.10:8088"
    assert s1.router is not None and s1.router.snmp is not None
    assert s1.router.snmp.port == 1161
    assert dict(s1.router.snmp.interfaces) == {"wan": "ge-0/0/0", "alarm": 7}


def test_an_inventory_problem_under_valid_settings_is_the_only_problem(tmp_path: Path) -> None:
    """Valid settings with a router at 300.1.1.1 give exactly one problem, on schools[0].devices[0].host."""
    path = write_config(tmp_path, [school("s1", [{"id": "r", "kind": "router", "host": "300.1.1.1"}])])
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert [p.field for p in caught.value.problems] == ["schools[0].devices[0].host"]


def test_missing_inventory_is_named(tmp_path: Path) -> None:
    """An `inventory:` path that does not exist is one problem naming that path as "no such file or directory"."""
    path = tmp_path / "telemetryd.yaml"
    path.write_text("inventory: nowhere\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    [problem] = caught.value.problems
    assert problem.file == str(tmp_path / "nowhere")
    assert "no such file or directory" in problem.message


def test_shard_is_stable_and_partitions_the_schools(tmp_path: Path) -> None:
    """Three shards split 60 schools, each school in exactly one, and shard_of ignores PYTHONHASHSEED."""
    schools = [school(f"shy-{n:03d}", [{"id": f"r{n}", "kind": "router", "host": f"10.0.{n}.1"}]) for n in range(60)]
    path = write_config(tmp_path, schools)
    inventory = load_config(path).inventory
    assert len(inventory.schools) == 60
    parts = [apply_shard(inventory, Shard(index=k, count=3)) for k in range(3)]
    ids = [{s.id for s in part.schools} for part in parts]
    # Every school in exactly one shard, and no shard empty or holding everything.
    assert set().union(*ids) == {s.id for s in inventory.schools}
    assert sum(len(i) for i in ids) == 60
    assert all(5 < len(i) < 40 for i in ids)
    # The hash is fixed across processes (blake2b, not Python's salted hash()), so two
    # instances started separately agree on who owns which school.
    code = "from telemetryd.config import shard_of; print([shard_of(f'shy-{n:03d}', 3) for n in range(60)])"
    runs = {
        subprocess.run(
            [sys.executable, "-c", code], env={"PYTHONHASHSEED": seed}, capture_output=True, text=True, check=True
        ).stdout
        for seed in ("1", "2")
    }
    assert runs == {f"{[shard_of(f'shy-{n:03d}', 3) for n in range(60)]}\n"}


def test_shard_setting_keeps_only_its_schools(tmp_path: Path) -> None:
    """With `shard: 1/2` total_schools stays 20 but the inventory keeps only schools shard_of puts in shard 1."""
    schools = [school(f"shy-{n:03d}", [{"id": f"r{n}", "kind": "router", "host": f"10.0.{n}.1"}]) for n in range(20)]
    config = load_config(write_config(tmp_path, schools, shard="1/2"))
    assert config.total_schools == 20
    assert {s.id for s in config.inventory.schools} == {
        f"shy-{n:03d}" for n in range(20) if shard_of(f"shy-{n:03d}", 2) == 1
    }


def test_helper_processes_report_the_same_problems_and_build_the_same_inventory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parsed in helper processes (a large inventory), bad files name the same lines, good ones load equal."""
    from telemetryd.config import yamlsrc

    bad = tmp_path / "bad"
    bad.mkdir()
    for path in BAD:
        (bad / path.name).write_text(path.read_text())

    def problems_of(path: Path) -> list[str]:
        with pytest.raises(ConfigError) as caught:
            load_inventory(path)
        return [str(p).replace(str(path), "") for p in caught.value.problems]

    here = problems_of(bad), problems_of(TESTDATA / "bad_across")
    (tmp_path / "good").mkdir()
    good = write_config(
        tmp_path / "good",
        [school(f"s{n}", [{"id": f"s{n}-r", "kind": "router", "host": f"10.0.{n}.1"}]) for n in range(5)],
    )
    loaded_here = load_config(good)
    monkeypatch.setattr(yamlsrc, "PARALLEL_BYTES", 1)
    assert (problems_of(bad), problems_of(TESTDATA / "bad_across")) == here
    loaded_by_helpers = load_config(good)
    assert re.fullmatch(r"\d helper process(es)?", loaded_by_helpers.parsed_by)
    assert loaded_here.parsed_by == "this process"
    assert loaded_by_helpers.inventory == loaded_here.inventory

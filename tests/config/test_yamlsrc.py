"""The event-built YAML values against PyYAML's own safe_load, and the lines problems point at."""

from __future__ import annotations

import concurrent.futures
import concurrent.futures.process
import os
from pathlib import Path

import pytest
import yaml

from telemetryd.config import yamlsrc
from telemetryd.config.yamlsrc import MAX_ALIAS_NODES, MAX_DEPTH, MAX_EXPANDED_NODES, read_yaml
from telemetryd.slices import finish

DOCUMENTS = [
    "a: 1\nb: -2.5\nc: 0x1F\nd: 1_000\ne: .inf\nf: ~\ng: null\nh: true\ni: No\nj: 2026-12-01\nk: 1e3\n",
    "plain: text\nquoted: '7'\ndouble: \"true\"\nempty:\nblank: ''\ntagged: !!str 5\nint: !!int '12'\n",
    "list: [1, two, 3.0, [nested, {x: y}]]\nflow: {a: 1, b: [2]}\n",
    "base: &b {interval: 30, timeout: 2}\nuse: *b\nlist: &l [1, 2]\nagain: *l\nscalar: &s word\nref: *s\n",
    "- 1\n- - 2\n  - 3\n- {k: v}\n- |\n  multi\n  line\n- >\n  folded\n  text\n",
    "schools:\n  - id: s1\n    devices:\n"
    "      - {id: r1, kind: router, host: 10.0.0.1}\n      - {id: c1, host: 10.0.0.2}\n",
    "",
    "# only a comment\n",
    "0o17: octal key\n12: int key\n",
]


@pytest.mark.parametrize("text", DOCUMENTS)
def test_values_equal_safe_load(tmp_path: Path, text: str) -> None:
    """Every scalar kind, anchors, aliases, nesting and empty documents build what safe_load builds."""
    path = tmp_path / "doc.yaml"
    path.write_text(text)
    value, _, problems = read_yaml(path)
    assert problems == []
    assert value == yaml.safe_load(text)


def test_duplicate_key_names_both_lines(tmp_path: Path) -> None:
    """A repeated key is a problem at the second one's line, naming the first one's."""
    path = tmp_path / "dup.yaml"
    path.write_text("listen: a\nlogging:\n  level: info\n  level: debug\n")
    value, _, problems = read_yaml(path)
    assert [(p.line, p.field) for p in problems] == [(4, "logging.level")]
    assert "first given on line 3" in problems[0].message
    assert value == {"listen": "a", "logging": {"level": "info"}}


def test_lines_are_found_when_asked(tmp_path: Path) -> None:
    """A clean file keeps no lines until a problem asks: then every path has its line."""
    path = tmp_path / "inv.yaml"
    path.write_text("schools:\n  - id: s1\n    devices:\n      - id: r1\n        host: 10.0.0.1\n      - id: c1\n")
    _, source, problems = read_yaml(path)
    assert problems == []
    assert source.line_of(("schools", 0, "devices", 1, "id")) == 6
    assert source.line_of(("schools", 0, "devices", 0, "host")) == 5
    assert source.line_of(("schools", 0, "devices", 0, "missing")) == 4  # the nearest parent
    assert source.problem(("schools", 0, "id"), "bad").line == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: [1\n", "YAML syntax error"),
        ("a: *nowhere\n", "has no anchor"),
        ("a: &x [1, *x]\n", "contains it"),
        ("a: 1\n---\nb: 2\n", "single YAML document"),
        ("? [1, 2]\n: v\n", "plain words"),
        ("a: !!int nope\n", "int"),
        # PyYAML's constructors raising other than ValueError on text their resolver would not have matched
        # (found by tests/fuzz): AttributeError, IndexError, KeyError before the fix.
        ("a: !!timestamp x\n", "'x' is not a valid timestamp"),
        ('a: !!int ""\n', "'' is not a valid int"),
        ("a: !!bool maybe\n", "'maybe' is not a valid bool"),
        ("a: " + "[" * 200_000 + "]" * 200_000 + "\n", "nesting depth"),
    ],
)
def test_broken_documents_are_problems_with_lines(tmp_path: Path, text: str, expected: str) -> None:
    """Syntax errors, dangling or recursive aliases, extra documents, odd keys, bad tags, absurd nesting:
    a problem, no crash."""
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    _, _, problems = read_yaml(path)
    assert problems, text
    assert expected in " ".join(p.message for p in problems)
    assert all(p.line is not None for p in problems)


def test_an_alias_bomb_is_refused_at_its_first_big_alias(tmp_path: Path) -> None:
    """Nine levels of nine aliases stand for 387 million values: refused at the first alias standing for more
    than MAX_ALIAS_NODES, with one problem at its line, not expanded."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    _, _, problems = read_yaml(path)
    assert [(p.line, p.message) for p in problems] == [
        (7, f"alias *a5 stands for 531,441 values (at most {MAX_ALIAS_NODES:,})")
    ]


def test_many_uses_of_a_modest_alias_are_refused_at_the_total_cap(tmp_path: Path) -> None:
    """Each alias stands for 59,049 values (under the per-alias cap), but 100 of them exceed MAX_EXPANDED_NODES."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 5)]
    lines.append(f"many: [{', '.join(['*a4'] * 100)}]")
    path = tmp_path / "wide.yaml"
    path.write_text("\n".join(lines) + "\n")
    _, _, problems = read_yaml(path)
    assert [p.message for p in problems] == [f"aliases expand to more than {MAX_EXPANDED_NODES:,} values"]


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 999, 5000])
def test_nesting_deeper_than_the_limit_is_one_problem(tmp_path: Path, depth: int) -> None:
    """Lists nested past MAX_DEPTH (also past Python's recursion limit) are one problem; past 1,000 levels
    libyaml's scanner, reading ahead, says so before the builder does."""
    path = tmp_path / "deep.yaml"
    path.write_text("x: " + "[" * depth + "]" * depth + "\n")
    _, _, problems = read_yaml(path)
    expected = f"nested deeper than {MAX_DEPTH} levels" if depth < 1000 else "exceeded maximum nesting depth"
    assert [p.line for p in problems] == [1]
    assert expected in problems[0].message


def test_nesting_at_the_limit_is_read(tmp_path: Path) -> None:
    """MAX_DEPTH levels in all (the top mapping included) still parse."""
    path = tmp_path / "deep.yaml"
    path.write_text("x: " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "\n")
    value, _, problems = read_yaml(path)
    assert problems == []
    inner = value["x"]
    for _ in range(MAX_DEPTH - 2):
        inner = inner[0]
    assert inner == []


def test_a_file_over_the_size_limit_is_refused_unread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file larger than MAX_FILE_BYTES is one problem naming its size; nothing of it is parsed."""
    monkeypatch.setattr(yamlsrc, "MAX_FILE_BYTES", 1000)
    path = tmp_path / "big.yaml"
    path.write_text("schools: []\n" + "# padding\n" * 200)
    _, _, problems = read_yaml(path)
    assert [p.message for p in problems] == ["file is 2,012 bytes, more than 1,000"]


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    """A named pipe in the settings' place (no writer on the other end) is refused at once, not waited on."""
    path = tmp_path / "pipe.yaml"
    os.mkfifo(path)
    _, _, problems = read_yaml(path)
    assert [p.message for p in problems] == ["not a regular file"]


def _inventory_files(tmp_path: Path, files: int, schools: int) -> list[Path]:
    paths = []
    for f in range(files):
        entries = [
            {"id": f"s{f}-{n}", "devices": [{"id": f"s{f}-{n}-r", "kind": "router", "host": f"10.{f}.{n}.1"}]}
            for n in range(schools)
        ]
        path = tmp_path / f"district-{f}.yaml"
        path.write_text(yaml.safe_dump({"schools": entries, "note": "district"}))
        paths.append(path)
    return paths


def test_helper_processes_parse_what_this_process_parses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Above PARALLEL_BYTES the files go to helper processes; values, in pieces of PIECE_ITEMS, come back equal."""
    paths = _inventory_files(tmp_path, files=3, schools=250)  # 250 schools: three pieces per file
    monkeypatch.setattr(yamlsrc, "PARALLEL_BYTES", 1)
    with yamlsrc.Readings(paths) as readings:
        parsed = [finish(readings.reading(path)) for path in paths]
        helpers = min(3, len(os.sched_getaffinity(0)))
        assert readings.parsed_by == f"{helpers} helper process{'es' if helpers > 1 else ''}"
    for path, (value, _, problems) in zip(paths, parsed, strict=True):
        assert problems == []
        assert value == yaml.safe_load(path.read_text())


def test_small_inventories_are_parsed_here(tmp_path: Path) -> None:
    """Below PARALLEL_BYTES no helper starts: its start-up would cost more than the parse."""
    paths = _inventory_files(tmp_path, files=2, schools=3)
    with yamlsrc.Readings(paths) as readings:
        values = [finish(readings.reading(path))[0] for path in paths]
        assert readings.parsed_by == "this process"
    assert values == [yaml.safe_load(path.read_text()) for path in paths]


def test_a_helpers_problems_keep_their_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad file parsed in a helper names the same lines as one parsed here; an unreadable one needs no helper."""
    good, bad = _inventory_files(tmp_path, files=2, schools=2)
    bad.write_text("schools:\n  - id: a\n    id: b\n")
    missing = tmp_path / "gone.yaml"
    monkeypatch.setattr(yamlsrc, "PARALLEL_BYTES", 1)
    with yamlsrc.Readings([good, bad, missing]) as readings:
        results = {path: finish(readings.reading(path)) for path in (good, bad, missing)}
    assert results[good][2] == []
    assert [str(p) for p in results[bad][2]] == [str(p) for p in read_yaml(bad)[2]]
    assert results[bad][2][0].line == 3
    assert "cannot read file" in results[missing][2][0].message


def test_helpers_that_cannot_start_leave_the_parse_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sandbox without processes (or a helper that dies) is no failure: the files are parsed here, the reason kept."""
    paths = _inventory_files(tmp_path, files=2, schools=2)
    monkeypatch.setattr(yamlsrc, "PARALLEL_BYTES", 1)

    class NoProcesses:
        def __init__(self, *_: object, **__: object) -> None:
            raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(yamlsrc.concurrent.futures, "ProcessPoolExecutor", NoProcesses)
    with yamlsrc.Readings(paths) as readings:
        values = [finish(readings.reading(path))[0] for path in paths]
        assert readings.parsed_by.startswith("this process (helper processes failed: PermissionError")
    assert values == [yaml.safe_load(path.read_text()) for path in paths]


def test_a_helper_dying_midway_leaves_the_rest_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A future that fails (the pool broke) is parsed here instead, and so is every file after it."""
    paths = _inventory_files(tmp_path, files=3, schools=2)
    monkeypatch.setattr(yamlsrc, "PARALLEL_BYTES", 1)

    class Broken(concurrent.futures.Future[object]):
        def __init__(self) -> None:
            super().__init__()
            self.set_exception(concurrent.futures.process.BrokenProcessPool("a helper died"))

    class BrokenPool:
        def __init__(self, *_: object, **__: object) -> None:
            pass

        def submit(self, *_: object) -> Broken:
            return Broken()

        def shutdown(self, **_: object) -> None:
            pass

    monkeypatch.setattr(yamlsrc.concurrent.futures, "ProcessPoolExecutor", BrokenPool)
    with yamlsrc.Readings(paths) as readings:
        values = [finish(readings.reading(path))[0] for path in paths]
        assert "BrokenProcessPool: a helper died" in readings.parsed_by
    assert values == [yaml.safe_load(path.read_text()) for path in paths]

"""The event-built YAML values against PyYAML's own safe_load, and the lines problems point at."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from telemetryd.config.yamlsrc import MAX_EXPANDED_NODES, read_yaml

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


def test_an_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    """Nine levels of nine aliases stand for 387 million values: refused at the cap, not expanded."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    _, _, problems = read_yaml(path)
    assert [p.message for p in problems] == [f"aliases expand to more than {MAX_EXPANDED_NODES:,} values"]

"""The YAML config loader on generated files: a value with Problems, a Config, or ConfigError — nothing else.

Through the public functions only (`read_yaml`, `load_config`): the operator's files are
arbitrary text, mutated real configurations, and YAML built to hurt (aliases, deep nesting,
tags that construct objects, merge keys, duplicate and complex keys, bad encodings).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from telemetryd.config import load_config
from telemetryd.config.loader import ConfigError
from telemetryd.config.yamlsrc import Problem, SourceMap, read_yaml
from tests.fuzz.strategies import FUZZ, mutated

YAML_FUZZ = settings(FUZZ, max_examples=200, suppress_health_check=[HealthCheck.too_slow], report_multiple_bugs=False)
CONFIG_FUZZ = settings(YAML_FUZZ, max_examples=100)
"""Each example writes and loads two files: fewer of them for the same few seconds."""
ALIAS_CHAIN = b"a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + b"".join(
    b"%c: &%c [%s]\n" % (98 + level, 98 + level, b", ".join([b"*%c" % (97 + level)] * 10)) for level in range(6)
)
"""Ten million values from 400 bytes (the alias bomb of issue 13, a level short of exhausting memory)."""
DEEP_LIST = b"[" * 3000 + b"]" * 3000
"""The 3,000-deep list of issue 13 (a RecursionError once)."""

SETTINGS = {
    "listen": "127.0.0.1:0",
    "inventory": "inventory",
    "logging": {"format": "json"},
    "probes": {"tcp": {"interval": "500ms", "timeout": "1s"}, "isapi": {"interval": 30, "max_body_bytes": 65536}},
    "hysteresis": {"down_after": 2, "up_after": 1},
    "shutdown_timeout": "5s",
}
INVENTORY = {
    "schools": [
        {
            "id": "s1",
            "name": "School 1",
            "district": "Abay",
            "devices": [
                {
                    "id": "s1-cam",
                    "kind": "camera",
                    "host": "10.1.0.20",
                    "credentials": "cam",
                    "probes": ["tcp:554", "isapi"],
                },
                {"id": "s1-router", "kind": "router", "host": "10.1.0.1", "probes": ["icmp"]},
            ],
        }
    ]
}
SETTINGS_TEXT = yaml.safe_dump(SETTINGS, sort_keys=False).encode()
INVENTORY_TEXT = yaml.safe_dump(INVENTORY, sort_keys=False).encode()

HOSTILE_YAML = (
    b"a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
    b"c: [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n",
    b"x: *undefined\n",
    b"<<: {a: 1}\n",
    b"m: &m {k: v}\nn:\n  <<: *m\n  <<: *m\n",
    b"!!python/object/apply:os.system ['true']\n",
    b"k: !!binary aGVsbG8=\n",
    b"k: !!timestamp 2001-12-14t21:59:43.10-05:00\n",
    b"k: !custom tag\n",
    b"? [complex, key]\n: value\n",
    b"dup: 1\ndup: 2\n",
    b"\t- tab indented\n",
    b"\xef\xbb\xbfbom: 1\n",
    b"nul: \x00\n",
    b"\xff\xfe not utf-8\n",
    b"k: 1e400\n",
    b"k: 0x" + b"f" * 200 + b"\n",
    b"k: " + b"9" * 5000 + b"\n",
    b"%YAML 1.1\n---\n",
    b"--- a\n--- b\n",
    b"k: 'unterminated\n",
    b"k: |\n  block\n k2: bad\n",
    b"[" * 200,
    b"{a: " * 200,
    b"- " * 200 + b"x\n",
)
"""Fragments spliced into real files (aliases kept small: the lead's alias limits are tested with the loader)."""


TAG_CRASHES = (b"k: !!timestamp x\n", b'k: !!int ""\n', b"k: !!bool maybe\n")
"""Found by these tests (issue 13): a standard tag on text its constructor cannot read escaped as AttributeError,
IndexError or KeyError instead of a Problem (tests/config/test_yamlsrc.py checks their messages)."""


def _problems_are_located(problems: list[Problem], *files: Path) -> None:
    assert problems, "a ConfigError without problems"
    for problem in problems:
        assert isinstance(problem, Problem), problem
        assert str(problem)  # renders for check-config
        assert any(problem.file.endswith(file.name) or str(file.parent) in problem.file for file in files), problem


@YAML_FUZZ
@given(text=st.one_of(st.binary(max_size=2000), mutated((SETTINGS_TEXT, INVENTORY_TEXT, *HOSTILE_YAML))))
@example(text=HOSTILE_YAML[0])
@example(text=TAG_CRASHES[0])
@example(text=TAG_CRASHES[1])
@example(text=TAG_CRASHES[2])
@example(text=b"[" * 200 + b"]" * 200)
@example(text=DEEP_LIST)
@example(text=b"".join(b"  " * depth + b"- \n" for depth in range(3000)))
@example(text=ALIAS_CHAIN)
def test_read_yaml_gives_a_value_and_problems(text: bytes) -> None:
    """Any file: a value, a source map and a list of Problems (syntax errors among them), or ConfigError."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "f.yaml"
        path.write_bytes(text)
        try:
            _value, source, problems = read_yaml(path)
        except ConfigError as exc:
            _problems_are_located(exc.problems, path)
            return
        assert isinstance(source, SourceMap)
        assert all(isinstance(problem, Problem) and str(problem) for problem in problems)


def _random_values() -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=True),
        st.text(max_size=30),
        st.sampled_from(["10.1.0.1", "127.0.0.1:0", "30s", "500ms", "-1s", "icmp", "tcp:0", "isapi:99999", "camera"]),
    )
    return st.recursive(
        scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    )


@st.composite
def replaced(draw: st.DrawFn, document: dict[str, Any]) -> bytes:
    """A real document with a few values (at any depth) replaced by random ones, dumped as YAML."""

    def walk(node: Any) -> Any:
        if draw(st.integers(0, 9)) == 0:
            return draw(_random_values())
        if isinstance(node, dict):
            return {key: walk(value) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(value) for value in node]
        return node

    return yaml.safe_dump(walk(document), sort_keys=False, allow_unicode=True).encode()


@CONFIG_FUZZ
@given(
    settings_text=st.one_of(st.just(SETTINGS_TEXT), replaced(SETTINGS), mutated((SETTINGS_TEXT, *HOSTILE_YAML))),
    inventory_text=st.one_of(st.just(INVENTORY_TEXT), replaced(INVENTORY), mutated((INVENTORY_TEXT, *HOSTILE_YAML))),
)
@example(settings_text=SETTINGS_TEXT, inventory_text=INVENTORY_TEXT)
@example(settings_text=SETTINGS_TEXT, inventory_text=DEEP_LIST)
@example(settings_text=ALIAS_CHAIN, inventory_text=INVENTORY_TEXT)
@example(settings_text=SETTINGS_TEXT, inventory_text=b"schools:\n- " + ALIAS_CHAIN.replace(b"\n", b"\n  "))
def test_load_config_gives_a_config_or_config_error(settings_text: bytes, inventory_text: bytes) -> None:
    """Generated settings and inventory files: a Config, or a ConfigError whose problems name the files."""
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        (root / "inventory").mkdir()
        settings_path, inventory_path = root / "telemetryd.yaml", root / "inventory" / "schools.yaml"
        settings_path.write_bytes(settings_text)
        inventory_path.write_bytes(inventory_text)
        try:
            config = load_config(settings_path)
        except ConfigError as exc:
            _problems_are_located(exc.problems, settings_path, inventory_path)
            return
        assert config.inventory is not None


def test_the_unmutated_files_load() -> None:
    """The fuzzed documents are real: as written, they load (so mutations start from a valid configuration)."""
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        (root / "inventory").mkdir()
        (root / "telemetryd.yaml").write_bytes(SETTINGS_TEXT)
        (root / "inventory" / "schools.yaml").write_bytes(INVENTORY_TEXT)
        config = load_config(root / "telemetryd.yaml")
    assert [device.id for device in config.inventory.schools[0].devices] == ["s1-cam", "s1-router"]

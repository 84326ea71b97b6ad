"""YAML reading that remembers where every value came from.

PyYAML's composer keeps a start mark on every node; we walk the node tree once,
build plain Python values, and record the line of each path (``("schools", 3, "id")``)
so validation errors can name the file and line. Duplicate mapping keys, which
PyYAML silently accepts (last one wins), are reported as problems.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

Loc = tuple[str | int, ...]
_STR = "tag:yaml.org,2002:str"
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's parser when PyYAML has it (the wheels do): 100,000 devices parse ~20x faster, marks and all."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a configuration file, in words a person can act on."""

    file: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


@dataclass(slots=True)
class SourceMap:
    """Lines of every path inside one parsed YAML document."""

    file: str
    lines: dict[Loc, int] = field(default_factory=dict)

    def line_of(self, loc: Loc) -> int | None:
        """The line of `loc`, or of its nearest parent that exists in the file."""
        for end in range(len(loc), -1, -1):
            line = self.lines.get(tuple(loc[:end]))
            if line is not None:
                return line
        return None

    def problem(self, loc: Loc, message: str) -> Problem:
        """A Problem pointing at `loc` in this file."""
        return Problem(self.file, self.line_of(loc), format_loc(loc), message)


def format_loc(loc: Loc) -> str:
    """``("schools", 3, "devices", 0, "host")`` → ``schools[3].devices[0].host``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


class _Builder:
    def __init__(self, source: SourceMap, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        # One constructor per file resolves scalars (ints, floats, bools, null) as safe_load would.
        self._constructor = yaml.SafeLoader("")

    def build(self, node: yaml.Node, loc: Loc) -> Any:
        self.source.lines[loc] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = self._scalar(key_node)
                if not isinstance(key, str | int):
                    self.problems.append(self.source.problem(loc, "mapping keys must be plain words"))
                    continue
                child = (*loc, key)
                if key in out:
                    first = self.source.lines.get(child, "?")
                    self.problems.append(
                        Problem(
                            self.source.file,
                            key_node.start_mark.line + 1,
                            format_loc(child),
                            f"duplicate key {key!r} (first given on line {first}); remove one of them",
                        )
                    )
                    continue
                out[key] = self.build(value_node, child)
                self.source.lines[child] = key_node.start_mark.line + 1
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*loc, i)) for i, item in enumerate(node.value)]
        return self._scalar(node)

    def _scalar(self, node: yaml.Node) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            return None
        if node.tag == _STR:
            return node.value  # most of an inventory: ids, names, hosts; nothing to construct
        try:
            return self._constructor.construct_object(node)
        except yaml.constructor.ConstructorError as exc:
            self.problems.append(Problem(self.source.file, node.start_mark.line + 1, "", str(exc.problem)))
            return None


def read_yaml(path: Path, display: str | None = None) -> tuple[Any, SourceMap, list[Problem]]:
    """Parse one YAML file into plain values plus a line map; syntax errors become Problems."""
    name = display or str(path)
    source = SourceMap(name)
    problems: list[Problem] = []
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        return None, source, [Problem(name, None, "", f"cannot read file: {exc.strerror}")]
    except UnicodeDecodeError:
        return None, source, [Problem(name, None, "", "file is not UTF-8 text")]
    try:
        node = yaml.compose(text, Loader=_LOADER)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else None
        return None, source, [Problem(name, line, "", f"YAML syntax error: {exc.problem}")]
    except yaml.YAMLError as exc:
        return None, source, [Problem(name, None, "", f"YAML error: {exc}")]
    if node is None:
        return None, source, problems
    builder = _Builder(source, problems)
    try:
        return builder.build(node, ()), source, problems
    finally:
        builder._constructor.dispose()

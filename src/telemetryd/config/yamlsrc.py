"""YAML reading that remembers where every value came from, in slices a caller can interleave.

libyaml's parser hands over one event at a time (`yaml.parse`); values are built from the
events directly, with no node tree in between, which at 100,000 devices is ~3x faster than
composing nodes and walking them. Lines are not kept for every value: a file's first
reading records only what goes wrong while building (duplicate keys, bad tags), and the
line of any other path (a validation error) is found by reading the file again, which
only happens when something is wrong. Duplicate mapping keys, which PyYAML silently
accepts (last one wins), are reported as problems.

Building steps through a generator (`reading`) that yields every `EVENTS_PER_STEP` events,
so a reload can parse on the event loop in slices (see `telemetryd.slices`): a parse in a
thread would share the GIL with the loop, and every socket call of the loop would then
wait out the interpreter's switch interval.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import pickle
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from telemetryd.slices import Steps, finish

Loc = tuple[str | int, ...]
_STR = "tag:yaml.org,2002:str"
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's parser when PyYAML has it (the wheels do); the pure-Python one otherwise."""
_IMPLICIT = yaml.resolver.Resolver.yaml_implicit_resolvers
"""First character → (tag, pattern) of plain scalars that are not strings (ints, floats, bools, null...)."""
EVENTS_PER_STEP = 2000
"""Events between two yields of `reading`: ~1 ms of work."""
MAX_EXPANDED_NODES = 5_000_000
"""Values a file may stand for once its aliases are followed (an alias bomb stands for billions).
A 100,000-device inventory stands for ~1.5 million."""
MAX_ALIAS_NODES = 100_000
"""Values one alias may stand for: anchors share probe lists, contracts, credentials names (tens
of values); a nest of aliases each standing for the one before is how a bomb is built."""
MAX_DEPTH = 64
"""Collections inside collections: an inventory nests ~7 deep. Deeper documents are refused before
anything (pydantic, pickle, repr) walks them recursively; libyaml's own limit (1,000) would let
Python's recursion limit be reached first, and the pure-Python parser has none."""
MAX_FILE_BYTES = 64 << 20
"""A settings or inventory file larger than this is refused unread (~400,000 devices in one file)."""


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
    """Lines of the paths inside one parsed YAML document, found when first asked for."""

    file: str
    text: str = field(default="", repr=False)
    _lines: dict[Loc, int] | None = field(default=None, repr=False)

    def keep_lines(self, lines: dict[Loc, int]) -> None:
        """Lines a reading recorded."""
        self._lines = lines

    def line_of(self, loc: Loc) -> int | None:
        """The line of `loc`, or of its nearest parent that exists in the file."""
        if self._lines is None:
            read_yaml_lines(self)
        lines = self._lines or {}
        for end in range(len(loc), -1, -1):
            line = lines.get(tuple(loc[:end]))
            if line is not None:
                return line
        return None

    def problem(self, loc: Loc, message: str) -> Problem:
        """A Problem pointing at `loc` in this file."""
        return Problem(self.file, self.line_of(loc), format_loc(loc), message)


def read_yaml_lines(source: SourceMap) -> None:
    """Read `source`'s text again, keeping the line of every path (only ever for a file with something wrong)."""
    source.keep_lines({})  # a syntax error on the way leaves it empty, not re-read for ever
    finish(_build(source, record_lines=True))


def unexpected(exc: BaseException) -> str:
    """An exception nobody planned for, in one line: its type and the first line of its message."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def format_loc(loc: Loc) -> str:
    """``("schools", 3, "devices", 0, "host")`` → ``schools[3].devices[0].host``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


class _Building:
    """A collection under construction: its value, its path, and for a mapping the key waiting for its value."""

    __slots__ = ("anchor", "key", "key_mark", "loc", "started", "value")

    def __init__(self, value: dict[Any, Any] | list[Any], loc: Loc, anchor: str | None, started: int) -> None:
        self.value = value
        self.loc = loc
        self.anchor = anchor
        self.started = started
        """Values built before this one began: what its anchor stands for is the count since."""
        self.key: Any = _NO_KEY
        self.key_mark: Any = None
        """Where the waiting key starts (its line is read only when needed)."""

    @property
    def key_line(self) -> int:
        """The line of the waiting key."""
        return self.key_mark.line + 1 if self.key_mark is not None else 0


_NO_KEY = object()


class _Mark:
    """A line as a parser mark has it (0-based), for keys placed from a line number."""

    __slots__ = ("line",)

    def __init__(self, line: int) -> None:
        self.line = line - 1


class _Builder:
    """Plain values from parser events, as `yaml.safe_load` would build them, with problems and (optionally) lines."""

    def __init__(self, source: SourceMap, problems: list[Problem], *, record_lines: bool) -> None:
        self.source = source
        self.problems = problems
        self.lines: dict[Loc, int] | None = {} if record_lines else None
        # One constructor per file, for the rare explicitly tagged or non-string scalar.
        self._constructor = yaml.SafeLoader("")
        self._anchors: dict[str, Any] = {}
        self._sizes: dict[str, int] = {}
        self._expanded = 0

    def dispose(self) -> None:
        self._constructor.dispose()

    def steps(self, text: str) -> Steps[Any]:
        """Build the document in `text`; yields every EVENTS_PER_STEP events; returns the value (None if empty)."""
        stack: list[_Building] = []
        document: Any = None
        documents = 0
        fast = self.lines is None
        scalar_event, no_key, implicit = yaml.ScalarEvent, _NO_KEY, _IMPLICIT
        for count, event in enumerate(yaml.parse(text, Loader=_LOADER), 1):
            if count % EVENTS_PER_STEP == 0:
                yield
            # Most events of an inventory: a plain string key or value in a mapping, or an item of a list.
            if fast and event.__class__ is scalar_event and event.tag is None and event.anchor is None and stack:
                value: str = event.value
                if not event.implicit[0] or (value and value[0] not in implicit):
                    top = stack[-1]
                    into = top.value
                    if into.__class__ is list:
                        into.append(value)
                        self._expanded += 1
                        continue
                    key = top.key
                    if key is no_key:
                        top.key, top.key_mark = value, event.start_mark
                        self._expanded += 1
                        continue
                    if key is not _SKIP and key not in into:
                        into[key] = value
                        top.key = no_key
                        self._expanded += 1
                        continue
            line = event.start_mark.line + 1 if event.start_mark is not None else 0
            if isinstance(event, yaml.ScalarEvent):
                self._place(stack, self._scalar(event, line), line, event.anchor, size=1)
            elif isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
                if len(stack) >= MAX_DEPTH:
                    self.problems.append(Problem(self.source.file, line, "", f"nested deeper than {MAX_DEPTH} levels"))
                    return None
                collection: dict[Any, Any] | list[Any] = {} if isinstance(event, yaml.MappingStartEvent) else []
                loc = self._child_loc(stack)
                if loc is None:  # a collection as a mapping key: not a plain word
                    loc = stack[-1].loc
                    self.problems.append(self.source.problem(loc, "mapping keys must be plain words"))
                if self.lines is not None:
                    self.lines.setdefault(loc, line)
                stack.append(_Building(collection, loc, event.anchor, self._expanded))
            elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
                done = stack.pop()
                if done.anchor is not None:
                    self._anchors[done.anchor] = done.value
                    self._sizes[done.anchor] = max(1, self._expanded - done.started)
                if stack:
                    self._place(stack, done.value, line, None, size=0, built=done)
                else:
                    document = done.value
            elif isinstance(event, yaml.AliasEvent):
                if not self._alias(stack, event.anchor or "", line):
                    return None  # a bomb: one problem is enough
            elif isinstance(event, yaml.DocumentStartEvent):
                documents += 1
                if documents > 1:
                    self.problems.append(Problem(self.source.file, line, "", "expected a single YAML document"))
                    return None
            if self._expanded > MAX_EXPANDED_NODES:
                self.problems.append(
                    Problem(self.source.file, line, "", f"aliases expand to more than {MAX_EXPANDED_NODES:,} values")
                )
                return None
        return document

    def _child_loc(self, stack: list[_Building]) -> Loc | None:
        """The path of the next value placed on top of `stack` (None for a mapping key)."""
        if not stack:
            return ()
        top = stack[-1]
        if isinstance(top.value, list):
            return (*top.loc, len(top.value))
        if top.key is _NO_KEY:
            return None
        return (*top.loc, top.key)

    def _place(
        self,
        stack: list[_Building],
        value: Any,
        line: int,
        anchor: str | None,
        *,
        size: int,
        built: _Building | None = None,
    ) -> None:
        self._expanded += size
        if anchor is not None:
            self._anchors[anchor] = value
            self._sizes[anchor] = 1
        if not stack:
            return
        top = stack[-1]
        if isinstance(top.value, list):
            if built is None and self.lines is not None:
                self.lines[(*top.loc, len(top.value))] = line
            top.value.append(value)
            return
        if top.key is _NO_KEY:  # this value is a key
            if not isinstance(value, str | int) or built is not None:
                if built is None:
                    self.problems.append(self.source.problem(top.loc, "mapping keys must be plain words"))
                top.key, top.key_mark = _SKIP, None
                return
            top.key, top.key_mark = value, _Mark(line)
            return
        key, top.key = top.key, _NO_KEY
        if key is _SKIP:
            return
        child = (*top.loc, key)
        if key in top.value:
            first = self.lines.get(child, "?") if self.lines is not None else "an earlier line"
            where = f"first given on line {first}" if self.lines is not None else "given before"
            self.problems.append(
                Problem(
                    self.source.file,
                    top.key_line,
                    format_loc(child),
                    f"duplicate key {key!r} ({where}); remove one of them",
                )
            )
            return
        top.value[key] = value
        if self.lines is not None:
            self.lines[child] = top.key_line

    def _alias(self, stack: list[_Building], anchor: str, line: int) -> bool:
        """Place the anchored value; False when it stands for too much to build on."""
        if anchor not in self._anchors:
            if any(building.anchor == anchor for building in stack):
                message = f"alias *{anchor} refers to a value that contains it"
            else:
                message = f"alias *{anchor} has no anchor &{anchor} before it"
            self.problems.append(Problem(self.source.file, line, "", message))
            self._place(stack, None, line, None, size=1)
            return True
        size = self._sizes[anchor]
        if size > MAX_ALIAS_NODES:
            message = f"alias *{anchor} stands for {size:,} values (at most {MAX_ALIAS_NODES:,})"
            self.problems.append(Problem(self.source.file, line, "", message))
            return False
        self._place(stack, self._anchors[anchor], line, None, size=size)
        return True

    def _scalar(self, event: yaml.ScalarEvent, line: int) -> Any:
        value: str = event.value
        tag = event.tag
        if tag is None or tag == "!":
            if not event.implicit[0]:
                return value  # quoted: a string
            for resolved, pattern in _IMPLICIT.get(value[0] if value else "", ()):
                if pattern.match(value):
                    tag = resolved
                    break
            else:
                return value  # most of an inventory: ids, names, hosts; nothing to construct
        if tag == _STR:
            return value
        node = yaml.ScalarNode(tag, value, style=event.style)
        try:
            return self._constructor.construct_object(node)
        except yaml.constructor.ConstructorError as exc:
            self.problems.append(Problem(self.source.file, line, "", str(exc.problem)))
            return None
        except (ValueError, AttributeError, IndexError, KeyError, TypeError, OverflowError):
            # e.g. `!!int nope`, `!!int ""`, `!!timestamp x`, `!!bool maybe`: PyYAML's constructors assume their
            # resolver's regex matched, and fail in whatever way the text makes them.
            self.problems.append(
                Problem(self.source.file, line, "", f"{value!r} is not a valid {tag.rsplit(':', 1)[-1]}")
            )
            return None


_SKIP = object()
"""A mapping key that was refused: its value is read and dropped."""


def reading(path: Path, display: str | None = None) -> Steps[tuple[Any, SourceMap, list[Problem]]]:
    """Parse one YAML file into plain values plus its SourceMap; syntax errors become Problems. Yields now and then."""
    source, problems = _source(path, display)
    if problems:
        return None, source, problems
    value, problems = yield from _parsing(source)
    return value, source, problems


def read_yaml(path: Path, display: str | None = None) -> tuple[Any, SourceMap, list[Problem]]:
    """`reading` run to its end."""
    return finish(reading(path, display))


def _source(path: Path, display: str | None) -> tuple[SourceMap, list[Problem]]:
    name = display or str(path)
    try:
        # Opened without blocking and checked before reading: a FIFO would hang the reader, /dev/zero never end.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with open(fd, "rb") as file:
            info = os.fstat(file.fileno())
            if not stat.S_ISREG(info.st_mode):
                return SourceMap(name), [Problem(name, None, "", "not a regular file")]
            if info.st_size > MAX_FILE_BYTES:
                return SourceMap(name), [
                    Problem(name, None, "", f"file is {info.st_size:,} bytes, more than {MAX_FILE_BYTES:,}")
                ]
            data = file.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:  # grew while being read
            return SourceMap(name), [Problem(name, None, "", f"file is more than {MAX_FILE_BYTES:,} bytes")]
        return SourceMap(name, data.decode("utf-8")), []
    except OSError as exc:
        return SourceMap(name), [Problem(name, None, "", f"cannot read file: {exc.strerror}")]
    except UnicodeDecodeError:
        return SourceMap(name), [Problem(name, None, "", "file is not UTF-8 text")]


def _parsing(source: SourceMap) -> Steps[tuple[Any, list[Problem]]]:
    value, problems = yield from _build(source, record_lines=False)
    if problems:  # the rare bad file: again, keeping every line, so its problems can say where
        value, problems = yield from _build(source, record_lines=True)
    return value, problems


PARALLEL_BYTES = 4_000_000
"""Inventory text (~35,000 devices) from which `Readings` parses in helper processes: below it,
starting them (~0.4 s each, mostly imports) costs more than the parse."""
PIECE_ITEMS = 100
"""List items of a top-level mapping (100 schools) a helper pickles together: each piece
is unpickled in its own step, so a 100,000-device file is no single 200 ms step."""


class Readings:
    """Files read ahead, in helper processes when they hold enough text to pay for them.

    At 100,000 devices parsing is ~70 % of loading (~4 s). In `min(files, CPUs)` helper
    processes the parse runs beside the loop instead of on it: start-up validates the
    first files while the helpers parse the rest, and a reload of a saturated daemon
    leaves the parse to other cores. What comes back is plain values, in pieces (see
    `PIECE_ITEMS`). Should the helpers fail to start or die (a sandbox without fork, say),
    the files are parsed here as before; the reason is in `helper_failure`.
    """

    def __init__(self, paths: Sequence[Path]) -> None:
        self._sources: dict[Path, tuple[SourceMap, list[Problem]]] = {path: _source(path, None) for path in paths}
        self._futures: dict[Path, concurrent.futures.Future[_Parsed]] = {}
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self.helper_failure = ""
        self._helpers = 0
        readable = [path for path, (_, problems) in self._sources.items() if not problems]
        if sum(len(self._sources[path][0].text) for path in readable) < PARALLEL_BYTES:
            return
        self._helpers = max(1, min(len(readable), len(os.sched_getaffinity(0))))
        try:
            self._pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=self._helpers,
                mp_context=multiprocessing.get_context("spawn"),  # no fork of a process with threads
            )
            # In the caller's order: it validates the first files while the helpers parse the rest.
            for path in readable:
                source = self._sources[path][0]
                self._futures[path] = self._pool.submit(_parse_in_helper, source.file, source.text)
        except (OSError, RuntimeError, NotImplementedError) as exc:
            self._give_up(exc)

    def __enter__(self) -> Readings:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the helpers (parses not taken yet are dropped)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def reading(self, path: Path) -> Steps[tuple[Any, SourceMap, list[Problem]]]:
        """`reading(path)`, from a helper's parse when one was started."""
        source, problems = self._sources.pop(path)
        if problems:
            return None, source, problems
        future = self._futures.pop(path, None)
        if future is not None and not self.helper_failure:
            if not future.done():
                yield future
            try:
                pieces, lines, problems = future.result()
            except Exception as exc:  # whatever broke the helper (a parse error is a Problem, not this)
                self._give_up(exc)
            else:
                if lines is not None:
                    source.keep_lines(lines)
                value = yield from _unpacking(pieces)
                return value, source, problems
        value, problems = yield from _parsing(source)
        return value, source, problems

    @property
    def parsed_by(self) -> str:
        """Where the files were parsed, in words for the log."""
        if self.helper_failure:
            return f"this process (helper processes failed: {self.helper_failure})"
        if not self._helpers:
            return "this process"
        return f"{self._helpers} helper process{'es' if self._helpers > 1 else ''}"

    def _give_up(self, exc: BaseException) -> None:
        self.helper_failure = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        self._futures.clear()
        self.close()


_Pieces = tuple[bytes, dict[str, list[bytes]]]
"""A value pickled: the whole of it but its long top-level lists, and each of those in pieces."""
_Parsed = tuple[_Pieces, dict[Loc, int] | None, list[Problem]]


def _parse_in_helper(name: str, text: str) -> _Parsed:
    """In a helper process: the file's values (in pieces), its recorded lines if it had problems, the problems."""
    source = SourceMap(name, text)
    value, problems = finish(_parsing(source))
    return _packed(value), source._lines, problems


def _packed(value: Any) -> _Pieces:
    lists: dict[str, list[bytes]] = {}
    if isinstance(value, dict):
        value = dict(value)
        for key, items in value.items():
            if isinstance(key, str) and isinstance(items, list) and len(items) > PIECE_ITEMS:
                lists[key] = [pickle.dumps(items[i : i + PIECE_ITEMS]) for i in range(0, len(items), PIECE_ITEMS)]
                value[key] = []
    return pickle.dumps(value), lists


def _unpacking(pieces: _Pieces) -> Steps[Any]:
    whole, lists = pieces
    value = pickle.loads(whole)  # our own helper's output, over a pipe only this process holds
    for key, parts in lists.items():
        items = value[key]
        for part in parts:
            yield
            items.extend(pickle.loads(part))
    return value


def _build(source: SourceMap, *, record_lines: bool) -> Steps[tuple[Any, list[Problem]]]:
    problems: list[Problem] = []
    builder = _Builder(source, problems, record_lines=record_lines)
    try:
        value = yield from builder.steps(source.text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else None
        return None, [Problem(source.file, line, "", f"YAML syntax error: {exc.problem}")]
    except yaml.YAMLError as exc:
        return None, [Problem(source.file, None, "", f"YAML error: {exc}")]
    except (RecursionError, MemoryError, ValueError, TypeError) as exc:
        # Whatever a hostile document provokes in the parser or a constructor: a problem of this file.
        return None, [Problem(source.file, None, "", f"cannot be read: {unexpected(exc)}")]
    finally:
        builder.dispose()
    if builder.lines is not None:
        source.keep_lines(builder.lines)
    return value, problems

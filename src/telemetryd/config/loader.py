"""Load settings and inventory, collecting every problem with file, line and field.

The daemon, `check-config` and SIGHUP reload all go through `load_config`, so what
check-config accepts is exactly what the daemon will run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ssl
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from telemetryd.config.inventory import InventoryFile, SchoolEntry
from telemetryd.config.settings import Settings, Shard
from telemetryd.config.webconfig import WebConfig, WebConfigFile, missing_files, web_config
from telemetryd.config.yamlsrc import Loc, Problem, Readings, SourceMap, read_yaml, unexpected
from telemetryd.model import Inventory, School
from telemetryd.slices import Steps, finish

INVENTORY_SUFFIXES = (".yaml", ".yml")


class ConfigError(Exception):
    """Configuration is unusable; `problems` lists every reason, in file order."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass(frozen=True, slots=True)
class Config:
    """A fully validated configuration: what the daemon runs."""

    path: Path
    settings: Settings
    inventory: Inventory
    """Only this shard's schools."""
    total_schools: int
    """Schools in the whole inventory, before sharding."""
    parsed_by: str = "this process"
    """Where the inventory's YAML was parsed (`Readings`): helper processes, or here and why."""


def _model_at(model: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    """The pydantic model that owns the last key of `loc` (for listing allowed keys)."""
    current: Any = model
    for part in loc:
        current = _unwrap(current)
        if isinstance(part, int):
            args = typing.get_args(current)
            current = args[0] if args else None
        elif isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(part)
            if field is None:
                return None
            current = field.annotation
        elif typing.get_origin(current) is dict:
            current = typing.get_args(current)[1]
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(tp: Any) -> Any:
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(tp) if a is not type(None)]
            tp = members[0] if len(members) == 1 else tp
            if len(members) != 1:
                return tp
        else:
            return tp


def _explain(model: type[BaseModel], error: Any) -> tuple[Loc, str]:
    """Turn one pydantic error into (location, message a person can act on)."""
    loc: Loc = tuple(error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden":
        owner = _model_at(model, loc[:-1])
        allowed = ", ".join(owner.model_fields) if owner else ""
        return loc, f"unknown key {loc[-1]!r}" + (f"; allowed here: {allowed}" if allowed else "")
    if kind == "missing":
        return loc, "required, but missing"
    message = str(error["msg"])
    # Our own validators raise ValueError; pydantic prefixes "Value error, ".
    message = message.removeprefix("Value error, ")
    return loc, message


def _validate(model: type[BaseModel], data: Any, source: SourceMap, at: Loc = ()) -> tuple[Any, list[Problem]]:
    """`model` from `data` found at path `at` of the file, or every problem with its place."""
    try:
        return model.model_validate(data), []
    except (RecursionError, MemoryError) as exc:  # a value too deep or large for the validator itself
        return None, [source.problem(at, f"cannot be validated: {unexpected(exc)}")]
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            loc, message = _explain(model, error)
            # Union/tagged validators append the branch name to loc; drop parts not in the file.
            problems.append(source.problem((*at, *loc), message))
        return None, problems


def load_settings(path: Path) -> Settings:
    """Read and validate `telemetryd.yaml`; raise ConfigError listing every problem."""
    data, source, problems = read_yaml(path)
    if data is None and not problems:
        data = {}
    if not problems and not isinstance(data, dict):
        problems.append(Problem(str(path), 1, "", "expected a mapping of settings at the top level"))
    settings = None
    if not problems:
        settings, problems = _validate(Settings, data, source)
    if problems:
        raise ConfigError(problems)
    assert isinstance(settings, Settings)
    return _with_web_config(_with_ca_file(settings, path, source), path, source)


def _with_ca_file(settings: Settings, path: Path, source: SourceMap) -> Settings:
    """`probes.isapi.ca_file` made absolute (relative to the settings file) and proven to hold certificates."""
    ca_file = settings.probes.isapi.ca_file
    if ca_file is None:
        return settings
    where = Path(ca_file) if Path(ca_file).is_absolute() else path.parent / ca_file
    try:
        ssl.create_default_context(cafile=str(where))
    except (OSError, ssl.SSLError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else "no PEM certificate in it"
        loc = ("probes", "isapi", "ca_file")
        raise ConfigError([source.problem(loc, f"{where}: {why}; expected a PEM bundle of CA certificates")]) from None
    isapi = settings.probes.isapi.model_copy(update={"ca_file": str(where)})
    return settings.model_copy(update={"probes": settings.probes.model_copy(update={"isapi": isapi})})


def _with_web_config(settings: Settings, path: Path, source: SourceMap) -> Settings:
    """`web_config_file` made absolute (relative to the settings file) and loaded once, so check-config judges it."""
    if settings.web_config_file is None:
        return settings
    where = Path(settings.web_config_file)
    where = where if where.is_absolute() else path.parent / where
    if not where.is_file():
        raise ConfigError([source.problem(("web_config_file",), f"{where}: no such file")])
    load_web_config(where)
    return settings.model_copy(update={"web_config_file": str(where)})


def load_web_config(path: Path) -> WebConfig:
    """The exporter-toolkit web config at `path`, its TLS files read; ConfigError with file:line otherwise."""
    data, source, problems = read_yaml(path)
    if not problems and data is not None and not isinstance(data, dict):
        problems.append(Problem(str(path), 1, "", "expected a mapping (tls_server_config, basic_auth_users)"))
    model = None
    if not problems:
        model, problems = _validate(WebConfigFile, data or {}, source)
    if problems:
        raise ConfigError(problems)
    assert isinstance(model, WebConfigFile)
    if model.tls_server_config is not None:
        missing = missing_files(model.tls_server_config, path.parent)
        if missing:
            raise ConfigError([source.problem(loc, message) for loc, message in missing])
    try:
        return web_config(model, path)
    except (OSError, ssl.SSLError, ValueError) as exc:
        if isinstance(exc, OSError) and exc.strerror:
            why = f"{exc.filename or ''}: {exc.strerror}".lstrip(": ")
        elif isinstance(exc, ssl.SSLError):
            why = f"not a matching PEM certificate and key ({exc.reason or exc})"
        else:
            why = str(exc)
        raise ConfigError([source.problem(("tls_server_config",), why)]) from None


def inventory_files(path: Path) -> list[Path]:
    """The YAML files an inventory path stands for: itself, or a directory's files, sorted."""
    if path.is_dir():
        # Not only regular files: a FIFO or device named *.yaml is reported (not a regular file), not skipped.
        return sorted(p for p in path.rglob("*") if p.suffix in INVENTORY_SUFFIXES and not p.is_dir())
    return [path]


def load_inventory(path: Path) -> Inventory:
    """Read every inventory file; raise ConfigError listing every problem in every file."""
    return finish(loading_inventory(path))


def loading_inventory(path: Path, previous: Inventory | None = None) -> Steps[Inventory]:
    """`load_inventory` in steps: it yields between schools, so a reload can run it on the event loop.

    A school or device equal to one of `previous` (the running inventory) is that object:
    a reload then replaces only what changed, and letting go of the old generation frees
    a few containers instead of 100,000 devices at once (~0.4 s of deallocation on the loop).
    """
    inventory, _ = yield from _guarded(_loading_inventory(path, previous), path)
    return inventory


def _loading_inventory(path: Path, previous: Inventory | None) -> Steps[tuple[Inventory, str]]:
    """`loading_inventory`, and where its files were parsed."""
    if not path.exists():
        raise ConfigError([Problem(str(path), None, "inventory", "no such file or directory")])
    files = inventory_files(path)
    if not files:
        raise ConfigError([Problem(str(path), None, "inventory", "directory holds no .yaml files")])
    problems: list[Problem] = []
    schools: list[School] = []  # dropped at the first problem: only the problems are wanted then
    seen = _FirstSeen()
    with Readings(files) as readings:
        for file in files:
            data, source, file_problems = yield from readings.reading(file)
            problems.extend(file_problems)
            if file_problems:
                continue
            if not isinstance(data, dict) or "schools" not in data:
                problems.append(Problem(str(file), 1, "schools", "expected a top-level `schools:` list"))
                continue
            raw = data["schools"]
            if not isinstance(raw, list):
                problems.extend(_validate(InventoryFile, data, source)[1])
                continue
            # The file's own keys, then school by school: one school is a short step.
            problems.extend(_validate(InventoryFile, {**data, "schools": []}, source)[1])
            for index, school in enumerate(raw):
                entry, school_problems = _validate(SchoolEntry, school, source, at=("schools", index))
                problems.extend(school_problems)
                problems.extend(_cross_check(index, school, source, seen))
                if entry is not None and not problems:
                    schools.append(_reused(entry.to_domain(), previous))
                raw[index] = None  # freed here, a school at a time, not the whole file in one step
                yield
        parsed_by = readings.parsed_by
    if problems:
        raise ConfigError(problems)
    yield from seen.letting_go()
    return (yield from Inventory.assembling(schools)), parsed_by


FirstSeen = dict[str, tuple[SourceMap, Loc]]
"""An id or address → where it was first given (its line is looked up only for a duplicate)."""


def _reused(school: School, previous: Inventory | None) -> School:
    """`school`, or the equal objects of `previous`: the whole school, else each device that did not change."""
    if previous is None:
        return school
    old = previous.schools_by_id.get(school.id)
    if old is not None and old == school:
        return old
    by_id = previous.devices_by_id
    devices = tuple(old_device if (old_device := by_id.get(d.id)) == d else d for d in school.devices)
    return dataclasses.replace(school, devices=devices)


@dataclass(slots=True)
class _FirstSeen:
    """Where each school id, device id and address was first given, across the inventory's files."""

    schools: FirstSeen = field(default_factory=dict)
    devices: FirstSeen = field(default_factory=dict)
    hosts: FirstSeen = field(default_factory=dict)

    def letting_go(self) -> Steps[None]:
        """Empty the tables in steps: 200,000 entries freed at once hold the event loop ~70 ms."""
        for table in (self.schools, self.devices, self.hosts):
            while table:
                for _ in range(min(len(table), 5000)):
                    table.popitem()
                yield


def _cross_check(index: int, school: Any, source: SourceMap, seen: _FirstSeen) -> list[Problem]:
    """Checks of school `index` of the file that span schools and files: duplicates, and no devices."""
    problems: list[Problem] = []

    def duplicate(loc: Loc, what: str, value: str, first: tuple[SourceMap, Loc]) -> Problem:
        where = f"{first[0].file}:{first[0].line_of(first[1])}"
        return source.problem(loc, f"duplicate {what} {value!r}, already used at {where}")

    if not isinstance(school, dict):
        return problems
    school_id = school.get("id")
    if isinstance(school_id, str):
        if school_id in seen.schools:
            problems.append(duplicate(("schools", index, "id"), "school id", school_id, seen.schools[school_id]))
        else:
            seen.schools[school_id] = (source, ("schools", index, "id"))
    devices = school.get("devices")
    if not devices:
        problems.append(
            source.problem(
                ("schools", index, "devices") if "devices" in school else ("schools", index),
                f"school {school_id!r} has no devices; list at least its router",
            )
        )
        return problems
    if not isinstance(devices, list):
        return problems
    for j, device in enumerate(devices):
        if not isinstance(device, dict):
            continue
        for key, first, what in (("id", seen.devices, "device id"), ("host", seen.hosts, "address")):
            value = device.get(key)
            if not isinstance(value, str):
                continue
            loc = ("schools", index, "devices", j, key)
            value = value.strip()
            if value in first:
                problems.append(duplicate(loc, what, value, first[value]))
            else:
                first[value] = (source, loc)
    return problems


def shard_of(school_id: str, count: int) -> int:
    """Which shard a school belongs to: a stable hash, the same on every machine and run."""
    digest = hashlib.blake2b(school_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


def apply_shard(inventory: Inventory, shard: Shard) -> Inventory:
    """Keep only the schools that hash to this shard."""
    if shard.count == 1:
        return inventory
    return inventory.restricted_to({s.id for s in inventory.schools if shard_of(s.id, shard.count) == shard.index})


def load_config(path: Path) -> Config:
    """Settings plus the inventory they point at, validated together; ConfigError lists all problems."""
    return finish(loading_config(path))


def loading_config(path: Path, previous: Inventory | None = None) -> Steps[Config]:
    """`load_config` in steps (see `telemetryd.slices`); unchanged schools and devices are `previous`'s objects."""
    return (yield from _guarded(_loading_config(path, previous), path))


_T = typing.TypeVar("_T")


def _guarded(steps: Steps[_T], path: Path) -> Steps[_T]:
    """`steps`, with any exception but ConfigError turned into one: a reload must say why it failed, and go on."""
    try:
        return (yield from steps)
    except ConfigError:
        raise
    except Exception as exc:  # a hostile file reaching a bug: one line, not a traceback and a dead reload
        raise ConfigError([Problem(str(path), None, "", f"cannot be loaded: {unexpected(exc)}")]) from exc


def _loading_config(path: Path, previous: Inventory | None) -> Steps[Config]:
    path = path.resolve() if path.exists() else path
    problems: list[Problem] = []
    try:
        settings = load_settings(path)
    except ConfigError as exc:
        raise ConfigError(exc.problems) from None
    inventory_path = Path(settings.inventory)
    if not inventory_path.is_absolute():
        inventory_path = path.parent / inventory_path
    if settings.credentials_directory and not Path(settings.credentials_directory).is_absolute():
        # Like the inventory: relative to the settings file, not to wherever the daemon was started.
        settings = settings.model_copy(
            update={"credentials_directory": str(path.parent / settings.credentials_directory)}
        )
    if settings.state_directory and not Path(settings.state_directory).is_absolute():
        settings = settings.model_copy(update={"state_directory": str(path.parent / settings.state_directory)})
    spool = Path(settings.history.spool_directory)
    if not spool.is_absolute():
        history = settings.history.model_copy(update={"spool_directory": str(path.parent / spool)})
        settings = settings.model_copy(update={"history": history})
    try:
        inventory, parsed_by = yield from _loading_inventory(inventory_path, previous)
    except ConfigError as exc:
        problems.extend(exc.problems)
        raise ConfigError(problems) from None
    return Config(
        path=path,
        settings=settings,
        inventory=apply_shard(inventory, settings.shard),
        total_schools=len(inventory.schools),
        parsed_by=parsed_by,
    )


__all__ = [
    "Config",
    "ConfigError",
    "Problem",
    "SchoolEntry",
    "apply_shard",
    "load_config",
    "load_inventory",
    "load_settings",
    "loading_config",
    "loading_inventory",
    "shard_of",
]

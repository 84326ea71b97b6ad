"""Load settings and inventory, collecting every problem with file, line and field.

The daemon, `check-config` and SIGHUP reload all go through `load_config`, so what
check-config accepts is exactly what the daemon will run.
"""

from __future__ import annotations

import hashlib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from telemetryd.config.inventory import InventoryFile, SchoolEntry
from telemetryd.config.settings import Settings, Shard
from telemetryd.config.yamlsrc import Loc, Problem, SourceMap, read_yaml
from telemetryd.model import Inventory, School

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


def _validate(model: type[BaseModel], data: Any, source: SourceMap) -> tuple[Any, list[Problem]]:
    try:
        return model.model_validate(data), []
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            loc, message = _explain(model, error)
            # Union/tagged validators append the branch name to loc; drop parts not in the file.
            problems.append(source.problem(loc, message))
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
    return settings


def inventory_files(path: Path) -> list[Path]:
    """The YAML files an inventory path stands for: itself, or a directory's files, sorted."""
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in INVENTORY_SUFFIXES)
    return [path]


def load_inventory(path: Path) -> Inventory:
    """Read every inventory file; raise ConfigError listing every problem in every file."""
    if not path.exists():
        raise ConfigError([Problem(str(path), None, "inventory", "no such file or directory")])
    files = inventory_files(path)
    if not files:
        raise ConfigError([Problem(str(path), None, "inventory", "directory holds no .yaml files")])
    problems: list[Problem] = []
    schools: list[School] = []
    first_school: dict[str, str] = {}
    first_device: dict[str, str] = {}
    first_host: dict[str, str] = {}

    for file in files:
        data, source, file_problems = read_yaml(file)
        problems.extend(file_problems)
        if file_problems:
            continue
        if not isinstance(data, dict) or "schools" not in data:
            problems.append(Problem(str(file), 1, "schools", "expected a top-level `schools:` list"))
            continue
        parsed, file_problems = _validate(InventoryFile, data, source)
        problems.extend(file_problems)
        raw = data.get("schools")
        raw_schools: list[Any] = raw if isinstance(raw, list) else []
        problems.extend(_cross_check(raw_schools, source, first_school, first_device, first_host))
        if parsed is not None:
            schools.extend(entry.to_domain() for entry in parsed.schools)

    if problems:
        raise ConfigError(problems)
    return Inventory.build(schools)


def _cross_check(
    raw_schools: list[Any],
    source: SourceMap,
    first_school: dict[str, str],
    first_device: dict[str, str],
    first_host: dict[str, str],
) -> list[Problem]:
    """Checks that span schools and files: duplicates, and schools with no devices."""
    problems: list[Problem] = []

    def where(loc: Loc) -> str:
        return f"{source.file}:{source.line_of(loc)}"

    for i, school in enumerate(raw_schools):
        if not isinstance(school, dict):
            continue
        school_id = school.get("id")
        if isinstance(school_id, str):
            if school_id in first_school:
                problems.append(
                    source.problem(
                        ("schools", i, "id"),
                        f"duplicate school id {school_id!r}, already used at {first_school[school_id]}",
                    )
                )
            else:
                first_school[school_id] = where(("schools", i, "id"))
        devices = school.get("devices")
        if not devices:
            problems.append(
                source.problem(
                    ("schools", i, "devices") if "devices" in school else ("schools", i),
                    f"school {school_id!r} has no devices; list at least its router",
                )
            )
            continue
        if not isinstance(devices, list):
            continue
        for j, device in enumerate(devices):
            if not isinstance(device, dict):
                continue
            for key, seen, what in (("id", first_device, "device id"), ("host", first_host, "address")):
                value = device.get(key)
                if not isinstance(value, str):
                    continue
                loc = ("schools", i, "devices", j, key)
                if value.strip() in seen:
                    problems.append(
                        source.problem(loc, f"duplicate {what} {value!r}, already used at {seen[value.strip()]}")
                    )
                else:
                    seen[value.strip()] = where(loc)
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
    spool = Path(settings.history.spool_directory)
    if not spool.is_absolute():
        history = settings.history.model_copy(update={"spool_directory": str(path.parent / spool)})
        settings = settings.model_copy(update={"history": history})
    try:
        inventory = load_inventory(inventory_path)
    except ConfigError as exc:
        problems.extend(exc.problems)
        raise ConfigError(problems) from None
    return Config(
        path=path,
        settings=settings,
        inventory=apply_shard(inventory, settings.shard),
        total_schools=len(inventory.schools),
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
    "shard_of",
]

"""`telemetryd inventory import`: a spreadsheet export (one row per device) into inventory YAML.

NOC teams keep their cameras in spreadsheets, so the CSV is read the way spreadsheets
write it: UTF-8 with or without a byte-order mark (Excel), or Windows-1251 (older Excel
in Russian locales); comma, semicolon or tab separated (Excel in a Russian locale uses
`;`); headers in any case, in English or Russian, in any order. Each row is validated with
the same models the daemon loads, and every problem names the CSV file, line and column.
Nothing is written unless the whole file is clean, and the written YAML is loaded back
through the daemon's loader before the command reports success.

Columns (header synonyms in `COLUMNS`): school, school_name, district, latitude,
longitude, total_mbps, alarm_mbps, video_mbps, education_mbps, device, kind, host, name,
credentials, probes. Required: school, kind, host; school_name and district on at least
one row of each school. A missing device id becomes ``<school>-<kind>-<n>``.
"""

from __future__ import annotations

import csv
import io
import re
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from telemetryd.config.inventory import ContractEntry, DeviceEntry, LocationEntry
from telemetryd.config.loader import ConfigError, load_inventory
from telemetryd.config.yamlsrc import Problem

COLUMNS: dict[str, tuple[str, ...]] = {
    "school": ("school", "school_id", "school id", "школа", "id школы", "мектеп"),
    "school_name": ("school_name", "school name", "название школы", "наименование школы"),
    "district": ("district", "район", "аудан"),
    "latitude": ("latitude", "lat", "широта"),
    "longitude": ("longitude", "lon", "lng", "долгота"),
    "total_mbps": ("total_mbps", "total mbps", "contract_mbps", "contract mbps", "скорость"),
    "alarm_mbps": ("alarm_mbps", "alarm mbps"),
    "video_mbps": ("video_mbps", "video mbps"),
    "education_mbps": ("education_mbps", "education mbps"),
    "device": ("device", "device_id", "device id", "id", "устройство"),
    "kind": ("kind", "type", "device type", "device_type", "тип", "тип устройства"),
    "host": ("host", "ip", "ip address", "ip_address", "address", "ip-адрес", "ip адрес", "адрес"),
    "name": ("name", "device name", "device_name", "location", "описание", "место установки"),
    "credentials": ("credentials", "credential", "учетные данные"),
    "probes": ("probes", "checks", "проверки"),
}
REQUIRED = ("school", "kind", "host")

# What people write in the "type" column, mapped to inventory kinds.
KIND_SYNONYMS: dict[str, str] = {
    **dict.fromkeys(("router", "gateway", "cpe", "маршрутизатор", "роутер"), "router"),
    **dict.fromkeys(("camera", "cam", "ipc", "ip camera", "ip-camera", "ipcam", "камера", "видеокамера"), "camera"),
    **dict.fromkeys(("nvr", "recorder", "dvr", "регистратор", "видеорегистратор"), "nvr"),
    **dict.fromkeys(
        ("alarm_panel", "alarm panel", "alarm", "panel", "пульт", "охранная панель", "тревожная кнопка"),
        "alarm_panel",
    ),
}

# One YAML field per CSV column, for error messages from the pydantic models.
_DEVICE_FIELD_COLUMN = {"id": "device", "kind": "kind", "host": "host", "name": "name", "credentials": "credentials"}


class CsvImportError(Exception):
    """The CSV cannot be turned into an inventory; `problems` lists every reason."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass(slots=True)
class _School:
    id: str
    line: int
    name: str = ""
    district: str = ""
    location: dict[str, float] | None = None
    contract: dict[str, Any] | None = None
    devices: list[dict[str, Any]] = field(default_factory=list)
    # Where each school-level value was first given, to report conflicting rows.
    first: dict[str, tuple[str, int]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Imported:
    """The result of reading a CSV: schools as inventory YAML, grouped by district."""

    schools: tuple[dict[str, Any], ...]
    devices: int

    def by_district(self) -> dict[str, list[dict[str, Any]]]:
        """District → its schools, in the order they appeared."""
        out: dict[str, list[dict[str, Any]]] = {}
        for school in self.schools:
            out.setdefault(school["district"], []).append(school)
        return out


def decode(raw: bytes) -> str:
    """Text of a spreadsheet export: UTF-8 (BOM or not), else Windows-1251."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("cp1251")


def _dialect(text: str) -> type[csv.Dialect] | csv.Dialect:
    header = text.split("\n", 1)[0]
    counts = {d: header.count(d) for d in (",", ";", "\t")}
    delimiter = max(counts, key=lambda d: counts[d])
    if counts[delimiter] == 0:
        return csv.excel

    class Sniffed(csv.excel):
        pass

    Sniffed.delimiter = delimiter
    return Sniffed


def _normalise(header: str) -> str:
    return re.sub(r"\s+", " ", header.strip().lower().replace("\ufeff", ""))


def _header_map(file: str, header: list[str]) -> tuple[dict[str, int], list[Problem]]:
    lookup = {synonym: column for column, synonyms in COLUMNS.items() for synonym in synonyms}
    mapping: dict[str, int] = {}
    problems: list[Problem] = []
    for index, cell in enumerate(header):
        name = _normalise(cell)
        if not name:
            continue
        column = lookup.get(name)
        if column is None:
            problems.append(
                Problem(
                    file,
                    1,
                    f"column {index + 1} ({cell.strip()!r})",
                    f"unknown column; expected one of: {', '.join(COLUMNS)}",
                )
            )
        elif column in mapping:
            problems.append(
                Problem(
                    file,
                    1,
                    f"column {index + 1} ({cell.strip()!r})",
                    f"{column} is already column {mapping[column] + 1}",
                )
            )
        else:
            mapping[column] = index
    missing = [c for c in REQUIRED if c not in mapping]
    if missing:
        problems.append(Problem(file, 1, "header", f"missing required column(s): {', '.join(missing)}"))
    return mapping, problems


def _kind(value: str) -> str | None:
    return KIND_SYNONYMS.get(_normalise(value).replace("-", " ").replace("_", " ")) or KIND_SYNONYMS.get(
        _normalise(value)
    )


def _number(value: str) -> float:
    # Russian-locale spreadsheets write decimals with a comma.
    return float(value.strip().replace(",", "."))


def _slug(text: str) -> str:
    slug = re.sub(r"[^\w]+", "-", text.strip().lower()).strip("-")
    return slug or "schools"


def _rows(text: str) -> Iterable[tuple[int, list[str]]]:
    """(line where the row starts, cells) for every non-empty row."""
    reader = csv.reader(io.StringIO(text), _dialect(text))
    line = 1
    for row in reader:
        start, line = line, reader.line_num + 1
        if any(cell.strip() for cell in row):
            yield start, row


def read_devices_csv(path: Path) -> Imported:
    """Read a spreadsheet export; raise CsvImportError listing every problem with file:line: column."""
    file = str(path)
    try:
        text = decode(path.read_bytes())
    except OSError as exc:
        raise CsvImportError([Problem(file, None, "", f"cannot read: {exc.strerror}")]) from None
    rows = iter(_rows(text))
    first = next(rows, None)
    if first is None:
        raise CsvImportError(
            [Problem(file, None, "", "the file is empty; expected a header row and one row per device")]
        )
    columns, problems = _header_map(file, first[1])
    if any(p.field == "header" for p in problems):
        raise CsvImportError(problems)

    schools: dict[str, _School] = {}
    seen_ids: dict[str, int] = {}
    seen_hosts: dict[str, int] = {}
    kind_counts: dict[tuple[str, str], int] = {}
    devices = 0

    for line, row in rows:

        def cell(column: str, row: list[str] = row) -> str:
            index = columns.get(column)
            return row[index].strip() if index is not None and index < len(row) else ""

        def problem(column: str, message: str, line: int = line) -> None:
            problems.append(Problem(file, line, column, message))

        if len(row) > len(first[1]):
            problem("row", f"{len(row)} cells but the header has {len(first[1])}; is a value missing its quotes?")
            continue
        school_id = cell("school")
        if not school_id:
            problem("school", "required, but empty")
            continue
        school = schools.get(school_id)
        if school is None:
            school = schools[school_id] = _School(id=school_id, line=line)
        _school_values(school, cell, problem, line)

        kind = _kind(cell("kind"))
        if kind is None:
            problem("kind", f"{cell('kind')!r} is not a device kind; expected router, camera, nvr or alarm_panel")
            continue
        device_id = cell("device")
        if not device_id:
            n = kind_counts.get((school_id, kind), 0) + 1
            kind_counts[school_id, kind] = n
            device_id = f"{school_id}-{kind.replace('_', '-')}-{n}"
        device: dict[str, Any] = {"id": device_id, "kind": kind, "host": cell("host")}
        for column in ("name", "credentials"):
            if cell(column):
                device[column] = cell(column)
        if cell("probes"):
            device["probes"] = [p for p in re.split(r"[\s,;]+", cell("probes")) if p]
        try:
            entry = DeviceEntry.model_validate(device)
        except ValidationError as exc:
            for error in exc.errors(include_url=False):
                key = str(error["loc"][0]) if error["loc"] else "device"
                message = str(error["msg"]).removeprefix("Value error, ")
                problem(_DEVICE_FIELD_COLUMN.get(key, "probes"), message)
            continue
        for value, seen, what, column in (
            (entry.id, seen_ids, "device id", "device"),
            (entry.host, seen_hosts, "address", "host"),
        ):
            if value in seen:
                problem(column, f"duplicate {what} {value!r}, already on line {seen[value]}")
            else:
                seen[value] = line
        device["host"] = entry.host
        school.devices.append(device)
        devices += 1

    out: list[dict[str, Any]] = []
    for school in schools.values():
        for key in ("name", "district"):
            if not getattr(school, key):
                problems.append(
                    Problem(
                        file,
                        school.line,
                        "school_name" if key == "name" else key,
                        f"school {school.id!r} has no {key} on any of its rows",
                    )
                )
        entry_out: dict[str, Any] = {"id": school.id, "name": school.name, "district": school.district}
        if school.location:
            entry_out["location"] = school.location
        if school.contract:
            entry_out["contract"] = school.contract
        entry_out["devices"] = school.devices
        out.append(entry_out)
    if problems:
        raise CsvImportError(sorted(problems, key=lambda p: p.line or 0))
    return Imported(schools=tuple(out), devices=devices)


def _school_values(school: _School, cell: Any, problem: Any, line: int) -> None:
    """School-level columns: taken from any row, and must agree across the school's rows."""

    def agree(column: str, value: Any) -> bool:
        earlier = school.first.get(column)
        if earlier is None:
            school.first[column] = (repr(value), line)
            return True
        if earlier[0] != repr(value):
            problem(column, f"{value!r} disagrees with line {earlier[1]} of school {school.id!r} ({earlier[0]})")
            return False
        return True

    for column, attr in (("school_name", "name"), ("district", "district")):
        value = cell(column)
        if value and agree(column, value):
            setattr(school, attr, value)

    if cell("latitude") or cell("longitude"):
        degrees: dict[str, float] = {}
        for column in ("latitude", "longitude"):
            try:
                degrees[column] = _number(cell(column))
            except ValueError:
                problem(column, f"{cell(column)!r} is not decimal degrees; expected e.g. 42.3405 and 69.6307")
        if len(degrees) == 2:
            try:
                location = LocationEntry.model_validate(degrees)
            except ValidationError as exc:
                for error in exc.errors(include_url=False):
                    problem(str(error["loc"][0]), str(error["msg"]))
            else:
                coordinates = {"latitude": location.latitude, "longitude": location.longitude}
                if agree("latitude", coordinates):
                    school.location = coordinates

    contract_columns = ("total_mbps", "alarm_mbps", "video_mbps", "education_mbps")
    if any(cell(c) for c in contract_columns):
        values: dict[str, float] = {}
        for column in contract_columns:
            if cell(column):
                try:
                    values[column] = _number(cell(column))
                except ValueError:
                    problem(column, f"{cell(column)!r} is not a number of Mbps")
                    return
        contract: dict[str, Any] = {}
        if "total_mbps" in values:
            contract["total_mbps"] = values["total_mbps"]
        segments = {c.removesuffix("_mbps"): v for c, v in values.items() if c != "total_mbps"}
        if segments:
            contract["segments"] = segments
        try:
            ContractEntry.model_validate(contract)
        except ValidationError as exc:
            message = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors(include_url=False))
            problem("total_mbps", message)
            return
        if agree("total_mbps", contract):
            school.contract = contract


def render(schools: list[dict[str, Any]], source: str) -> str:
    """Inventory YAML for `schools`, one flow mapping per device like the hand-written examples."""
    body = yaml.safe_dump({"schools": schools}, sort_keys=False, allow_unicode=True, default_flow_style=None, width=120)
    return (
        f"# Generated by `telemetryd inventory import {Path(source).name}`; edit the spreadsheet and re-import.\n{body}"
    )


def write_inventory(imported: Imported, source: Path, out_dir: Path) -> list[Path]:
    """Write one YAML file per district into `out_dir`, only after the result loads cleanly."""
    files = {
        f"{_slug(district)}.yaml": render(schools, str(source)) for district, schools in imported.by_district().items()
    }
    # Load what would be written, through the daemon's own loader, before touching out_dir.
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in files.items():
            (Path(tmp) / name).write_text(text, encoding="utf-8")
        load_inventory(Path(tmp))
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in files.items():
        target = out_dir / name
        partial = target.with_suffix(".yaml.tmp")
        partial.write_text(text, encoding="utf-8")
        partial.replace(target)
        written.append(target)
    return written


def run_import(csv_path: Path, out_dir: Path | None) -> int:
    """The CLI command: print problems and return 1, or write YAML and return 0."""
    try:
        imported = read_devices_csv(csv_path)
        if out_dir is None:
            text = render(list(imported.schools), str(csv_path))
            with tempfile.TemporaryDirectory() as tmp:
                (Path(tmp) / "inventory.yaml").write_text(text, encoding="utf-8")
                load_inventory(Path(tmp))
            sys.stdout.write(text)
            return 0
        written = write_inventory(imported, csv_path, out_dir)
    except (CsvImportError, ConfigError) as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{csv_path}: {len(exc.problems)} problem(s); nothing written", file=sys.stderr)
        return 1
    print(
        f"{csv_path}: {imported.devices} devices in {len(imported.schools)} schools → "
        f"{len(written)} file(s) in {out_dir}",
        file=sys.stderr,
    )
    return 0

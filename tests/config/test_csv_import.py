"""`telemetryd inventory import`: spreadsheet exports in, loadable inventory YAML out."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from telemetryd.config import load_inventory
from telemetryd.config.csv_import import CsvImportError, read_devices_csv, write_inventory
from telemetryd.model import DeviceKind, ProbeSpec, Segment

EXCEL_RU = (
    "Школа;Название школы;Район;Широта;Долгота;Тип;IP-адрес;Место установки;Учетные данные\r\n"
    "shy-001;Школа №1;Абайский;42,3405;69,6307;маршрутизатор;10.1.0.1;;\r\n"
    "shy-001;;;;;Камера;10.1.1.11;Вход;hik-camera\r\n"
    'shy-001;;;;;IPC;10.1.1.12;"Коридор; 1 этаж";hik-camera\r\n'
    "shy-001;;;;;Видеорегистратор;10.1.1.2;;hik-nvr\r\n"
    "shy-002;Школа №2;Аль-Фарабийский;;;роутер;10.2.0.1;;\r\n"
    "shy-002;;;;;тревожная кнопка;10.2.2.2;;\r\n"
)


def test_excel_export_with_bom_semicolons_and_russian_headers(tmp_path: Path) -> None:
    """A BOM, semicolon, Russian-header export becomes one loadable YAML per district with 6 typed devices."""
    source = tmp_path / "devices.csv"
    source.write_bytes(b"\xef\xbb\xbf" + EXCEL_RU.encode())
    imported = read_devices_csv(source)
    assert imported.devices == 6
    written = write_inventory(imported, source, tmp_path / "inventory")
    assert sorted(p.name for p in written) == ["абайский.yaml", "аль-фарабийский.yaml"]

    inventory = load_inventory(tmp_path / "inventory")
    assert inventory.device_count == 6
    school = inventory.schools_by_id["shy-001"]
    assert (school.name, school.district, school.latitude, school.longitude) == (
        "Школа №1",
        "Абайский",
        42.3405,
        69.6307,
    )
    # No contract columns: the city's standard 150 = 20/30/100.
    assert dict(school.contract.segments_mbps) == {Segment.ALARM: 20, Segment.VIDEO: 30, Segment.EDUCATION: 100}
    kinds = [(d.id, d.kind, d.host, d.name) for d in school.devices]
    assert kinds == [
        ("shy-001-router-1", DeviceKind.ROUTER, "10.1.0.1", ""),
        ("shy-001-camera-1", DeviceKind.CAMERA, "10.1.1.11", "Вход"),
        ("shy-001-camera-2", DeviceKind.CAMERA, "10.1.1.12", "Коридор; 1 этаж"),
        ("shy-001-nvr-1", DeviceKind.NVR, "10.1.1.2", ""),
    ]
    assert inventory.devices_by_id["shy-001-camera-1"].credentials == "hik-camera"
    assert inventory.devices_by_id["shy-002-alarm-panel-1"].kind is DeviceKind.ALARM_PANEL


def test_windows_1251_export_is_read(tmp_path: Path) -> None:
    """The same export encoded as cp1251 is decoded, giving the Cyrillic school name and 6 devices."""
    source = tmp_path / "devices.csv"
    source.write_bytes(EXCEL_RU.encode("cp1251"))
    imported = read_devices_csv(source)
    assert imported.schools[0]["name"] == "Школа №1"
    assert imported.devices == 6


def test_comma_separated_with_ids_contract_and_probes(tmp_path: Path) -> None:
    """A comma CSV with device ids, contract columns and a quoted probe list keeps 200/60 Mbps and icmp+tcp:554."""
    source = tmp_path / "devices.csv"
    source.write_text(
        "school,school_name,district,total_mbps,alarm_mbps,video_mbps,education_mbps,device,kind,host,probes\n"
        "shy-087,School 87,Abay,200,20,60,100,shy-087-router,router,10.87.0.1,icmp\n"
        'shy-087,,,,,,,shy-087-cam-01,camera,10.87.1.11,"icmp, tcp:554"\n'
    )
    written = write_inventory(read_devices_csv(source), source, tmp_path / "out")
    inventory = load_inventory(written[0])
    school = inventory.schools_by_id["shy-087"]
    assert school.contract.total_mbps == 200
    assert dict(school.contract.segments_mbps)[Segment.VIDEO] == 60
    assert inventory.devices_by_id["shy-087-cam-01"].probes == (ProbeSpec("icmp"), ProbeSpec("tcp", 554))


def test_every_problem_is_reported_with_its_csv_line_and_nothing_is_written(tmp_path: Path) -> None:
    """Nine bad CSV rows are each reported at their physical line and field; the CLI exits 1 and writes nothing."""
    source = tmp_path / "devices.csv"
    source.write_text(
        "school,school_name,district,kind,host,name,total_mbps,alarm_mbps,video_mbps,education_mbps\n"  # 1
        "shy-1,School 1,Abay,camera,10.1.1.300,,,,,\n"  # 2 bad address
        "shy-1,,,toaster,10.1.1.2,,,,,\n"  # 3 unknown kind
        'shy-1,,,camera,10.1.1.3,"Gate,\nnorth side",,,,\n'  # 4-5 a quoted cell over two lines
        "shy-1,,,camera,10.1.1.3,,,,,\n"  # 6 duplicate address
        ",,,camera,10.1.1.9,,,,,\n"  # 7 no school
        "shy-1,Other name,,camera,10.1.1.10,,,,,\n"  # 8 school name disagrees with line 2
        "shy-2,School 2,Abay,router,10.2.0.1,,150,20,30,120\n"  # 9 segments over total
        "shy-3,,,router,10.3.0.1,,,,,\n"  # 10 school with no name or district
        "shy-1,,,camera,10.1.1.11,,,,,,\n"  # 11 one cell too many
    )
    out = tmp_path / "out"
    with pytest.raises(CsvImportError) as caught:
        read_devices_csv(source)
    found = [(p.line, p.field) for p in caught.value.problems]
    assert found == [
        (2, "host"),
        (3, "kind"),
        (6, "host"),
        (7, "school"),
        (8, "school_name"),
        (9, "total_mbps"),
        (10, "school_name"),
        (10, "district"),
        (11, "row"),
    ], "\n".join(map(str, caught.value.problems))
    messages = {p.line: p.message for p in caught.value.problems}
    assert "'10.1.1.300' is not an IPv4 address" in messages[2]
    assert "already on line 4" in messages[6]
    assert "disagrees with line 2" in messages[8]
    assert "more than the total 150 Mbps" in messages[9]
    assert all(p.file == str(source) for p in caught.value.problems)

    result = subprocess.run(
        [sys.executable, "-m", "telemetryd", "inventory", "import", str(source), "-o", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip().endswith("9 problem(s); nothing written")
    assert not out.exists()


def test_header_problems_stop_before_rows(tmp_path: Path) -> None:
    """An unknown column and a missing required `kind` column are the only problems reported, no row is checked."""
    source = tmp_path / "devices.csv"
    source.write_text("school,ip,colour\nshy-1,10.0.0.1,red\n")
    with pytest.raises(CsvImportError) as caught:
        read_devices_csv(source)
    assert [str(p) for p in caught.value.problems] == [
        f"{source}:1: column 3 ('colour'): unknown column; expected one of: school, school_name, district, "
        "latitude, longitude, total_mbps, alarm_mbps, video_mbps, education_mbps, device, kind, host, name, "
        "credentials, probes",
        f"{source}:1: header: missing required column(s): kind",
    ]


def test_cli_writes_yaml_that_check_config_accepts(tmp_path: Path) -> None:
    """Importing 300 schools × 34 devices writes 5 files that `check-config` accepts as 10200 devices."""
    source = tmp_path / "devices.csv"
    rows = ["school,school_name,district,kind,host"]
    # A realistic size: 300 schools × 34 devices.
    for s in range(300):
        rows.append(f"shy-{s:03d},School {s},District {s % 5},router,10.{s // 250}.{s % 250}.1")
        rows.extend(f"shy-{s:03d},,,camera,10.{100 + s // 250}.{s % 250}.{c + 10}" for c in range(33))
    source.write_text("\n".join(rows) + "\n")
    out = tmp_path / "inventory"
    result = subprocess.run(
        [sys.executable, "-m", "telemetryd", "inventory", "import", str(source), "-o", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "10200 devices in 300 schools → 5 file(s)" in result.stderr
    check = subprocess.run(
        [sys.executable, "-m", "telemetryd", "check-config", str(out)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stderr
    assert "300 schools, 10200 devices" in check.stdout

"""SIGHUP as a careless operator or an attacker with write access to the inventory would use it.

Bad reloads of different kinds in a row, each refused with one clear problem while the control
device is probed undisturbed and the loop never stalls, then a good reload applies: the reload
loop survived all of them. `check-config` says the same in one line per problem.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.daemon_process import DaemonProcess, metric
from tests.helpers import school
from tests.hostile.harness import ControlDevice, Watch, assert_control_healthy, hostile_daemon

pytestmark = [pytest.mark.hostile, pytest.mark.integration]

SECRET = "s3cret-token-4711"


def _alias_bomb(inventory: Path) -> str:
    # Nine anchors of nine: 387 million values in ~540 bytes, under a key the model would walk.
    lines = ["a0: &a0 [icmp, icmp, icmp, icmp, icmp, icmp, icmp, icmp, icmp]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    lines.append(
        "schools: [{id: b, name: B, district: D, devices: [{id: b-r, kind: router, host: 10.9.0.1, probes: *a8}]}]"
    )
    inventory.write_text("\n".join(lines) + "\n")
    return "alias *a5 stands for"


def _probe_bomb(inventory: Path) -> str:
    # 50 devices sharing one anchored list of 20,000 probes: a million probes to validate (and plan) from 100 kB.
    probes = f"&p [{', '.join(['icmp'] * 20_000)}]"
    devices = ", ".join(
        f"{{id: b-{i}, kind: camera, host: 10.9.0.{i + 1}, probes: {probes if i == 0 else '*p'}}}" for i in range(50)
    )
    inventory.write_text(f"schools:\n  - id: b\n    name: B\n    district: D\n    devices: [{devices}]\n")
    return "20,000 items, at most 32"


def _deep_list(inventory: Path) -> str:
    inventory.write_text("schools: " + "[" * 3000 + "]" * 3000 + "\n")
    return "nesting depth"


def _deep_under_libyaml(inventory: Path) -> str:
    inventory.write_text("schools: " + "[" * 900 + "]" * 900 + "\n")
    return "nested deeper than 64 levels"


def _fifo(inventory: Path) -> str:
    # A named pipe with no writer where the inventory was: reading it would block the loop for ever.
    inventory.unlink()
    os.mkfifo(inventory)
    return "not a regular file"


def _credentials_in_url(inventory: Path) -> str:
    inventory.write_text(
        "schools:\n"
        "  - id: u\n    name: U\n    district: D\n"
        f"    speedtest: {{url: 'http://probe:{SECRET}@10.9.0.10:8088', credentials: responder-u}}\n"
        "    devices: [{id: u-r, kind: router, host: 10.9.0.2}]\n"
    )
    return "credentials must not be in the URL"


BAD: list[Callable[[Path], str]] = [
    _alias_bomb,
    _probe_bomb,
    _deep_list,
    _deep_under_libyaml,
    _fifo,
    _credentials_in_url,
]


def _reload(daemon: DaemonProcess, event: str) -> dict[str, object]:
    daemon.send_signal(signal.SIGHUP)
    return daemon.wait_event(event, timeout=15)


def test_bad_reloads_of_every_kind_then_a_good_one_applies(tmp_path: Path) -> None:
    """Five bad inventories in a row (alias bomb, 3,000-deep and 900-deep lists, a FIFO, a URL with credentials):
    each a reload_failed naming the file and why, gauge 0, the secret in no output; the control device is
    never misjudged and the loop never lags past 0.25 s; then the good inventory applies (gauge 1)."""
    with ControlDevice() as control, hostile_daemon(tmp_path, control) as daemon:
        inventory = tmp_path / "inventory" / "schools.yaml"
        good = inventory.read_text()
        with Watch(daemon) as watch:
            for make_bad in BAD:
                if inventory.is_fifo():
                    inventory.unlink()
                expected = make_bad(inventory)
                failed = _reload(daemon, "reload_failed")
                problems = failed["problems"]
                assert isinstance(problems, list) and problems, make_bad.__name__
                # The problem of this file, once; or once per device for the probe bomb (each device is wrong).
                assert len(problems) == (50 if make_bad is _probe_bomb else 1), (make_bad.__name__, problems[:3])
                assert all(str(inventory) in p and expected in p for p in problems), (make_bad.__name__, problems[:3])
                assert metric(daemon.scrape(), "telemetryd_config_last_reload_successful") == 0.0
            inventory.unlink()
            schools = yaml.safe_load(good)["schools"]
            extra = {"id": "extra-r", "kind": "router", "host": "127.0.0.9", "probes": ["tcp:9"]}
            inventory.write_text(yaml.safe_dump({"schools": [*schools, school("extra", [extra])]}))
            reloaded = _reload(daemon, "reloaded")
            assert reloaded["devices"] == 2
            assert metric(daemon.scrape(), "telemetryd_config_last_reload_successful") == 1.0
            time.sleep(2 * 0.5)
        assert_control_healthy(daemon, control, watch)
        assert SECRET not in daemon.text()


@pytest.mark.parametrize("make_bad", BAD, ids=lambda f: f.__name__.strip("_"))
def test_check_config_says_it_in_one_line(tmp_path: Path, make_bad: Callable[[Path], str]) -> None:
    """check-config on each bad inventory: exit 1, one problem line naming the file, the count line, no traceback,
    no secret; and it returns at once (a FIFO is not waited on)."""
    inventory = tmp_path / "schools.yaml"
    inventory.write_text("schools: []\n")
    expected = make_bad(inventory)
    settings = tmp_path / "telemetryd.yaml"
    settings.write_text(f"inventory: {inventory.name}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "telemetryd", "check-config", str(settings)],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    *problems, count = proc.stderr.strip().splitlines()
    assert proc.returncode == 1, proc.stderr
    n = 50 if make_bad is _probe_bomb else 1
    assert count == f"{n} problem{'s' if n > 1 else ''} found" and len(problems) == n, proc.stderr[-500:]
    assert all(p.startswith(str(inventory)) and expected in p for p in problems), proc.stderr[-500:]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert SECRET not in proc.stderr + proc.stdout

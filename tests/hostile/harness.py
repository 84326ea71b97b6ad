"""The hostile suite's yardstick: a healthy control device probed alongside every attack.

Each test in `tests/hostile/` runs the real daemon (`DaemonProcess`) with one control
camera whose TCP port is a listener owned by the test (`ControlDevice`): every probe is an
accepted connection, so the gaps between probes are measured from outside the daemon.
While the attack runs, `Watch` scrapes `/metrics` every few tenths of a second; at the end
`assert_control_healthy` checks what the issue asks of every flood:

- the control device was never judged down (no ``device_down`` for it, ``telemetryd_device_up``
  1 at every scrape once it had come up);
- its probe gap stayed under two intervals;
- the loop-lag histogram holds nothing above 0.25 s.

Usage::

    with ControlDevice() as control, hostile_daemon(tmp_path, control, sia=...) as daemon:
        with Watch(daemon) as watch:
            ...attack...
        assert_control_healthy(daemon, control, watch)
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.daemon_process import DaemonProcess, metric, scrape
from tests.helpers import school, write_config

CONTROL_SCHOOL = "ctl"
CONTROL_DEVICE = "ctl-cam"
PROBE_INTERVAL = 0.5
"""Seconds between the control device's probes."""
LAG_LIMIT = 0.25
"""No loop-lag observation may exceed this (the histogram's bucket of that bound)."""


class ControlDevice:
    """A TCP listener on 127.0.0.1 standing for a healthy camera; records when each probe connected."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0), backlog=128)
        self._server.settimeout(0.2)
        self.port: int = self._server.getsockname()[1]
        self.accepts: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="control-device", daemon=True)

    def __enter__(self) -> ControlDevice:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._server.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepts.append(time.monotonic())
            conn.close()

    def max_gap(self, since: float) -> float:
        """The longest wait between two probes (or from `since` to the first, and from the last to now)."""
        marks = [since, *(t for t in self.accepts if t >= since), time.monotonic()]
        return max(b - a for a, b in itertools.pairwise(marks))


def control_school(control: ControlDevice) -> dict[str, Any]:
    """The inventory entry of the control school: one camera probed by TCP on the control listener."""
    device = {"id": CONTROL_DEVICE, "kind": "camera", "host": "127.0.0.1", "probes": [f"tcp:{control.port}"]}
    return school(CONTROL_SCHOOL, [device])


def control_settings(**settings: Any) -> dict[str, Any]:
    """Settings with the control device's probe interval; `settings` are merged on top (shallowly per section)."""
    base: dict[str, Any] = {
        "probes": {"tcp": {"interval": f"{int(PROBE_INTERVAL * 1000)}ms", "timeout": "1s"}},
        "shutdown_timeout": "5s",
    }
    for key, value in settings.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return base


@contextlib.contextmanager
def hostile_daemon(
    tmp_path: Path, control: ControlDevice, *, schools: list[dict[str, Any]] | None = None, **settings: Any
) -> Iterator[DaemonProcess]:
    """The real daemon with the control school (plus `schools`), started and with the control device up."""
    config = write_config(tmp_path, [control_school(control), *(schools or [])], **control_settings(**settings))
    with DaemonProcess(config, tee=tmp_path / "daemon.log") as daemon:
        daemon.started()
        wait_control_up(daemon)
        yield daemon


def wait_control_up(daemon: DaemonProcess, timeout: float = 15.0) -> None:
    """Wait until /metrics says the control device is up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if metric(daemon.scrape(), "telemetryd_device_up", device=CONTROL_DEVICE) == 1.0:
                return
        time.sleep(0.1)
    raise AssertionError(f"control device never came up\n{daemon.output()}")


def loop_lag_above(text: str, bound: float = LAG_LIMIT) -> float:
    """Loop-lag observations above `bound` in one exposition (count minus the bucket at `bound`)."""
    count = within = None
    for family in text_string_to_metric_families(text):
        if family.name != "telemetryd_event_loop_lag_seconds":
            continue
        for sample in family.samples:
            if sample.name.endswith("_count"):
                count = sample.value
            elif sample.name.endswith("_bucket") and float(sample.labels["le"]) == bound:
                within = sample.value
    assert count is not None, "no telemetryd_event_loop_lag_seconds in the exposition"
    assert within is not None, f"telemetryd_event_loop_lag_seconds has no bucket at le={bound}"
    return count - within


class Watch:
    """Scrapes the daemon in a thread during an attack: the control device's `device_up`, scrape failures.

    scrape: a callable returning the exposition text (default: `daemon.scrape()` over plain HTTP); a test that
    makes the exporter require credentials passes its own.
    """

    def __init__(self, daemon: DaemonProcess, *, period: float = 0.3, scrape_text: Any = None) -> None:
        self.daemon = daemon
        self.period = period
        self._scrape = scrape_text or (lambda: scrape(daemon.address))
        self.since = time.monotonic()
        self.up: list[tuple[float, float | None]] = []
        self.failures: list[str] = []
        self.last_text = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watch", daemon=True)

    def __enter__(self) -> Watch:
        self.since = time.monotonic()
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                text = self._scrape()
            except Exception as exc:  # a failed scrape is a finding, recorded and judged by the test
                self.failures.append(f"{type(exc).__name__}: {exc}")
            else:
                self.last_text = text
                self.up.append((time.monotonic(), metric(text, "telemetryd_device_up", device=CONTROL_DEVICE)))
            self._stop.wait(self.period)


def assert_control_healthy(daemon: DaemonProcess, control: ControlDevice, watch: Watch) -> None:
    """What every flood must leave true: control up throughout, its probe gap < 2 intervals, no loop lag > 0.25 s."""
    downs = [r for r in daemon.records() if r.get("event") == "device_down" and r.get("device") == CONTROL_DEVICE]
    assert not downs, f"control device judged down: {downs}"
    assert watch.up, f"no scrape succeeded during the attack: {watch.failures[:3]}"
    misjudged = [(round(t - watch.since, 2), v) for t, v in watch.up if v != 1.0]
    assert not misjudged, f"control device_up != 1 at (s, value): {misjudged}"
    gap = control.max_gap(watch.since)
    assert gap < 2 * PROBE_INTERVAL, f"control probe gap {gap:.2f} s >= 2 intervals ({2 * PROBE_INTERVAL} s)"
    lagged = loop_lag_above(watch.last_text or daemon.scrape())
    assert lagged == 0, f"{lagged:.0f} loop-lag observations above {LAG_LIMIT} s"

"""`telemetryd run` as a child process for tests: its JSON log lines, its listen address, its metrics.

One helper for every test that starts the real daemon::

    with DaemonProcess(config) as daemon:
        address = daemon.started()["listen"]
        assert metric(daemon.scrape(), "telemetryd_device_up", device="s1-cam-1") == 1.0

Leaving the `with` block (or `stop()`) always kills and waits for the child, so a failing
test never leaves a daemon behind; `terminate()` is the graceful stop (SIGTERM, then the
kill after a deadline). Log lines are read by a thread; `wait_event` walks them in order
(each call starts after the record the previous one returned), `records()` is everything
read so far.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

from prometheus_client.parser import text_string_to_metric_families

NOTIFY_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class DaemonProcess:
    """`python -m telemetryd run --config <config>` as a child, its output captured line by line.

    notify_dir: bind an sd_notify socket there and pass NOTIFY_SOCKET/WATCHDOG_USEC to the child
    (without it those variables are removed from the child's environment).
    tee: also append every output line to this file (for failure messages or a post-mortem).
    """

    def __init__(
        self,
        config: Path,
        *,
        notify_dir: Path | None = None,
        watchdog_usec: int = 2_000_000,
        tee: Path | None = None,
    ) -> None:
        env = {k: v for k, v in os.environ.items() if k not in NOTIFY_VARIABLES}
        self.notify: socket.socket | None = None
        if notify_dir is not None:
            notify_path = str(notify_dir / "notify.sock")
            self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.notify.bind(notify_path)
            self.notify.settimeout(0.2)
            env["NOTIFY_SOCKET"] = notify_path
            env["WATCHDOG_USEC"] = str(watchdog_usec)
            env["WATCHDOG_PID"] = ""  # the child's pid is not known in advance; empty means "for us"
        self._tee: TextIO | None = tee.open("a", encoding="utf-8") if tee is not None else None
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        """Records taken from `lines` so far, in order (by `wait_event`, `records`, `wait`)."""
        self._cursor = 0
        """How far into `seen` `wait_event` has looked."""
        self.started_record: dict[str, Any] | None = None
        self._raw: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "telemetryd", "run", "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, name=f"daemon-{self.proc.pid}-log", daemon=True)
        self._reader.start()

    # ------------------------------------------------------------------ context manager

    def __enter__(self) -> DaemonProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ output

    def _read(self) -> None:
        assert self.proc.stdout is not None
        try:
            for line in self.proc.stdout:
                self._raw.append(line)
                if self._tee is not None:
                    self._tee.write(line)
                    self._tee.flush()
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    record = None
                if not isinstance(record, dict):
                    record = {"event": "unparsed", "line": line.rstrip("\n")}
                self.lines.put(record)
        finally:
            if self._tee is not None:
                self._tee.close()

    def _take(self) -> None:
        while True:
            try:
                self.seen.append(self.lines.get_nowait())
            except queue.Empty:
                return

    def records(self) -> list[dict[str, Any]]:
        """Every record read so far (what `wait_event` took and what is still queued), in order."""
        self._take()
        return self.seen

    def text(self) -> str:
        """Everything the child wrote so far, exactly as written (to look for secrets that must not be there)."""
        return "".join(self._raw)

    def output(self, last: int = 40) -> str:
        """The last `last` records as text, for an assertion message (tracebacks show as `unparsed` lines)."""
        return "\n".join(
            str(r["line"]) if r.get("event") == "unparsed" else json.dumps(r) for r in self.records()[-last:]
        )

    def wait_event(self, event: str, timeout: float = 10.0) -> dict[str, Any]:
        """The next record with this event name after the last one `wait_event` returned; fails early on exit."""
        deadline = time.monotonic() + timeout
        while True:
            while self._cursor < len(self.seen):
                record = self.seen[self._cursor]
                self._cursor += 1
                if record.get("event") == event:
                    return record
            if time.monotonic() >= deadline:
                raise AssertionError(f"no {event!r} log line in {timeout}s; saw:\n{self.output()}")
            try:
                self.seen.append(self.lines.get(timeout=0.1))
            except queue.Empty:
                if not self._reader.is_alive() and self.lines.empty():
                    raise AssertionError(
                        f"daemon exited ({self.proc.poll()}) without a {event!r} log line:\n{self.output()}"
                    ) from None

    def started(self, timeout: float = 20.0) -> dict[str, Any]:
        """The `started` record (waited for on the first call); its `listen` is the address actually bound."""
        if self.started_record is None:
            self.started_record = self.wait_event("started", timeout)
        return self.started_record

    @property
    def address(self) -> str:
        """host:port of /metrics and the status endpoints (waits for `started`)."""
        return str(self.started()["listen"])

    def scrape(self, path: str = "/metrics", timeout: float = 5.0) -> str:
        """GET `path` from the daemon's HTTP server (by default the metrics text)."""
        return scrape(self.address, path, timeout)

    def notifications(self, timeout: float = 3.0) -> list[str]:
        """sd_notify datagrams received so far (waits up to timeout for at least one)."""
        if self.notify is None:
            raise AssertionError("started without notify_dir: no sd_notify socket")
        out: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                out.append(self.notify.recv(4096).decode())
            except TimeoutError:
                if out:
                    break
        return out

    # ------------------------------------------------------------------ process

    def send_signal(self, signum: int) -> None:
        """Send `signum` to the child."""
        self.proc.send_signal(signum)

    def wait(self, timeout: float) -> int:
        """Wait for the child to exit; then every output line is in `records()`. Returns the exit code."""
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
        self._take()
        return code

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM, wait up to `timeout`, then kill; returns the exit code (negative when killed)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            return int(self.proc.returncode)

    def stop(self) -> None:
        """Kill the child if it still runs, wait for it, close the notify socket."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._reader.join(timeout=5)
        self._take()
        if self.proc.stdout is not None and not self._reader.is_alive():
            self.proc.stdout.close()  # else a grandchild still holds the pipe: leave it to the reader
        if self.notify is not None:
            self.notify.close()


def scrape(address: str, path: str = "/metrics", timeout: float = 5.0) -> str:
    """GET `path` from a daemon at `address`."""
    with urllib.request.urlopen(f"http://{address}{path}", timeout=timeout) as response:
        return str(response.read().decode())


def metric(text: str, name: str, **labels: str) -> float | None:
    """Value of the first sample of `name` whose labels include `labels` (None when there is none)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                return float(sample.value)
    return None

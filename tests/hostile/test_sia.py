"""Hostile peers against the DC-09 receiver, with a healthy control device and a legitimate school panel alongside.

One test per row of issue 13's table that concerns the receiver: a client that never reads its
ACKs, 4,100 silent connections, a flood of bad frames. Beside each attack a legitimate panel
(`LegitPanel`) sends a heartbeat every 0.3 s and a burglary alarm every third message, each
timed from send to ACK; the test then asserts what the issue asks of every flood:

- the control device stayed healthy (`assert_control_healthy`);
- every heartbeat and alarm of the panel was ACKed in under 1 s, and every alarm reached the
  daemon (its `sia_panel_event` line);
- the panel never looked lost: its heartbeat age stayed under interval + grace at every scrape.

Each test prints a ``FIGURES`` line (ACK latency, daemon RSS, loop lag) for the notes; run with ``-s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from telemetryd.alarm import dc09
from telemetryd.alarm.dc09 import AccountKey
from telemetryd.sim.panels import Outcome, PanelSpec, ReceiverPath, SimPanel
from tests.daemon_process import DaemonProcess, metric, scrape
from tests.helpers import school
from tests.hostile.harness import ControlDevice, Watch, assert_control_healthy, hostile_daemon

pytestmark = [pytest.mark.hostile, pytest.mark.integration]

PANEL_DEVICE = "okp-alarm"
PANEL_ACCOUNT = "5A5A01"
PANEL_KEY = str(AccountKey("", "0", PANEL_ACCOUNT))
HEARTBEAT_INTERVAL = 1.0
"""The panel's configured heartbeat interval; it actually sends every `SEND_PERIOD`."""
GRACE = 1.0
SEND_PERIOD = 0.3
ACK_LIMIT = 1.0
"""Every heartbeat and alarm of the legitimate panel must be ACKed within this."""


def panel_school() -> dict[str, Any]:
    """The legitimate panel's school: one supervised DC-09 panel, no network probes."""
    device = {
        "id": PANEL_DEVICE,
        "kind": "alarm_panel",
        "host": "127.0.0.9",  # only its identity: the panel has no network probes
        "probes": [],
        "sia": {"account": PANEL_ACCOUNT, "interval": HEARTBEAT_INTERVAL},
    }
    return school("okp", [device])


@contextlib.contextmanager
def sia_daemon(tmp_path: Path, control: ControlDevice, **sia: Any) -> Iterator[tuple[DaemonProcess, int]]:
    """The daemon with the control school and the panel's school, its DC-09 receiver on a free port."""
    settings = {"listen": "127.0.0.1:0", "grace": GRACE, **sia}
    with hostile_daemon(tmp_path, control, schools=[panel_school()], sia=settings) as daemon:
        listening = [r for r in daemon.records() if r.get("event") == "sia_receiver_listening"]
        assert listening, daemon.output()
        yield daemon, int(listening[0]["port"])


class LegitPanel:
    """A healthy school panel in its own thread and loop: heartbeats and alarms, each timed until its ACK."""

    def __init__(self, port: int, *, reconnect: bool = False) -> None:
        path = ReceiverPath("127.0.0.1", port, "tcp")
        self.spec = PanelSpec(PANEL_ACCOUNT, (path,), interval=HEARTBEAT_INTERVAL, reconnect=reconnect)
        self.answers: list[tuple[str, float, Outcome]] = []
        """(what, seconds from send to answer, outcome) per message."""
        self.alarm_zones: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), name="legit-panel", daemon=True)

    def __enter__(self) -> LegitPanel:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    async def _run(self) -> None:
        panel = SimPanel(self.spec)
        try:
            for n in range(10_000):
                if self._stop.is_set():
                    return
                started = time.monotonic()
                if n % 3 == 2:
                    zone = f"{n:03d}"
                    self.alarm_zones.append(zone)
                    outcomes = await panel.send_event("BA", zone=zone)
                    what = "alarm"
                else:
                    outcomes = await panel.heartbeat()
                    what = "heartbeat"
                self.answers.append((what, time.monotonic() - started, *outcomes.values()))
                await asyncio.sleep(max(0.0, SEND_PERIOD - (time.monotonic() - started)))
        finally:
            await panel.stop()

    @property
    def worst(self) -> float:
        """The longest wait for an answer."""
        return max((seconds for _, seconds, _ in self.answers), default=0.0)


class PanelAges:
    """Wraps the Watch's scrape: also records the panel's heartbeat age at every scrape."""

    def __init__(self, daemon: DaemonProcess) -> None:
        self.daemon = daemon
        self.ages: list[float] = []

    def __call__(self) -> str:
        text = scrape(self.daemon.address)
        age = metric(text, "telemetryd_alarm_panel_heartbeat_age_seconds", device=PANEL_DEVICE)
        if age is not None:
            self.ages.append(age)
        return text


def rss_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in KiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


def loop_lag_max_bucket(text: str) -> float:
    """The smallest loop-lag bucket bound holding every observation (the longest stall is at most this)."""
    buckets: list[tuple[float, float]] = []
    count = 0.0
    for family in text_string_to_metric_families(text):
        if family.name == "telemetryd_event_loop_lag_seconds":
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    buckets.append((float(sample.labels["le"]), sample.value))
                elif sample.name.endswith("_count"):
                    count = sample.value
    return min(bound for bound, within in buckets if within >= count)


def assert_panel_served(daemon: DaemonProcess, panel: LegitPanel, ages: PanelAges) -> None:
    """Every message ACKed in under 1 s, every alarm received, the panel never looked lost."""
    assert len(panel.answers) >= 10, f"the panel got only {len(panel.answers)} answers"
    slow = [(what, round(seconds, 3), str(outcome)) for what, seconds, outcome in panel.answers if seconds >= ACK_LIMIT]
    failed = [(what, str(outcome)) for what, _, outcome in panel.answers if outcome is not Outcome.ACK]
    assert not failed, f"messages of the legitimate panel not ACKed: {failed[:10]} ({len(failed)} in all)"
    assert not slow, f"messages ACKed after >= {ACK_LIMIT} s: {slow[:10]} ({len(slow)} in all)"
    received = {
        r.get("zone")
        for r in daemon.records()
        if r.get("event") == "sia_panel_event" and r.get("account") == PANEL_KEY and r.get("code") == "BA"
    }
    lost = [zone for zone in panel.alarm_zones if zone not in received]
    assert not lost, f"alarms of the legitimate panel never received: zones {lost} of {len(panel.alarm_zones)}"
    assert ages.ages, "no scrape saw the panel's heartbeat age"
    assert max(ages.ages) < HEARTBEAT_INTERVAL + GRACE, f"panel silent for {max(ages.ages):.1f} s: supervision_lost"
    downs = [r for r in daemon.records() if r.get("event") == "device_down" and r.get("device") == PANEL_DEVICE]
    assert not downs, f"legitimate panel judged down: {downs}"


def _totals(text: str, family: str, *labels: str) -> dict[str, float]:
    """A counter family's samples by their `labels` (joined with /), for the figures line."""
    return {
        "/".join(sample.labels[label] for label in labels): sample.value
        for found in text_string_to_metric_families(text)
        if found.name == family
        for sample in found.samples
        if sample.name.endswith("_total")
    }


def report(case: str, daemon: DaemonProcess, panel: LegitPanel, before: dict[str, int], text: str) -> None:
    """One FIGURES line for the notes."""
    after = rss_kib(daemon.proc.pid)
    figures = {
        "case": case,
        "ack_worst_s": round(panel.worst, 3),
        "ack_median_s": round(sorted(s for _, s, _ in panel.answers)[len(panel.answers) // 2], 4),
        "not_acked": sum(outcome is not Outcome.ACK for _, _, outcome in panel.answers),
        "rss_before_kib": before["VmRSS"],
        "rss_after_kib": after["VmRSS"],
        "rss_peak_kib": after["VmHWM"],
        "loop_lag_max_bucket_s": loop_lag_max_bucket(text),
        "frames": _totals(text, "telemetryd_sia_frames", "verdict", "reason"),
        "dropped": _totals(text, "telemetryd_sia_connections_dropped", "why"),
        "paused": _totals(text, "telemetryd_sia_reads_paused", "why"),
    }
    print("FIGURES", json.dumps(figures))


# ---- 1. a client that never reads its ACKs -----------------------------------------------------


def _flooder(port: int, stop: threading.Event, sent: list[int], *, reads_acks: bool) -> None:
    """Valid NULL frames (strangers' accounts, no timestamp) as fast as the socket takes them; with
    `reads_acks` False never a recv, else the answers are read (and discarded) by a second thread."""
    chunk = b"".join(dc09.build_null(i % 9999 + 1, prefix="0", account=f"B{i % 16:03X}", at=None) for i in range(2000))
    with socket.socket() as sock:
        if not reads_acks:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the ACKs pile up on the daemon's side
        sock.connect(("127.0.0.1", port))
        sock.settimeout(0.2)
        if reads_acks:
            threading.Thread(target=_drain, args=(sock,), daemon=True).start()
        while not stop.is_set():
            try:
                sent[0] += sock.send(chunk)
            except TimeoutError:
                continue  # the daemon stopped reading us: what it should do when we do not read
            except OSError:
                return


@pytest.mark.parametrize("reads_acks", [False, True], ids=["never_reads_acks", "reads_acks"])
def test_one_client_flooding_frames(tmp_path: Path, reads_acks: bool) -> None:
    """A peer flooding frames is paused when it does not read the ACKs (memory flat) and held to a budget of
    frames per loop turn when it does (the loop stays free): the control device and the panel are served."""
    with ControlDevice() as control, sia_daemon(tmp_path, control) as (daemon, port):
        before = rss_kib(daemon.proc.pid)
        ages = PanelAges(daemon)
        stop, sent = threading.Event(), [0]
        attacker = threading.Thread(target=_flooder, args=(port, stop, sent), kwargs={"reads_acks": reads_acks})
        with Watch(daemon, scrape_text=ages) as watch, LegitPanel(port) as panel:
            attacker.start()
            time.sleep(8)
            stop.set()
            attacker.join(timeout=5)
        text = daemon.scrape()
        report("reads_acks" if reads_acks else "never_reads_acks", daemon, panel, before, text)
        assert_control_healthy(daemon, control, watch)
        assert_panel_served(daemon, panel, ages)
        grown = rss_kib(daemon.proc.pid)["VmHWM"] - before["VmRSS"]
        assert grown < 40 * 1024, f"daemon RSS grew {grown / 1024:.0f} MiB for one peer (sent {sent[0]} bytes)"
        if not reads_acks:
            assert (metric(text, "telemetryd_sia_reads_paused_total", why="write") or 0) >= 1, "never paused"


# ---- 2. 4,100 silent connections ---------------------------------------------------------------

SILENT_CLIENTS = 4100
SOURCES = 128
"""Source addresses the silent clients come from (127.0.2.1 ...): few enough per address to stay under the
per-source cap, so it is the global cap (4,096 by default) that fills."""


def _raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"needs {needed} file descriptors, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


class SilentClients:
    """`SILENT_CLIENTS` idle connections from `SOURCES` addresses; `hold` reopens each one the daemon closes."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.open: dict[int, tuple[socket.socket, str]] = {}
        self.reopened = 0
        self._poll = select.poll()

    def connect(self, source: str) -> None:
        with contextlib.suppress(OSError):  # refused or reset: the daemon's choice
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=2, source_address=(source, 0))
            self.open[sock.fileno()] = (sock, source)
            self._poll.register(sock, select.POLLIN | select.POLLHUP)

    def connect_all(self) -> None:
        for n in range(SILENT_CLIENTS):
            self.connect(f"127.0.2.{n % SOURCES + 1}")

    def hold(self, seconds: float) -> None:
        """Keep every slot taken for `seconds`: a closed (evicted) socket is replaced at once, from its address."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            for fd, _ in self._poll.poll(min(left, 0.1) * 1000):
                sock, source = self.open.pop(fd)
                self._poll.unregister(fd)
                sock.close()
                self.connect(source)
                self.reopened += 1

    def close(self) -> None:
        for sock, _ in self.open.values():
            sock.close()


def test_4100_silent_connections(tmp_path: Path) -> None:
    """Idle sockets filling the connection cap, reopened as soon as closed, give way to a panel that reconnects."""
    _raise_fd_limit(2 * SILENT_CLIENTS + 1024)  # inherited by the daemon: it must not hit EMFILE before its cap
    with ControlDevice() as control, sia_daemon(tmp_path, control) as (daemon, port):
        before = rss_kib(daemon.proc.pid)
        ages = PanelAges(daemon)
        silent = SilentClients(port)
        try:
            with Watch(daemon, scrape_text=ages) as watch, LegitPanel(port, reconnect=True) as panel:
                silent.connect_all()
                connected = len(silent.open)
                silent.hold(8)
            text = daemon.scrape()
        finally:
            silent.close()
        report("silent_4100", daemon, panel, before, text)
        print("SILENT", json.dumps({"connected": connected, "reopened": silent.reopened}))
        assert connected >= 4000, f"only {connected} silent clients connected"
        assert_control_healthy(daemon, control, watch)
        assert_panel_served(daemon, panel, ages)
        evicted = metric(text, "telemetryd_sia_connections_dropped_total", transport="tcp", why="evicted") or 0
        assert evicted >= 1, "the cap never filled: the test did not test it"
        assert (metric(text, "telemetryd_sia_connections") or 0) <= 4096
        drop_lines = [r for r in daemon.records() if r.get("event") == "sia_connection_dropped"]
        assert len(drop_lines) <= SOURCES + 1, f"{len(drop_lines)} log lines for {evicted:.0f} dropped connections"


# ---- 3. a flood of bad frames ------------------------------------------------------------------


def _bad_frames() -> dict[tuple[str, str], list[bytes]]:
    """4,000 frames for each of five (verdict, reason) pairs: 20,000 bad frames in all."""
    good = [dc09.build_null(i % 9999 + 1, prefix="0", account="C001", at=None) for i in range(4000)]
    return {
        ("nak", "crc"): [f[:1] + b"%04X" % (int(f[1:5], 16) ^ 1) + f[5:] for f in good],
        ("nak", "length"): [f[:-1] + b"]" + dc09.CR for f in good],
        ("nak", "truncated"): [f[:-3] + dc09.CR for f in good],
        ("nak", "format"): [dc09.build_frame(f'"NULL"{i:04d}garbage') for i in range(4000)],
        ("duh", "unsupported"): [dc09.build_frame(f'"XYZ"{i % 9999 + 1:04d}L0#C001[]') for i in range(4000)],
    }


def _flood(port: int, source: str, frames: list[bytes]) -> None:
    """Send `frames` over one connection, reading (and discarding) the answers meanwhile."""
    with socket.create_connection(("127.0.0.1", port), source_address=(source, 0)) as sock:
        reader = threading.Thread(target=lambda: _drain(sock), daemon=True)
        reader.start()
        for start in range(0, len(frames), 500):
            sock.sendall(b"".join(frames[start : start + 500]))
            time.sleep(0.2)  # 20,000 frames in ~8 s, as the flood
        time.sleep(1)
        sock.shutdown(socket.SHUT_WR)
        reader.join(timeout=5)


def _drain(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while sock.recv(65536):
            pass


FLOOD_EVENTS = ("sia_frame_rejected", "sia_frames_rejected")


def test_bad_frame_flood_logs_a_bounded_summary(tmp_path: Path) -> None:
    """20,000 bad frames: each counted per reason in /metrics, logged as a few lines per peer, alarms still logged."""
    frames = _bad_frames()
    with ControlDevice() as control, sia_daemon(tmp_path, control) as (daemon, port):
        before = rss_kib(daemon.proc.pid)
        ages = PanelAges(daemon)
        sources = ("127.0.3.1", "127.0.3.2")
        mixed = [frame for batch in zip(*frames.values(), strict=True) for frame in batch]
        halves = (mixed[0::2], mixed[1::2])
        floods = [
            threading.Thread(target=_flood, args=(port, source, half), daemon=True)
            for source, half in zip(sources, halves, strict=True)
        ]
        with Watch(daemon, scrape_text=ages) as watch, LegitPanel(port) as panel:
            for flood in floods:
                flood.start()
            for flood in floods:
                flood.join(timeout=20)
        text = daemon.scrape()
        report("bad_frame_flood", daemon, panel, before, text)
        for (verdict, reason), batch in frames.items():
            counted = metric(text, "telemetryd_sia_frames_total", transport="tcp", verdict=verdict, reason=reason)
            assert counted == len(batch), f"{verdict}/{reason}: {counted} counted of {len(batch)} sent"
        assert_control_healthy(daemon, control, watch)
        assert_panel_served(daemon, panel, ages)
        assert daemon.terminate() == 0  # the stop flushes the summaries still pending
        lines = [r for r in daemon.records() if r.get("event") in FLOOD_EVENTS]
        assert len(lines) <= 2 * len(sources), f"{len(lines)} log lines for {sum(map(len, frames.values()))} frames"
        logged = sum(int(r.get("count", 1)) for r in lines)
        assert logged == sum(map(len, frames.values())), f"the log lines account for {logged} rejected frames"
        per_reason: dict[str, int] = {}
        for r in lines:
            for reason, count in (r.get("reasons") or {r.get("reason"): 1}).items():
                per_reason[reason] = per_reason.get(reason, 0) + int(count)
        assert per_reason == {reason: len(batch) for (_, reason), batch in frames.items()}

"""Daemon benchmark: the running telemetryd as a whole, against a netns fleet of N devices (issue 11).

For each N (default 10,000, 30,000 and 100,000 devices) it:

1. brings up a simulated city with the project's simulator (`telemetryd.sim`: `generate_city`
   and `Fleet`, the code behind `telemetryd simulate --mode netns`), with the demo's shares of
   dead (3 %), flapping (1 %) and closed-port (2 %) devices. One fleet holds at most
   `--schools-per-fleet` schools (default 300, ~19,500 listening sockets in its responder): the
   hard open-files limit here is 20,000 and root cannot raise it (no CAP_SYS_RESOURCE). Bigger
   cities are several fleets, each in its own namespace and /16 (10.230.0.0/16 up, clear of the
   demo's and the other simulators' blocks) with its own range of school numbers. Flapping
   devices cycle every 300-900 s (`--flap-period`; the demo's 20-60 s costs each fleet ~16 % of
   a core, one `ip` forked per flap from a process holding 19,500 sockets, and its 10-30 s
   stretches never outlast the daemon's 3 x 30 s debounce, so no truth could judge them);
2. starts `telemetryd run` as its own process against the generated inventory with default probe
   settings (ICMP and TCP every 30 s, 3 echo requests per ICMP probe), listening on 127.0.0.1;
3. lets it settle, then measures 30 s windows: quiet ones (no scrape) and scraped ones, each
   opened by one scrape as Prometheus would do every 30 s; scrapes alternate between
   `Accept-Encoding: gzip` (Prometheus' way) and raw, so every figure has both encodings;
4. reports per N: daemon CPU % of one core (utime + stime from /proc/PID/stat) in quiet and in
   gzip-scraped windows, RSS (median, max), `GET /metrics` latency p50/max raw and gzip, body size
   raw and gzip, series (lines not starting with #), event-loop lag observations above 0.1 s
   (`telemetryd_event_loop_lag_seconds`), probe slots skipped per minute
   (`telemetryd_probe_slots_skipped_total`), schedule lag p99 (`telemetryd_schedule_lag_seconds`
   bucket deltas), start-up (process start to the `started` log record, which the daemon writes
   once its scheduler runs, i.e. when the first probes go out; and to the first scrape with
   `telemetryd_probes_total` > 0, which adds the first full render)
   and the share of devices whose `telemetryd_device_up` disagrees with the simulator's truth;
   the counters are deltas between the scrapes that open and close each phase, so the quiet
   phase's figures include the after-effects of the one scrape that opens it;
5. runs fping (`-C 3`, paced like the daemon) over the same ICMP hosts while the daemon keeps
   running, for a per-probe baseline: CPU ms per 1,000 ICMP probes of fping (its own rusage)
   against the daemon's CPU per 1,000 probe runs of any protocol in the quiet phase;
6. with `--reload`, rewrites the inventory with one school fewer, sends SIGHUP and reports the
   time to the `reloaded` record, the swap's own time (its `swap_seconds`), the worst
   event-loop lag bucket and the slots skipped from a scrape before the signal to one 30 s
   after the swap;
7. with `--shards N`, runs N daemons side by side on the same fleet (`shard: k/N`), each
   measured, scraped and judged against the truth of its own schools as above, and adds what
   they sum to;
8. prints a Markdown table (one row per N, or per shard) and writes every raw figure to `--json`.

    sudo .venv/bin/python bench/daemon.py [--devices 10000] [--minutes 5] [--json daemon.json]

or `make bench-daemon BENCH_ARGS="--devices 10000 --minutes 4"`. Needs root (namespaces, raw
ICMP) and fping. Traffic goes only to 127.0.0.1 and to addresses routed into the namespaces this
script creates (the simulator's route guard checks it); everything it started (daemon, fping,
fleet responders) is stopped by PID and every namespace and veth removed on exit, Ctrl-C and
errors included. The simulated fleet shares the machine's cores with the daemon: its CPU is
reported next to the daemon's.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import http.client
import json
import math
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

from telemetryd.config import shard_of
from telemetryd.config.settings import Settings
from telemetryd.model import Device, Inventory, School
from telemetryd.sim.city import City, DeviceTruth, generate_city
from telemetryd.sim.fleet import Fleet

TICKS = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
DEVICES_PER_SCHOOL = 35
WINDOW_SECONDS = 30.0
"""Prometheus' scrape interval in this bench, and the length of every measured window."""
FIRST_FLEET_NETWORK = 230
"""Fleet k lives in 10.(230+k).0.0/16: clear of the simulator's other blocks (10.200 demo and tests,
10.201 tests, 10.210 shaped links, 10.220 SNMP routers, 10.250 tests)."""
MAX_FLEETS = 20
SCRAPE_TIMEOUT = 300.0
LAG_THRESHOLD = 0.1
"""Event-loop lag above this (seconds) counts as a stall."""
COUNTERS = re.compile(
    rb"^(telemetryd_(?:probes_total|probe_slots_skipped_total|schedule_lag_seconds_bucket"
    rb"|event_loop_lag_seconds_bucket))(\{[^}\n]*\})? (\S+)",
    re.MULTILINE,
)
DEVICE_UP = re.compile(rb'^telemetryd_device_up\{[^}\n]*?device="([^"\n]*)"[^}\n]*\} (\S+)', re.MULTILINE)
LABEL = re.compile(rb'(\w+)="([^"\n]*)"')


class Interrupted(Exception):
    """SIGTERM (or SIGINT) arrived: stop measuring and clean up."""


# --------------------------------------------------------------------------- the simulated city


def renumbered(city: City, first_school: int) -> City:
    """The same city with its schools numbered from `first_school`, so several fleets never share an id."""
    offset = first_school - 1
    ids: dict[str, str] = {}

    def school_number(school_id: str) -> int:
        return int(school_id.rsplit("-", 1)[1]) + offset

    schools = []
    for school in city.inventory.schools:
        number = school_number(school.id)
        devices = []
        for device in school.devices:
            suffix = device.id.split("-", 2)[2]
            ids[device.id] = f"sim-{number:04d}-{suffix}"
            devices.append(dataclasses.replace(device, id=ids[device.id], school_id=f"sim-school-{number:04d}"))
        name = re.sub(r"No\. \d+$", f"No. {number}", school.name)
        schools.append(dataclasses.replace(school, id=f"sim-school-{number:04d}", name=name, devices=tuple(devices)))
    truth = {ids[old]: dataclasses.replace(t, device_id=ids[old]) for old, t in city.truth.items()}
    return dataclasses.replace(city, inventory=Inventory.build(schools), truth=truth)


def city_parts(devices: int, schools_per_fleet: int, seed: int, flap_period: tuple[float, float]) -> list[City]:
    """Enough schools of 35 devices for `devices`, split evenly into fleets of at most `schools_per_fleet`."""
    schools = -(-devices // DEVICES_PER_SCHOOL)
    fleets = -(-schools // schools_per_fleet)
    if fleets > MAX_FLEETS:
        raise ValueError(f"{devices} devices need more than {MAX_FLEETS} fleets; raise --schools-per-fleet")
    size = -(-schools // fleets)
    parts = []
    for index, first in enumerate(range(1, schools + 1, size)):
        count = min(size, schools - first + 1)
        base = f"10.{FIRST_FLEET_NETWORK + index}.0.0/16"
        part = generate_city(count, DEVICES_PER_SCHOOL, seed=seed + index, base=base, flap_period=flap_period)
        parts.append(renumbered(part, first))
    return parts


def whole_city(parts: Sequence[City]) -> City:
    """One City over every part: for the inventory file and the truth (not for a fleet)."""
    schools: list[School] = [s for part in parts for s in part.inventory.schools]
    truth: dict[str, DeviceTruth] = {k: v for part in parts for k, v in part.truth.items()}
    return dataclasses.replace(parts[0], inventory=Inventory.build(schools), truth=truth)


class SimulatedFleets:
    """Every part's Fleet, up together and down together; their responders' CPU."""

    def __init__(self, parts: Sequence[City]) -> None:
        self.fleets = [Fleet(part, mode="netns") for part in parts]

    def start(self) -> float:
        """Bring every fleet up; seconds taken."""
        began = time.monotonic()
        for fleet in self.fleets:
            fleet.start()
        return time.monotonic() - began

    def stop(self) -> None:
        """Remove every namespace, veth, route and responder; safe to repeat."""
        for fleet in self.fleets:
            with contextlib.suppress(Exception):
                fleet.stop()

    def cpu_seconds(self) -> float:
        """CPU of the responders and the `ip` processes they ran (reaped children)."""
        pids = [f.responder_pid for f in self.fleets if f.responder_pid is not None]
        return sum(process_cpu(pid, children=True) for pid in pids)


# --------------------------------------------------------------------------- processes


def process_cpu(pid: int, *, children: bool = False) -> float:
    """utime + stime of `pid` in seconds (plus its reaped children's with `children`)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / TICKS


def process_rss(pid: int) -> int:
    """Resident set size of `pid` in bytes."""
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_BYTES


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values) - idle) / TICKS, sum(values) / TICKS


def write_daemon_config(workdir: Path, shard: int = 0, shards: int = 1) -> Path:
    """Settings for one daemon: the generated inventory, default probes, JSON logs, an ephemeral port, its shard."""
    config: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "inventory": "inventory",
        "logging": {"format": "json", "level": "info"},
    }
    if shards > 1:
        config["shard"] = f"{shard}/{shards}"
    path = workdir / (f"telemetryd-{shard}.yaml" if shards > 1 else "telemetryd.yaml")
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def shard_city(city: City, shard: int, shards: int) -> City:
    """The part of `city` one shard monitors, chosen by the daemon's own `shard_of`."""
    if shards == 1:
        return city
    ids = {s.id for s in city.inventory.schools if shard_of(s.id, shards) == shard}
    return dataclasses.replace(city, inventory=city.inventory.restricted_to(ids))


class DaemonUnderTest:
    """`telemetryd run` in its own session, its JSON log to a file, its address from the `started` record."""

    def __init__(self, config: Path, log_path: Path) -> None:
        self.log_path = log_path
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "telemetryd", "run", "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.listen: str | None = None
        self.ready_after: float | None = None
        self.parsed_by = ""
        """Where the inventory was parsed at start-up (the `started` record's `parsed_by`)."""
        self.reloads: list[dict[str, Any]] = []
        """`reloaded` log records, as they come."""
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read_log, name="daemon-log", daemon=True)
        self._reader.start()

    def _read_log(self) -> None:
        assert self.proc.stdout is not None
        with self.log_path.open("wb") as log:
            for line in self.proc.stdout:
                log.write(line)
                if b'"reloaded"' in line:
                    with contextlib.suppress(ValueError):
                        record = json.loads(line)
                        if record.get("event") == "reloaded":
                            self.reloads.append(record)
                if self.listen is None and b'"started"' in line:
                    with contextlib.suppress(ValueError):
                        record = json.loads(line)
                        if record.get("event") == "started":
                            self.listen = str(record["listen"])
                            self.parsed_by = str(record.get("parsed_by", ""))
                            self.ready_after = time.monotonic() - self.started_at
                            self._ready.set()
        self._ready.set()

    def wait_started(self, timeout: float) -> str:
        """host:port of /metrics once the daemon logged `started`; RuntimeError if it exits or is late."""
        self._ready.wait(timeout)
        if self.listen is None:
            raise RuntimeError(f"the daemon did not start in {timeout:.0f} s; log tail:\n{self.log_tail()}")
        return self.listen

    def alive(self) -> bool:
        """Whether the daemon still runs."""
        return self.proc.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        """The end of the daemon's log, for an error message."""
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after 20 s; by PID, ours only. Returns the exit code."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=5)
        return self.proc.returncode


class RssSampler:
    """The daemon's RSS once a second, in a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            with contextlib.suppress(OSError):
                self.samples.append((time.monotonic(), process_rss(self.pid)))

    def between(self, start: float, end: float) -> list[int]:
        """Samples taken in [start, end]."""
        return [rss for at, rss in self.samples if start <= at <= end]

    def stop(self) -> None:
        """End the thread."""
        self._stop.set()
        self._thread.join(timeout=5)


# --------------------------------------------------------------------------- scrapes


@dataclass
class Scrape:
    """One GET /metrics: timings, sizes and the counters this bench reads."""

    kind: str
    """``gzip`` or ``raw``."""
    started: float
    seconds: float
    wire_bytes: int
    body_bytes: int
    series: int
    daemon_cpu_seconds: float
    """The daemon's CPU while the request ran (probing included)."""
    daemon_cpu_before: float
    daemon_cpu_after: float
    counters: dict[str, dict[tuple[tuple[str, str], ...], float]] = field(repr=False)
    wall_time: float = 0.0
    """Unix time the response headers arrived (≈ when the body was rendered)."""
    body: bytes = field(default=b"", repr=False)

    def total(self, name: str, **labels: str) -> float:
        """Sum of `name` over every label set that includes `labels`."""
        wanted = set(labels.items())
        return sum(v for key, v in self.counters.get(name, {}).items() if wanted <= set(key))

    def buckets(self, name: str) -> dict[float, float]:
        """Cumulative bucket counts of histogram `name` by upper bound."""
        out: dict[float, float] = {}
        for key, value in self.counters.get(name, {}).items():
            bound = dict(key).get("le")
            if bound is not None:
                out[math.inf if bound == "+Inf" else float(bound)] = value
        return out

    def summary(self) -> dict[str, Any]:
        """JSON-ready figures (no body)."""
        return {
            "kind": self.kind,
            "seconds": round(self.seconds, 4),
            "wire_bytes": self.wire_bytes,
            "body_bytes": self.body_bytes,
            "series": self.series,
            "daemon_cpu_seconds": round(self.daemon_cpu_seconds, 3),
            "probes_total": self.total("telemetryd_probes_total"),
            "slots_skipped_total": self.total("telemetryd_probe_slots_skipped_total"),
        }


def series_in(body: bytes) -> int:
    """Sample lines: lines that are not empty and do not start with #."""
    lines = body.count(b"\n") + (0 if body.endswith(b"\n") or not body else 1)
    comments = body.count(b"\n#") + body.startswith(b"#")
    return lines - comments - body.count(b"\n\n")


def counters_in(body: bytes) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """The scheduler's and loop's counters and histograms this bench reads, by name and label set."""
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for match in COUNTERS.finditer(body):
        name = match[1].decode()
        labels = tuple(sorted((k.decode(), v.decode()) for k, v in LABEL.findall(match[2] or b"")))
        out.setdefault(name, {})[labels] = float(match[3])
    return out


def scrape(address: str, *, gzipped: bool, daemon_pid: int, keep_body: bool = False) -> Scrape:
    """GET /metrics the way Prometheus does (or without gzip), timed from request to last byte."""
    host, _, port = address.rpartition(":")
    headers = {"Accept-Encoding": "gzip"} if gzipped else {}
    cpu_before = process_cpu(daemon_pid)
    started = time.monotonic()
    connection = http.client.HTTPConnection(host, int(port), timeout=SCRAPE_TIMEOUT)
    try:
        connection.request("GET", "/metrics", headers=headers)
        response = connection.getresponse()
        wall_time = time.time()
        wire = response.read()
    finally:
        connection.close()
    seconds = time.monotonic() - started
    cpu_after = process_cpu(daemon_pid)
    if response.status != 200:
        raise RuntimeError(f"GET /metrics answered {response.status}")
    compressed = response.getheader("Content-Encoding") == "gzip"
    body = zlib.decompress(wire, 16 + zlib.MAX_WBITS) if compressed else wire
    return Scrape(
        kind="gzip" if compressed else "raw",
        started=started,
        seconds=seconds,
        wire_bytes=len(wire),
        body_bytes=len(body),
        series=series_in(body),
        daemon_cpu_seconds=cpu_after - cpu_before,
        daemon_cpu_before=cpu_before,
        daemon_cpu_after=cpu_after,
        counters=counters_in(body),
        wall_time=wall_time,
        body=body if keep_body else b"",
    )


# --------------------------------------------------------------------------- figures from counters


def histogram_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus' histogram_quantile over cumulative buckets; the largest finite bound if beyond it."""
    if not buckets or buckets.get(math.inf, 0) <= 0:
        return None
    bounds = sorted(buckets)
    rank = q * buckets[math.inf]
    lower_bound, lower_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == math.inf:
                return bounds[-2] if len(bounds) > 1 else None
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return None


def bucket_delta(before: dict[float, float], after: dict[float, float]) -> dict[float, float]:
    """Per-bound increase of a cumulative histogram between two scrapes."""
    return {bound: after[bound] - before.get(bound, 0.0) for bound in after}


def above(buckets: dict[float, float], threshold: float) -> float:
    """Observations above `threshold` (a bucket bound) in cumulative buckets."""
    return buckets.get(math.inf, 0.0) - buckets.get(threshold, 0.0)


def phase_counters(first: Scrape, last: Scrape) -> dict[str, Any]:
    """What the scheduler and the loop did between two scrapes: probes, skipped slots, lag."""
    minutes = (last.started - first.started) / 60
    lag = bucket_delta(
        first.buckets("telemetryd_schedule_lag_seconds_bucket"), last.buckets("telemetryd_schedule_lag_seconds_bucket")
    )
    loop = bucket_delta(
        first.buckets("telemetryd_event_loop_lag_seconds_bucket"),
        last.buckets("telemetryd_event_loop_lag_seconds_bucket"),
    )
    skipped = last.total("telemetryd_probe_slots_skipped_total") - first.total("telemetryd_probe_slots_skipped_total")
    runs = last.counters.get("telemetryd_probes_total", {})
    before = first.counters.get("telemetryd_probes_total", {})
    by_result = {" ".join(v for _, v in key): value - before.get(key, 0.0) for key, value in sorted(runs.items())}
    p99 = histogram_quantile(0.99, lag)
    return {
        "minutes": round(minutes, 2),
        "probes": last.total("telemetryd_probes_total") - first.total("telemetryd_probes_total"),
        "icmp_probes": last.total("telemetryd_probes_total", probe="icmp")
        - first.total("telemetryd_probes_total", probe="icmp"),
        "slots_skipped": skipped,
        "slots_skipped_per_minute": round(skipped / minutes, 1) if minutes > 0 else None,
        "probes_by_protocol_and_result": by_result,
        "schedule_lag_p99_seconds": p99,
        "schedule_lag_p99_beyond_buckets": p99 is not None
        and lag.get(math.inf, 0) * 0.99 > max((v for b, v in lag.items() if b != math.inf), default=0.0),
        "loop_lag_observations": loop.get(math.inf, 0.0),
        "loop_lag_above_0_1s": above(loop, LAG_THRESHOLD),
        "loop_lag_above_1s": above(loop, 1.0),
    }


# --------------------------------------------------------------------------- truth


def exported_device_up(body: bytes) -> dict[str, float]:
    """`telemetryd_device_up` by device id, read straight from the text (the full parser is slow at 100k)."""
    return {m[1].decode(): float(m[2]) for m in DEVICE_UP.finditer(body)}


def device_truth(city: City, device: Device, at: float, margin: float) -> bool | None:
    """Whether every probe of `device` succeeds at `at`; None while one is uncertain (near a flap)."""
    try:
        answers = [city.expected(device.id, spec.name, at, margin=margin) for spec in device.probes]
    except ValueError:  # a probe the simulator has no truth for
        return None
    if any(answer is None for answer in answers):
        return None
    return all(answers)


def truth_agreement(city: City, body: bytes, at: float, margin: float) -> dict[str, Any]:
    """Devices whose exported `telemetryd_device_up` disagrees with the simulator at `at`."""
    exported = exported_device_up(body)
    judged = wrong = missing = 0
    examples: list[str] = []
    for device in city.inventory.devices_by_id.values():
        want = device_truth(city, device, at, margin)
        if want is None:
            continue
        judged += 1
        got = exported.get(device.id)
        if got is None:
            missing += 1
        if got != (1.0 if want else 0.0):
            wrong += 1
            if len(examples) < 5:
                examples.append(f"{device.id}: truth {'up' if want else 'down'}, exported {got}")
    return {
        "devices": city.inventory.device_count,
        "judged": judged,
        "disagreeing": wrong,
        "missing": missing,
        "disagreeing_share": wrong / judged if judged else None,
        "examples": examples,
        "margin_seconds": margin,
    }


def staleness_margin(settings: Settings) -> float:
    """How old the exported state may be: the slowest debounce (N results one interval apart) plus a timeout."""
    probes = settings.probes
    interval = max(probes.icmp.interval, probes.tcp.interval)
    timeout = max(probes.icmp.timeout + probes.icmp.packet_spacing * probes.icmp.packets, probes.tcp.timeout)
    debounce = max(settings.hysteresis.down_after, settings.hysteresis.up_after)
    return debounce * interval + timeout + 5.0


# --------------------------------------------------------------------------- fping baseline


def fping_baseline(hosts: Sequence[str], workdir: Path, settings: Settings) -> dict[str, Any]:
    """fping -C N over `hosts`, paced like the daemon; CPU of the child from wait4's rusage."""
    fping = shutil.which("fping")
    if fping is None:
        return {"error": "fping not installed"}
    icmp = settings.probes.icmp
    hosts_file = workdir / "icmp_hosts.txt"
    hosts_file.write_text("\n".join(hosts) + "\n")
    interval_ms = 1000 / icmp.max_packets_per_second
    command = [fping, "-q", "-C", str(icmp.packets), "-r", "0", "-t", f"{icmp.timeout * 1000:.0f}"]
    command += ["-p", f"{max(icmp.packet_spacing * 1000, 10):.0f}", "-i", f"{interval_ms:g}", "-f", str(hosts_file)]
    results = workdir / "fping.out"
    began = time.monotonic()
    with results.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - began
    cpu = usage.ru_utime + usage.ru_stime
    answered = sum(1 for line in results.read_text().splitlines() if ":" in line and fping_answered(line))
    return {
        "command": " ".join([*command[:-1], "HOSTS"]),
        "hosts": len(hosts),
        "answered": answered,
        "probes": len(hosts),
        "packets": len(hosts) * icmp.packets,
        "cpu_seconds": round(cpu, 3),
        "user_seconds": round(usage.ru_utime, 3),
        "system_seconds": round(usage.ru_stime, 3),
        "wall_seconds": round(wall, 2),
        "cpu_ms_per_1000_probes": round(cpu * 1e6 / len(hosts), 1),
    }


def fping_answered(line: str) -> bool:
    """An fping -C line ("host : 0.05 - 0.04") with at least one reply."""
    return any(value != "-" for value in line.rsplit(":", 1)[1].split())


# --------------------------------------------------------------------------- one run


@dataclass
class Window:
    """One measured stretch: the daemon's and the simulator's CPU, and the scrape that opened it."""

    kind: str
    """``quiet``, ``gzip`` or ``raw``."""
    started: float
    seconds: float
    daemon_cpu_seconds: float
    simulator_cpu_seconds: float
    machine_busy_seconds: float
    bench_cpu_seconds: float
    scrape: Scrape | None = None

    @property
    def other_cpu_seconds(self) -> float:
        """CPU of everything else on the machine (other jobs, kernel threads)."""
        return self.machine_busy_seconds - self.daemon_cpu_seconds - self.simulator_cpu_seconds - self.bench_cpu_seconds

    @property
    def daemon_cpu_percent(self) -> float:
        """Daemon CPU as % of one core."""
        return 100 * self.daemon_cpu_seconds / self.seconds

    def summary(self) -> dict[str, Any]:
        """JSON-ready figures."""
        return {
            "kind": self.kind,
            "seconds": round(self.seconds, 2),
            "daemon_cpu_percent": round(self.daemon_cpu_percent, 1),
            "simulator_cpu_percent": round(100 * self.simulator_cpu_seconds / self.seconds, 1),
            "machine_busy_percent_of_one_core": round(100 * self.machine_busy_seconds / self.seconds, 1),
            "bench_cpu_percent": round(100 * self.bench_cpu_seconds / self.seconds, 1),
            "others_cpu_percent": round(100 * self.other_cpu_seconds / self.seconds, 1),
            "scrape": self.scrape.summary() if self.scrape else None,
        }


class Meter:
    """Reads the daemon's, the simulator's and the machine's CPU for windows."""

    def __init__(self, daemon_pid: int, fleets: SimulatedFleets) -> None:
        self.daemon_pid = daemon_pid
        self.fleets = fleets

    def reading(self) -> tuple[float, ...]:
        """(monotonic time, daemon CPU, simulator CPU, machine busy, this bench's CPU) now."""
        own = resource.getrusage(resource.RUSAGE_SELF)
        return (
            time.monotonic(),
            process_cpu(self.daemon_pid),
            self.fleets.cpu_seconds(),
            machine_busy()[0],
            own.ru_utime + own.ru_stime,
        )

    def window(self, kind: str, start: tuple[float, ...], scrape: Scrape | None = None) -> Window:
        """The window from `start` to now."""
        end = self.reading()
        delta = [b - a for a, b in zip(start, end, strict=True)]
        return Window(kind, start[0], delta[0], delta[1], delta[2], delta[3], delta[4], scrape)


def sleep_until(deadline: float, daemon: DaemonUnderTest) -> None:
    """Sleep to `deadline`, failing early if the daemon dies."""
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, 1.0))
        if not daemon.alive():
            raise RuntimeError(f"the daemon exited ({daemon.proc.returncode}); log tail:\n{daemon.log_tail()}")


def wait_first_probe(address: str, daemon: DaemonUnderTest, timeout: float) -> tuple[float, Scrape]:
    """Scrape (gzip) about once a second until `telemetryd_probes_total` > 0; seconds from process start."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = scrape(address, gzipped=True, daemon_pid=daemon.proc.pid)
        if found.total("telemetryd_probes_total") > 0:
            return found.started + found.seconds - daemon.started_at, found
        sleep_until(time.monotonic() + 1.0, daemon)
    raise RuntimeError(f"no probe result within {timeout:.0f} s")


def measure_windows(
    address: str, daemon: DaemonUnderTest, meter: Meter, quiet: int, scraped: int
) -> tuple[list[Window], list[Scrape]]:
    """Quiet windows after an opening scrape, then scraped windows alternating gzip and raw, then a closing scrape."""
    pid = daemon.proc.pid
    opening = scrape(address, gzipped=True, daemon_pid=pid)
    sleep_until(time.monotonic() + 5.0, daemon)  # let the opening render's garbage go
    windows: list[Window] = []
    for _ in range(quiet):
        start = meter.reading()
        sleep_until(start[0] + WINDOW_SECONDS, daemon)
        windows.append(meter.window("quiet", start))
    scrapes = [opening]
    for index in range(scraped):
        start = meter.reading()
        done = scrape(address, gzipped=index % 2 == 0, daemon_pid=pid)
        scrapes.append(done)
        sleep_until(start[0] + WINDOW_SECONDS, daemon)
        windows.append(meter.window(done.kind, start, done))
    scrapes.append(scrape(address, gzipped=True, daemon_pid=pid, keep_body=True))
    return windows, scrapes


def measure_reload(address: str, daemon: DaemonUnderTest, city: City, inventory: Path) -> dict[str, Any]:
    """SIGHUP with one school fewer in the inventory: the swap's own time and what the loop saw around it.

    The window runs from a scrape before the signal to one 30 s after the `reloaded` record,
    so the parse and planning thread (seconds at 100k) and the swap both fall inside it.
    """
    smaller = dataclasses.replace(city, inventory=Inventory.build(city.inventory.schools[:-1]))
    smaller.write_inventory(inventory)
    pid = daemon.proc.pid
    before = scrape(address, gzipped=True, daemon_pid=pid)
    seen = len(daemon.reloads)
    print(f"[{city.inventory.device_count}] SIGHUP with {smaller.inventory.device_count} devices", flush=True)
    signalled = time.monotonic()
    os.kill(pid, signal.SIGHUP)
    deadline = signalled + 300
    while len(daemon.reloads) == seen:
        if time.monotonic() > deadline:
            raise RuntimeError(f"no `reloaded` within 300 s of SIGHUP; log tail:\n{daemon.log_tail()}")
        sleep_until(time.monotonic() + 0.2, daemon)
    reloaded_after = time.monotonic() - signalled
    record = daemon.reloads[seen]
    sleep_until(time.monotonic() + WINDOW_SECONDS, daemon)
    after = scrape(address, gzipped=True, daemon_pid=pid)
    phase = phase_counters(before, after)
    loop = bucket_delta(
        before.buckets("telemetryd_event_loop_lag_seconds_bucket"),
        after.buckets("telemetryd_event_loop_lag_seconds_bucket"),
    )
    worst = min((bound for bound, count in loop.items() if count >= loop.get(math.inf, 0.0)), default=None)
    return {
        "devices_after": record.get("devices"),
        "swap_seconds": record.get("swap_seconds"),
        "parsed_by": record.get("parsed_by"),
        "signal_to_reloaded_seconds": round(reloaded_after, 2),
        "loop_lag_worst_bucket_seconds": worst,
        "window": phase,
    }


def latency_figures(scrapes: Sequence[Scrape], kind: str) -> dict[str, Any]:
    """p50 and max of GET /metrics of one encoding, with its sizes."""
    picked = [s for s in scrapes if s.kind == kind]
    if not picked:
        return {}
    return {
        "count": len(picked),
        "p50_seconds": statistics.median(s.seconds for s in picked),
        "max_seconds": max(s.seconds for s in picked),
        "wire_bytes": statistics.median(s.wire_bytes for s in picked),
        "body_bytes": statistics.median(s.body_bytes for s in picked),
        "series": max(s.series for s in picked),
        "daemon_cpu_seconds_p50": statistics.median(s.daemon_cpu_seconds for s in picked),
    }


def median_of(windows: Sequence[Window], kind: str, attribute: str) -> float | None:
    """Median of a Window figure over the windows of `kind`."""
    values = [getattr(w, attribute) for w in windows if w.kind == kind]
    return statistics.median(values) if values else None


@dataclass
class Lane:
    """One daemon under test and what it measured (with `--shards N`, one lane per shard, side by side)."""

    daemon: DaemonUnderTest
    city: City
    """The schools this daemon monitors: the truth it is judged against."""
    shard: str = ""
    startup: float = 0.0
    windows: list[Window] = field(default_factory=list)
    scrapes: list[Scrape] = field(default_factory=list)
    span: Window | None = None
    rss_values: list[int] = field(default_factory=list)
    truth: dict[str, Any] = field(default_factory=dict)
    address: str = ""

    def measure(self, fleets: SimulatedFleets, settings: Settings, args: argparse.Namespace) -> None:
        """Start-up, settling, the quiet and scraped windows, and the truth at the closing scrape."""
        label = f"[{self.city.inventory.device_count}{f' shard {self.shard}' if self.shard else ''}]"
        daemon = self.daemon
        self.address = daemon.wait_started(timeout=max(120.0, self.city.inventory.device_count / 400))
        rss = RssSampler(daemon.proc.pid)
        try:
            self.startup, _ = wait_first_probe(self.address, daemon, timeout=120.0)
            print(f"{label} ready after {daemon.ready_after:.1f} s, first result by {self.startup:.1f} s", flush=True)
            sleep_until(daemon.started_at + self.startup + args.settle, daemon)
            meter = Meter(daemon.proc.pid, fleets)
            windows_total = max(3, round(args.minutes * 60 / WINDOW_SECONDS))
            quiet = max(1, round(windows_total * args.quiet_share))
            print(f"{label} measuring {quiet} quiet and {windows_total - quiet} scraped windows of 30 s", flush=True)
            span_start = meter.reading()
            self.windows, self.scrapes = measure_windows(self.address, daemon, meter, quiet, windows_total - quiet)
            self.span = meter.window("span", span_start)
            closing = self.scrapes[-1]
            self.truth = truth_agreement(self.city, closing.body, closing.wall_time, staleness_margin(settings))
            self.rss_values = rss.between(span_start[0], span_start[0] + self.span.seconds)
        finally:
            rss.stop()


def run_one(devices: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Fleet up, daemon(s) up, measure, fping, down; every figure of one N, one entry per daemon."""
    settings = Settings()
    parts = city_parts(devices, args.schools_per_fleet, args.seed, args.flap_period)
    city = whole_city(parts)
    fleets = SimulatedFleets(parts)
    shards = args.shards
    lanes: list[Lane] = []
    reload = None
    exit_codes: list[int | None] = []
    with tempfile.TemporaryDirectory(prefix="telemetryd-bench-daemon-") as tmp:
        workdir = Path(tmp)
        city.write_inventory(workdir / "inventory")
        configs = [write_daemon_config(workdir, k, shards) for k in range(shards)]
        try:
            print(
                f"[{devices}] bringing up {city.inventory.device_count} devices in {len(parts)} fleet(s) ...",
                flush=True,
            )
            fleet_seconds = fleets.start()
            sim_idle = idle_simulator_cpu(fleets)
            print(f"[{devices}] fleet up in {fleet_seconds:.1f} s; starting {shards} daemon(s)", flush=True)
            for k, config in enumerate(configs):
                daemon = DaemonUnderTest(config, workdir / f"daemon-{k}.log")
                lanes.append(Lane(daemon, shard_city(city, k, shards), f"{k}/{shards}" if shards > 1 else ""))
            with ThreadPoolExecutor(len(lanes)) as pool:  # side by side, each scraped as its own target
                for done in [pool.submit(lane.measure, fleets, settings, args) for lane in lanes]:
                    done.result()
            print(f"[{devices}] fping over {city.inventory.device_count} ICMP hosts ...", flush=True)
            fping = fping_baseline([d.host for d in city.inventory.devices_by_id.values()], workdir, settings)
            if args.reload and shards == 1:
                reload = measure_reload(lanes[0].address, lanes[0].daemon, city, workdir / "inventory")
        finally:
            exit_codes = [lane.daemon.stop() for lane in lanes]
            fleets.stop()
    return [
        figures(
            devices=lane.city.inventory.device_count,
            shard=lane.shard,
            fleets=len(parts),
            fleet_seconds=fleet_seconds,
            sim_idle=sim_idle,
            ready_after=lane.daemon.ready_after,
            parsed_by=lane.daemon.parsed_by,
            startup=lane.startup,
            windows=lane.windows,
            scrapes=lane.scrapes,
            span=lane.span,
            rss_values=lane.rss_values,
            truth=lane.truth,
            fping=fping,
            reload=reload,
            exit_code=code,
        )
        for lane, code in zip(lanes, exit_codes, strict=True)
    ]


def idle_simulator_cpu(fleets: SimulatedFleets, seconds: float = 10.0) -> float:
    """The fleet's own CPU % of a core with nobody probing it (the flapping alone)."""
    before = fleets.cpu_seconds()
    time.sleep(seconds)
    return 100 * (fleets.cpu_seconds() - before) / seconds


def figures(
    *,
    devices: int,
    shard: str,
    fleets: int,
    fleet_seconds: float,
    sim_idle: float,
    ready_after: float | None,
    parsed_by: str,
    startup: float,
    windows: list[Window],
    scrapes: list[Scrape],
    span: Window | None,
    rss_values: list[int],
    truth: dict[str, Any],
    fping: dict[str, Any],
    reload: dict[str, Any] | None,
    exit_code: int | None,
) -> dict[str, Any]:
    """Everything measured for one N, JSON-ready."""
    opening, quiet_end = scrapes[0], scrapes[1]
    quiet = phase_counters(opening, quiet_end)
    scraped = phase_counters(quiet_end, scrapes[-1])
    # From the end of the opening scrape to the start of the next: probing only.
    quiet_cpu = quiet_end.daemon_cpu_before - opening.daemon_cpu_after
    daemon_per_1000 = 1e6 * quiet_cpu / quiet["probes"] if quiet["probes"] else None
    assert span is not None, "a lane that measured has its span"
    return {
        "devices": devices,
        "shard": shard,
        "fleets": fleets,
        "fleet_start_seconds": round(fleet_seconds, 1),
        "ready_seconds": ready_after,
        "parsed_by": parsed_by,
        "startup_seconds": round(startup, 2),
        "cpu_percent": {
            "quiet_median": median_of(windows, "quiet", "daemon_cpu_percent"),
            "gzip_scraped_median": median_of(windows, "gzip", "daemon_cpu_percent"),
            "raw_scraped_median": median_of(windows, "raw", "daemon_cpu_percent"),
            "whole_span": span.daemon_cpu_percent,
        },
        "simulator_cpu_percent": {
            "idle_fleet": round(sim_idle, 1),
            "whole_span": round(100 * span.simulator_cpu_seconds / span.seconds, 1),
        },
        "machine_busy_percent_of_one_core": round(100 * span.machine_busy_seconds / span.seconds, 1),
        "others_cpu_percent": round(100 * span.other_cpu_seconds / span.seconds, 1),
        "rss_bytes": {
            "median": statistics.median(rss_values) if rss_values else None,
            "max": max(rss_values) if rss_values else None,
        },
        "metrics_gzip": latency_figures(scrapes, "gzip"),
        "metrics_raw": latency_figures(scrapes, "raw"),
        "quiet_phase": quiet,
        "scraped_phase": scraped,
        "daemon_cpu_ms_per_1000_probes_quiet": round(daemon_per_1000, 1) if daemon_per_1000 else None,
        "fping": fping,
        "truth": truth,
        "reload": reload,
        "daemon_exit_code": exit_code,
        "windows": [w.summary() for w in windows],
        "scrapes": [s.summary() for s in scrapes],
    }


# --------------------------------------------------------------------------- the table


def _ms(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds * 1000:,.0f} ms" if seconds < 10 else f"{seconds:,.1f} s"


def _mb(size: float | None) -> str:
    return "—" if size is None else f"{size / 1e6:,.1f} MB"


def _lag(phase: dict[str, Any]) -> str:
    beyond = phase.get("schedule_lag_p99_beyond_buckets")
    return ("> " if beyond else "") + _ms(phase["schedule_lag_p99_seconds"])


def _rate(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f} %"


def table(results: Sequence[dict[str, Any]]) -> str:
    """Two Markdown tables, one row per N: the daemon, then its probes against fping and the truth."""
    head = (
        "| devices | start-up: probing / first results scraped "
        "| CPU quiet | CPU scraped | RSS median / max | GET raw p50 / max | GET gzip p50 / max "
        "| body raw / gzip | series | loop lag > 0.1 s quiet / scraped | slots skipped/min quiet / scraped "
        "| schedule lag p99 quiet / scraped |\n"
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n"
    )
    results = [r for r in results if "error" not in r]
    rows = [daemon_row(r) for r in results]
    second = (
        "\n| devices | fleets | simulator CPU (idle fleet / run) | other load on the machine "
        "| daemon CPU per 1,000 probes (quiet) | fping CPU per 1,000 ICMP probes | fping answered "
        "| devices judged | disagree with truth |\n"
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n"
    )
    rows2 = [baseline_row(r) for r in results]
    reloads = [reload_row(r) for r in results if r.get("reload")]
    third = (
        "\n| devices | SIGHUP to reloaded | swap on the loop | worst loop lag (bucket) "
        "| slots skipped in the 30 s after | schedule lag p99 |\n| ---: | ---: | ---: | ---: | ---: | ---: |\n"
    )
    together = shards_together(results)
    return head + "".join(rows) + together + second + "".join(rows2) + (third + "".join(reloads) if reloads else "")


def reload_row(r: dict[str, Any]) -> str:
    """One N's reload: the daemon's own swap time and what the loop and the schedule saw around it."""
    reload = r["reload"]
    worst = reload["loop_lag_worst_bucket_seconds"]
    return (
        f"| {r['devices']:,} | {reload['signal_to_reloaded_seconds']:.1f} s | {_ms(reload['swap_seconds'])} "
        f"| ≤ {_ms(worst)} | {reload['window']['slots_skipped']:.0f} | {_lag(reload['window'])} |\n"
    )


def _who(r: dict[str, Any]) -> str:
    return f"{r['devices']:,}" + (f" (shard {r['shard']})" if r.get("shard") else "")


def shards_together(results: Sequence[dict[str, Any]]) -> str:
    """What the shards of one run add up to: the machine's view of N daemons side by side."""
    if len(results) < 2 or not all(r.get("shard") for r in results):
        return ""
    quiet = sum(r["cpu_percent"]["quiet_median"] or 0.0 for r in results)
    scraped = sum(r["cpu_percent"]["gzip_scraped_median"] or 0.0 for r in results)
    rss = sum(r["rss_bytes"]["median"] or 0 for r in results)
    skipped = sum(r[p]["slots_skipped_per_minute"] for r in results for p in ("quiet_phase", "scraped_phase"))
    judged = sum(r["truth"]["judged"] for r in results)
    wrong = sum(r["truth"]["disagreeing"] for r in results)
    lag = max(
        max(r["quiet_phase"]["schedule_lag_p99_seconds"], r["scraped_phase"]["schedule_lag_p99_seconds"])
        for r in results
    )
    return (
        f"\n{len(results)} shards together: {sum(r['devices'] for r in results):,} devices, CPU quiet {quiet:.0f} % / "
        f"scraped {scraped:.0f} % of one core, RSS {_mb(rss)}, slots skipped {skipped:,.0f}/min, "
        f"schedule lag p99 at most {_ms(lag)}, {wrong:,} of {judged:,} judged devices disagree with the truth; "
        f"machine busy {max(r['machine_busy_percent_of_one_core'] for r in results):.0f} % of one core.\n"
    )


def daemon_row(r: dict[str, Any]) -> str:
    """One N's daemon figures."""
    raw, gz, q, s = r["metrics_raw"], r["metrics_gzip"], r["quiet_phase"], r["scraped_phase"]
    cpu, rss = r["cpu_percent"], r["rss_bytes"]
    return (
        f"| {_who(r)} | {r['ready_seconds'] or 0:.1f} s / {r['startup_seconds']:.1f} s "
        f"| {_pct(cpu['quiet_median'])} "
        f"| {_pct(cpu['gzip_scraped_median'])} | {_mb(rss['median'])} / {_mb(rss['max'])} "
        f"| {_ms(raw.get('p50_seconds'))} / {_ms(raw.get('max_seconds'))} "
        f"| {_ms(gz.get('p50_seconds'))} / {_ms(gz.get('max_seconds'))} "
        f"| {_mb(raw.get('body_bytes'))} / {_mb(gz.get('wire_bytes'))} | {gz.get('series', 0):,} "
        f"| {q['loop_lag_above_0_1s']:.0f} / {s['loop_lag_above_0_1s']:.0f} "
        f"| {_rate(q['slots_skipped_per_minute'])} / {_rate(s['slots_skipped_per_minute'])} "
        f"| {_lag(q)} / {_lag(s)} |\n"
    )


def baseline_row(r: dict[str, Any]) -> str:
    """One N's per-probe baseline, simulator load and truth."""
    fping, truth, sim = r["fping"], r["truth"], r["simulator_cpu_percent"]
    share = truth["disagreeing_share"]
    return (
        f"| {_who(r)} | {r['fleets']} | {sim['idle_fleet']:.0f} % / {sim['whole_span']:.0f} % "
        f"| {r['others_cpu_percent']:.0f} % of a core "
        f"| {r['daemon_cpu_ms_per_1000_probes_quiet'] or '—'} ms | {fping.get('cpu_ms_per_1000_probes', '—')} ms "
        f"| {fping.get('answered', '—'):,} / {fping.get('hosts', 0):,} | {truth['judged']:,} "
        f"| {truth['disagreeing']:,} ({'—' if share is None else f'{100 * share:.2f} %'}) |\n"
    )


# --------------------------------------------------------------------------- main


def flap_period(text: str) -> tuple[float, float]:
    """``LOW,HIGH`` seconds."""
    low, _, high = text.partition(",")
    return float(low), float(high or low)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, action="append", help="devices (repeatable; default 10000 30000 100000)")
    parser.add_argument("--minutes", type=float, default=5.0, help="measured minutes per N after settling (default 5)")
    parser.add_argument("--quiet-share", type=float, default=1 / 3, help="share of the windows without scrapes")
    parser.add_argument("--settle", type=float, default=60.0, help="seconds after the first probe before measuring")
    parser.add_argument(
        "--schools-per-fleet", type=int, default=300, help="schools per simulator process (open-files limit)"
    )
    parser.add_argument(
        "--flap-period",
        type=flap_period,
        default=(300.0, 900.0),
        help="LOW,HIGH seconds of a flapping device's cycle (default 300,900; the demo's is 20,60)",
    )
    parser.add_argument(
        "--reload", action="store_true", help="at the end, SIGHUP with one school fewer and measure the swap"
    )
    parser.add_argument(
        "--shards",
        type=int,
        default=1,
        help="N daemons side by side on the same fleet, each `shard: k/N` and scraped on its own (default 1)",
    )
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--json", type=Path, default=None, help="write the raw figures here")
    args = parser.parse_args(argv)
    args.devices = args.devices or [10_000, 30_000, 100_000]
    return args


def save(path: Path | None, results: Sequence[dict[str, Any]]) -> None:
    """Write the raw figures so far (after every N, so a later failure keeps the earlier ones)."""
    if path is not None and results:
        path.write_text(json.dumps({"runs": list(results)}, indent=2, default=str))


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """SIGTERM and SIGHUP stop the run like Ctrl-C does, through every `finally`."""

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        raise Interrupted(signal.Signals(signum).name)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Run every N, print the tables, write the JSON."""
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("needs root: namespace fleets and the daemon's raw ICMP socket", file=sys.stderr)
        return 2
    results: list[dict[str, Any]] = []
    try:
        with interruptible():
            for devices in args.devices:
                try:
                    results.extend(run_one(devices, args))
                except RuntimeError as exc:  # the daemon died or fell too far behind: a finding, go on
                    print(f"[{devices}] failed: {exc}", file=sys.stderr)
                    results.append({"devices": devices, "error": str(exc)})
                    continue
                finally:
                    save(args.json, results)
                print(table(results[-args.shards :]), flush=True)
    except (KeyboardInterrupt, Interrupted):
        print("interrupted; everything started was stopped and removed", file=sys.stderr)
    if results:
        print(f"\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, default probe settings, one scrape per 30 s:\n")
        print(table(results))
    failed = [r for r in results if "error" in r]
    for run in failed:
        print(f"{run['devices']} devices: {run['error']}")
    return 0 if len(results) == len(args.devices) and not failed else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Prometheus metrics and the HTTP endpoints.

Metrics come from one custom Collector that reads State at scrape time: no labelled
Gauge children per device, so a device removed by a reload vanishes from the next
scrape without stale series. Label values are bounded: ids, kinds, probe names,
segments; never an error string or a timestamp.
"""

from __future__ import annotations

import asyncio
import html
import platform
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from telemetryd import __version__
from telemetryd.alarm.receiver import account_key
from telemetryd.cameras.verdict import ChannelView, SchoolCameras, Verdict, attribute, reachability
from telemetryd.histogram import Histogram
from telemetryd.link.compliance import Compliance, SchoolLink
from telemetryd.model import DeviceKind, Direction, Health
from telemetryd.probes.isapi import AuthState, IsapiHealth

if TYPE_CHECKING:
    from telemetryd.daemon import Daemon

MBIT_BYTES = 1_000_000 / 8
"""Contracts are written in Mbit/s; metrics use bytes per second (base units)."""

DEVICE_LABELS = ["school", "device", "kind"]


def _histogram(name: str, doc: str, histogram: Histogram) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, doc, buckets=histogram.cumulative(), sum_value=histogram.total)


class StateCollector(Collector):
    """Reads the daemon's State and scheduler stats on every scrape."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def collect(self) -> Iterator[Metric]:
        """Yield every telemetryd_* metric family."""
        yield from self._devices()
        yield from self._schools()
        yield from self._links()
        yield from self._device_health()
        yield from self._daemon()
        yield from self._history()

    def _devices(self) -> Iterator[Metric]:
        state = self.daemon.state
        info = InfoMetricFamily("telemetryd_device", "Device inventory facts.", labels=[*DEVICE_LABELS, "host"])
        up = GaugeMetricFamily(
            "telemetryd_device_up",
            "1 when every probe of the device is up, 0 when one is down.",
            labels=DEVICE_LABELS,
        )
        flaps = CounterMetricFamily(
            "telemetryd_device_flaps",
            "Up/down transitions of the device since the daemon started.",
            labels=DEVICE_LABELS,
        )
        changed = GaugeMetricFamily(
            "telemetryd_device_last_change_timestamp_seconds",
            "When the device last changed state (Unix time).",
            labels=DEVICE_LABELS,
        )
        probe_labels = [*DEVICE_LABELS, "probe"]
        probe_up = GaugeMetricFamily(
            "telemetryd_probe_up",
            "1 when the probe's debounced state is up, 0 when down.",
            labels=probe_labels,
        )
        duration = GaugeMetricFamily(
            "telemetryd_probe_duration_seconds", "Duration of the probe's last run.", labels=probe_labels
        )
        rtt = GaugeMetricFamily(
            "telemetryd_probe_rtt_seconds",
            "Round-trip time of the last successful run: mean ICMP echo RTT, or TCP connect time.",
            labels=probe_labels,
        )
        loss = GaugeMetricFamily(
            "telemetryd_probe_loss_ratio",
            "Share of echo requests unanswered in the last ICMP run (0-1).",
            labels=probe_labels,
        )
        for device_state in state.devices.values():
            device = device_state.device
            labels = [device.school_id, device.id, device.kind.value]
            info.add_metric([*labels, device.host], {})
            if device_state.health is not Health.UNKNOWN:
                up.add_metric(labels, 1.0 if device_state.health is Health.UP else 0.0)
            flaps.add_metric(labels, device_state.flaps)
            if device_state.last_change is not None:
                changed.add_metric(labels, device_state.last_change)
            for name, probe in device_state.probes.items():
                result = probe.last_result
                if result is None:
                    continue
                plabels = [*labels, name]
                if probe.health is not Health.UNKNOWN:
                    probe_up.add_metric(plabels, 1.0 if probe.health is Health.UP else 0.0)
                duration.add_metric(plabels, result.duration)
                if result.ok and result.rtt is not None:
                    rtt.add_metric(plabels, result.rtt)
                if result.loss is not None:
                    loss.add_metric(plabels, result.loss)
        yield from (info, up, flaps, changed, probe_up, duration, rtt, loss)

    def _schools(self) -> Iterator[Metric]:
        state = self.daemon.state
        info = InfoMetricFamily("telemetryd_school", "School inventory facts.", labels=["school", "name", "district"])
        latitude = GaugeMetricFamily("telemetryd_school_latitude_degrees", "School latitude.", labels=["school"])
        longitude = GaugeMetricFamily("telemetryd_school_longitude_degrees", "School longitude.", labels=["school"])
        contract = GaugeMetricFamily(
            "telemetryd_school_contract_bytes_per_second",
            "Contracted link speed of the school (Mbit/s x 125000).",
            labels=["school"],
        )
        segment_contract = GaugeMetricFamily(
            "telemetryd_segment_contract_bytes_per_second",
            "Contracted allocation of one segment of the school's link (alarm, video, education).",
            labels=["school", "segment"],
        )
        kind_labels = ["school", "kind"]
        total = GaugeMetricFamily("telemetryd_school_devices", "Devices of a kind at the school.", labels=kind_labels)
        up = GaugeMetricFamily("telemetryd_school_devices_up", "Devices of a kind that are up.", labels=kind_labels)
        down = GaugeMetricFamily(
            "telemetryd_school_devices_down", "Devices of a kind that are down.", labels=kind_labels
        )
        for summary in state.school_summaries():
            school = summary.school
            info.add_metric([school.id, school.name, school.district], {})
            if school.latitude is not None and school.longitude is not None:
                latitude.add_metric([school.id], school.latitude)
                longitude.add_metric([school.id], school.longitude)
            contract.add_metric([school.id], school.contract.total_mbps * MBIT_BYTES)
            for segment, mbps in school.contract.segments_mbps:
                segment_contract.add_metric([school.id, segment.value], mbps * MBIT_BYTES)
            for kind in DeviceKind:
                count = summary.count(kind)
                if count.total:
                    total.add_metric([school.id, kind.value], count.total)
                    up.add_metric([school.id, kind.value], count.up)
                    down.add_metric([school.id, kind.value], count.down)
        yield from (info, latitude, longitude, contract, segment_contract, total, up, down)

    def _links(self) -> Iterator[Metric]:
        links = self.daemon.links
        direction_labels = ["school", "direction"]
        speed = GaugeMetricFamily(
            "telemetryd_speedtest_bytes_per_second",
            "Steady goodput of the last successful speed test (x8 for bit/s).",
            labels=direction_labels,
        )
        ratio = GaugeMetricFamily(
            "telemetryd_speedtest_contract_ratio",
            "Last measured speed divided by the contracted total (1 = exactly the contract).",
            labels=direction_labels,
        )
        last_ok = GaugeMetricFamily(
            "telemetryd_speedtest_last_success_timestamp_seconds",
            "When the school last completed a speed test in both directions.",
            labels=["school"],
        )
        test_up = GaugeMetricFamily(
            "telemetryd_speedtest_up",
            "1 when the school's last speed test completed, 0 when it failed.",
            labels=direction_labels,
        )
        spent = CounterMetricFamily(
            "telemetryd_speedtest_transferred_bytes",
            "Payload bytes moved by speed tests (what the tests cost the link).",
            labels=direction_labels,
        )
        runs = CounterMetricFamily(
            "telemetryd_speedtests", "Speed tests run, by result (ok, failed).", labels=["school", "result"]
        )
        below = GaugeMetricFamily(
            "telemetryd_school_below_contract",
            "1 when two tests in a row (a test and its confirmation) came in under the contract threshold.",
            labels=["school"],
        )
        compliance = GaugeMetricFamily(
            "telemetryd_school_link_compliance",
            "1 for the school's current verdict: unknown, compliant, suspect (re-test due) or below_contract.",
            labels=["school", "verdict"],
        )
        snmp_up = GaugeMetricFamily(
            "telemetryd_snmp_up", "1 when the router's last SNMP poll answered.", labels=["school", "device"]
        )
        seg = ["school", "device", "segment"]
        octets = CounterMetricFamily(
            "telemetryd_interface_octets",
            "Raw interface octet counter of the router (ifHCIn/OutOctets); rate() it in PromQL.",
            labels=[*seg, "direction"],
        )
        errors = CounterMetricFamily(
            "telemetryd_interface_errors", "Raw ifIn/OutErrors of the interface.", labels=[*seg, "direction"]
        )
        discards = CounterMetricFamily(
            "telemetryd_interface_discards", "Raw ifIn/OutDiscards of the interface.", labels=[*seg, "direction"]
        )
        oper = GaugeMetricFamily("telemetryd_interface_up", "ifOperStatus is up (1) or not (0).", labels=seg)
        if_speed = GaugeMetricFamily(
            "telemetryd_interface_speed_bytes_per_second", "ifHighSpeed of the interface.", labels=seg
        )
        uptime = GaugeMetricFamily(
            "telemetryd_router_uptime_seconds", "sysUpTime of the router.", labels=["school", "device"]
        )
        throughput = GaugeMetricFamily(
            "telemetryd_segment_throughput_bytes_per_second",
            "Average rate over the last SNMP interval; direction in = from the school's LAN, out = towards it.",
            labels=["school", "segment", "direction"],
        )
        utilisation = GaugeMetricFamily(
            "telemetryd_segment_utilisation_ratio",
            "max(in, out) rate over the segment's allocation (wan: over the contracted total).",
            labels=["school", "segment"],
        )
        saturated = GaugeMetricFamily(
            "telemetryd_segment_saturated",
            "1 when the segment sat at >= 95% of its allocation for 3 polls in a row.",
            labels=["school", "segment"],
        )
        for link in links.schools.values():
            school = link.school_id
            for direction, result in link.last_good.items():
                speed.add_metric([school, direction.value], result.mbps * MBIT_BYTES)
                measured = link.ratio(direction)
                if measured is not None:
                    ratio.add_metric([school, direction.value], measured)
            for direction, result in link.last.items():
                test_up.add_metric([school, direction.value], 1.0 if result.ok else 0.0)
                spent.add_metric([school, direction.value], link.bytes_used[direction])
            if link.last:
                for result_name, count in link.tests.items():
                    runs.add_metric([school, result_name], count)
            if link.last_success_at is not None:
                last_ok.add_metric([school], link.last_success_at)
            below.add_metric([school], 1.0 if link.compliance is Compliance.BELOW else 0.0)
            for verdict in Compliance:
                compliance.add_metric([school, verdict.value], 1.0 if link.compliance is verdict else 0.0)
            if link.router_id is None or link.snmp_ok is None:
                continue
            router = link.router_id
            snmp_up.add_metric([school, router], 1.0 if link.snmp_ok else 0.0)
            sample = link.snmp_sample
            if sample is not None:
                if sample.uptime_ticks is not None:
                    uptime.add_metric([school, router], sample.uptime_ticks / 100)
                for role, counters in sample.interfaces:
                    labels = [school, router, role]
                    octets.add_metric([*labels, "in"], counters.in_octets)
                    octets.add_metric([*labels, "out"], counters.out_octets)
                    for family, pair in (
                        (errors, (counters.in_errors, counters.out_errors)),
                        (discards, (counters.in_discards, counters.out_discards)),
                    ):
                        for side, value in zip(("in", "out"), pair, strict=True):
                            if value is not None:
                                family.add_metric([*labels, side], value)
                    if counters.oper_up is not None:
                        oper.add_metric(labels, 1.0 if counters.oper_up else 0.0)
                    if counters.speed_mbps:
                        if_speed.add_metric(labels, counters.speed_mbps * MBIT_BYTES)
            for role, view in link.segments.items():
                if view.rate is not None:
                    throughput.add_metric([school, role, "in"], view.rate.in_bps / 8)
                    throughput.add_metric([school, role, "out"], view.rate.out_bps / 8)
                if view.utilisation is not None:
                    utilisation.add_metric([school, role], view.utilisation)
                saturated.add_metric([school, role], 1.0 if view.saturated else 0.0)
        yield from (speed, ratio, last_ok, test_up, spent, runs, below, compliance)
        yield from (snmp_up, uptime, octets, errors, discards, oper, if_speed, throughput, utilisation, saturated)
        monitor = self.daemon.link_monitor
        polls = CounterMetricFamily("telemetryd_snmp_polls", "SNMP polls of routers, by result.", labels=["result"])
        polls.add_metric(["ok"], monitor.stats.snmp_polls - monitor.stats.snmp_failures)
        polls.add_metric(["failed"], monitor.stats.snmp_failures)
        running = GaugeMetricFamily(
            "telemetryd_speedtests_running", "Speed tests moving bytes now.", value=len(monitor.running_tests)
        )
        reserved = GaugeMetricFamily(
            "telemetryd_speedtest_budget_reserved_bytes_per_second",
            "NOC uplink capacity reserved by running speed tests.",
            value=monitor.budget.reserved_mbps * MBIT_BYTES,
        )
        capacity = GaugeMetricFamily(
            "telemetryd_speedtest_budget_bytes_per_second",
            "NOC uplink capacity speed tests may use at once (speedtest.central_capacity_mbps).",
            value=monitor.budget.capacity_mbps * MBIT_BYTES,
        )
        deferred = CounterMetricFamily(
            "telemetryd_speedtests_deferred",
            "Speed tests that had to wait, by cause (quiet_window, budget).",
            labels=["cause"],
        )
        deferred.add_metric(["quiet_window"], monitor.stats.speedtests_deferred_quiet)
        deferred.add_metric(["budget"], monitor.stats.speedtests_waiting_budget)
        yield from (polls, running, reserved, capacity, deferred)

    def _camera_verdicts(self) -> Metric:
        """One of ok, camera_down, not_recorded, lan_fault, nvr_down, unknown per camera (see attribution)."""
        daemon = self.daemon
        state = daemon.state
        family = GaugeMetricFamily(
            "telemetryd_camera_verdict",
            "1 for the camera's current verdict: ok, camera_down, not_recorded, lan_fault, nvr_down or unknown.",
            labels=["school", "device", "verdict"],
        )
        channels = nvr_channels(daemon.ctx.details)

        def answers(device_id: str) -> Health | None:
            device_state = state.devices.get(device_id)
            if device_state is None:
                return None
            return reachability(
                {
                    name: (probe.health, probe.last_result.reason if probe.last_result is not None else None)
                    for name, probe in device_state.probes.items()
                }
            )

        for school in state.inventory.schools:
            cameras = [d for d in school.devices if d.kind is DeviceKind.CAMERA and d.id in state.devices]
            alive = {d.id: answers(d.id) or Health.UNKNOWN for d in cameras}
            known = [h for h in alive.values() if h is not Health.UNKNOWN]
            summary = SchoolCameras(down=known.count(Health.DOWN), known=len(known))
            for device in cameras:
                nvr_health: Health | None = None
                channel = None
                if device.nvr is not None:
                    nvr_id, channel_id = device.nvr
                    nvr_health = answers(nvr_id)
                    channel = channels.get((nvr_id, channel_id))
                verdict = attribute(alive[device.id], nvr_health, channel, summary)
                for option in Verdict:
                    family.add_metric([school.id, device.id, option.value], 1.0 if option is verdict else 0.0)
        return family

    def _device_health(self) -> Iterator[Metric]:
        """What ISAPI checks and DC-09 supervision found beyond up/down."""
        daemon = self.daemon
        labels = ["school", "device", "kind"]
        hardware = InfoMetricFamily(
            "telemetryd_device_hardware",
            "Model, firmware and serial the device reports over ISAPI (a new serial = the device was swapped).",
            labels=[*labels, "model", "firmware", "serial"],
        )
        auth = GaugeMetricFamily(
            "telemetryd_isapi_auth_ok",
            "0 when the device rejected our credential or is locked: fix the password before operators are locked out.",
            labels=labels,
        )
        locked = GaugeMetricFamily(
            "telemetryd_isapi_locked_until_timestamp_seconds",
            "The device locked logins from us until then; no request is sent before.",
            labels=labels,
        )
        drift = GaugeMetricFamily(
            "telemetryd_device_clock_drift_seconds",
            "Device clock minus this server's (positive: ahead).",
            labels=labels,
        )
        ntp = GaugeMetricFamily("telemetryd_device_time_ntp", "1 when the device sets its clock by NTP.", labels=labels)
        uptime = GaugeMetricFamily("telemetryd_device_uptime_seconds", "Uptime the device reports.", labels=labels)
        channel_labels = ["school", "device", "channel"]
        channel_up = GaugeMetricFamily(
            "telemetryd_nvr_channel_up", "1 when the NVR sees the channel's camera online.", labels=channel_labels
        )
        recording = GaugeMetricFamily(
            "telemetryd_nvr_channel_recording",
            "1 when the channel has footage within probes.isapi.recording_window.",
            labels=channel_labels,
        )
        disk_labels = ["school", "device", "disk"]
        disk_ok = GaugeMetricFamily("telemetryd_nvr_disk_healthy", "1 when the disk reports ok.", labels=disk_labels)
        disk_size = GaugeMetricFamily("telemetryd_nvr_disk_capacity_bytes", "Disk capacity.", labels=disk_labels)
        disk_free = GaugeMetricFamily("telemetryd_nvr_disk_free_bytes", "Free space on the disk.", labels=disk_labels)
        for (device_id, _probe), found in list(daemon.ctx.details.items()):
            device = daemon.config.inventory.devices_by_id.get(device_id)
            if device is None or not isinstance(found, IsapiHealth):
                continue
            base = [device.school_id, device.id, device.kind.value]
            auth.add_metric(base, 0.0 if found.auth in (AuthState.AUTH_FAILED, AuthState.LOCKED) else 1.0)
            if found.locked_until is not None:
                locked.add_metric(base, found.locked_until)
            if found.identity is not None:
                identity = found.identity
                hardware.add_metric([*base, identity.model, identity.firmware, identity.serial], {})
            if found.clock_drift is not None:
                drift.add_metric(base, found.clock_drift)
            if found.time is not None:
                ntp.add_metric(base, 1.0 if found.time.ntp else 0.0)
            if found.status is not None and found.status.uptime is not None:
                uptime.add_metric(base, found.status.uptime)
            for channel in found.channels:
                channel_up.add_metric([device.school_id, device.id, str(channel.id)], 1.0 if channel.online else 0.0)
            for channel_id, recorded in found.recording:
                recording.add_metric([device.school_id, device.id, str(channel_id)], 1.0 if recorded else 0.0)
            for disk in found.disks:
                if not disk.present:
                    continue
                disk_labels_values = [device.school_id, device.id, str(disk.id)]
                disk_ok.add_metric(disk_labels_values, 1.0 if disk.healthy else 0.0)
                if disk.capacity_mb is not None:
                    disk_size.add_metric(disk_labels_values, disk.capacity_mb * 1024 * 1024)
                if disk.free_mb is not None:
                    disk_free.add_metric(disk_labels_values, disk.free_mb * 1024 * 1024)
        yield from (hardware, auth, locked, drift, ntp, uptime, channel_up, recording, disk_ok, disk_size, disk_free)
        yield self._camera_verdicts()

        heartbeat = GaugeMetricFamily(
            "telemetryd_alarm_panel_heartbeat_age_seconds",
            "Seconds since the panel's last DC-09 frame (heartbeat or event) reached the receiver.",
            labels=["school", "device"],
        )
        now = time.monotonic()
        for device in daemon.config.inventory.devices_by_id.values():
            if device.sia is None:
                continue
            key = account_key(device.sia)
            try:
                status = daemon.supervision.status_of(key, now)
            except KeyError:
                continue
            heartbeat.add_metric([device.school_id, device.id], status.silent_for)
        frames = CounterMetricFamily(
            "telemetryd_sia_frames",
            "DC-09 frames received, by transport, answer (ack, nak, duh, ignore) and reason.",
            labels=["transport", "verdict", "reason"],
        )
        if daemon.sia is not None:
            for (transport, verdict, reason), count in daemon.sia.counts.frames.items():
                frames.add_metric([str(transport), str(verdict), str(reason)], count)
        yield from (heartbeat, frames)

    def _daemon(self) -> Iterator[Metric]:
        daemon = self.daemon
        stats = daemon.scheduler.stats
        build = InfoMetricFamily("telemetryd_build", "Version of the running daemon.")
        build.add_metric([], {"version": __version__, "python": platform.python_version()})
        yield build
        config = daemon.config
        shard = InfoMetricFamily("telemetryd_shard", "Which share of the inventory this instance watches.")
        shard.add_metric([], {"shard": str(config.settings.shard.index), "shards": str(config.settings.shard.count)})
        yield shard
        icmp = InfoMetricFamily("telemetryd_icmp_socket", "Kind of the shared ICMP socket: dgram, raw or none.")
        icmp.add_metric([], {"mode": daemon.icmp_mode})
        yield icmp

        runs = CounterMetricFamily(
            "telemetryd_probes",
            "Probe runs by protocol and result (ok or the failure reason).",
            labels=["probe", "result"],
        )
        for (protocol, result), count in sorted(stats.runs.items()):
            runs.add_metric([protocol, result], count)
        yield runs
        skipped = CounterMetricFamily(
            "telemetryd_probe_slots_skipped",
            "Scheduled runs skipped because the previous run was still going.",
            labels=["probe"],
        )
        # Every protocol in use gets a series from the start, so rate() and panels show 0, not "no data".
        protocols = {p.protocol for d in daemon.config.inventory.devices_by_id.values() for p in d.probes}
        for protocol in sorted(protocols | set(stats.skipped)):
            skipped.add_metric([protocol], stats.skipped.get(protocol, 0))
        yield skipped
        yield CounterMetricFamily(
            "telemetryd_probe_errors",
            "Prober or handler crashes (bugs), caught at the task boundary.",
            value=stats.errors,
        )
        yield _histogram(
            "telemetryd_schedule_lag_seconds",
            "How late probes started against their scheduled time.",
            stats.lag,
        )
        yield GaugeMetricFamily(
            "telemetryd_schedule_last_lag_seconds",
            "Lag of the most recently dispatched probe.",
            value=stats.last_lag,
        )
        yield _histogram(
            "telemetryd_event_loop_lag_seconds",
            "How late a 0.5 s timer fires: event-loop saturation.",
            daemon.loop_lag,
        )
        yield GaugeMetricFamily(
            "telemetryd_probes_in_flight", "Probe tasks running now.", value=daemon.scheduler.in_flight
        )
        yield GaugeMetricFamily(
            "telemetryd_scheduled_probes",
            "(device, probe) pairs on a schedule.",
            value=daemon.scheduler.job_count,
        )
        yield GaugeMetricFamily(
            "telemetryd_inventory_schools",
            "Schools this instance watches (its shard).",
            value=len(config.inventory.schools),
        )
        devices = GaugeMetricFamily(
            "telemetryd_inventory_devices", "Devices this instance watches, by kind.", labels=["kind"]
        )
        per_kind = dict.fromkeys(DeviceKind, 0)
        for device in config.inventory.devices_by_id.values():
            per_kind[device.kind] += 1
        for kind, count in per_kind.items():
            devices.add_metric([kind.value], count)
        yield devices
        yield GaugeMetricFamily(
            "telemetryd_config_last_reload_successful",
            "1 when the last configuration load succeeded.",
            value=1.0 if daemon.last_reload_ok else 0.0,
        )
        yield GaugeMetricFamily(
            "telemetryd_config_last_reload_success_timestamp_seconds",
            "When the configuration was last loaded successfully (Unix time).",
            value=daemon.last_reload_success,
        )
        yield GaugeMetricFamily(
            "telemetryd_start_time_seconds", "When the daemon started (Unix time).", value=daemon.started_at
        )

    def _history(self) -> Iterator[Metric]:
        """The history writer's health; absent when history is not configured."""
        history = self.daemon.history
        if history is None or history.writer is None:
            return
        writer = history.writer
        stats = writer.stats
        yield GaugeMetricFamily(
            "telemetryd_history_db_up",
            "1 when the history writer is connected to PostgreSQL and the schema is current.",
            value=1.0 if stats.db_up else 0.0,
        )
        yield GaugeMetricFamily(
            "telemetryd_history_schema_pending_migrations",
            "Migrations the history database lacks; nothing is written until `telemetryd db migrate`.",
            value=len(stats.schema_pending),
        )
        yield GaugeMetricFamily(
            "telemetryd_history_queue_rows", "History rows waiting in memory.", value=writer.queue_depth
        )
        yield GaugeMetricFamily(
            "telemetryd_history_spool_bytes",
            "History waiting on disk for PostgreSQL.",
            value=writer.spool_bytes,
        )
        yield GaugeMetricFamily(
            "telemetryd_history_spool_max_bytes",
            "The spool's cap (history.spool_max_bytes); rows beyond it are dropped and counted.",
            value=history.spool_max_bytes,
        )
        for name, doc, value in (
            ("rows_written", "Rows committed to PostgreSQL (live and replayed).", stats.rows_written),
            ("rows_replayed", "Rows written from the spool after an outage.", stats.rows_replayed),
            ("rows_spooled", "Rows written to the spool while PostgreSQL was unreachable.", stats.rows_spooled),
            ("rows_dropped", "Rows lost because the spool was full: SLA evidence lost.", writer.rows_dropped),
            ("rows_rejected", "Rows PostgreSQL refused as bad data (a bug; logged).", stats.rows_rejected),
            ("write_failures", "Failed connects and batch writes.", stats.write_failures),
            ("chain_links", "Hash-chain links sealed (one per batch with new rows).", stats.chain_links),
        ):
            yield CounterMetricFamily(f"telemetryd_history_{name}", doc, value=value)
        yield _histogram(
            "telemetryd_history_write_duration_seconds",
            "Time to write one batch (COPY, insert, chain seal, commit).",
            stats.latency,
        )


def build_registry(daemon: Daemon) -> CollectorRegistry:
    """A registry holding the state collector plus process metrics (CPU, memory, fds)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StateCollector(daemon))
    ProcessCollector(registry=registry)
    return registry


# ---------------------------------------------------------------------------- HTTP


def create_app(daemon: Daemon) -> web.Application:
    """The aiohttp application: /metrics, /healthz, /-/ready, /api/v1/status and /."""
    registry = build_registry(daemon)
    app = web.Application()

    async def metrics(request: web.Request) -> web.StreamResponse:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        # Rendering 10,000 devices takes a while: do it off the loop so probes keep their timing.
        body = await asyncio.get_running_loop().run_in_executor(None, encoder, registry)
        response = web.Response(body=body, headers={"Content-Type": content_type})
        response.enable_compression()
        return response

    async def healthz(_: web.Request) -> web.Response:
        problems = daemon.health_problems()
        if problems:
            return web.Response(status=503, text="unhealthy: " + "; ".join(problems) + "\n")
        return web.Response(text="ok\n")

    async def ready(_: web.Request) -> web.Response:
        if not daemon.ready:
            return web.Response(status=503, text="starting\n")
        return web.Response(text="ready\n")

    async def status_json(request: web.Request) -> web.Response:
        response = web.json_response(status_document(daemon, request.query.get("school")))
        response.enable_compression()
        return response

    async def status_page(_: web.Request) -> web.Response:
        response = web.Response(text=render_status_page(daemon), content_type="text/html", charset="utf-8")
        response.enable_compression()
        return response

    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/-/healthy", healthz)
    app.router.add_get("/-/ready", ready)
    app.router.add_get("/api/v1/status", status_json)
    app.router.add_get("/", status_page)
    return app


def _iso(ts: float | None) -> str | None:
    return None if ts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def status_document(daemon: Daemon, school_id: str | None = None) -> dict[str, Any]:
    """The JSON status: instance facts, and per school its roll-up and down devices.

    With `school_id`, only that school, with every device listed.
    """
    state = daemon.state
    counts = state.count_by_health()
    schools = []
    for summary in state.school_summaries():
        school = summary.school
        if school_id is not None and school.id != school_id:
            continue
        entry: dict[str, Any] = {
            "id": school.id,
            "name": school.name,
            "district": school.district,
            "contract": {
                "total_mbps": school.contract.total_mbps,
                "segments_mbps": {s.value: v for s, v in school.contract.segments_mbps},
            },
            "devices": {
                kind.value: {"total": c.total, "up": c.up, "down": c.down, "unknown": c.unknown}
                for kind, c in summary.by_kind.items()
            },
            "link": link_document(daemon.links.schools.get(school.id)),
            "down": [
                {
                    "device": d.device.id,
                    "kind": d.device.kind.value,
                    "host": d.device.host,
                    "reason": d.down_reason(),
                    "since": _iso(d.last_change),
                }
                for d in summary.down_devices
            ],
        }
        if school_id is not None:
            entry["all_devices"] = [
                {
                    "device": d.id,
                    "kind": d.kind.value,
                    "name": d.name,
                    "host": d.host,
                    "health": state.devices[d.id].health.value,
                    "probes": {
                        name: {
                            "health": p.health.value,
                            "reason": p.last_result.reason if p.last_result else None,
                            "detail": p.last_result.detail if p.last_result else None,
                            "rtt_seconds": p.last_result.rtt if p.last_result else None,
                            "last_run": _iso(p.last_run),
                            "flaps": p.flaps,
                        }
                        for name, p in state.devices[d.id].probes.items()
                    },
                }
                for d in school.devices
            ]
        schools.append(entry)
    return {
        "version": __version__,
        "shard": str(daemon.config.settings.shard),
        "started_at": _iso(daemon.started_at),
        "devices": {h.value: n for h, n in counts.items()},
        "schools": schools,
    }


def nvr_channels(details: dict[tuple[str, str], object]) -> dict[tuple[str, int], ChannelView]:
    """(NVR id, channel) → what the NVR's last ISAPI check said about that channel."""
    views: dict[tuple[str, int], ChannelView] = {}
    for (device_id, _probe), found in details.items():
        if not isinstance(found, IsapiHealth):
            continue
        recorded = dict(found.recording)
        for channel in found.channels:
            views[device_id, channel.id] = ChannelView(channel.online, recorded.get(channel.id), channel.detect_result)
    return views


def link_document(link: SchoolLink | None) -> dict[str, Any] | None:
    """One school's speed-test verdict and segment rates, for /api/v1/status."""
    if link is None:
        return None
    return {
        "compliance": link.compliance.value,
        "last_success": _iso(link.last_success_at),
        "speedtest": {
            d.value: {
                "ok": r.ok,
                "mbps": round(r.mbps, 3) if r.ok else None,
                "contract_ratio": round(link.ratio(d) or 0.0, 4) if r.ok else None,
                "bytes_used": r.bytes_used,
                "duration_seconds": round(r.duration, 3),
                "streams": r.streams,
                "reason": r.reason or None,
                "detail": r.detail or None,
            }
            for d, r in link.last.items()
        },
        "snmp": None
        if link.router_id is None
        else {
            "router": link.router_id,
            "ok": link.snmp_ok,
            "reason": link.snmp_reason or None,
            "detail": link.snmp_detail or None,
            "segments": {
                role: {
                    "in_mbps": round(v.rate.in_bps / 1e6, 3) if v.rate else None,
                    "out_mbps": round(v.rate.out_bps / 1e6, 3) if v.rate else None,
                    "utilisation": round(v.utilisation, 4) if v.utilisation is not None else None,
                    "saturated": v.saturated,
                }
                for role, v in link.segments.items()
            },
        },
    }


def _speed_cell(link: SchoolLink | None, contract_mbps: float) -> str:
    """Measured download/upload against the contract, flagged when below."""
    if link is None or not link.last_good:
        failed = link is not None and any(not r.ok for r in link.last.values())
        reason = next((r.reason for r in link.last.values() if not r.ok), "") if link else ""
        text = f"test failed: {html.escape(reason)}" if failed else "not tested"
        return f'<td class="muted">{text}</td>'
    down = link.last_good.get(Direction.DOWNLOAD)
    up = link.last_good.get(Direction.UPLOAD)
    text = f"↓{down.mbps:.1f} ↑{up.mbps:.1f}" if down and up else f"{(down or up).mbps:.1f}"  # type: ignore[union-attr]
    verdict = {
        Compliance.BELOW: ("bad", " below contract"),
        Compliance.SUSPECT: ("bad", " low, re-testing"),
        Compliance.COMPLIANT: ("ok", ""),
        Compliance.UNKNOWN: ("muted", ""),
    }[link.compliance]
    return f'<td class="n {verdict[0]}">{text} / {contract_mbps:g} Mbps{verdict[1]}</td>'


_PAGE_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;width:100%;margin-bottom:2em}
th,td{border-bottom:1px solid #ddd;padding:.3em .6em;text-align:left}
th{background:#f4f4f4} .bad{color:#b00020;font-weight:600} .ok{color:#1b5e20}
.muted{color:#777} td.n{text-align:right;font-variant-numeric:tabular-nums}
"""


def _ratio_cell(up: int, total: int) -> str:
    if total == 0:
        return '<td class="n muted">–</td>'
    css = "ok" if up == total else "bad"
    return f'<td class="n {css}">{up}/{total}</td>'


def render_status_page(daemon: Daemon) -> str:
    """A plain server-rendered status page for when Grafana is not at hand."""
    state = daemon.state
    counts = state.count_by_health()
    links = daemon.links.schools

    def below(school_id: str) -> bool:
        link = links.get(school_id)
        return link is not None and link.compliance is Compliance.BELOW

    # Schools below contract first, then by devices down: what the NOC acts on comes first.
    summaries = sorted(
        state.school_summaries(),
        key=lambda s: (not below(s.school.id), -len(s.down_devices), s.school.district, s.school.id),
    )
    below_count = sum(below(s.id) for s in state.inventory.schools)
    rows, down_rows = [], []
    for summary in summaries:
        school = summary.school
        router = summary.count(DeviceKind.ROUTER)
        link = (
            '<td class="muted">unknown</td>'
            if router.up + router.down == 0
            else '<td class="bad">down</td>'
            if router.down
            else '<td class="ok">up</td>'
        )
        cams, nvrs, alarms = (summary.count(k) for k in (DeviceKind.CAMERA, DeviceKind.NVR, DeviceKind.ALARM_PANEL))
        rows.append(
            f"<tr><td>{html.escape(school.id)}</td><td>{html.escape(school.name)}</td>"
            f"<td>{html.escape(school.district)}</td>{link}"
            f"{_speed_cell(daemon.links.schools.get(school.id), school.contract.total_mbps)}"
            f"{_ratio_cell(cams.up, cams.total)}{_ratio_cell(nvrs.up, nvrs.total)}"
            f"{_ratio_cell(alarms.up, alarms.total)}</tr>"
        )
        for device_state in summary.down_devices:
            device = device_state.device
            down_rows.append(
                f"<tr><td>{html.escape(school.id)}</td><td>{html.escape(device.id)}</td>"
                f"<td>{device.kind.value}</td><td>{html.escape(device.host)}</td>"
                f"<td>{html.escape(device.name)}</td><td>{html.escape(device_state.down_reason())}</td>"
                f"<td>{_iso(device_state.last_change) or ''}</td></tr>"
            )
    down_table = (
        "<table><tr><th>School</th><th>Device</th><th>Kind</th><th>Address</th><th>Name</th>"
        "<th>Reason</th><th>Down since (UTC)</th></tr>" + "".join(down_rows) + "</table>"
        if down_rows
        else '<p class="ok">No device is down.</p>'
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><meta http-equiv='refresh' content='30'>"
        f"<title>telemetryd status</title><style>{_PAGE_STYLE}</style></head><body>"
        f"<h1>telemetryd</h1><p>{len(state.inventory.schools)} schools, {len(state.devices)} devices: "
        f"<span class='ok'>{counts[Health.UP]} up</span>, "
        f"<span class='bad'>{counts[Health.DOWN]} down</span>, "
        f"<span class='muted'>{counts[Health.UNKNOWN]} not yet probed</span>. "
        f"Shard {daemon.config.settings.shard}. Version {__version__}. "
        "<a href='/metrics'>/metrics</a> · <a href='/api/v1/status'>/api/v1/status</a></p>"
        f"<p class='{'bad' if below_count else 'ok'}'>{below_count} school(s) confirmed below contract.</p>"
        f"<h2>Down devices ({len(down_rows)})</h2>{down_table}"
        "<h2>Schools</h2><table><tr><th>School</th><th>Name</th><th>District</th><th>Router</th>"
        "<th>Measured / contract</th><th>Cameras up</th><th>NVRs up</th><th>Alarm panels up</th></tr>"
        + "".join(rows)
        + "</table></body></html>"
    )

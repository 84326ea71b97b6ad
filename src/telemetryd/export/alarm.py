"""Alarm panels: DC-09 heartbeat supervision, the receiver's frames and events, AX PRO areas and zones."""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from telemetryd.alarm.receiver import SiaReceiver
from telemetryd.alarm.supervision import Supervision, account_key
from telemetryd.export.families import RosterCollector, flag
from telemetryd.probes.isapi import AxProStatus
from telemetryd.reachability.state import Roster, State


class AlarmCollector(RosterCollector):
    """Heartbeat age per supervised panel, frames/drops/events of the receiver, AX PRO areas and zones."""

    def __init__(self, state: State, supervision: Supervision, receiver: SiaReceiver | None) -> None:
        super().__init__(state)
        self.supervision = supervision
        self.receiver = receiver

    def families(self, roster: Roster) -> Iterator[Metric]:
        """Yield the alarm-panel families."""
        heartbeat = GaugeMetricFamily(
            "telemetryd_alarm_panel_heartbeat_age_seconds",
            "Seconds since the panel's last DC-09 frame (heartbeat or event) reached the receiver.",
            labels=["school", "device"],
        )
        panel_frames = CounterMetricFamily(
            "telemetryd_alarm_panel_frames",
            "DC-09 frames (heartbeats and events) accepted from the panel since the daemon started.",
            labels=["school", "device"],
        )
        panel_events = CounterMetricFamily(
            "telemetryd_alarm_panel_events",
            "Events (not heartbeats) the panel reported since the daemon started.",
            labels=["school", "device"],
        )
        now = time.monotonic()
        for device in roster.inventory.devices_by_id.values():
            if device.sia is None:
                continue
            try:
                status = self.supervision.status_of(account_key(device.sia), now)
            except KeyError:
                continue  # a reload between the roster and the supervision table
            labels = [device.school_id, device.id]
            heartbeat.add_metric(labels, status.silent_for)
            panel_frames.add_metric(labels, status.frames)
            panel_events.add_metric(labels, status.events)
        yield from (heartbeat, panel_frames, panel_events)
        yield from self._receiver()
        yield from self._axpro(roster)

    def _receiver(self) -> Iterator[Metric]:
        frames = CounterMetricFamily(
            "telemetryd_sia_frames",
            "DC-09 frames received, by transport, answer (ack, nak, duh, ignore) and reason.",
            labels=["transport", "verdict", "reason"],
        )
        dropped = CounterMetricFamily(
            "telemetryd_sia_connections_dropped",
            "Connections or datagrams dropped unanswered, by transport and why (oversize, idle, evicted: displaced "
            "by a new connection at a cap, budget: a datagram's frames beyond the frame budget).",
            labels=["transport", "why"],
        )
        connections = GaugeMetricFamily(
            "telemetryd_sia_connections", "TCP connections open to the DC-09 receiver (panels and anyone else)."
        )
        paused = CounterMetricFamily(
            "telemetryd_sia_reads_paused",
            "Times reading from a TCP peer paused, by why: write (it does not read its answers), budget (its "
            "frames beyond the per-turn budget wait for the next loop turn).",
            labels=["why"],
        )
        events = CounterMetricFamily(
            "telemetryd_alarm_events",
            "Events received from alarm panels over DC-09, by class (alarm, trouble, restoral, test, other).",
            labels=["class"],
        )
        repeats = CounterMetricFamily(
            "telemetryd_alarm_event_repeats",
            "Event frames a panel sent again (it missed our ACK): ACKed, not counted or stored twice, by class.",
            labels=["class"],
        )
        receiver = self.receiver
        if receiver is not None:
            for (transport, verdict, reason), count in dict(receiver.counts.frames).items():
                frames.add_metric([str(transport), str(verdict), str(reason)], count)
            for (transport, why), count in dict(receiver.counts.dropped).items():
                dropped.add_metric([transport, why], count)
            connections.add_metric([], receiver.connections)
            for why, count in dict(receiver.counts.paused).items():
                paused.add_metric([why], count)
            for event_class, count in dict(receiver.counts.events).items():
                events.add_metric([event_class], count)
            for event_class, count in dict(receiver.counts.repeats).items():
                repeats.add_metric([event_class], count)
        yield from (frames, dropped, connections, paused, events, repeats)

    def _axpro(self, roster: Roster) -> Iterator[Metric]:
        panel = ["school", "device"]
        area_armed = GaugeMetricFamily(
            "telemetryd_axpro_area_armed",
            "1 when the AX PRO area (subsystem) is armed (away, stay, vacation), 0 when disarmed.",
            labels=[*panel, "area"],
        )
        area_alarm = GaugeMetricFamily(
            "telemetryd_axpro_area_alarm", "1 when the AX PRO area is in alarm.", labels=[*panel, "area"]
        )
        zone_ok = GaugeMetricFamily(
            "telemetryd_axpro_zone_reporting",
            "0 when the AX PRO zone's detector cannot report (offline, breakDown, heartbeatAbnormal).",
            labels=[*panel, "zone"],
        )
        zone_tamper = GaugeMetricFamily(
            "telemetryd_axpro_zone_tamper", "1 when the AX PRO zone reports tamper.", labels=[*panel, "zone"]
        )
        zone_alarm = GaugeMetricFamily(
            "telemetryd_axpro_zone_alarm", "1 when the AX PRO zone is in alarm.", labels=[*panel, "zone"]
        )
        for device_state in roster.probing("axpro"):
            found = device_state.finding(AxProStatus)
            if found is None:
                continue
            device = device_state.device
            for area in found.subsystems:
                values = [device.school_id, device.id, str(area.id)]
                area_armed.add_metric(values, flag(area.arming not in ("disarm", "")))
                area_alarm.add_metric(values, flag(area.alarm))
            for zone in found.zones:
                values = [device.school_id, device.id, str(zone.id)]
                zone_ok.add_metric(values, flag(not zone.faulty))
                zone_tamper.add_metric(values, flag(zone.tamper))
                zone_alarm.add_metric(values, flag(zone.alarm))
        yield from (area_armed, area_alarm, zone_ok, zone_tamper, zone_alarm)

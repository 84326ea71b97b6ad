"""Each school's link: speed tests against the contract, SNMP counters and segment rates, the test budget."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from telemetryd.export.families import MBIT_BYTES, flag
from telemetryd.link.compliance import Compliance, LinkState
from telemetryd.link.monitor import LinkMonitor


class LinkCollector(Collector):
    """Speed-test results and verdicts, router counters, segment throughput, the monitor's own counters."""

    def __init__(self, links: LinkState, monitor: LinkMonitor) -> None:
        self.links = links
        self.monitor = monitor

    def collect(self) -> Iterator[Metric]:
        """Yield the link families."""
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
        # The link monitor mutates these dicts on the loop: copy each in one C-level step first.
        for link in tuple(self.links.schools.values()):
            school = link.school_id
            for direction, result in tuple(link.last_good.items()):
                speed.add_metric([school, direction.value], result.mbps * MBIT_BYTES)
                measured = link.ratio(direction)
                if measured is not None:
                    ratio.add_metric([school, direction.value], measured)
            last = tuple(link.last.items())
            for direction, result in last:
                test_up.add_metric([school, direction.value], flag(result.ok))
                spent.add_metric([school, direction.value], link.bytes_used[direction])
            if last:
                for result_name, count in tuple(link.tests.items()):
                    runs.add_metric([school, result_name], count)
            if link.last_success_at is not None:
                last_ok.add_metric([school], link.last_success_at)
            below.add_metric([school], flag(link.compliance is Compliance.BELOW))
            for verdict in Compliance:
                compliance.add_metric([school, verdict.value], flag(link.compliance is verdict))
            router = link.router_id
            if router is None or link.snmp_ok is None:
                continue
            snmp_up.add_metric([school, router], flag(link.snmp_ok))
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
                        oper.add_metric(labels, flag(counters.oper_up))
                    if counters.speed_mbps:
                        if_speed.add_metric(labels, counters.speed_mbps * MBIT_BYTES)
            for role, view in tuple(link.segments.items()):
                if view.rate is not None:
                    throughput.add_metric([school, role, "in"], view.rate.in_bps / 8)
                    throughput.add_metric([school, role, "out"], view.rate.out_bps / 8)
                if view.utilisation is not None:
                    utilisation.add_metric([school, role], view.utilisation)
                saturated.add_metric([school, role], flag(view.saturated))
        yield from (speed, ratio, last_ok, test_up, spent, runs, below, compliance)
        yield from (snmp_up, uptime, octets, errors, discards, oper, if_speed, throughput, utilisation, saturated)
        yield from self._monitor()

    def _monitor(self) -> Iterator[Metric]:
        monitor = self.monitor
        polls = CounterMetricFamily("telemetryd_snmp_polls", "SNMP polls of routers, by result.", labels=["result"])
        polls.add_metric(["ok"], monitor.stats.snmp_polls - monitor.stats.snmp_failures)
        polls.add_metric(["failed"], monitor.stats.snmp_failures)
        yield polls
        yield GaugeMetricFamily(
            "telemetryd_speedtests_running", "Speed tests moving bytes now.", value=len(monitor.running_tests)
        )
        yield GaugeMetricFamily(
            "telemetryd_speedtest_budget_reserved_bytes_per_second",
            "NOC uplink capacity reserved by running speed tests.",
            value=monitor.budget.reserved_mbps * MBIT_BYTES,
        )
        yield GaugeMetricFamily(
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
        yield deferred

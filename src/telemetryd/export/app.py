"""The HTTP endpoints: /metrics, /healthz, /-/ready, /api/v1/status and the status page.

Metrics come from one Collector per domain reading the domain objects at scrape time:
no labelled Gauge children per device, so a device removed by a reload vanishes from
the next scrape without stale series. Label values are bounded: ids, kinds, probe
names, segments; never an error string or a timestamp.
"""

from __future__ import annotations

import asyncio
import functools
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import cast

from aiohttp import web
from prometheus_client import ProcessCollector, generate_latest
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import exposition as openmetrics_exposition
from prometheus_client.registry import Collector

from telemetryd.alarm.receiver import SiaReceiver
from telemetryd.alarm.supervision import Supervision
from telemetryd.config.settings import Settings
from telemetryd.export.alarm import AlarmCollector
from telemetryd.export.cameras import CameraCollector, EventCollector, VerdictExposition
from telemetryd.export.devices import DeviceExposition
from telemetryd.export.families import RosterCollector
from telemetryd.export.history import HistoryCollector
from telemetryd.export.instance import InstanceCollector, InstanceStatus
from telemetryd.export.link import LinkCollector
from telemetryd.export.reachability import SchedulerCollector, SchoolExposition
from telemetryd.export.status import StatusSources, render_city_page, render_school_page, status_document
from telemetryd.export.webauth import HttpCollector, HttpListener
from telemetryd.history.recorder import History
from telemetryd.link.compliance import LinkState
from telemetryd.link.monitor import LinkMonitor
from telemetryd.probes.icmp import Pinger
from telemetryd.probes.isapi.events import EventStreams
from telemetryd.reachability.scheduler import Scheduler
from telemetryd.reachability.state import Roster, State


@dataclass(frozen=True, slots=True)
class ExportSources:
    """Every domain object the collectors and the status endpoints read; the daemon builds it once."""

    state: State
    scheduler: Scheduler
    links: LinkState
    link_monitor: LinkMonitor
    supervision: Supervision
    instance: InstanceStatus
    receiver: SiaReceiver | None = None
    history: History | None = None
    pinger: Pinger | None = None
    events: EventStreams | None = None
    http: HttpListener | None = None
    settings: Callable[[], Settings] = Settings
    """The settings in force (the daemon's follow a reload): the status pages' zone and Grafana link."""

    @property
    def status(self) -> StatusSources:
        """The part the status JSON and pages read."""
        return StatusSources(self.state, self.links, self.instance, self.settings)


generate_openmetrics = cast(Callable[[Collector], bytes], openmetrics_exposition.generate_latest)


class Exposition:
    """Everything /metrics serves, over one roster of State per scrape.

    The device families and the camera verdict (most of the body) are encoded by hand; the
    rest comes from one prometheus-client collector per domain. Each scrape reads the
    roster once and hands it to all of them, so a reload during a render shows in the
    next scrape, never as two inventories in one body.
    """

    def __init__(self, sources: ExportSources) -> None:
        state = self.state = sources.state
        self.devices = DeviceExposition()
        self.verdicts = VerdictExposition()
        self.schools = SchoolExposition()
        self.over_roster: list[RosterCollector] = [
            CameraCollector(state),
            AlarmCollector(state, sources.supervision, sources.receiver),
            SchedulerCollector(sources.scheduler, state),
            InstanceCollector(sources.instance, state, sources.pinger),
        ]
        self.others: list[Collector] = [
            LinkCollector(sources.links, sources.link_monitor),
            HistoryCollector(sources.history),
            EventCollector(sources.events),
            HttpCollector(sources.http),
            ProcessCollector(registry=None),
        ]

    def render(self, *, openmetrics: bool = False) -> bytes:
        """One scrape's body in the Prometheus text format, or in OpenMetrics."""
        roster = self.state.roster
        families = _Families(self, roster)
        by_hand = b"".join(
            part.render(roster, openmetrics=openmetrics) for part in (self.devices, self.verdicts, self.schools)
        )
        return by_hand + (generate_openmetrics(families) if openmetrics else generate_latest(families))


class _Families(Collector):
    """The prometheus-client families of one scrape, all over the same roster."""

    def __init__(self, exposition: Exposition, roster: Roster) -> None:
        self.exposition = exposition
        self.roster = roster

    def collect(self) -> Iterator[Metric]:
        """Domain collectors over the roster, then the others (link, history, process)."""
        for collector in self.exposition.over_roster:
            yield from collector.families(self.roster)
        for other in self.exposition.others:
            yield from other.collect()


GZIP_LEVEL = 1
"""A city's 24 MB body: level 1 compresses it to 0.9 MB in ~0.1 s of CPU, level 6 to 0.8 MB in 2.5x the time."""


def _body(exposition: Exposition, *, openmetrics: bool, gzipped: bool) -> bytes:
    """Render, and compress in the same worker thread when the scraper accepts gzip (Prometheus does)."""
    body = exposition.render(openmetrics=openmetrics)
    if not gzipped:
        return body
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return compressor.compress(body) + compressor.flush()


def create_app(
    sources: ExportSources,
    *,
    health_problems: Callable[[], list[str]],
    ready: Callable[[], bool],
) -> web.Application:
    """The aiohttp application: /metrics, /healthz, /-/ready, /api/v1/status and /.

    With `sources.http`, the connection guard's middleware comes first, then basic auth (every path).
    """
    exposition = Exposition(sources)
    middlewares = [] if sources.http is None else [sources.http.guard.middleware, sources.http.auth.middleware]
    app = web.Application(middlewares=middlewares)

    async def metrics(request: web.Request) -> web.StreamResponse:
        _encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        openmetrics = content_type.startswith("application/openmetrics-text")
        gzipped = "gzip" in request.headers.get("Accept-Encoding", "")
        # Rendering 10,000 devices takes a while: do it off the loop so probes keep their timing.
        body = await asyncio.get_running_loop().run_in_executor(
            None, functools.partial(_body, exposition, openmetrics=openmetrics, gzipped=gzipped)
        )
        headers = {"Content-Type": content_type, "Vary": "Accept-Encoding"}
        if gzipped:
            headers["Content-Encoding"] = "gzip"
        return web.Response(body=body, headers=headers)

    async def healthz(_: web.Request) -> web.Response:
        problems = health_problems()
        if problems:
            return web.Response(status=503, text="unhealthy: " + "; ".join(problems) + "\n")
        return web.Response(text="ok\n")

    async def is_ready(_: web.Request) -> web.Response:
        if not ready():
            return web.Response(status=503, text="starting\n")
        return web.Response(text="ready\n")

    async def status_json(request: web.Request) -> web.Response:
        response = web.json_response(status_document(sources.status, request.query.get("school")))
        response.enable_compression()
        return response

    async def city_page(request: web.Request) -> web.Response:
        query = request.query.get("q", "")[:200]
        problems_only = request.query.get("problems", "") not in ("", "0")
        # 50 ms at 10,000 devices: off the loop, as /metrics, so probes keep their timing.
        page = await asyncio.get_running_loop().run_in_executor(
            None, functools.partial(render_city_page, sources.status, query=query, problems_only=problems_only)
        )
        return _html(page)

    async def school_page(request: web.Request) -> web.Response:
        page = await asyncio.get_running_loop().run_in_executor(
            None, render_school_page, sources.status, request.match_info["school_id"]
        )
        if page is None:
            raise web.HTTPNotFound(text="no such school on this instance\n")
        return _html(page)

    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/-/healthy", healthz)
    app.router.add_get("/-/ready", is_ready)
    app.router.add_get("/api/v1/status", status_json)
    app.router.add_get("/", city_page)
    app.router.add_get("/status", city_page)
    # The inventory's id rule: anything else is no school of ours, answered 404 before any lookup.
    app.router.add_get(r"/status/school/{school_id:[A-Za-z0-9][A-Za-z0-9_.-]{0,63}}", school_page)
    return app


def _html(page: str) -> web.Response:
    """A status page, compressed when the browser accepts it (a city page is ~10 times smaller gzipped)."""
    response = web.Response(text=page, content_type="text/html", charset="utf-8")
    response.headers["Cache-Control"] = "no-store"
    response.enable_compression()
    return response

"""Wiring and lifecycle: startup, serve, shutdown on one exit stack; reload on SIGHUP.

`startup` opens everything in order and pushes each close onto one `AsyncExitStack`,
so whatever was opened is closed on every exit path (a port already taken, a busy
spool directory, a crash). Signal handlers only set flags: the first SIGTERM/SIGINT
asks for a graceful stop, a second one sets `forced`, and shutdown stops waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import signal
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from telemetryd import __version__, heap, logs, slices
from telemetryd.alarm.receiver import ReceiverLimits, Reception, SiaReceiver
from telemetryd.alarm.supervision import Supervision, panel_devices, supervised_panels, supervision_results
from telemetryd.config import Config, ConfigError, load_config, loading_config
from telemetryd.config.settings import Settings, SiaSettings
from telemetryd.config.yamlsrc import unexpected
from telemetryd.export.app import ExportSources, create_app
from telemetryd.export.instance import InstanceStatus
from telemetryd.export.webauth import BasicAuth, HttpListener, WebConfigWatch
from telemetryd.history.dbcli import NoDatabase, database_access
from telemetryd.history.liveness import SpoolDirectoryBusy
from telemetryd.history.recorder import History
from telemetryd.httpguard import ConnectionGuard, Limits
from telemetryd.link.compliance import LinkState, SchoolLink
from telemetryd.link.monitor import LinkMonitor
from telemetryd.model import Device, Health, ProbeResult, ProbeSpec, School, SpeedResult, StateChange
from telemetryd.probes import PROBERS, ProbeContext, open_resources
from telemetryd.probes.icmp import Pinger
from telemetryd.probes.isapi import IsapiProber
from telemetryd.probes.isapi.alerts import Change as EventChange
from telemetryd.probes.isapi.events import EventStreams
from telemetryd.reachability.scheduler import SchedulePlan, Scheduler, jobs_per_second
from telemetryd.reachability.state import SIA_PROBE, RosterPlan, State
from telemetryd.sdnotify import Notifier
from telemetryd.secrets import Secrets

log = structlog.get_logger("telemetryd")

LOOP_LAG_PERIOD = 0.5
SUPERVISION_PERIOD = 5.0
"""How often heartbeat supervision becomes results of the panels' `sia` probe."""
FORCED_DEADLINE = 0.5
"""After a second stop signal: how long history still gets to reach the spool."""


@dataclass(frozen=True, slots=True)
class Reload:
    """A configuration loaded for a reload, with the roster and schedule planned for it."""

    config: Config
    roster: RosterPlan
    schedule: SchedulePlan


class StartupFailed(Exception):
    """Start-up could not complete; the reason was logged, and the exit stack closes what was opened."""


class Daemon:
    """One running telemetryd: config, state, scheduler, HTTP server."""

    def __init__(self, config: Config, *, notifier: Notifier | None = None) -> None:
        settings = config.settings
        self.config = config
        self.state = State(settings.hysteresis.down_after, settings.hysteresis.up_after)
        self.state.sync(config.inventory)
        self.ctx = ProbeContext(settings, Secrets(settings.credentials_directory))
        self.scheduler = Scheduler(self.ctx, self._on_result)
        self.links = LinkState()
        self.supervision = Supervision(started_at=time.monotonic())
        self.link_monitor = LinkMonitor(self.links, on_speedtest=self._on_speedtest, on_poll=self._on_poll)
        self.instance = InstanceStatus(started_at=time.time(), shard=settings.shard, last_reload_success=time.time())
        self.sia: SiaReceiver | None = None
        self.history: History | None = None
        self.events: EventStreams | None = None
        self.http: HttpListener | None = None
        self.notifier = notifier or Notifier()
        self.ready = False
        self.listen_address = ""
        self.forced = False
        self._stop = asyncio.Event()
        self._forced = asyncio.Event()
        self._reload_requested = asyncio.Event()
        self._scheduler_task: asyncio.Task[None] | None = None
        self._background: list[asyncio.Task[None]] = []
        self._stop_signals = 0
        self._panels = panel_devices(config.inventory)

    # ------------------------------------------------------------------ results

    def _on_result(self, device: Device, spec: ProbeSpec, result: ProbeResult) -> None:
        self._changed(self.state.apply(device.id, spec.name, result, time.time()))

    def _changed(self, changes: list[StateChange]) -> None:
        # Journaled before logged: a change anyone saw in the log survives a kill -9 that follows.
        if changes and self.history is not None:
            self.history.record_changes(changes)
        for change in changes:
            _log_change(change)

    def _on_speedtest(self, school: School, results: tuple[SpeedResult, SpeedResult], confirmation: bool) -> None:
        if self.history is not None:
            self.history.record_speedtest(school, results, confirmation=confirmation)

    def _on_poll(self, link: SchoolLink) -> None:
        if self.history is not None:
            self.history.record_rates(link)

    def _on_reception(self, reception: Reception) -> None:
        """A DC-09 frame was handled: its events (alarms, troubles, restorals, tests) go to the history."""
        if self.history is not None and reception.events:
            device = self._panels.get(reception.key) if reception.key is not None else None
            self.history.record_reception(reception, device)

    def apply_supervision(self, now: float, wall: float) -> None:
        """Heartbeat supervision as results of each supervised panel's `sia` probe."""
        for device, result in supervision_results(self.supervision, self.state.inventory, now):
            self._changed(self.state.apply(device.id, SIA_PROBE, result, wall))

    def export_sources(self) -> ExportSources:
        """The domain objects /metrics and the status endpoints read."""
        return ExportSources(
            state=self.state,
            scheduler=self.scheduler,
            links=self.links,
            link_monitor=self.link_monitor,
            supervision=self.supervision,
            instance=self.instance,
            receiver=self.sia,
            history=self.history,
            pinger=self.ctx.resource(Pinger),
            events=self.events,
            http=self.http,
            settings=lambda: self.config.settings,
        )

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> int:
        """Start up, serve until SIGTERM/SIGINT, shut down; returns the process exit code."""
        async with contextlib.AsyncExitStack() as stack:
            try:
                await self.startup(stack)
            except StartupFailed:
                return 1
            try:
                await self.serve()
            finally:
                await self.shutdown(stack)
        return 1 if self.forced else 0

    async def startup(self, stack: contextlib.AsyncExitStack) -> None:
        """Open everything in order, each close pushed on `stack`; raises StartupFailed (logged)."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_stop_signal, signum)
            stack.callback(loop.remove_signal_handler, signum)
        loop.add_signal_handler(signal.SIGHUP, self._reload_requested.set)
        stack.callback(loop.remove_signal_handler, signal.SIGHUP)
        settings = self.config.settings
        await self._open_probe_resources(stack)
        await self._start_history(stack, settings)
        await self._start_events(stack, settings)
        await self._start_sia(stack, settings)
        await self._listen(stack, settings)

        self.scheduler.load(self.config.inventory, settings)
        self.link_monitor.configure(settings, self.config.inventory)
        self._scheduler_task = loop.create_task(self.scheduler.run(), name="scheduler")
        self._background = [
            loop.create_task(self.link_monitor.run(), name="links"),
            loop.create_task(self._supervise_panels(), name="sia-supervision"),
            loop.create_task(self._measure_loop_lag(), name="loop-lag"),
            loop.create_task(self._reload_loop(), name="reload"),
        ]
        if self.notifier.watchdog_interval:
            self._background.append(loop.create_task(self._watchdog(self.notifier.watchdog_interval), name="watchdog"))
        stack.push_async_callback(self._stop_tasks)
        self.ready = True
        log.info(
            "started",
            version=__version__,
            listen=self.listen_address,
            schools=len(self.config.inventory.schools),
            devices=self.config.inventory.device_count,
            shard=str(settings.shard),
            probes_per_second=round(jobs_per_second(self.config.inventory, settings), 1),
            icmp=self.instance.icmp_mode,
            parsed_by=self.config.parsed_by,
        )
        self.notifier.notify(ready=1, status=self._status_line())

    async def serve(self) -> None:
        """Probe, export and reload until a stop is asked for."""
        await self._stop.wait()

    async def shutdown(self, stack: contextlib.AsyncExitStack) -> None:
        """Stop probing, wait for runs in flight up to the deadline (less when forced), close everything."""
        self.ready = False
        self.notifier.notify(stopping=1)
        deadline = self.config.settings.shutdown_timeout
        self.scheduler.stop()
        cancelled = await self._unless_forced(self.scheduler.drain(max(deadline - 1.0, 0.1)))
        if cancelled is None:  # forced: cancel what is left at once
            cancelled = await self.scheduler.drain(0.0)
        await stack.aclose()
        log.info("stopped", probes_cancelled=cancelled, forced=self.forced)

    async def _unless_forced(self, work: Coroutine[Any, Any, int]) -> int | None:
        """Await `work`, or stop waiting (cancel it) on a second stop signal; None when forced."""
        task = asyncio.ensure_future(work)
        forced = asyncio.ensure_future(self._forced.wait())
        try:
            await asyncio.wait({task, forced}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            forced.cancel()
        if task.done():
            return task.result()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return None

    async def _stop_tasks(self) -> None:
        for task in (*self._background, *([self._scheduler_task] if self._scheduler_task else [])):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._scheduler_task is not None:
            await asyncio.gather(self._scheduler_task, return_exceptions=True)

    async def _start_events(self, stack: contextlib.AsyncExitStack, settings: Settings) -> None:
        """The cameras' and NVRs' event streams, over the ISAPI prober's session (closed before it)."""
        prober = self.ctx.resource(IsapiProber)
        if prober is None or self.ctx.secrets is None or not settings.probes.isapi.event_stream:
            return
        options = settings.probes.isapi
        self.events = EventStreams(
            prober,
            self.ctx.secrets,
            on_change=self._on_camera_event,
            heartbeat_timeout=options.event_heartbeat_timeout,
            hold=options.event_hold,
        )
        self.events.sync(self.config.inventory)
        stack.push_async_callback(self.events.close)

    def _on_camera_event(self, device: Device, change: EventChange) -> None:
        """An event began or ended: a row of the outage log (probe ``event:<event>:<channel>``, down while active)."""
        if self.history is not None:
            up, down = Health.UP, Health.DOWN
            self.history.record_changes(
                [
                    StateChange(
                        change.at,
                        device.school_id,
                        device.id,
                        device.kind,
                        f"event:{change.event}:{change.channel}",
                        up if change.active else down,
                        down if change.active else up,
                        change.event if change.active else "",
                    )
                ]
            )

    async def _open_probe_resources(self, stack: contextlib.AsyncExitStack) -> None:
        """Every prober's resources, opened by its own module; a missing ICMP socket is logged, not fatal."""
        unavailable = await open_resources(stack, self.ctx, PROBERS)
        for protocol, problem in unavailable.items():
            log.error(f"{protocol}_unavailable", error=str(problem), hint=problem.hint)
        pinger = self.ctx.resource(Pinger)
        if pinger is not None:
            self.instance.icmp_mode = pinger.mode
            log.info(
                "icmp_socket_opened",
                mode=pinger.mode,
                receive_buffer_bytes=pinger.receive_buffer_bytes,
                note="unprivileged ping socket" if pinger.mode == "dgram" else "raw socket (CAP_NET_RAW)",
            )

    async def _start_history(self, stack: contextlib.AsyncExitStack, settings: Settings) -> None:
        """Start recording history when `history.dsn` is set."""
        if settings.history.dsn is None:
            return
        try:
            _dsn, password = database_access(settings)
        except NoDatabase as exc:
            # Monitoring matters more than its record: run, spool, and let HistoryDatabaseDown say why.
            log.error("history_credentials_missing", error=str(exc), action="spooling until the password is readable")
            password = None
        history = History(settings, password)
        try:
            history.start(self.config.inventory)
        except (SpoolDirectoryBusy, OSError) as exc:
            log.error("history_spool_unusable", directory=settings.history.spool_directory, error=str(exc))
            history.liveness.unlock()
            raise StartupFailed from None
        stack.push_async_callback(self._close_history, history)
        self.history = history
        log.info("history_started", spool_directory=settings.history.spool_directory)

    async def _close_history(self, history: History) -> None:
        # Probing has stopped: no more events. Flush to PostgreSQL, else to the spool.
        deadline = FORCED_DEADLINE if self.forced else max(1.0, self.config.settings.shutdown_timeout / 2)
        await history.close(deadline=deadline)

    async def _start_sia(self, stack: contextlib.AsyncExitStack, settings: Settings) -> None:
        """Start the DC-09 receiver when `sia.listen` is set."""
        self.supervision.configure(supervised_panels(self.config.inventory, settings), now=time.monotonic())
        if settings.sia.listen is None:
            return
        host, _, port = settings.sia.listen.rpartition(":")
        receiver = SiaReceiver(
            self.supervision, limits=receiver_limits(settings.sia), on_reception=self._on_reception, log=log
        )
        try:
            await receiver.start(host.strip("[]") or "0.0.0.0", int(port))
        except OSError as exc:
            await receiver.stop()
            log.error("sia_listen_failed", address=settings.sia.listen, error=exc.strerror)
            raise StartupFailed from None
        stack.push_async_callback(receiver.stop)
        self.sia = receiver
        log.info("sia_supervision_started", panels=len(self.supervision.keys), port=receiver.port)

    async def _listen(self, stack: contextlib.AsyncExitStack, settings: Settings) -> None:
        """The HTTP server for /metrics and the status endpoints, behind the connection guard and the web config."""
        watch = WebConfigWatch(settings.web_config_file)  # validated by the loader moments ago
        limits = settings.http
        guard = ConnectionGuard(
            Limits(limits.max_connections, limits.fd_reserve, limits.head_timeout, limits.idle_timeout),
            name="exporter",
            log=log,
            tls=watch.tls,
        )
        self.http = HttpListener(guard, watch, BasicAuth(watch, log=log))
        app = create_app(self.export_sources(), health_problems=self.health_problems, ready=lambda: self.ready)
        # aiohttp's own keep-alive timer as a second line; its errors go to the guard's structured logger.
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, logger=guard.server_log, keepalive_timeout=limits.idle_timeout
        )
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        try:
            host, port = await guard.serve(runner, settings.listen_host, settings.listen_port)
        except OSError as exc:
            log.error("listen_failed", address=settings.listen, error=exc.strerror)
            raise StartupFailed from None
        stack.push_async_callback(guard.close)
        self.listen_address = f"{host}:{port}"
        log.info(
            "http_listening",
            address=self.listen_address,
            tls=watch.config.tls is not None,
            basic_auth=watch.config.requires_auth,
            connection_cap=guard.cap,
            nofile=guard.nofile,
        )
        if not watch.config.requires_auth and not ipaddress.ip_address(host).is_loopback:
            # The default listen is every interface (Prometheus is rarely on this host): say what that means.
            log.warning(
                "http_without_web_config",
                address=self.listen_address,
                note="anyone who reaches this address reads /metrics and /api/v1/status (device names and "
                "addresses); set web_config_file (TLS, basic auth) or listen on 127.0.0.1",
            )

    def _on_stop_signal(self, signum: int) -> None:
        """Only flags: the first signal asks for a graceful stop, a second one stops the waiting."""
        self._stop_signals += 1
        name = signal.Signals(signum).name
        if self._stop_signals > 1:
            log.warning("forced_exit", signal=name)
            self.forced = True
            self._forced.set()
        else:
            log.info("stopping", signal=name)
        self._stop.set()

    def request_stop(self) -> None:
        """Ask the daemon to stop (as SIGTERM does)."""
        self._stop.set()

    # ------------------------------------------------------------------ background

    async def _supervise_panels(self) -> None:
        """Turn heartbeat supervision into results of each panel's `sia` probe, every few seconds."""
        while True:
            await asyncio.sleep(SUPERVISION_PERIOD)
            self.apply_supervision(time.monotonic(), time.time())

    async def _reload_loop(self) -> None:
        while True:
            await self._reload_requested.wait()
            self._reload_requested.clear()
            # Parsing and planning 100,000 devices is seconds of work: on the loop in 5 ms slices
            # (a thread would hold the GIL against the loop's every socket call); only the swap
            # is one step, in time proportional to what changed.
            try:
                new = await slices.sliced(self._reloading())
                if new is not None:
                    self._swap(new)
                    await asyncio.sleep(0)  # the swap and the freeing of what it replaced: two stalls, not one
                    del new  # its plans hold the replaced generation: let it go now, not at the next reload
            except Exception as exc:  # a bug met by some configuration: say so and serve the next SIGHUP
                log.exception("reload_failed", path=str(self.config.path), reason=unexpected(exc))
                self._reload_failed()

    def reload(self) -> bool:
        """Load the config again; swap it in whole, or keep the old one and say why."""
        new = slices.finish(self._reloading())
        if new is None:
            return False
        self._swap(new)
        return True

    def _reloading(self) -> slices.Steps[Reload | None]:
        """The new configuration and its plans, in steps; None (logged, the running one kept) when it is invalid."""
        path = self.config.path
        with heap.building():
            try:
                new = yield from loading_config(path, self.config.inventory)
            except ConfigError as exc:
                log.error(
                    "reload_failed",
                    path=str(path),
                    problems=[str(p) for p in exc.problems],
                    action="kept the running configuration",
                )
                self._reload_failed()
                return None
            roster = yield from self.state.planning(new.inventory)
            schedule = yield from self.scheduler.planning(new.inventory, new.settings)
            return Reload(new, roster, schedule)

    def _reload_failed(self) -> None:
        self.instance.last_reload_ok = False
        self.notifier.notify(status="reload failed; running the previous configuration")

    def _swap(self, reload: Reload) -> None:
        """Put a loaded configuration in place: state, schedule, links and supervision follow it."""
        started = time.perf_counter()
        with heap.building():
            old = self._follow(reload)
        new = reload.config
        log.info(
            "reloaded",
            schools=len(new.inventory.schools),
            devices=new.inventory.device_count,
            was_devices=old.inventory.device_count,
            parsed_by=new.parsed_by,
            swap_seconds=round(time.perf_counter() - started, 4),
        )
        self.notifier.notify(status=self._status_line())

    def _follow(self, reload: Reload) -> Config:
        """The swap itself, on the loop; returns the configuration it replaced."""
        old, new = self.config, reload.config
        if new.settings.listen != old.settings.listen:
            log.warning("listen_change_needs_restart", running=old.settings.listen, configured=new.settings.listen)
        if new.settings.web_config_file != old.settings.web_config_file and self.http is not None:
            try:
                self.http.watch.follow(new.settings.web_config_file)  # checked by the reload moments ago
                log.info("web_config_followed", path=new.settings.web_config_file)
            except ConfigError as exc:  # changed again since: keep the one in force
                log.error("web_config_reload_failed", problems=[str(p) for p in exc.problems])
        if new.settings.http != old.settings.http:
            log.warning("http_limits_change_needs_restart", note="connection limits are read at start-up")
        if new.settings.logging != old.settings.logging:
            logs.configure(new.settings.logging.format, new.settings.logging.level)
        if new.settings.history != old.settings.history:
            log.warning("history_change_needs_restart", note="history settings are read at start-up")
        if new.settings.sia.listen != old.settings.sia.listen:
            log.warning(
                "sia_listen_change_needs_restart", running=old.settings.sia.listen, configured=new.settings.sia.listen
            )
        if self.sia is not None:
            self.sia.configure(receiver_limits(new.settings.sia))
        self.config = new
        self.state.down_after = new.settings.hysteresis.down_after
        self.state.up_after = new.settings.hysteresis.up_after
        self._changed(self.state.adopt(reload.roster, time.time()))
        if self.history is not None:
            self.history.inventory_changed(new.inventory, new.settings.shard)
        self.ctx.reconfigure(new.settings, new.inventory)
        if self.events is not None:
            self.events.sync(new.inventory)
        self.scheduler.commit(reload.schedule)
        self.link_monitor.configure(new.settings, new.inventory)
        self.supervision.configure(supervised_panels(new.inventory, new.settings), now=time.monotonic())
        self._panels = panel_devices(new.inventory)
        self.instance.shard = new.settings.shard
        self.instance.last_reload_ok = True
        self.instance.last_reload_success = time.time()
        return old

    async def _measure_loop_lag(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            expected = loop.time() + LOOP_LAG_PERIOD
            await asyncio.sleep(LOOP_LAG_PERIOD)
            self.instance.loop_lag.observe(max(0.0, loop.time() - expected))

    async def _watchdog(self, interval: float) -> None:
        while True:
            # Only pet the watchdog while the scheduler is alive: a dead scheduler should be restarted.
            if not self.health_problems():
                self.notifier.notify(watchdog=1, status=self._status_line())
            await asyncio.sleep(interval)

    def health_problems(self) -> list[str]:
        """Reasons the daemon is not healthy (empty when it is)."""
        problems = []
        task = self._scheduler_task
        if task is not None and task.done() and not task.cancelled():
            problems.append("scheduler stopped")
        return problems

    def _status_line(self) -> str:
        counts = self.state.count_by_health()
        return (
            f"{len(self.config.inventory.schools)} schools, {len(self.state.devices)} devices: "
            f"{counts[Health.UP]} up, {counts[Health.DOWN]} down"
        )


def receiver_limits(sia: SiaSettings) -> ReceiverLimits:
    """The DC-09 receiver's per-peer limits from the `sia` settings."""
    return ReceiverLimits(
        idle_timeout=sia.idle_timeout,
        max_connections=sia.max_connections,
        max_per_source=sia.max_connections_per_source,
        frame_budget=sia.frame_budget,
        write_buffer=sia.write_buffer_bytes,
    )


def _log_change(change: StateChange) -> None:
    """Log transitions, not every failure: a device going down, recovering, first seen down."""
    fields = {"school": change.school_id, "device": change.device_id, "kind": change.kind.value}
    if change.probe is not None:
        log.debug(
            "probe_state_changed",
            probe=change.probe,
            old=change.old.value,
            new=change.new.value,
            reason=change.reason,
            **fields,
        )
        return
    if change.new is Health.DOWN:
        log.warning("device_down", reason=change.reason, detail=change.detail, was=change.old.value, **fields)
    elif change.old is Health.DOWN:
        log.info("device_recovered", **fields)


def run(config_path: Path) -> int:
    """Load the config, set up logging and run the daemon under uvloop."""
    try:
        with heap.building():
            config = load_config(config_path)
            daemon = Daemon(config)
    except ConfigError as exc:
        logs.configure("auto", "info")
        log.error("config_invalid", path=str(config_path), problems=[str(p) for p in exc.problems])
        return 2
    logs.configure(config.settings.logging.format, config.settings.logging.level)
    daemon.instance.collector = heap.tune()
    import uvloop  # noqa: PLC0415 - only the daemon needs it; CLI helpers start faster without

    return uvloop.run(daemon.run())

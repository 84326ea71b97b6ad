"""Wiring and lifecycle: start-up, run, reload on SIGHUP, shutdown with a deadline.

Signal handlers only set flags; the main coroutine acts on them. A second SIGINT or
SIGTERM during shutdown gives up waiting and exits at once.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import structlog
from aiohttp import web

from telemetryd import __version__, logs
from telemetryd.alarm.receiver import SiaReceiver, SupervisedPanel, Supervision, account_key
from telemetryd.config import Config, ConfigError, load_config
from telemetryd.config.settings import Settings
from telemetryd.histogram import Histogram
from telemetryd.history.dbcli import NoDatabase, database_access
from telemetryd.history.liveness import SpoolDirectoryBusy
from telemetryd.history.recorder import History
from telemetryd.link.compliance import LinkState, SchoolLink
from telemetryd.link.monitor import LinkMonitor
from telemetryd.model import Device, Health, Inventory, ProbeResult, ProbeSpec, School, SpeedResult, StateChange
from telemetryd.probes import ProbeContext, isapi
from telemetryd.probes.icmp import Pinger
from telemetryd.probes.isapi import IsapiProber
from telemetryd.reachability.scheduler import Scheduler, jobs_per_second
from telemetryd.reachability.state import SIA_PROBE, State
from telemetryd.sdnotify import Notifier
from telemetryd.secrets import Secrets

log = structlog.get_logger("telemetryd")

LOOP_LAG_PERIOD = 0.5
SUPERVISION_PERIOD = 5.0
"""How often heartbeat supervision becomes results of the panels' `sia` probe."""


class Daemon:
    """One running telemetryd: config, state, scheduler, HTTP server."""

    def __init__(self, config: Config, *, notifier: Notifier | None = None) -> None:
        self.config = config
        self.state = State(config.settings.hysteresis.down_after, config.settings.hysteresis.up_after)
        self.state.sync(config.inventory)
        self.ctx = ProbeContext(config.settings)
        self.scheduler = Scheduler(self.ctx, self._on_result)
        self.links = LinkState()
        self.supervision = Supervision(started_at=time.monotonic())
        self.sia: SiaReceiver | None = None
        self.link_monitor = LinkMonitor(self.links, on_speedtest=self._on_speedtest, on_poll=self._on_poll)
        self.history: History | None = None
        self.notifier = notifier or Notifier()
        self.loop_lag = Histogram()
        self.started_at = time.time()
        self.last_reload_ok = True
        self.last_reload_success = time.time()
        self.icmp_mode = "none"
        self.ready = False
        self.listen_address = ""
        self._stop = asyncio.Event()
        self._reload_requested = asyncio.Event()
        self._scheduler_task: asyncio.Task[None] | None = None
        self._stop_signals = 0

    # ------------------------------------------------------------------ results

    def _on_result(self, device: Device, spec: ProbeSpec, result: ProbeResult) -> None:
        self._changed(self.state.apply(device.id, spec.name, result, time.time()))

    def _changed(self, changes: list[StateChange]) -> None:
        for change in changes:
            self._log_change(change)
        if changes and self.history is not None:
            self.history.record_changes(changes)

    def _on_speedtest(self, school: School, results: tuple[SpeedResult, SpeedResult], confirmation: bool) -> None:
        if self.history is not None:
            self.history.record_speedtest(school, results, confirmation=confirmation)

    def _on_poll(self, link: SchoolLink) -> None:
        if self.history is not None:
            self.history.record_rates(link)

    @staticmethod
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

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT; returns the process exit code."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_stop_signal, signum)
        loop.add_signal_handler(signal.SIGHUP, self._reload_requested.set)
        settings = self.config.settings
        self._open_pinger()
        self.ctx.secrets = Secrets(settings.credentials_directory)
        self.ctx.isapi = IsapiProber(policy=isapi.policy_from(settings), log=log)
        if not self._start_history(settings):
            await self.ctx.isapi.close()
            return 1
        if not await self._start_sia(settings):
            await self.ctx.isapi.close()
            if self.history is not None:
                await self.history.close(settings.shutdown_timeout)
            return 1
        runner = web.AppRunner(_app(self), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, settings.listen_host, settings.listen_port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            log.error("listen_failed", address=settings.listen, error=exc.strerror)
            await runner.cleanup()
            return 1
        sockets = getattr(site._server, "sockets", None) or []  # the port actually bound (listen :0 in tests)
        self.listen_address = "{}:{}".format(*sockets[0].getsockname()[:2]) if sockets else settings.listen
        self.scheduler.load(self.config.inventory, settings)
        self._scheduler_task = loop.create_task(self.scheduler.run(), name="scheduler")
        self.link_monitor.configure(settings, self.config.inventory)
        background = [
            loop.create_task(self.link_monitor.run(), name="links"),
            loop.create_task(self._supervise_panels(), name="sia-supervision"),
            loop.create_task(self._measure_loop_lag(), name="loop-lag"),
            loop.create_task(self._reload_loop(), name="reload"),
        ]
        if self.notifier.watchdog_interval:
            background.append(loop.create_task(self._watchdog(self.notifier.watchdog_interval), name="watchdog"))
        self.ready = True
        log.info(
            "started",
            version=__version__,
            listen=self.listen_address,
            schools=len(self.config.inventory.schools),
            devices=self.config.inventory.device_count,
            shard=str(settings.shard),
            probes_per_second=round(jobs_per_second(self.config.inventory, settings), 1),
            icmp=self.icmp_mode,
        )
        self.notifier.notify(ready=1, status=self._status_line())
        try:
            await self._stop.wait()
        finally:
            await self._shutdown(runner, background)
        return 0

    def _open_pinger(self) -> None:
        icmp = self.config.settings.probes.icmp
        try:
            pinger = Pinger.open(
                max_packets_per_second=icmp.max_packets_per_second,
                receive_buffer_bytes=icmp.receive_buffer_bytes,
            )
        except PermissionError as exc:
            log.error("icmp_unavailable", error=str(exc), hint="run with CAP_NET_RAW (the systemd unit grants it)")
            return
        self.ctx.pinger = pinger
        self.icmp_mode = pinger.mode
        log.info(
            "icmp_socket_opened",
            mode=pinger.mode,
            receive_buffer_bytes=pinger.receive_buffer_bytes,
            note="unprivileged ping socket" if pinger.mode == "dgram" else "raw socket (CAP_NET_RAW)",
        )

    async def _supervise_panels(self) -> None:
        """Turn heartbeat supervision into results of each panel's `sia` probe, every few seconds."""
        while True:
            await asyncio.sleep(SUPERVISION_PERIOD)
            self.apply_supervision(time.monotonic(), time.time())

    def apply_supervision(self, now: float, wall: float) -> None:
        """One pass: ok → up, lost or never heard past its interval → down, not yet due → no result."""
        for device in self.config.inventory.devices_by_id.values():
            if device.sia is None:
                continue
            key = account_key(device.sia)
            try:
                status = self.supervision.status_of(key, now)
            except KeyError:
                continue  # reload in between
            if status.state.value == "ok":
                result = ProbeResult(True, 0.0)
            elif status.overdue:
                heard = "no heartbeat since the receiver started" if status.last_heard is None else "no heartbeat"
                result = ProbeResult(
                    False,
                    0.0,
                    status.state.value,
                    f"{heard} for {status.silent_for:.0f} s (heartbeat every {status.interval:g} s)",
                )
            else:
                continue
            self._changed(self.state.apply(device.id, SIA_PROBE, result, wall))

    def _start_history(self, settings: Settings) -> bool:
        """Start recording history when `history.dsn` is set; False when the spool directory is unusable."""
        if settings.history.dsn is None:
            return True
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
            history.heartbeat.unlock()
            return False
        self.history = history
        log.info("history_started", spool_directory=settings.history.spool_directory)
        return True

    async def _start_sia(self, settings: Settings) -> bool:
        """Start the DC-09 receiver when `sia.listen` is set; False when its port cannot be bound."""
        self.supervision.configure(sia_panels(self.config.inventory, settings), now=time.monotonic())
        if settings.sia.listen is None:
            return True
        host, _, port = settings.sia.listen.rpartition(":")
        self.sia = SiaReceiver(self.supervision, log=log)
        try:
            await self.sia.start(host.strip("[]") or "0.0.0.0", int(port))
        except OSError as exc:
            log.error("sia_listen_failed", address=settings.sia.listen, error=exc.strerror)
            return False
        log.info("sia_supervision_started", panels=len(self.supervision.keys), port=self.sia.port)
        return True

    def _on_stop_signal(self, signum: int) -> None:
        self._stop_signals += 1
        if self._stop_signals > 1:
            log.warning("forced_exit", signal=signal.Signals(signum).name)
            raise SystemExit(1)
        log.info("stopping", signal=signal.Signals(signum).name)
        self._stop.set()

    def request_stop(self) -> None:
        """Ask the daemon to stop (as SIGTERM does)."""
        self._stop.set()

    async def _shutdown(self, runner: web.AppRunner, background: list[asyncio.Task[None]]) -> None:
        self.ready = False
        self.notifier.notify(stopping=1)
        deadline = self.config.settings.shutdown_timeout
        self.scheduler.stop()
        if self._scheduler_task is not None:
            self._scheduler_task.cancel()
        cancelled = await self.scheduler.drain(max(deadline - 1.0, 0.1))
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        if self._scheduler_task is not None:
            await asyncio.gather(self._scheduler_task, return_exceptions=True)
        await runner.cleanup()
        if self.ctx.pinger is not None:
            self.ctx.pinger.close()
        if self.ctx.isapi is not None:
            await self.ctx.isapi.close()
        if self.sia is not None:
            await self.sia.stop()
        if self.history is not None:
            # Probing has stopped: no more events. Flush to PostgreSQL, else to the spool.
            await self.history.close(deadline=max(1.0, deadline / 2))
        log.info("stopped", probes_cancelled=cancelled)

    # ------------------------------------------------------------------ reload

    async def _reload_loop(self) -> None:
        while True:
            await self._reload_requested.wait()
            self._reload_requested.clear()
            self.reload()

    def reload(self) -> bool:
        """Load the config again; swap it in whole, or keep the old one and say why."""
        path = self.config.path
        try:
            new = load_config(path)
        except ConfigError as exc:
            self.last_reload_ok = False
            log.error(
                "reload_failed",
                path=str(path),
                problems=[str(p) for p in exc.problems],
                action="kept the running configuration",
            )
            self.notifier.notify(status="reload failed; running the previous configuration")
            return False
        old = self.config
        if new.settings.listen != old.settings.listen:
            log.warning("listen_change_needs_restart", running=old.settings.listen, configured=new.settings.listen)
        if new.settings.logging != old.settings.logging:
            logs.configure(new.settings.logging.format, new.settings.logging.level)
        self.config = new
        self.state.down_after = new.settings.hysteresis.down_after
        self.state.up_after = new.settings.hysteresis.up_after
        before = {device_id: d.health for device_id, d in self.state.devices.items()}
        self.state.sync(new.inventory)
        self._changed(forgotten(before, self.state, old.inventory, time.time()))
        if self.history is not None:
            self.history.inventory_changed(new.inventory, new.settings.shard)
        if new.settings.history != old.settings.history:
            log.warning("history_change_needs_restart", note="history settings are read at start-up")
        if self.ctx.pinger is not None:
            self.ctx.pinger.set_rate(new.settings.probes.icmp.max_packets_per_second)
        self.scheduler.load(new.inventory, new.settings)
        self.link_monitor.configure(new.settings, new.inventory)
        self.supervision.configure(sia_panels(new.inventory, new.settings), now=time.monotonic())
        self.ctx.secrets = Secrets(new.settings.credentials_directory)
        if new.settings.sia.listen != old.settings.sia.listen:
            log.warning(
                "sia_listen_change_needs_restart", running=old.settings.sia.listen, configured=new.settings.sia.listen
            )
        self.last_reload_ok = True
        self.last_reload_success = time.time()
        log.info(
            "reloaded",
            schools=len(new.inventory.schools),
            devices=new.inventory.device_count,
            was_devices=old.inventory.device_count,
        )
        self.notifier.notify(status=self._status_line())
        return True

    # ------------------------------------------------------------------ health

    async def _measure_loop_lag(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            expected = loop.time() + LOOP_LAG_PERIOD
            await asyncio.sleep(LOOP_LAG_PERIOD)
            self.loop_lag.observe(max(0.0, loop.time() - expected))

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


def forgotten(before: dict[str, Health], state: State, old: Inventory, at: float) -> list[StateChange]:
    """Device-level changes to unknown for devices a reload removed or reset (new address).

    Without them the history would keep such a device in its last state for ever.
    """
    changes = []
    for device_id, health in before.items():
        if health is Health.UNKNOWN:
            continue
        now = state.devices.get(device_id)
        if now is not None and now.health is not Health.UNKNOWN:
            continue
        device = old.devices_by_id[device_id]
        reason = "removed from the inventory" if now is None else "address changed"
        changes.append(StateChange(at, device.school_id, device_id, device.kind, None, health, Health.UNKNOWN, reason))
    return changes


def sia_panels(inventory: Inventory, settings: Settings) -> list[SupervisedPanel]:
    """The alarm panels with `sia:`, as the receiver's supervision table wants them."""
    return [
        SupervisedPanel(account_key(d.sia), d.sia.interval, settings.sia.grace)
        for d in inventory.devices_by_id.values()
        if d.sia is not None
    ]


def _app(daemon: Daemon) -> web.Application:
    from telemetryd.export.app import create_app  # noqa: PLC0415 - exporter imports Daemon for typing

    return create_app(daemon)


def run(config_path: Path) -> int:
    """Load the config, set up logging and run the daemon under uvloop."""
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        logs.configure("auto", "info")
        log.error("config_invalid", path=str(config_path), problems=[str(p) for p in exc.problems])
        return 2
    logs.configure(config.settings.logging.format, config.settings.logging.level)
    import uvloop  # noqa: PLC0415 - only the daemon needs it; CLI helpers start faster without

    return uvloop.run(Daemon(config).run())

"""Composition root: builds the components from a finished Config; one entry point per command.

Every entry point returns the process exit code: 0 success, 1 failure (the log says which secret and why);
configuration problems never get here (``load_config`` raised them, exit 2).

Each command imports what it uses when it runs, not when this module is imported: ``init`` (the init
container on every pod start) loads no web server, no Prometheus client, no file watcher, no Pub/Sub and no
HTTP client unless a notifier needs one; ``check-config`` loads no Google client. At the top of this module
are only the standard library, the configuration, the error tree and the collector's start-up pause;
``tests/test_cli_imports.py`` asserts the module sets.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TextIO

from agent.config import Config, EventsConfig, SecretSpec, split_listen
from agent.core import collector
from agent.errors import AgentError, SinkError

if TYPE_CHECKING:
    from agent.core.model import Snapshot
    from agent.core.store import SnapshotStore
    from agent.notify.base import Notifier
    from agent.observe.metrics import Liveness, Metrics
    from agent.render.outputs import Renderer
    from agent.sinks.snapshot import SnapshotSink
    from agent.sources import Source
    from agent.supervisor import Listener, Part
    from agent.sync import BootstrapReport, Syncer, SyncSettings

log = logging.getLogger("agent")

Mode = Literal["init", "run", "dev", "exec"]


def check_config(config: Config, out: TextIO) -> int:
    """Print the normalised configuration as YAML (itself a valid config file). Validation already happened
    in ``load_config``: reaching this point means the configuration is valid. Returns the exit code."""
    import yaml

    yaml.safe_dump(config.to_dict(), out, sort_keys=False, default_flow_style=False, allow_unicode=True)
    return 0


# -- building blocks ---------------------------------------------------------------------------------


def select_source(config: Config, mode: Mode) -> Source:
    """dotenv for ``dev`` (or ``source: dotenv``); otherwise Secret Manager, never silently anything else.

    The one exception is explicit: ``--fallback-dotenv FILE`` or ``SECRETS_AGENT_ENV=development`` with
    ``source: auto`` uses the .env file when no Google credentials exist, and says so loudly.
    """
    # One kind of source is built: the other's client (gRPC and Google's, or the file watcher) stays unloaded.
    from agent.sources.credentials import google_credentials_available

    def dotenv(path: Path) -> Source:
        from agent.sources.dotenv import DotenvSource

        return DotenvSource(path=path, debounce=config.dotenv.debounce)

    def gcp(endpoint: str | None) -> Source:
        from agent.sources.gcp import GcpSource

        return GcpSource(endpoint=endpoint, call_timeout=config.gcp.call_timeout)

    if config.source_for(mode) == "dotenv":
        log.info("source: .env file %s", config.dotenv.file)
        return dotenv(config.dotenv.file)
    if config.gcp.endpoint:
        log.info("source: Secret Manager at %s (plaintext, emulator)", config.gcp.endpoint)
        return gcp(config.gcp.endpoint)
    if google_credentials_available():
        return gcp(None)
    fallback = config.fallback_file
    if config.source == "auto" and fallback is not None:
        log.warning(
            "NO GOOGLE CREDENTIALS FOUND: serving secrets from the .env file %s instead of Secret Manager "
            "(allowed by %s). Never run like this in production.",
            fallback,
            "--fallback-dotenv" if config.fallback_dotenv else "SECRETS_AGENT_ENV=development",
        )
        return dotenv(fallback)
    from agent.sources.errors import NO_CREDENTIALS

    raise AgentError(f"{NO_CREDENTIALS}; or use `secrets-agent dev` / --fallback-dotenv FILE for a .env file")


def build_renderer(config: Config, metrics: Metrics | None = None) -> Renderer:
    """The outputs of the configuration (files, keys, templates); template renders counted in ``metrics``."""
    from agent.render.outputs import Renderer

    if metrics is None:
        return Renderer(config.secrets, config.templates)
    renderer = Renderer(config.secrets, config.templates, observe=metrics.template_rendered)
    metrics.known_templates(renderer.templates)
    return renderer


def build_sink(config: Config, renderer: Renderer) -> SnapshotSink:
    from agent.sinks.snapshot import SnapshotSink
    from agent.sinks.tmpfs import check_memory_backed

    check_memory_backed(config.output_dir, require=config.require_tmpfs)
    return SnapshotSink(config.output_dir, config.secrets, config.env_file, renderer=renderer)


def adopt_rendered(sink: SnapshotSink, renderer: Renderer) -> Snapshot:
    """What a previous agent left on disk, with its outputs (those whose secrets could be taken back)."""
    from agent.render.outputs import RenderError

    adopted = sink.adopt()
    try:
        return renderer.render(adopted)
    except RenderError as error:  # the first write reports it again if it persists
        log.warning("the adopted secrets do not render: %s", error)
        return adopted


def build_notifiers(config: Config) -> list[Notifier]:
    """The configured notifiers; each kind's module (the HTTP one brings aiohttp's client) only if used."""
    n = config.notify
    notifiers: list[Notifier] = []
    if n.pid_file is not None or n.process is not None:
        from agent.notify.signal import SignalNotifier

        notifiers.append(SignalNotifier(signal.Signals[n.signal], n.pid_file, n.process))
    if n.url is not None:
        from agent.notify.http import HttpNotifier

        notifiers.append(HttpNotifier(n.url, n.url_timeout, n.url_retries))
    if n.command:
        from agent.notify.command import CommandNotifier

        notifiers.append(CommandNotifier(n.command, n.command_timeout))
    return notifiers


def sync_settings(config: Config, *, polling: bool = True) -> SyncSettings:
    from agent.core.retry import Backoff
    from agent.sync import SyncSettings

    return SyncSettings(
        concurrency=config.concurrency,
        poll_interval=config.poll_interval,
        poll_jitter=config.poll_jitter,
        refresh_min_interval=config.refresh_min_interval,
        polling=polling,
        strategy=config.gcp.strategy,
        backoff=Backoff(config.gcp.backoff_initial, config.gcp.backoff_max),
    )


def _remember_values(snapshot: Snapshot) -> None:
    """Let the log redaction filter know the values we serve, as a safety net behind 'never log values'."""
    from agent.observe.logs import register_served_values

    # The outputs too: a key of a JSON secret, a DSN a template composed, a decoded payload.
    register_served_values([item.data for item in snapshot] + [o.data for o in snapshot.outputs or ()])


def report_failures(report: BootstrapReport, specs: Sequence[SecretSpec]) -> int:
    """Log one line per failed secret (reference, status, hint); return how many required ones failed."""
    required = report.required_failures(specs)
    by_name = {spec.name: spec for spec in specs}
    for name, error in sorted(report.failures.items()):
        spec = by_name[name]
        hint = f" (hint: {error.hint})" if error.hint else ""
        detail = error.message
        repeated = f"{error.ref}: {error.code}: "
        if error.ref == str(spec.ref) and detail.startswith(repeated):
            # Secret Manager errors start with "<ref>: <STATUS>: "; the line already says both once.
            detail = detail[len(repeated) :]
        line = f"{name} <- {spec.ref}: {error.code}: {detail}{hint}"
        if name in required:
            log.error("required secret failed: %s", line)
        else:
            log.warning("optional secret skipped: %s", line)
    return len(required)


class NullSink:
    """For ``exec``: values go into the child's environment, not onto disk."""

    def write(self, snapshot: Snapshot) -> bool:
        return False

    def adopt(self) -> Snapshot:
        from agent.core.model import Snapshot

        return Snapshot()


# -- commands ----------------------------------------------------------------------------------------


def run_init(config: Config) -> int:
    """Fetch everything once, write, exit: 0, or 1 with one line per required secret that failed."""
    from agent.observe.logs import configure_logging
    from agent.sinks.lock import OutputDirLock

    configure_logging(config.log_level, config.log_format)
    with OutputDirLock(config.output_dir):  # one agent per output directory: a second one is refused
        return asyncio.run(_init(config))


async def _init(config: Config) -> int:
    from agent.core.store import SnapshotStore
    from agent.notify.notified import write_notified
    from agent.sync import Syncer

    source = select_source(config, "init")
    try:
        renderer = build_renderer(config)
        sink = build_sink(config, renderer)
        store = SnapshotStore(config.secrets)
        await store.publish(adopt_rendered(sink, renderer))
        syncer = Syncer(config.secrets, source, sink, store, sync_settings(config), renderer=renderer)
        collector.startup_done()
        started = time.monotonic()
        report = await syncer.bootstrap(deadline=started + config.timeout)
        _remember_values(report.snapshot)
    finally:
        await source.close()
    failed = report_failures(report, config.secrets)
    if failed:
        log.error(
            "init failed: %d of %d required secret(s) could not be fetched",
            failed,
            sum(spec.required for spec in config.secrets),
        )
        return 1
    # The app starts after init and reads these files: that is what it was told.
    write_notified(config.output_dir, report.snapshot.versions())
    log.info(
        "init done: %d secret(s) in %s in %.2fs",
        len(report.snapshot),
        config.output_dir,
        time.monotonic() - started,
    )
    return 0


def run_agent(config: Config) -> int:
    """``run``: bootstrap, then keep secrets fresh and tell the app, until SIGTERM."""
    from agent.observe.logs import configure_logging
    from agent.sinks.lock import OutputDirLock

    configure_logging(config.log_level, config.log_format)
    if config.events.enabled and config.source != "dotenv":
        from agent.sources.pubsub import require_pubsub

        require_pubsub()  # refused before the output directory is touched (its lock included)
    with OutputDirLock(config.output_dir):  # a second agent here would replace the token of this one
        return asyncio.run(_serve(config, "run"))


def run_dev(config: Config) -> int:
    """``dev``: the same outputs from a watched .env file."""
    from agent.observe.logs import configure_logging
    from agent.sinks.lock import OutputDirLock

    configure_logging(config.log_level, config.log_format)
    with OutputDirLock(config.output_dir):
        return asyncio.run(_serve(config, "dev"))


async def _serve(config: Config, mode: Mode) -> int:
    from agent.core.retry import Backoff
    from agent.core.store import SnapshotStore
    from agent.notify.coordinator import ReloadCoordinator
    from agent.notify.notified import read_notified, write_notified
    from agent.observe.metrics import Liveness, Metrics
    from agent.sources import ChangeFeed
    from agent.supervisor import signal_handlers, supervise
    from agent.sync import Syncer

    source = select_source(config, mode)
    try:
        store = SnapshotStore(config.secrets)
        metrics = Metrics(store=store, max_staleness=config.max_staleness)
        renderer = build_renderer(config, metrics)
        sink = build_sink(config, renderer)
        adopted = adopt_rendered(sink, renderer)
        _remember_values(adopted)  # last-known-good values are served (and could be logged) before any fetch
        await store.publish(adopted)
        liveness = Liveness()
        notifiers = build_notifiers(config)
        coordinator = ReloadCoordinator(
            notifiers,
            debounce=config.notify.debounce,
            backoff=Backoff(config.gcp.backoff_initial, config.gcp.backoff_max),
            max_attempts=config.notify.max_attempts,
            on_result=metrics.reload,
            on_delivered=lambda versions: write_notified(config.output_dir, versions),
        )

        def changed(snapshot: Snapshot) -> None:
            _remember_values(snapshot)
            coordinator.request(snapshot.versions())

        feed = source if isinstance(source, ChangeFeed) else None
        events = _events_config(config, source, mode)
        syncer = Syncer(
            config.secrets,
            source,
            sink,
            store,
            sync_settings(config, polling=feed is None),
            on_change=[changed],
            metrics=metrics,
            heartbeat=liveness.heartbeat("sync", poll_round_budget(config)),
            renderer=renderer,
        )

        bootstrapped = asyncio.Event()

        def _tell_what_was_missed(snapshot: Snapshot) -> None:
            # A previous agent may have swapped the files and died before it signalled the app.
            told = read_notified(config.output_dir)
            if notifiers and told is not None and told != snapshot.versions():
                log.info("the app was not told about the secrets on disk (an agent stopped first): telling")
                coordinator.request(snapshot.versions())

        async def keep_fresh() -> None:
            try:
                report = await syncer.bootstrap(
                    deadline=time.monotonic() + config.timeout, notify=len(adopted) > 0
                )
            except SinkError as error:
                # Unlike init, the sidecar stays: the poll loop fetches and writes again with backoff.
                log.error("writing the first snapshot failed, will retry: %s", error)
                bootstrapped.set()
                await syncer.poll()
                return
            bootstrapped.set()
            _remember_values(report.snapshot)
            _tell_what_was_missed(report.snapshot)
            report_failures(report, config.secrets)
            log.info(
                "%s: serving %d of %d secret(s) from %s",
                mode,
                len(report.snapshot),
                len(config.secrets),
                config.output_dir,
            )
            await syncer.poll()

        parts: dict[str, Part] = {"sync": keep_fresh()}
        if notifiers:
            parts["reload"] = coordinator.run()
        if feed is not None:
            parts["watch"] = syncer.follow(feed)
        if events is not None:
            parts["events"] = _follow_events(config, events, source, store, syncer, metrics, bootstrapped)
        # The listeners bind first; the parts above (which write the files) and the token's write wait for
        # them, so an agent whose ports are taken stops before it changed anything on disk.
        listeners: dict[str, Listener] = {}
        share_token: Callable[[], None] | None = None
        if config.server.enabled:
            listeners["endpoint"], share_token = _endpoint(config, store, syncer, metrics)
        if config.probes.enabled:
            listeners["probes"] = _probes(config, store, metrics, liveness)
        stop = asyncio.Event()
        collector.startup_done(long_running=True)
        with signal_handlers(stop, on_hup=syncer.refresh_now):
            await supervise(parts, stop, config.shutdown_grace, listeners=listeners, listening=share_token)
    finally:
        await source.close()
    log.info("%s: stopped", mode)
    return 0


def _events_config(config: Config, source: Source, mode: Mode) -> EventsConfig | None:
    """The events section when it applies (``run`` with Secret Manager), after checking pubsub is there."""
    if not config.events.enabled:
        return None
    if mode != "run" or source.name != "gcp":
        log.warning(
            "events are configured but ignored: they come from Secret Manager, and %s uses %s",
            mode,
            source.name,
        )
        return None
    from agent.sources.pubsub import require_pubsub

    require_pubsub()  # a clear error now rather than a failed part after the bootstrap
    return config.events


async def _follow_events(
    config: Config,
    events: EventsConfig,
    source: Source,
    store: SnapshotStore,
    syncer: Syncer,
    metrics: Metrics,
    bootstrapped: asyncio.Event,
) -> None:
    """Follow Secret Manager's Pub/Sub events once the bootstrap has told us the service's names for our
    secrets; poll at ``events.poll_interval`` while events flow, at ``poll_interval`` while they do not."""
    from agent.core.retry import Backoff
    from agent.sources.event_feed import EventFeed

    await bootstrapped.wait()

    def served(name: str) -> str | None:
        current = store.snapshot.get(name)
        return current.version if current is not None else None

    def health(flowing: bool) -> None:
        metrics.events_health(flowing)
        syncer.set_poll_interval(events.poll_interval if flowing else config.poll_interval)

    feed = EventFeed(
        events,
        config.secrets,
        served,
        resolved=getattr(source, "resolved_secret_names", None),
        on_health=health,
        on_event=metrics.event,
        backoff=Backoff(config.gcp.backoff_initial, config.gcp.backoff_max),
    )
    try:
        await syncer.follow(feed, max_delay=events.max_delay)
    finally:
        await feed.close()


def poll_round_budget(config: Config) -> float:
    """How long one check round may take before /healthz calls the sync loop stuck: every batch of
    ``concurrency`` calls may run into its timeout, plus time to write the snapshot."""
    batches = max(1, -(-len(config.secrets) // config.concurrency))
    return batches * (config.gcp.call_timeout + 1.0) + 30.0


def _endpoint(
    config: Config, store: SnapshotStore, syncer: Syncer, metrics: Metrics
) -> tuple[Listener, Callable[[], None]]:
    """The local fetch endpoint with its token, and the step that writes a generated token for the app
    (to take once the listeners are bound)."""
    from agent.endpoint.application import build_endpoint_app
    from agent.endpoint.serve import serve_endpoint
    from agent.endpoint.token import prepare_token

    host, port = split_listen(config.server.listen)  # serve_endpoint warns about non-loopback addresses
    token, share_token = prepare_token(config.server, config.output_dir)
    app = build_endpoint_app(
        store=store,
        token=token,
        refresh=syncer.request_refresh,  # 429 when too soon: the endpoint never reaches Google at will
        audit=config.server.audit,
        max_wait=config.server.max_wait,
        metrics=metrics,
        allowed_hosts=config.server.allowed_hosts,
        files=[plan.file for plan in syncer.renderer.plans if plan.file],
    )

    def listener(started: Callable[[int], None]) -> Part:
        return serve_endpoint(app, host, port, max_connections=config.server.max_connections, started=started)

    return listener, share_token


def _probes(config: Config, store: SnapshotStore, metrics: Metrics, liveness: Liveness) -> Listener:
    """The probes listener (``/healthz``, ``/readyz``, ``/metrics``)."""
    from agent.observe.probes import build_probes_app, serve_probes

    host, port = split_listen(config.probes.listen)
    probes = build_probes_app(
        registry=metrics.registry,
        ready=lambda: store.not_ready_reasons(config.max_staleness),
        alive=liveness.problems,
    )

    def listener(started: Callable[[int], None]) -> Part:
        return serve_probes(
            probes,
            host,
            port,
            started=started,
            max_connections=config.probes.max_connections,
            allowed_hosts=config.probes.allowed_hosts,
        )

    return listener


def run_exec(config: Config, argv: list[str]) -> int:
    """``exec``: resolve secrets into the environment and become the command (or supervise it, --watch)."""
    from agent.execmode.launch import ExecError
    from agent.observe.logs import configure_logging

    configure_logging(config.log_level, config.log_format)
    try:
        return asyncio.run(_exec(config, argv))
    except ExecError as error:
        # The shell's convention (127 not found, 126 not executable), so scripts and kubelet events can
        # tell "the app failed" from "the app never started"; a generic 1 would hide that.
        log.error("%s", error)
        return error.exit_status


async def _exec(config: Config, argv: list[str]) -> int:
    from agent.core.store import SnapshotStore
    from agent.execmode.launch import child_environment, exec_replace
    from agent.sync import Syncer

    source = select_source(config, "exec")
    store = SnapshotStore(config.secrets)
    try:
        renderer = build_renderer(config)
        syncer = Syncer(config.secrets, source, NullSink(), store, sync_settings(config), renderer=renderer)
        collector.startup_done(long_running=config.exec.watch)
        report = await syncer.bootstrap(deadline=time.monotonic() + config.timeout)
        _remember_values(report.snapshot)  # before the first line that could quote one
        if failed := report_failures(report, config.secrets):
            log.error("exec: not starting %s: %d required secret(s) could not be fetched", argv[0], failed)
            return 1
        env = child_environment(os.environ, report.snapshot, config.secrets)
        if config.exec.watch:
            return await _exec_watch(config, argv, syncer, env)
    finally:
        await source.close()
    exec_replace(argv, env)  # the agent becomes the app: nothing of it is left behind


async def _exec_watch(config: Config, argv: list[str], syncer: Syncer, env: dict[str, str]) -> int:
    """Supervise the app: it gets every signal; on rotation it is restarted (or sent reload_signal)."""
    from agent.execmode.launch import child_environment
    from agent.execmode.watch import WatchedChild

    reload_signal = signal.Signals[config.exec.reload_signal] if config.exec.reload_signal else None
    async with WatchedChild(argv, lambda: env, reload_signal, config.shutdown_grace) as child:
        rotations: set[asyncio.Task[None]] = set()

        def changed(snapshot: Snapshot) -> None:
            _remember_values(snapshot)
            try:
                new_env = child_environment(os.environ, snapshot, config.secrets)
            except AgentError as error:  # e.g. a value that is not UTF-8: keep the running app as it is
                log.error("not restarting the app for this rotation: %s", error)
                return
            task = asyncio.create_task(child.rotated(new_env))
            rotations.add(task)
            task.add_done_callback(rotations.discard)

        syncer.on_change.append(changed)
        # The child owns SIGTERM/SIGHUP here (they are forwarded to the app), so polling is the only part.
        poller = asyncio.create_task(syncer.poll(), name="sync")
        try:
            return await child.wait()
        finally:
            poller.cancel()
            await asyncio.gather(poller, *rotations, return_exceptions=True)

"""``run``, and each round of ``dev``: the pipeline of a Config served until SIGTERM. The sync loop keeps
the outputs fresh and tells the app; the local endpoint, the probes and Secret Manager's Pub/Sub events run
beside it, each a part of the supervisor."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from agent.app.build import (
    Mode,
    adopt_rendered,
    build_discovery,
    build_notifiers,
    build_renderer,
    build_sink,
    forgive_vanished,
    remember_values,
    report_failures,
    select_source,
    sync_settings,
)
from agent.config import TOKEN_FILE_NAME, Config, EventsConfig, split_listen
from agent.core import collector
from agent.errors import SinkError

if TYPE_CHECKING:
    from agent.core.model import Snapshot
    from agent.core.store import SnapshotStore
    from agent.discovery import Discovery
    from agent.observe.metrics import Liveness, Metrics
    from agent.sources import Source
    from agent.sources.dotenv import DotenvSource
    from agent.supervisor import Listener, Part
    from agent.sync import Syncer

log = logging.getLogger("agent")


def run_agent(config: Config) -> int:
    """``run``: bootstrap, then keep secrets fresh and tell the app, until SIGTERM."""
    from agent.observe.logs import configure_logging
    from agent.sinks.lock import OutputDirLock

    configure_logging(config.log_level, config.log_format)
    if config.events.enabled and config.source != "dotenv":
        from agent.sources.pubsub import require_pubsub

        require_pubsub()  # refused before the output directory is touched (its lock included)
    with OutputDirLock(config.output_dir_for("run")):  # a second agent here would replace this one's token
        return asyncio.run(serve(config, "run"))


@dataclass
class Session:
    """What outlives one round of ``serve_round``. ``dev`` serving every key of its .env file starts a new
    round when the set of keys changes; the endpoint keeps its token and its address across rounds."""

    stop: asyncio.Event = field(default_factory=asyncio.Event)
    """Set by SIGTERM/SIGINT: the agent stops."""
    syncer: Syncer | None = None
    """The current round's sync loop: SIGHUP refreshes it."""
    token: str | None = None
    """The endpoint's token once the first round prepared it: later rounds serve the same one (and leave
    the file that holds it alone), so an app that read it keeps working."""
    ports: dict[str, int] = field(default_factory=dict)
    """Listener name -> the port it bound in the first round; later rounds bind it again (port 0 too)."""

    def refresh_now(self) -> None:
        if self.syncer is not None:
            self.syncer.refresh_now()


class RoundEndingFeed(Protocol):
    """The change feed of a round that can end before the agent stops (``dev`` serving every key of its
    .env file ends a round when the set of keys changes)."""

    ended: asyncio.Event
    """Set when the round is over."""

    def changes(self) -> AsyncIterator[frozenset[str] | None]: ...


async def serve(
    config: Config,
    mode: Mode,
    every_key: Callable[[Config, DotenvSource, Session], Awaitable[None]] | None = None,
) -> int:
    """Serve until SIGTERM or SIGINT: one round of the pipeline of ``config``; or, given ``every_key``
    (``dev`` serving every key of its .env file: ``agent.app.dev``) and a .env source, the rounds it runs."""
    from agent.supervisor import signal_handlers

    source = select_source(config, mode)
    session = Session()
    try:
        with signal_handlers(session.stop, on_hup=session.refresh_now):
            if every_key is not None and source.name == "dotenv":
                from agent.sources.dotenv import DotenvSource

                assert isinstance(source, DotenvSource)
                await every_key(config, source, session)
            else:
                await serve_round(config, mode, source, session)
    finally:
        await source.close()
    log.info("%s: stopped", mode)
    return 0


async def serve_round(
    config: Config,
    mode: Mode,
    source: Source,
    session: Session,
    *,
    feed: RoundEndingFeed | None = None,
) -> None:
    """Build the pipeline of ``config`` and run it until ``session.stop`` is set or, in a round of ``dev``
    serving every key of its .env file, until ``feed`` ends the round (the .env file's keys changed)."""
    from agent.core.retry import Backoff
    from agent.core.store import SnapshotStore
    from agent.notify.coordinator import ReloadCoordinator
    from agent.notify.notified import read_notified, write_notified
    from agent.observe.metrics import Liveness, Metrics
    from agent.sources import ChangeFeed
    from agent.supervisor import supervise
    from agent.sync import Syncer

    output_dir = config.output_dir_for(mode)
    # Selections start from what is known without listing (the webhook's ids, .selection); what they
    # match later comes and goes through the Syncer (discovery.run).
    discovery = build_discovery(config, source, mode)
    specs = [*config.secrets, *(discovery.start() if discovery is not None else ())]
    store = SnapshotStore(specs)
    metrics = Metrics(store=store, max_staleness=config.max_staleness)
    renderer = build_renderer(
        config, metrics, specs, origins=discovery.origins() if discovery is not None else None
    )
    sink = build_sink(config, renderer, mode, specs)
    adopted = adopt_rendered(sink, renderer)
    remember_values(adopted)  # last-known-good values are served (and could be logged) before any fetch
    await store.publish(adopted)
    liveness = Liveness()
    notifiers = build_notifiers(config)
    coordinator = ReloadCoordinator(
        notifiers,
        debounce=config.notify.debounce,
        backoff=Backoff(config.gcp.backoff_initial, config.gcp.backoff_max),
        max_attempts=config.notify.max_attempts,
        on_result=metrics.reload,
        on_delivered=lambda versions: write_notified(output_dir, versions),
    )

    def changed(snapshot: Snapshot) -> None:
        remember_values(snapshot)
        coordinator.request(snapshot.versions())

    watched: ChangeFeed | None = (
        feed if feed is not None else source if isinstance(source, ChangeFeed) else None
    )
    events = _events_config(config, source, mode)
    syncer = Syncer(
        specs,
        source,
        sink,
        store,
        sync_settings(config, polling=watched is None),
        on_change=[changed],
        metrics=metrics,
        # Asked at every round: selections add and remove secrets while the agent runs.
        heartbeat=liveness.heartbeat("sync", lambda: poll_round_budget(config, len(store.specs))),
        renderer=renderer,
    )
    session.syncer = syncer
    if discovery is not None:
        discovery.metrics = metrics
        discovery.served = lambda name: _served(store, name)

    bootstrapped = asyncio.Event()

    def _tell_what_was_missed(snapshot: Snapshot) -> None:
        # A previous agent may have swapped the files and died before it signalled the app.
        told = read_notified(output_dir)
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
        remember_values(report.snapshot)
        _tell_what_was_missed(report.snapshot)
        report_failures(forgive_vanished(report, discovery), specs)
        if mode == "dev":
            log.info("%s", _dev_banner(config, source, len(report.snapshot), output_dir, session))
        else:
            log.info(
                "%s: serving %d of %d secret(s) from %s",
                mode,
                len(report.snapshot),
                len(specs),
                output_dir,
            )
        await syncer.poll()

    parts: dict[str, Part] = {"sync": keep_fresh()}
    if notifiers:
        parts["reload"] = coordinator.run()
    if watched is not None:
        parts["watch"] = syncer.follow(watched)
    if discovery is not None:
        parts["discovery"] = discovery.run(syncer, bootstrapped)
    if events is not None:
        parts["events"] = _follow_events(
            config, events, source, store, syncer, metrics, bootstrapped, discovery
        )
    # The listeners bind first; the parts above (which write the files) and the token's write wait for
    # them, so an agent whose ports are taken stops before it changed anything on disk.
    listeners: dict[str, Listener] = {}
    share_token: Callable[[], None] | None = None
    if config.server.enabled:
        listeners["endpoint"], share_token = _endpoint(config, store, syncer, metrics, output_dir, session)
    if config.probes.enabled:
        listeners["probes"] = _probes(config, store, metrics, liveness, session)
    collector.startup_done(long_running=True)
    ending = session.stop if feed is None else feed.ended
    relay = None if feed is None else asyncio.create_task(_relay(session.stop, feed.ended), name="stop")
    try:
        await supervise(parts, ending, config.shutdown_grace, listeners=listeners, listening=share_token)
    finally:
        if relay is not None:
            relay.cancel()
            await asyncio.gather(relay, return_exceptions=True)


async def _relay(stop: asyncio.Event, ending: asyncio.Event) -> None:
    """Set ``ending`` (the end of a round) when ``stop`` (the end of the agent) is set."""
    await stop.wait()
    ending.set()


def _dev_banner(config: Config, source: Source, served: int, output_dir: Path, session: Session) -> str:
    """The line ``dev`` greets its user with: what it serves from where, and how to reach it."""
    total = len(config.secrets)
    origin = str(config.dotenv.file) if source.name == "dotenv" else "Secret Manager"
    line = f"dev: serving {served} of {total} secret{'' if total == 1 else 's'} from {origin} in {output_dir}"
    port = session.ports.get("endpoint")
    if not config.server.enabled or port is None:
        return line + "; no endpoint (server.enabled is false)"
    host, _ = split_listen(config.server.listen)
    if config.server.token is not None:
        token = "token: server.token"  # noqa: S105 - where the token is, not the token
    elif config.server.token_file is not None:
        token = f"token in {config.server.token_file}"
    else:
        token = f"token in {output_dir / TOKEN_FILE_NAME}"
    return f"{line}; endpoint http://{f'[{host}]' if ':' in host else host}:{port} ({token})"


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
    discovery: Discovery | None = None,
) -> None:
    """Follow Secret Manager's Pub/Sub events once the bootstrap has told us the service's names for our
    secrets; poll at ``events.poll_interval`` while events flow, at ``poll_interval`` while they do not.
    With selections, the secrets' lifecycle events go to ``discovery`` too, and the feed follows the
    secrets it adds and removes; its safety re-list follows the events' health as polling does."""
    from agent.core.retry import Backoff
    from agent.sources.event_feed import EventFeed

    await bootstrapped.wait()

    def health(flowing: bool) -> None:
        metrics.events_health(flowing)
        syncer.set_poll_interval(events.poll_interval if flowing else config.poll_interval)
        if discovery is not None:
            discovery.set_events_flowing(flowing)

    feed = EventFeed(
        events,
        list(syncer.specs.values()),
        lambda name: _served(store, name),
        resolved=getattr(source, "resolved_secret_names", None),
        on_health=health,
        on_event=metrics.event,
        backoff=Backoff(config.gcp.backoff_initial, config.gcp.backoff_max),
        on_secret=discovery.on_secret if discovery is not None else None,
        selections=[
            (select.project, select.location) for select in config.select if select.project is not None
        ]
        if discovery is not None
        else (),
        project_number=discovery.names.number_of if discovery is not None else None,
    )
    if discovery is not None:
        discovery.on_specs = feed.replace_specs
        feed.replace_specs(list(syncer.specs.values()))  # what discovery added before the feed existed
    try:
        await syncer.follow(feed, max_delay=events.spread_seconds(config.fleet))
    finally:
        if discovery is not None:
            discovery.on_specs = None
        await feed.close()


def _served(store: SnapshotStore, name: str) -> str | None:
    """The version of ``name`` served now, None when nothing is."""
    current = store.snapshot.get(name)
    return current.version if current is not None else None


def poll_round_budget(config: Config, secrets: int | None = None) -> float:
    """How long one check round may take before /healthz calls the sync loop stuck: every batch of
    ``concurrency`` calls may run into its timeout, plus time to write the snapshot. ``secrets``: how many
    are checked (default: those configured; selections add theirs)."""
    count = len(config.secrets) if secrets is None else secrets
    batches = max(1, -(-count // config.concurrency))
    return batches * (config.gcp.call_timeout + 1.0) + 30.0


def _endpoint(
    config: Config,
    store: SnapshotStore,
    syncer: Syncer,
    metrics: Metrics,
    output_dir: Path,
    session: Session,
) -> tuple[Listener, Callable[[], None] | None]:
    """The local fetch endpoint with its token, and the step that writes a generated token for the app
    (to take once the listeners are bound; None in a later round of ``dev``, whose token is written)."""
    from agent.endpoint.application import build_endpoint_app
    from agent.endpoint.serve import serve_endpoint
    from agent.endpoint.token import prepare_token

    host, port = split_listen(config.server.listen)  # serve_endpoint warns about non-loopback addresses
    share_token: Callable[[], None] | None = None
    if session.token is None:
        session.token, share_token = prepare_token(config.server, output_dir)
    app = build_endpoint_app(
        store=store,
        token=session.token,
        refresh=syncer.request_refresh,  # 429 when too soon: the endpoint never reaches Google at will
        audit=config.server.audit,
        max_wait=config.server.max_wait,
        metrics=metrics,
        allowed_hosts=config.server.allowed_hosts,
        files=lambda: [plan.file for plan in syncer.renderer.plans if plan.file],
    )

    def listener(started: Callable[[int], None]) -> Part:
        return serve_endpoint(
            app,
            host,
            session.ports.get("endpoint", port),
            max_connections=config.server.max_connections,
            started=_remember_port(session, "endpoint", started),
        )

    return listener, share_token


def _remember_port(session: Session, name: str, started: Callable[[int], None]) -> Callable[[int], None]:
    """``started``, noting the port the listener bound for the rounds after this one."""

    def bound(port: int) -> None:
        session.ports[name] = port
        started(port)

    return bound


def _probes(
    config: Config, store: SnapshotStore, metrics: Metrics, liveness: Liveness, session: Session
) -> Listener:
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
            session.ports.get("probes", port),
            started=_remember_port(session, "probes", started),
            max_connections=config.probes.max_connections,
            allowed_hosts=config.probes.allowed_hosts,
        )

    return listener

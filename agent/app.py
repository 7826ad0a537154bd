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
import dataclasses
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TextIO

from agent.config import TOKEN_FILE_NAME, Config, EventsConfig, SecretSpec, split_listen
from agent.core import collector
from agent.errors import AgentError, SinkError, SourceError

if TYPE_CHECKING:
    from agent.core.model import Snapshot
    from agent.core.store import SnapshotStore
    from agent.notify.base import Notifier
    from agent.observe.metrics import Liveness, Metrics
    from agent.render.outputs import Renderer
    from agent.sinks.snapshot import SnapshotSink
    from agent.sources import Source
    from agent.sources.dotenv import DotenvKeys, DotenvSource
    from agent.supervisor import Listener, Part
    from agent.sync import BootstrapReport, Syncer, SyncSettings

log = logging.getLogger("agent")

Mode = Literal["init", "run", "dev", "exec"]


def check_config(config: Config, out: TextIO) -> int:
    """Print the normalised configuration as YAML (itself a valid config file). Validation already happened
    in ``load_config``: reaching this point means the configuration is valid. Returns the exit code."""
    import yaml

    from agent.sources.identity import describe_identities

    yaml.safe_dump(config.to_dict(), out, sort_keys=False, default_flow_style=False, allow_unicode=True)
    # The credential path, as YAML comments: the output stays a valid configuration file.
    for line in describe_identities(config):
        out.write(f"# {line}\n")
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
        from agent.sources.identity import IdentitySettings, describe_identities

        # Which identity, which quota project: the line to read when a token is refused.
        log.info("source: %s", "; ".join(describe_identities(config)))
        return GcpSource(
            endpoint=endpoint,
            call_timeout=config.gcp.call_timeout,
            identity=IdentitySettings.from_config(config.gcp, config.secrets),
        )

    if config.source_for(mode) == "dotenv":
        log.info("source: .env file %s", config.dotenv.file)
        return dotenv(config.dotenv.file)
    if config.gcp.endpoint:
        return gcp(config.gcp.endpoint)
    # A credentials file is the credentials: ADC's absence does not matter then (impersonation alone
    # starts from ADC, so it does).
    if config.gcp.credentials_file is not None or google_credentials_available():
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


def build_sink(config: Config, renderer: Renderer, mode: Mode = "init") -> SnapshotSink:
    """The snapshot writer of ``mode``'s output directory. Outside ``dev`` it warns (or with
    ``require_tmpfs`` refuses) when the directory is not memory-backed; ``dev`` writes on a laptop's disk
    by design, so it checks only when ``require_tmpfs`` asks it to."""
    from agent.sinks.snapshot import SnapshotSink
    from agent.sinks.tmpfs import check_memory_backed

    output_dir = config.output_dir_for(mode)
    if mode != "dev" or config.require_tmpfs:
        check_memory_backed(output_dir, require=config.require_tmpfs)
    return SnapshotSink(output_dir, config.secrets, config.env_file, renderer=renderer)


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
    with OutputDirLock(config.output_dir_for("init")):  # one agent per output directory: a second is refused
        return asyncio.run(_init(config))


async def _init(config: Config) -> int:
    from agent.core.store import SnapshotStore
    from agent.notify.notified import write_notified
    from agent.sync import Syncer

    source = select_source(config, "init")
    output_dir = config.output_dir_for("init")
    try:
        renderer = build_renderer(config)
        sink = build_sink(config, renderer, "init")
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
    write_notified(output_dir, report.snapshot.versions())
    log.info(
        "init done: %d secret(s) in %s in %.2fs",
        len(report.snapshot),
        output_dir,
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
    with OutputDirLock(config.output_dir_for("run")):  # a second agent here would replace this one's token
        return asyncio.run(_serve(config, "run"))


def run_dev(config: Config) -> int:
    """``dev``: the same outputs from a watched .env file, into ``./.secrets`` unless ``output_dir`` is set.

    With no secrets configured, every key of the .env file is served (``_serve_every_key``)."""
    from agent.observe.logs import configure_logging
    from agent.sinks.lock import OutputDirLock

    configure_logging(config.log_level, config.log_format)
    if _serves_every_key(config, "dev") and not config.dotenv.file.is_file():
        # Said before the output directory is made: a mistyped command leaves nothing behind.
        raise AgentError(
            f"dev has nothing to serve: no secrets are configured and there is no .env file at "
            f"{config.dotenv.file}; create it with KEY=value lines, name another one with --dotenv FILE, "
            "or configure secrets (-c FILE)"
        )
    output_dir = config.output_dir_for("dev")
    with OutputDirLock(output_dir):
        suggest_gitignore(output_dir)
        return asyncio.run(_serve(config, "dev"))


def suggest_gitignore(output_dir: Path) -> None:
    """One warning when ``output_dir`` lies in a git work tree that does not ignore it, with the line that
    fixes it. Asks ``git check-ignore`` (the user's own git, rules and excludes); says nothing when git is
    missing, slow, or the directory is in no work tree."""
    import shutil
    import subprocess

    git = shutil.which("git")
    if git is None:
        return
    absolute = Path(os.path.abspath(output_dir))
    try:
        # Exit 0: ignored; 1: in a work tree and not ignored; 128: no work tree (or outside it).
        done = subprocess.run(  # noqa: S603 - git from PATH, the arguments are ours and a path
            [git, "-C", str(absolute.parent), "check-ignore", "-q", "--", f"{absolute}/"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return
    if done.returncode != 1:
        return
    ignore_file = output_dir.parent / ".gitignore" if output_dir.parent != Path(".") else Path(".gitignore")
    log.warning(
        "hint: the secrets go to %s, inside a git work tree that does not ignore it; "
        "keep them out of commits: echo '%s/' >> %s",
        output_dir,
        output_dir.name,
        ignore_file,
    )


@dataclass
class _Session:
    """What outlives one round of ``_serve_round``. ``dev`` serving every key of its .env file starts a new
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


async def _serve(config: Config, mode: Mode) -> int:
    from agent.supervisor import signal_handlers

    source = select_source(config, mode)
    session = _Session()
    try:
        with signal_handlers(session.stop, on_hup=session.refresh_now):
            if _serves_every_key(config, mode) and source.name == "dotenv":
                from agent.sources.dotenv import DotenvSource

                assert isinstance(source, DotenvSource)
                await _serve_every_key(config, source, session)
            else:
                await _serve_round(config, mode, source, session)
    finally:
        await source.close()
    log.info("%s: stopped", mode)
    return 0


def _serves_every_key(config: Config, mode: Mode) -> bool:
    """``dev`` on a .env file with no secrets configured: every key of the file is served."""
    return mode == "dev" and not config.secrets and config.source_for("dev") == "dotenv"


async def _serve_round(
    config: Config,
    mode: Mode,
    source: Source,
    session: _Session,
    *,
    feed: _RoundFeed | None = None,
) -> None:
    """Build the pipeline of ``config`` and run it until ``session.stop`` is set or, in a round of
    ``_serve_every_key``, until ``feed`` ends the round (the .env file's keys changed)."""
    from agent.core.retry import Backoff
    from agent.core.store import SnapshotStore
    from agent.notify.coordinator import ReloadCoordinator
    from agent.notify.notified import read_notified, write_notified
    from agent.observe.metrics import Liveness, Metrics
    from agent.sources import ChangeFeed
    from agent.supervisor import supervise
    from agent.sync import Syncer

    output_dir = config.output_dir_for(mode)
    store = SnapshotStore(config.secrets)
    metrics = Metrics(store=store, max_staleness=config.max_staleness)
    renderer = build_renderer(config, metrics)
    sink = build_sink(config, renderer, mode)
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
        on_delivered=lambda versions: write_notified(output_dir, versions),
    )

    def changed(snapshot: Snapshot) -> None:
        _remember_values(snapshot)
        coordinator.request(snapshot.versions())

    watched: ChangeFeed | None = (
        feed if feed is not None else source if isinstance(source, ChangeFeed) else None
    )
    events = _events_config(config, source, mode)
    syncer = Syncer(
        config.secrets,
        source,
        sink,
        store,
        sync_settings(config, polling=watched is None),
        on_change=[changed],
        metrics=metrics,
        heartbeat=liveness.heartbeat("sync", poll_round_budget(config)),
        renderer=renderer,
    )
    session.syncer = syncer

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
        _remember_values(report.snapshot)
        _tell_what_was_missed(report.snapshot)
        report_failures(report, config.secrets)
        if mode == "dev":
            log.info("%s", _dev_banner(config, source, len(report.snapshot), output_dir, session))
        else:
            log.info(
                "%s: serving %d of %d secret(s) from %s",
                mode,
                len(report.snapshot),
                len(config.secrets),
                output_dir,
            )
        await syncer.poll()

    parts: dict[str, Part] = {"sync": keep_fresh()}
    if notifiers:
        parts["reload"] = coordinator.run()
    if watched is not None:
        parts["watch"] = syncer.follow(watched)
    if events is not None:
        parts["events"] = _follow_events(config, events, source, store, syncer, metrics, bootstrapped)
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


def _dev_banner(config: Config, source: Source, served: int, output_dir: Path, session: _Session) -> str:
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


async def _serve_every_key(config: Config, source: DotenvSource, session: _Session) -> None:
    """``dev`` with no secrets configured: each key of the .env file is a secret of that name (its file and
    its env entry are the key as written; ``secrets_for_keys``).

    A pipeline serves a fixed set of secrets, so an edit that adds or removes a key ends the round and a
    new one starts with the new set: the new snapshot is written whole (a removed key's file goes, since
    here the file is the configuration, not a backend that might be failing), the app is told, and the
    endpoint binds the same address again with the same token. A file that has no key left (an editor
    halfway through a save, most likely) changes nothing until keys come back. Edits of values alone flow
    as with any watched .env file. One watcher follows the file for the whole run, so an edit made while a
    round starts is not missed.
    """
    from agent.sources.dotenv import secrets_for_keys

    try:
        keys = source.keys()
    except SourceError as error:
        hint = f" ({error.hint})" if error.hint else ""
        raise AgentError(f"dev has nothing to serve: {error.message}{hint}") from None
    watch = _KeyWatch(source)
    watcher = asyncio.create_task(watch.run(), name="watch")
    skipped = 0
    try:
        while not session.stop.is_set():
            if keys.skipped != skipped:
                skipped = keys.skipped
                if skipped:
                    log.warning(
                        "dev: %d entr%s of %s not served: only KEY=value lines are, KEY being letters, "
                        "digits and '_' (not starting with a digit)",
                        skipped,
                        "y" if skipped == 1 else "ies",
                        source.path,
                    )
            if not keys.served:
                log.warning("dev: %s has no KEY=value line: nothing to serve until one is added", source.path)
            feed = watch.feed(frozenset(keys.served))
            await _serve_round(
                dataclasses.replace(config, secrets=secrets_for_keys(keys.served)),
                "dev",
                source,
                session,
                feed=feed,
            )
            if session.stop.is_set() or feed.next_keys is None:
                return
            before, keys = set(keys.served), feed.next_keys
            changes = [
                f"{label} {', '.join(sorted(names))}"
                for label, names in (
                    ("added", set(keys.served) - before),
                    ("removed", before - set(keys.served)),
                )
                if names
            ]
            log.info("dev: the keys of %s changed (%s)", source.path, "; ".join(changes))
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)


class _KeyWatch:
    """Follows the .env file for the whole of ``_serve_every_key``, across rounds; each round reads its
    edits through a ``_RoundFeed``."""

    def __init__(self, source: DotenvSource) -> None:
        self.source = source
        self.edited = asyncio.Event()
        """Set by every burst of edits; cleared by the round's feed that handles it."""
        self.error: Exception | None = None
        """Why watching stopped (the directory went away, say): the round's feed raises it, so the watch
        part fails as a watched .env file's does."""

    async def run(self) -> None:
        try:
            async for _ in self.source.changes():
                self.edited.set()
        except Exception as error:  # handed to the round, which reports it (see ``error``)
            self.error = error
            self.edited.set()

    def feed(self, served: frozenset[str]) -> _RoundFeed:
        return _RoundFeed(self, served)


class _RoundFeed:
    """The ``ChangeFeed`` of one round: every edit means "check every secret", except an edit that changes
    the set of keys, which ends the round (``ended``, with ``next_keys``)."""

    def __init__(self, watch: _KeyWatch, served: frozenset[str]) -> None:
        self.watch = watch
        self.served = served
        self.ended = asyncio.Event()
        self.next_keys: DotenvKeys | None = None

    async def changes(self) -> AsyncIterator[frozenset[str] | None]:
        while True:
            await self.watch.edited.wait()
            self.watch.edited.clear()
            if self.watch.error is not None:
                raise self.watch.error
            try:
                keys = self.watch.source.keys()
            except SourceError:
                keys = None  # unreadable for now: the check below reports it and keeps what is served
            if keys is not None and keys.served and frozenset(keys.served) != self.served:
                self.next_keys = keys
                self.ended.set()
                await asyncio.get_running_loop().create_future()  # cancelled as the round ends
            yield None


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
    config: Config,
    store: SnapshotStore,
    syncer: Syncer,
    metrics: Metrics,
    output_dir: Path,
    session: _Session,
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
        files=[plan.file for plan in syncer.renderer.plans if plan.file],
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


def _remember_port(session: _Session, name: str, started: Callable[[int], None]) -> Callable[[int], None]:
    """``started``, noting the port the listener bound for the rounds after this one."""

    def bound(port: int) -> None:
        session.ports[name] = port
        started(port)

    return bound


def _probes(
    config: Config, store: SnapshotStore, metrics: Metrics, liveness: Liveness, session: _Session
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

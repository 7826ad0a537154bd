"""The pipeline's pieces, built from a Config: the source, the renderer, the sink, the notifiers, the sync
settings; and what every command does with a bootstrap's outcome (remember the values served, report the
failures). ``bench/`` builds its agents with these too."""

from __future__ import annotations

import logging
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from agent.config import Config, SecretSpec
from agent.errors import AgentError

if TYPE_CHECKING:
    from agent.core.model import Snapshot
    from agent.notify.base import Notifier
    from agent.observe.metrics import Metrics
    from agent.render.outputs import Renderer
    from agent.sinks.snapshot import SnapshotSink
    from agent.sources import Source
    from agent.sync import BootstrapReport, SyncSettings

log = logging.getLogger("agent")

Mode = Literal["init", "run", "dev", "exec"]


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


def remember_values(snapshot: Snapshot) -> None:
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

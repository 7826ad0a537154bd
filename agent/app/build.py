"""The pipeline's pieces, built from a Config: the source, the renderer, the sink, the notifiers, the sync
settings; and what every command does with a bootstrap's outcome (remember the values served, report the
failures). ``bench/`` builds its agents with these too."""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, cast

from agent.config import Config, SecretSpec
from agent.errors import AgentError

if TYPE_CHECKING:
    from agent.core.model import Snapshot
    from agent.discovery import Discovery, ListingFailures
    from agent.notify.base import Notifier
    from agent.observe.metrics import Metrics
    from agent.render.outputs import Renderer
    from agent.sinks.snapshot import SnapshotSink
    from agent.sources import Source
    from agent.sources.listing import ListingSource
    from agent.sync import BootstrapReport, Syncer, SyncSettings

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
            identity=IdentitySettings.from_config(config.gcp, [*config.secrets, *config.select]),
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


def build_renderer(
    config: Config,
    metrics: Metrics | None = None,
    specs: Sequence[SecretSpec] | None = None,
    origins: Mapping[str, str] | None = None,
) -> Renderer:
    """The outputs of the configuration (files, keys, templates) for ``specs`` (default: the configured
    secrets; with selections, those and the selected ones, ``origins`` saying which selection delivers
    each); template renders counted in ``metrics``."""
    from agent.render.outputs import Renderer

    secrets = config.secrets if specs is None else tuple(specs)
    if metrics is None:
        return Renderer(secrets, config.templates, origins=origins)
    renderer = Renderer(secrets, config.templates, origins=origins, observe=metrics.template_rendered)
    metrics.known_templates(renderer.templates)
    return renderer


def build_sink(
    config: Config, renderer: Renderer, mode: Mode = "init", specs: Sequence[SecretSpec] | None = None
) -> SnapshotSink:
    """The snapshot writer of ``mode``'s output directory, for ``specs`` (default: the configured secrets).
    Outside ``dev`` it warns (or with ``require_tmpfs`` refuses) when the directory is not memory-backed;
    ``dev`` writes on a laptop's disk by design, so it checks only when ``require_tmpfs`` asks it to."""
    from agent.sinks.snapshot import SnapshotSink
    from agent.sinks.tmpfs import check_memory_backed

    output_dir = config.output_dir_for(mode)
    if mode != "dev" or config.require_tmpfs:
        check_memory_backed(output_dir, require=config.require_tmpfs)
    secrets = config.secrets if specs is None else tuple(specs)
    return SnapshotSink(output_dir, secrets, config.env_file, renderer=renderer)


def env_file_inside(config: Config, mode: Mode) -> str | None:
    """The env file's path inside ``mode``'s output directory when it shares the swap, else None (as
    ``SnapshotSink`` places it): a file no selected secret may take."""
    if config.env_file is None or mode == "exec":
        return None
    root = os.path.abspath(config.output_dir_for(mode))
    absolute = os.path.abspath(os.path.join(root, config.env_file))
    if absolute != root and absolute.startswith(root.rstrip(os.sep) + os.sep):
        return Path(os.path.relpath(absolute, root)).as_posix()
    return None


def build_discovery(
    config: Config, source: Source, mode: Mode, *, metrics: Metrics | None = None
) -> Discovery | None:
    """What follows the selections of ``config`` (None without any, or with a source that cannot list:
    the ``.env`` file of a fallback, which the loud warning of ``select_source`` announced)."""
    if not config.select:
        return None
    if source.name != "gcp":
        log.warning(
            "select is configured but ignored: selections list Secret Manager, and %s uses %s",
            mode,
            source.name,
        )
        return None
    from agent.core.retry import Backoff
    from agent.discovery import Discovery, DiscoverySettings, reserved_files
    from agent.sources.listing import ProjectNames, SelectionLister

    events = config.events.enabled and mode == "run"
    settings = DiscoverySettings(
        discovery=config.discovery,
        fleet=config.fleet,
        events=events,
        backoff=Backoff(config.gcp.backoff_initial, config.gcp.backoff_max),
        fetch_timeout=config.timeout,
        event_spread=config.events.spread_seconds(config.fleet) if events else 0.0,
    )
    listed: dict[str, str] = getattr(source, "listed_projects", {})
    resolved: dict[str, str] = getattr(source, "resolved_secret_names", {})
    return Discovery(
        config.select,
        config.secrets,
        SelectionLister(cast("ListingSource", source)),  # a GcpSource: its name says so
        settings,
        templates=config.templates,
        reserved_files=reserved_files(env_file_inside(config, mode)),
        state_dir=None if mode == "exec" else config.output_dir_for(mode),
        names=ProjectNames(listed, resolved),
        metrics=metrics,
    )


def forgive_vanished(report: BootstrapReport, discovery: Discovery | None) -> BootstrapReport:
    """``report`` less the selected secrets (from known ids or ``.selection``) that no longer exist: a
    secret deleted since that listing is not a failure (each is one warning), or a required selection
    would fail every start until something lists it again."""
    if discovery is None:
        return report
    from agent.sync import BootstrapReport

    owners = {spec.name: name for name, specs in discovery.delivered().items() for spec in specs}
    kept = {}
    for name, error in report.failures.items():
        if name in owners and error.code == "NOT_FOUND":
            log.warning(
                "select %r: secret %r no longer exists (NOT_FOUND); left out until the next listing",
                owners[name],
                name,
            )
            continue
        kept[name] = error
    return BootstrapReport(report.snapshot, kept)


@dataclass
class SelectedBootstrap:
    """What ``init`` and ``exec`` made of the selections: the secrets added, and what is wrong."""

    added: list[SecretSpec] = field(default_factory=list)
    """Selected secrets fetched after the listing (those from known ids were in the bootstrap)."""
    errors: list[str] = field(default_factory=list)
    """One line each: a collision, a required selection that matches nothing or could not be listed."""
    failed: int = 0
    """Required selected secrets that could not be fetched."""


async def bootstrap_selections(
    discovery: Discovery,
    syncer: Syncer,
    listing: ListingFailures | None,
    deadline: float,
) -> SelectedBootstrap:
    """After ``init``'s or ``exec``'s bootstrap and the listing of ``discovery`` (its failures:
    ``listing``): resolve, report (collisions, selections that match nothing or could not be listed), and
    fetch what the listing found in one ``add_specs``, unless something is wrong already."""
    from agent.sync import BootstrapReport

    outcome = SelectedBootstrap()
    resolution = discovery.resolution()
    outcome.errors += discovery.collisions
    failures = listing.errors if listing is not None else {}
    for name, select in discovery.selections.items():
        error = failures.get(name)
        if error is not None:
            line = f"select {name!r} could not be listed: {error.code}: {error.message}"
            if select.required:
                outcome.errors.append(line)
            else:
                log.warning("%s; its secrets are left out", line)
        elif not resolution.specs.get(name):
            if select.required:
                outcome.errors.append(f"select {name!r} matches no secret (it is required)")
            else:
                log.warning("select %r matches no secret", name)
    if outcome.errors:
        return outcome
    new = discovery.accept(resolution)
    if not new:
        return outcome
    origins = discovery.origins()
    added = await syncer.add_specs(
        new,
        deadline=max(deadline, time.monotonic() + 1.0),
        origins={spec.name: origins[spec.name] for spec in new},
    )
    outcome.added = new
    outcome.failed = report_failures(BootstrapReport(added.snapshot, added.failures), new)
    return outcome


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

"""``init``: fetch every secret once, write the outputs, exit (the init container of every pod start).

With selections (``select``), their secrets are those the webhook resolved at admission (``known``) or a
previous agent recorded in ``.selection``; otherwise each selection is listed once (bounded by
``--timeout``, RESOURCE_EXHAUSTED retried with backoff) while the configured secrets are fetched, and what
the listing finds is fetched after it. ``.selection`` is written for the sidecar that starts next, so it
need not list again."""

from __future__ import annotations

import asyncio
import logging
import time

from agent.app.build import (
    adopt_rendered,
    bootstrap_selections,
    build_discovery,
    build_renderer,
    build_sink,
    forgive_vanished,
    remember_values,
    report_failures,
    select_source,
    sync_settings,
)
from agent.config import Config
from agent.core import collector

log = logging.getLogger("agent")


def run_init(config: Config) -> int:
    """Fetch everything once, write, exit: 0, or 1 with one line per required secret that failed (and
    per selection that collides, or is required and matches nothing)."""
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
    selection_errors: list[str] = []
    selected_failed = 0
    try:
        discovery = build_discovery(config, source, "init")
        specs = [*config.secrets, *(discovery.start() if discovery is not None else ())]
        renderer = build_renderer(
            config, specs=specs, origins=discovery.origins() if discovery is not None else None
        )
        sink = build_sink(config, renderer, "init", specs=specs)
        store = SnapshotStore(specs)
        await store.publish(adopt_rendered(sink, renderer))
        syncer = Syncer(specs, source, sink, store, sync_settings(config), renderer=renderer)
        collector.startup_done()
        started = time.monotonic()
        deadline = started + config.timeout
        # The listing runs beside the bootstrap: the configured secrets never wait for it (a read quota
        # used up by a fleet restarting at once delays the selected secrets only).
        listing = (
            asyncio.create_task(discovery.list_now(deadline=deadline))
            if discovery is not None and discovery.to_list
            else None
        )
        report = await syncer.bootstrap(deadline=deadline)
        remember_values(report.snapshot)
        bootstrapped = list(specs)
        if discovery is not None:
            listed = await listing if listing is not None else None
            outcome = await bootstrap_selections(discovery, syncer, listed, deadline)
            remember_values(store.snapshot)
            selection_errors, selected_failed = outcome.errors, outcome.failed
            specs += outcome.added
            if not outcome.errors:
                discovery.save()
    finally:
        await source.close()
    failed = report_failures(forgive_vanished(report, discovery), bootstrapped) + selected_failed
    if selection_errors:
        log.error("init failed: %s", "; ".join(selection_errors))
        return 1
    if failed:
        log.error(
            "init failed: %d of %d required secret(s) could not be fetched",
            failed,
            sum(spec.required for spec in specs),
        )
        return 1
    # The app starts after init and reads these files: that is what it was told.
    write_notified(output_dir, store.snapshot.versions())
    log.info(
        "init done: %d secret(s) in %s in %.2fs",
        len(store.snapshot),
        output_dir,
        time.monotonic() - started,
    )
    return 0

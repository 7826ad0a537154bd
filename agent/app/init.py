"""``init``: fetch every secret once, write the outputs, exit (the init container of every pod start)."""

from __future__ import annotations

import asyncio
import logging
import time

from agent.app.build import (
    adopt_rendered,
    build_renderer,
    build_sink,
    remember_values,
    report_failures,
    select_source,
    sync_settings,
)
from agent.config import Config
from agent.core import collector

log = logging.getLogger("agent")


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
        remember_values(report.snapshot)
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

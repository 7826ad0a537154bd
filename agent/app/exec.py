"""``exec``: resolve the secrets into the environment of a command and become it; or, with ``--watch``,
supervise it and restart (or signal) it when a secret rotates."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from typing import TYPE_CHECKING

from agent.app.build import (
    bootstrap_selections,
    build_discovery,
    build_renderer,
    forgive_vanished,
    remember_values,
    report_failures,
    select_source,
    sync_settings,
)
from agent.config import Config
from agent.core import collector
from agent.errors import AgentError

if TYPE_CHECKING:
    from agent.core.model import Snapshot
    from agent.discovery import Discovery
    from agent.sync import Syncer

log = logging.getLogger("agent")


class NullSink:
    """For ``exec``: values go into the child's environment, not onto disk."""

    def write(self, snapshot: Snapshot) -> bool:
        return False

    def adopt(self) -> Snapshot:
        from agent.core.model import Snapshot

        return Snapshot()


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
    try:
        # Selections as init resolves them (listed when nothing is known), before the command starts.
        discovery = build_discovery(config, source, "exec")
        specs = [*config.secrets, *(discovery.start() if discovery is not None else ())]
        store = SnapshotStore(specs)
        renderer = build_renderer(
            config, specs=specs, origins=discovery.origins() if discovery is not None else None
        )
        syncer = Syncer(specs, source, NullSink(), store, sync_settings(config), renderer=renderer)
        collector.startup_done(long_running=config.exec.watch)
        deadline = time.monotonic() + config.timeout
        listing = (
            asyncio.create_task(discovery.list_now(deadline=deadline))
            if discovery is not None and discovery.to_list
            else None
        )
        report = await syncer.bootstrap(deadline=deadline)
        remember_values(report.snapshot)  # before the first line that could quote one
        failed = report_failures(forgive_vanished(report, discovery), specs)
        if discovery is not None:
            outcome = await bootstrap_selections(
                discovery, syncer, await listing if listing is not None else None, deadline
            )
            remember_values(store.snapshot)
            if outcome.errors:
                log.error("exec: not starting %s: %s", argv[0], "; ".join(outcome.errors))
                return 1
            specs += outcome.added
            failed += outcome.failed
        if failed:
            log.error("exec: not starting %s: %d required secret(s) could not be fetched", argv[0], failed)
            return 1
        env = child_environment(os.environ, store.snapshot, specs)
        if config.exec.watch:
            return await _exec_watch(config, argv, syncer, env, discovery)
    finally:
        await source.close()
    exec_replace(argv, env)  # the agent becomes the app: nothing of it is left behind


async def _exec_watch(
    config: Config, argv: list[str], syncer: Syncer, env: dict[str, str], discovery: Discovery | None
) -> int:
    """Supervise the app: it gets every signal; on rotation it is restarted (or sent reload_signal). With
    selections, their safety re-lists go on (no events here): a secret that comes or goes is a change too,
    and the app is restarted with the environment of the secrets selected then."""
    from agent.execmode.launch import child_environment
    from agent.execmode.watch import WatchedChild

    reload_signal = signal.Signals[config.exec.reload_signal] if config.exec.reload_signal else None
    async with WatchedChild(argv, lambda: env, reload_signal, config.shutdown_grace) as child:
        rotations: set[asyncio.Task[None]] = set()

        def changed(snapshot: Snapshot) -> None:
            remember_values(snapshot)
            try:
                new_env = child_environment(os.environ, snapshot, list(syncer.specs.values()))
            except AgentError as error:  # e.g. a value that is not UTF-8: keep the running app as it is
                log.error("not restarting the app for this rotation: %s", error)
                return
            task = asyncio.create_task(child.rotated(new_env))
            rotations.add(task)
            task.add_done_callback(rotations.discard)

        syncer.on_change.append(changed)
        # The child owns SIGTERM/SIGHUP here (they are forwarded to the app), so polling is the only part.
        parts = [asyncio.create_task(syncer.poll(), name="sync")]
        if discovery is not None:
            parts.append(asyncio.create_task(discovery.run(syncer), name="discovery"))
        try:
            return await child.wait()
        finally:
            for part in parts:
                part.cancel()
            await asyncio.gather(*parts, *rotations, return_exceptions=True)

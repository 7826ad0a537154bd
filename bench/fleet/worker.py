"""The measured actors: a slice of the fleet in one process (``python -m bench.fleet worker``).

Each ``FleetAgent`` is one pod's agent, built by ``agent.app``'s own builders as ``run`` builds it (and, in
event mode, wired to its own ``EventFeed`` as ``agent.app`` wires ``events``). The worker reports on stdout,
one JSON line per fact (a version served, a boot, an event, a health change), and takes its orders
(``safety SECONDS``, ``stop``) on stdin; the driver (``driver``) reads the one and writes the other.

With ``--restart`` each pod is an init container instead (``restart_pod``): one bootstrap within the
agent's ``timeout``, and when it fails (a required secret missing: ``init`` exits non-zero) the kubelet's
restart back-off, then a fresh agent (a new process would have a new channel and an empty store).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench.fleet.world import (
    KUBELET_BACKOFF_INITIAL,
    KUBELET_BACKOFF_MAX,
    PROJECT,
    SAFETY_POLL,
    TOPIC,
    secret_id,
)


def emit(record: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(record, separators=(",", ":")) + "\n")
    sys.stdout.flush()


class FleetAgent:
    """One pod's agent: the same parts ``secrets-agent run`` builds, without its processes and listeners.

    With selections (``select``), the ``Discovery`` of ``agent.app.build_discovery`` beside the Syncer, as
    ``agent.app.serve`` wires it: its start (known ids or ``.selection``, no listing), the specs it adds to
    the bootstrap, ``run`` once the bootstrap is done, and the events' secrets and health handed to it.
    Each listing it makes is reported (``{"l": time, "c": code}``): the emulator counts the webhook's too."""

    def __init__(self, ident: int, config: Any, safety: float) -> None:
        from agent.app import build_renderer, build_sink, select_source, sync_settings
        from agent.app.build import build_discovery
        from agent.core.store import SnapshotStore
        from agent.sync import Syncer

        self.ident = ident
        self.config = config
        self.safety = safety
        self.source = select_source(config, "run")
        self.discovery = build_discovery(config, self.source, "run")
        specs = [*config.secrets, *(self.discovery.start() if self.discovery is not None else ())]
        if self.discovery is not None:
            self._count_listings(self.discovery)
            self.discovery.served = self._served
        origins = self.discovery.origins() if self.discovery is not None else None
        self.store = SnapshotStore(specs)
        renderer = build_renderer(config, None, specs, origins=origins)
        self.syncer = Syncer(
            specs,
            self.source,
            build_sink(config, renderer, "run", specs),
            self.store,
            sync_settings(config),
            on_change=[self._changed],
            rng=random.Random(ident),
            renderer=renderer,
        )
        self._emitted: dict[str, str] = {}

    def _count_listings(self, discovery: Any) -> None:
        """Report every listing call discovery makes, and its outcome (the lister is discovery's own)."""
        from agent.errors import SourceError

        inner = discovery.lister

        async def counted(select: Any) -> Any:
            try:
                found = await inner(select)
            except SourceError as error:
                emit({"a": self.ident, "l": time.monotonic(), "c": error.code})
                raise
            emit({"a": self.ident, "l": time.monotonic(), "c": "OK"})
            return found

        discovery.lister = counted

    def _served(self, name: str) -> str | None:
        current = self.store.snapshot.get(name)
        return current.version if current is not None else None

    def _changed(self, snapshot: Any) -> None:
        versions = {item.name: item.version for item in snapshot}
        moved = {name: v for name, v in versions.items() if self._emitted.get(name) != v}
        if moved:
            self._emitted.update(moved)
            emit({"a": self.ident, "v": moved, "t": time.monotonic()})

    async def run(self, start_delay: float) -> None:
        await asyncio.sleep(start_delay)
        emit({"a": self.ident, "start": time.monotonic()})
        report = await self.syncer.bootstrap(deadline=time.monotonic() + self.config.timeout)
        self._changed(report.snapshot)
        emit({"a": self.ident, "boot": time.monotonic(), "failed": sorted(report.failures)})
        parts = [self.syncer.poll()]
        if self.discovery is not None:
            bootstrapped = asyncio.Event()
            bootstrapped.set()
            parts.append(self.discovery.run(self.syncer, bootstrapped))
        if self.config.events.enabled:
            parts.append(self._follow_events())
        await asyncio.gather(*parts)

    async def _follow_events(self) -> None:
        """As ``agent.app`` wires ``events``: the feed, health -> poll interval (and discovery's re-list),
        follow with the event spread; with selections the secrets' events go to discovery, and the feed
        follows what it adds."""
        from agent.core.retry import Backoff
        from agent.sources.event_feed import EventFeed

        events, discovery = self.config.events, self.discovery

        def health(flowing: bool) -> None:
            self.syncer.set_poll_interval(self.safety if flowing else self.config.poll_interval)
            if discovery is not None:
                discovery.set_events_flowing(flowing)
            emit({"a": self.ident, "healthy": flowing, "t": time.monotonic()})

        selections = [(s.project, s.location) for s in self.config.select if s.project is not None]
        feed = EventFeed(
            events,
            list(self.syncer.specs.values()),
            self._served,
            resolved=getattr(self.source, "resolved_secret_names", None),
            on_health=health,
            on_event=self._event,
            backoff=Backoff(self.config.gcp.backoff_initial, self.config.gcp.backoff_max),
            hostname=f"fleet-{self.ident}",
            on_secret=discovery.on_secret if discovery is not None else None,
            selections=selections if discovery is not None else (),
            project_number=discovery.names.number_of if discovery is not None else None,
        )
        if discovery is not None:
            discovery.on_specs = feed.replace_specs
            feed.replace_specs(list(self.syncer.specs.values()))
        try:
            await self.syncer.follow(feed, max_delay=events.spread_seconds(self.config.fleet))
        finally:
            if discovery is not None:
                discovery.on_specs = None
            await feed.close()

    def _event(self, kind: str, action: str) -> None:
        if action == "fetch":  # the moment an event that asks for a fetch reached this agent's loop
            emit({"a": self.ident, "e": time.monotonic()})

    def compress_safety_poll(self, seconds: float) -> None:
        """From now on the safety poll runs every ``seconds`` (the wait in progress is re-planned)."""
        self.safety = seconds
        self.syncer.set_poll_interval(seconds)


def worker_config(args: argparse.Namespace, ident: int) -> Any:
    """The agent's Config, built by its own ``load_config``: from flags (the fleet's secrets by name), or
    with ``--config-dir`` from that pod's configuration file (what admission injected), the benchmark's
    settings (``--flags``, JSON: endpoint, output directory, the scaled world's) layered over it as flags."""
    from agent.config import load_config

    flags: dict[str, object] = {
        "gcp.endpoint": args.target,
        "output_dir": str(Path(args.work) / f"agent-{ident:04d}"),
        "poll_interval": f"{args.poll_interval}s",
    }
    if args.concurrency is not None:
        flags["concurrency"] = str(args.concurrency)
    if args.events:
        flags["events.topic"] = TOPIC
        flags["events.poll_interval"] = f"{SAFETY_POLL:g}s"
    flags.update(json.loads(args.flags))
    if args.config_dir is not None:
        return load_config(Path(args.config_dir) / f"agent-{ident:04d}.yaml", {}, flags)
    flags["project"] = PROJECT
    flags["secrets"] = [f"{secret_id(i)}={secret_id(i)}" for i in range(args.secrets)]
    return load_config(None, {}, flags)


async def restart_pod(ident: int, config: Any, start_delay: float) -> None:
    """One pod's init container through a fleet restart: bootstrap; when it fails, the kubelet's back-off
    (10 s, doubling, capped at 5 min) and a fresh agent, until one succeeds."""
    from agent.app import build_renderer, build_sink, select_source, sync_settings
    from agent.core.store import SnapshotStore
    from agent.sync import Syncer

    await asyncio.sleep(start_delay)
    backoff = KUBELET_BACKOFF_INITIAL
    while True:
        emit({"a": ident, "start": time.monotonic()})
        source = select_source(config, "init")
        try:
            sink, store = build_sink(config, build_renderer(config)), SnapshotStore(config.secrets)
            syncer = Syncer(config.secrets, source, sink, store, sync_settings(config))
            report = await syncer.bootstrap(deadline=time.monotonic() + config.timeout)
        finally:
            await source.close()
        failed = sorted(report.required_failures(config.secrets))
        if not failed:
            emit({"a": ident, "boot": time.monotonic(), "failed": []})
            return
        codes = sorted({report.failures[name].code for name in failed})
        emit({"a": ident, "init_failed": time.monotonic(), "secrets": len(failed), "codes": codes})
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, KUBELET_BACKOFF_MAX)


async def run_worker(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    rng = random.Random(args.first)
    idents = range(args.first, args.first + args.count)
    if args.restart:
        agents = []
        tasks = [
            asyncio.create_task(restart_pod(ident, worker_config(args, ident), rng.uniform(0, args.spread)))
            for ident in idents
        ]
    else:
        configs = [worker_config(args, ident) for ident in idents]
        agents = [
            FleetAgent(ident, c, c.events.poll_interval) for ident, c in zip(idents, configs, strict=True)
        ]
        tasks = [asyncio.create_task(a.run(rng.uniform(0, args.spread))) for a in agents]
    stop = asyncio.Event()

    def command(line: str) -> None:
        words = line.split()
        if not words or words[0] == "stop":
            stop.set()
        elif words[0] == "safety":
            seconds = float(words[1])
            for agent in agents:  # each pod switches at its own moment, so phases stay spread out
                loop.call_later(rng.uniform(0, seconds), agent.compress_safety_poll, seconds)

    def read_commands() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(command, line)
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=read_commands, daemon=True).start()
    await stop.wait()
    for task in tasks:
        task.cancel()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    errors = [
        repr(o)
        for o in outcomes
        if isinstance(o, BaseException) and not isinstance(o, asyncio.CancelledError)
    ]
    for agent in agents:
        await agent.source.close()
    emit({"stopped": len(tasks), "errors": errors[:3]})

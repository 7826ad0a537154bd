"""One propagation run: the emulators and agents started, the secret rotated, the latencies collected.

This is the measurement itself (see the package docstring for its design): ``measure`` composes the world
(``world``, ``bench.common``), the actors (``agents``) and the rotation schedule, and returns a ``Result``
that ``report`` prints and ``python -m bench`` judges.
"""

from __future__ import annotations

import dataclasses
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from google.cloud import secretmanager_v1

from agent.config import Config
from bench.common import events_supported, events_world, secret_manager_client
from bench.propagation.agents import Agent, Observed, started_agent, wait_for_text
from bench.propagation.inotify import Inotify
from bench.propagation.model import percentile
from bench.propagation.world import (
    EVENT_AGENTS,
    EVENT_TIMEOUT,
    EVENTS_NO_DELAY,
    LAST_POLL_SLACK,
    POLL_INTERVAL,
    POLL_JITTER,
    POLLING_AGENTS,
    QUICK_GAP,
    QUICK_ROTATIONS,
    ROTATIONS,
    SECRET_NAME,
    SPAN,
    STARTUP_TIMEOUT,
    TOPIC,
    value,
    write_seed,
)
from testing.emulator_process import emulator_process


@dataclass(frozen=True)
class Latencies:
    """Seconds per sample: files swapped, and app signalled (read the new file after SIGHUP)."""

    swapped: list[float]
    signalled: list[float]


@dataclass(frozen=True)
class Result:
    rotations: int
    polling_agents: int
    events: dict[str, Latencies]
    """By title (``EVENT_AGENTS``); empty when events could not be measured (``events_note`` says why)."""
    events_note: str
    polling: Latencies | None
    """None with ``--quick`` (no polling agents)."""
    add_call_ms: float
    """Median duration of the AddSecretVersion call itself."""
    default_max_delay: float | None
    """``events.max_delay``'s default, when the agent has one."""

    def events_p99(self, title: str = EVENTS_NO_DELAY) -> float | None:
        """p99 seconds to app signalled (which comes after the swap) for one events agent."""
        lat = self.events.get(title)
        return percentile(lat.signalled, 0.99) if lat is not None else None


def wait_until(condition: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.002)


def rotate_all(
    client: secretmanager_v1.SecretManagerServiceClient,
    first: int,
    rotations: int,
    event_agents: Sequence[Observed],
    rng: random.Random,
    span: float,
) -> tuple[dict[int, float], list[float]]:
    """Add ``rotations`` versions, one per slot of ``span / rotations`` seconds at a random moment in it
    (never before every events agent's app has read the previous one, so that no rotation overtakes
    another there; with ``span`` 0, a short random gap after that). Returns {index: time just before the
    call} and the durations of the calls."""
    slot = span / rotations
    begin = time.monotonic() + 0.2
    started: dict[int, float] = {}
    durations: list[float] = []
    for n in range(rotations):
        index = first + n
        if n > 0:
            wait_until(
                lambda i=index: all(e.has_read(i - 1) for e in event_agents),
                EVENT_TIMEOUT,
                f"rotation {index - 1} at the events agents",
            )
        pause = (
            begin + n * slot + rng.uniform(0, slot) - time.monotonic() if slot else rng.uniform(*QUICK_GAP)
        )
        if pause > 0:
            time.sleep(pause)  # pacing the schedule, not synchronisation: what is awaited is checked above
        started[index] = time.monotonic()
        client.add_secret_version(
            parent=SECRET_NAME, payload=secretmanager_v1.SecretPayload(data=value(index).encode())
        )
        durations.append(time.monotonic() - started[index])
    return started, durations


def latencies(agents: Sequence[Observed], started: dict[int, float]) -> Latencies:
    swapped: list[float] = []
    signalled: list[float] = []
    for agent in agents:
        for index, t0 in started.items():
            swap, read = agent.first_at_least(index, "swap"), agent.first_at_least(index, "read")
            if swap is None or read is None:
                raise RuntimeError(f"{agent.title}: rotation {index} never arrived")
            swapped.append(swap - t0)
            signalled.append(read - t0)
    return Latencies(swapped, signalled)


def measure(quick: bool = False) -> Result:
    rotations = QUICK_ROTATIONS if quick else ROTATIONS
    polling_count = 0 if quick else POLLING_AGENTS
    rng = random.Random(5)
    with events_world("bench-propagation-", TOPIC) as world:
        work, stack, env, pubsub_host = world.work, world.stack, world.env, world.pubsub_host
        ep = stack.enter_context(emulator_process(write_seed(work / "seed.yaml", pubsub_host is not None)))
        watcher = Inotify()
        stack.callback(watcher.close)
        agents: list[Agent] = []
        if pubsub_host is not None:
            for title, max_delay in EVENT_AGENTS.items():
                starting = started_agent(title, work, ep, watcher, env, events=True, max_delay=max_delay)
                agents.append(stack.enter_context(starting))
        for k in range(polling_count):
            agents.append(stack.enter_context(started_agent(f"polling-{k + 1}", work, ep, watcher, env)))
        watcher.start()
        for agent in agents:
            wait_for_text(agent.log, agent.process, "run: serving 1 of 1", STARTUP_TIMEOUT)
        client = secret_manager_client(ep.grpc_target)
        stack.callback(client.transport.close)
        event_agents = [a.observed for a in agents if a.observed.title in EVENT_AGENTS]
        polling = [a.observed for a in agents if a.observed.title not in EVENT_AGENTS]
        try:
            first = 1
            if event_agents:
                # Warm-up, not counted: proves every subscription delivers before the clock starts.
                client.add_secret_version(
                    parent=SECRET_NAME, payload=secretmanager_v1.SecretPayload(data=value(1).encode())
                )
                wait_until(
                    lambda: all(e.has_read(1) for e in event_agents), STARTUP_TIMEOUT, "the warm-up rotation"
                )
                first = 2
            span = SPAN if polling else 0.0
            started, durations = rotate_all(client, first, rotations, event_agents, rng, span)
            last = max(started)
            wait_until(
                lambda: all(e.has_read(last) for e in event_agents), EVENT_TIMEOUT, "the last rotation"
            )
            wait_until(
                lambda: all(p.has_read(last) for p in polling),
                POLL_INTERVAL * (1 + POLL_JITTER) + LAST_POLL_SLACK,
                "every polling agent's app to read the last rotation",
            )
        except RuntimeError:
            for agent in agents:  # what the agents said is the first thing anyone debugging needs
                tail = agent.log.read_text(errors="replace").splitlines()[-20:]
                print(f"--- {agent.observed.title}: last lines of its log", *tail, sep="\n", file=sys.stderr)
            raise
        return Result(
            rotations=rotations,
            polling_agents=polling_count,
            events={e.title: latencies([e], started) for e in event_agents},
            events_note=world.events_note,
            polling=latencies(polling, started) if polling else None,
            add_call_ms=sorted(durations)[len(durations) // 2] * 1000,
            default_max_delay=_events_max_delay(),
        )


def _events_max_delay() -> float | None:
    if not events_supported():
        return None
    factory = {f.name: f for f in dataclasses.fields(Config)}["events"].default_factory
    if factory is dataclasses.MISSING:
        return None
    delay = getattr(factory(), "max_delay", None)
    return float(delay) if delay is not None else None

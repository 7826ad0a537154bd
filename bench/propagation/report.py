"""The propagation table: one row per events agent, the polling agents' row, the model's row, and the notes
under it (the polling/events ratio, the AddSecretVersion call's own duration).

Only formatting: every figure comes from ``run.Result`` or, for the model row, from ``model``.
"""

from __future__ import annotations

from bench.propagation.model import percentile, residual_wait_quantile
from bench.propagation.run import Latencies, Result
from bench.propagation.world import (
    EVENT_AGENTS,
    EVENTS_NO_DELAY,
    POLL_INTERVAL,
    POLL_JITTER,
    SAFETY_POLL,
    SPAN,
)


def fmt(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms" if seconds < 10 else f"{seconds:,.1f} s"


def row(title: str, agents: str, samples: int, lat: Latencies) -> str:
    cells = [fmt(percentile(v, q)) for v in (lat.swapped, lat.signalled) for q in (0.5, 0.99)]
    cells.insert(2, fmt(max(lat.swapped)))
    cells.append(fmt(max(lat.signalled)))
    return f"| {title} | {agents} | {samples} | " + " | ".join(cells) + " |"


def print_table(result: Result) -> None:
    pacing = f"spread over {SPAN:.0f} s" if result.polling is not None else "one after the other"
    print(
        f"\nPropagation of a rotation: AddSecretVersion (official client) -> `..data` swapped -> app "
        f"signalled (SIGHUP, file re-read); {result.rotations} rotations {pacing}; every agent a `run` "
        f"process with notify.debounce 0; inotify timestamps"
    )
    print(
        "| mode | agents | samples | swapped p50 | swapped p99 | swapped max | signalled p50 "
        "| signalled p99 | signalled max |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for title, lat in result.events.items():
        delay = EVENT_AGENTS[title]
        spelled = f"{result.default_max_delay:g} s, the default" if delay is None else f"{delay:g} s"
        label = f"Pub/Sub events, max_delay {spelled}, {SAFETY_POLL} safety poll"
        print(row(label, "1", result.rotations, lat))
    if not result.events:
        print(f"| Pub/Sub events | - | 0 | not measured: {result.events_note} | | | | | |")
    if result.polling is not None:
        samples = result.rotations * result.polling_agents
        title = f"polling every {POLL_INTERVAL:.0f} s (measured)"
        print(row(title, str(result.polling_agents), samples, result.polling))
    else:
        print(f"| polling every {POLL_INTERVAL:.0f} s | - | 0 | not measured with --quick | | | | | |")
    p50, p99, top = (residual_wait_quantile(q) for q in (0.5, 0.99, 1.0))
    print(
        f"| polling every {POLL_INTERVAL:.0f} s (model: uniform phase, +-{POLL_JITTER:.0%} jitter; "
        f"the check itself not included) | - | - | {fmt(p50)} | {fmt(p99)} | {fmt(top)} | | | |"
    )
    fastest = result.events.get(EVENTS_NO_DELAY)
    if fastest is not None and result.polling is not None:
        ratio = percentile(result.polling.signalled, 0.5) / percentile(fastest.signalled, 0.5)
        print(
            f"Polling every {POLL_INTERVAL:.0f} s / events (max_delay 0), median to app signalled: "
            f"{ratio:,.0f}x"
        )
    pooled = (
        f"Polling samples: {result.polling_agents} agents x {result.rotations} rotations, pooled; the "
        "samples of one agent share its poll times. "
        if result.polling is not None
        else ""
    )
    print(
        f"The AddSecretVersion call itself: {result.add_call_ms:.1f} ms median (inside every latency). "
        f"{pooled}max_delay: on an event each agent first waits a random [0, max_delay] s, so that a fleet's "
        "fetches spread out."
    )

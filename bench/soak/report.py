"""The soak's verdicts: the memory trend, the invariants judged, and the result document with its one table
(printed, or the JSON with ``--json``)."""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.soak.chaos import Chaos, Kubelet, Rotator
from bench.soak.convergence import Convergence
from bench.soak.observers import AppLogReader, EndpointReader, FileReader, LongPollWatcher, Observer, Requests
from bench.soak.plan import Plan
from bench.soak.world import AgentRunner, PubSub, Volume
from testing.soak_values import SecretSet, describe, leaked_values

MEMORY_MIN_WINDOW = 60.0
"""Seconds of samples (after the warm-up) below which the memory trend is reported but not judged."""
MEMORY_WARMUP_MAX = 60.0
"""At most this many seconds at the start of the memory window are left out of the fit (caches filling)."""
MEMORY_GROWTH_LIMIT = (0.05, 2048)
"""Broken when the fitted growth over the window exceeds both 5% of the mean RSS and 2 MiB."""


@dataclass(frozen=True)
class MemoryTrend:
    start_kib: int | None
    """The first sample of the first agent process (right after its bootstrap)."""
    end_kib: int | None
    """The last sample (after convergence)."""
    incarnation: int | None
    """The agent process the trend was fitted on: the one that lived through the memory window."""
    fit_from: float
    fit_to: float
    samples: int
    slope_kib_per_min: float | None
    growth_kib: float | None
    """Fitted growth over [fit_from, fit_to]."""
    mean_kib: float | None
    judged: bool
    ok: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "rss_start_kib": self.start_kib,
            "rss_end_kib": self.end_kib,
            "trend_incarnation": self.incarnation,
            "fit_window_s": [round(self.fit_from, 1), round(self.fit_to, 1)],
            "samples": self.samples,
            "slope_kib_per_min": None if self.slope_kib_per_min is None else round(self.slope_kib_per_min, 1),
            "fitted_growth_kib": None if self.growth_kib is None else round(self.growth_kib, 1),
            "mean_kib": None if self.mean_kib is None else round(self.mean_kib),
            "judged": self.judged,
            "ok": self.ok,
        }

    def describe(self) -> str:
        if self.slope_kib_per_min is None or self.growth_kib is None:
            return "no samples in the memory window"
        span = self.fit_to - self.fit_from
        text = (
            f"{self.slope_kib_per_min / 1024 * 60:+.1f} MiB/h ({self.growth_kib / 1024:+.2f} MiB over "
            f"{span:.0f} s, {self.samples} samples of agent process #{self.incarnation}, no kills)"
        )
        return text if self.judged else text + f"; not judged: window under {MEMORY_MIN_WINDOW:.0f} s"


def linear_fit(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of y over x."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in points)
    return sxy / sxx if sxx else 0.0


def memory_trend(samples: Sequence[tuple[float, int, int]], window: tuple[float, float]) -> MemoryTrend:
    """Fit the RSS of the agent process that lived longest inside ``window`` (seconds), after a warm-up.

    Kills reset memory, so samples of different processes cannot be fitted together; the soak stops killing
    for the memory window, so normally one process covers all of it.
    """
    start_kib = samples[0][2] if samples else None
    end_kib = samples[-1][2] if samples else None
    begin, end = window
    inside = [s for s in samples if begin <= s[0] <= end]
    spans: dict[int, list[float]] = {}
    for t, incarnation, _ in inside:
        spans.setdefault(incarnation, []).append(t)
    if not spans:
        return MemoryTrend(start_kib, end_kib, None, begin, end, 0, None, None, None, False, True)
    incarnation = max(spans, key=lambda k: max(spans[k]) - min(spans[k]))
    first = min(spans[incarnation])
    warmup = min(MEMORY_WARMUP_MAX, 0.25 * (end - first))
    points = [(t, float(kib)) for t, k, kib in inside if k == incarnation and t >= first + warmup]
    if len(points) < 3:
        return MemoryTrend(
            start_kib, end_kib, incarnation, first + warmup, end, len(points), None, None, None, False, True
        )
    slope = linear_fit(points)
    fit_from, fit_to = points[0][0], points[-1][0]
    growth = slope * (fit_to - fit_from)
    mean = sum(y for _, y in points) / len(points)
    judged = fit_to - fit_from >= MEMORY_MIN_WINDOW
    fraction, floor = MEMORY_GROWTH_LIMIT
    ok = not judged or growth <= max(fraction * mean, floor)
    return MemoryTrend(
        start_kib, end_kib, incarnation, fit_from, fit_to, len(points), slope * 60, growth, mean, judged, ok
    )


@dataclass(frozen=True)
class Invariant:
    name: str
    value: str
    expected: str
    ok: bool

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "expected": self.expected, "ok": self.ok}


def table(rows: Sequence[tuple[str, str, str]], invariants: Sequence[Invariant]) -> str:
    """The soak's one table: figures (no verdict) and invariants (held / BROKEN)."""
    lines = ["| figure | value | must be |", "| --- | --- | --- |"]
    lines += [f"| {name} | {value} | {expected} |" for name, value, expected in rows]
    for inv in invariants:
        verdict = "held" if inv.ok else "**BROKEN**"
        lines.append(f"| {inv.name} | {inv.value} | {inv.expected}: {verdict} |")
    return "\n".join(lines)


def kib(value: int | float | None) -> str:
    return "-" if value is None else f"{value / 1024:.1f} MiB"


# --------------------------------------------------------------------------------------------------
# The result document
# --------------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        memory = int(Path("/proc/meminfo").read_text().splitlines()[0].split()[1])
    return {"cpus": os.cpu_count(), "cpu_model": model, "memory_gib": round(memory / 1024 / 1024, 1)}


def assemble(
    *,
    converge_within: float,
    plan: Plan,
    secrets: SecretSet,
    notes: list[str],
    volume: Volume,
    pubsub: PubSub | None,
    agent: AgentRunner,
    chaos: Chaos,
    kubelet: Kubelet,
    rotator: Rotator,
    file_reader: FileReader,
    app_reader: AppLogReader,
    readers: list[EndpointReader],
    long_poll: LongPollWatcher,
    observers: list[Observer],
    requests: Requests,
    convergence: Convergence,
    memory: MemoryTrend,
    rss_samples: list[tuple[float, int, int]],
    metrics: dict[str, float],
    counters: dict[str, Any],
    final_exit: int | None,
    work: Path,
) -> dict[str, Any]:
    """The result document, with the invariants judged."""
    endpoint = readers[0].tally
    for reader in readers[1:]:  # one tally for both endpoint readers
        endpoint.reads += reader.tally.reads
        endpoint.torn += reader.tally.torn
        endpoint.mixed += reader.tally.mixed
        endpoint.rollbacks += reader.tally.rollbacks
        endpoint.seen |= reader.tally.seen
        endpoint.examples += reader.tally.examples
    tallies = {
        "files (..data snapshots)": file_reader.tally,
        "files (one at a time)": file_reader.single_files,
        "endpoint GET": endpoint,
        "endpoint long-poll": long_poll.tally,
        "app reloads": app_reader.tally,
    }
    agent_logs = "".join(i.log.read_text(errors="replace") for i in agent.incarnations)
    leaks = leaked_values(agent_logs)
    write_failures = agent_logs.count("snapshot failed")
    torn = sum(t.torn for t in tallies.values())
    mixed = sum(t.mixed for t in tallies.values())
    rollbacks = sum(t.rollbacks for t in tallies.values())
    crashed = [f"{o.name}: {o.crash}" for o in observers if o.crash]
    access = counters.get("methods", {}).get("AccessSecretVersion", {})
    events_connected = metrics.get("secrets_agent_events_connected")
    bound = converge_within
    observed = {name: t.rotations_observed() for name, t in tallies.items()}

    invariants = [
        Invariant("torn reads (all readers)", str(torn), "0", torn == 0),
        Invariant("mixed reads (all readers)", str(mixed), "0", mixed == 0),
        Invariant("rollbacks (a version older than one already served)", str(rollbacks), "0", rollbacks == 0),
        Invariant(
            "endpoint requests failed while the agent was up",
            str(requests.failed_up),
            "0",
            requests.failed_up == 0,
        ),
        Invariant(
            "converged after faults stopped (files, endpoint, /readyz)",
            f"{convergence.seconds:.1f} s"
            if convergence.seconds is not None
            else f"no: {convergence.detail}",
            f"within {bound:.0f} s",
            convergence.seconds is not None,
        ),
        Invariant(
            "ready after faults stopped",
            "yes" if convergence.ready else "no",
            "yes",
            convergence.ready,
        ),
        Invariant(
            "the app read the final versions (after its SIGHUP)",
            f"{convergence.app_seconds:.1f} s" if convergence.app_seconds is not None else "no",
            f"within {bound:.0f} s",
            convergence.app_seconds is not None,
        ),
        Invariant("memory growth over the memory window", memory.describe(), "no growth trend", memory.ok),
        Invariant("secret values in the agent's logs", str(len(leaks)), "0", not leaks),
        Invariant(
            "agent exits not caused by the soak",
            str(len(agent.unexpected_exits)),
            "0",
            not agent.unexpected_exits,
        ),
        Invariant(
            "rotations observed by every reader (the fewest)",
            str(min(observed.values())),
            "> 0",
            min(observed.values()) > 0,
        ),
        Invariant(
            "readers and chaos ran without errors",
            describe(crashed + chaos.errors + rotator.errors) or "yes",
            "yes",
            not crashed and not chaos.errors and not rotator.errors,
        ),
    ]
    if pubsub is not None:
        invariants.append(
            Invariant(
                "events connected again at the end",
                str(events_connected),
                "1",
                events_connected == 1,
            )
        )
    if final_exit not in (0, None):
        invariants.append(Invariant("the agent stopped cleanly on SIGTERM", str(final_exit), "0", False))

    rows = [
        (
            "duration, seed, secrets",
            f"{plan.duration:.0f} s, seed {plan.seed}, {len(secrets.names)} ({len(secrets.pairs)} pairs)",
            "",
        ),
        ("rotations made (AddSecretVersion)", str(rotator.made), ""),
        *[
            (f"rotations observed: {name}", f"{observed[name]} ({tallies[name].reads} reads)", "")
            for name in tallies
            if name != "files (one at a time)"
        ],
        ("distinct snapshots read through ..data", str(len(file_reader.snapshots)), ""),
        ("app reloads received (SIGHUP, whole snapshot re-read)", str(app_reader.reloads), ""),
        ("long-poll wake-ups", str(long_poll.wakeups), ""),
        (
            "pair reads split across generations (two secrets; see README)",
            str(sum(t.split_pairs for t in tallies.values())),
            "allowed",
        ),
        (
            "reads of a snapshot replaced during the read (retried)",
            str(sum(t.vanished for t in tallies.values())),
            "allowed",
        ),
        ("endpoint requests served", str(requests.served), ""),
        ("endpoint requests failed while the agent restarted", str(requests.failed_restarting), "allowed"),
        ("endpoint token re-read after a restart", str(requests.token_reread), ""),
        ("fault phases", ", ".join(f"{k} {v}" for k, v in sorted(chaos.phases.items())), ""),
        (
            "AccessSecretVersion answers by status",
            ", ".join(f"{k} {v}" for k, v in sorted(access.items())),
            "",
        ),
        ("agent SIGKILLs / restarts", f"{chaos.kills} / {chaos.restarts + kubelet.restarts}", ""),
        ("Pub/Sub restarts", str(pubsub.restarts) if pubsub is not None else "none: no Pub/Sub emulator", ""),
        (
            "disk fills (snapshot writes refused by the full volume)",
            f"{chaos.fills} ({write_failures})" if volume.mounted else volume.note,
            "",
        ),
        ("agent RSS at start / at the end", f"{kib(memory.start_kib)} / {kib(memory.end_kib)}", ""),
    ]
    ok = all(inv.ok for inv in invariants)
    return {
        "ok": ok,
        "machine": machine(),
        "options": {
            "duration_s": plan.duration,
            "seed": plan.seed,
            "secrets": len(secrets.names),
            "pairs": len(secrets.pairs),
            "converge_within_s": bound,
        },
        "notes": notes,
        "plan": plan.to_json(),
        "rotations": {"made": rotator.made, "errors": rotator.errors, "observed": observed},
        "observers": {name: t.to_json() for name, t in tallies.items()},
        "snapshots_read": len(file_reader.snapshots),
        "app": {"reloads": app_reader.reloads},
        "long_poll_wakeups": long_poll.wakeups,
        "requests": requests.to_json(),
        "faults": {"phases": chaos.phases, "access_calls_by_status": access, "errors": chaos.errors},
        "agent": {
            "kills": chaos.kills,
            "restarts": chaos.restarts + kubelet.restarts,
            "incarnations": len(agent.incarnations),
            "unexpected_exits": agent.unexpected_exits,
            "snapshot_write_failures": write_failures,
            "final_exit_code": final_exit,
        },
        "pubsub": {
            "available": pubsub is not None,
            "restarts": pubsub.restarts if pubsub is not None else 0,
            "events_connected_at_end": events_connected,
        },
        "disk": {"volume": volume.describe, "fills": chaos.fills, "filled_bytes": chaos.fill_bytes},
        "convergence": {
            "seconds": convergence.seconds,
            "app_seconds": convergence.app_seconds,
            "bound_s": bound,
            "ready": convergence.ready,
            "detail": convergence.detail,
        },
        "memory": {**memory.to_json(), "samples": rss_samples},
        "leaks": len(leaks),
        "invariants": [inv.to_json() for inv in invariants],
        "table": table(rows, invariants),
    }

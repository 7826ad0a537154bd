"""The fleet tables: one row per mode (convergence, peak calls per minute against the scaled quota, quota
errors, calls per secret per pod-hour), the event mode's notes, one row per rotation in event mode, and one
row per fleet restart (quota use, RESOURCE_EXHAUSTED answers, init containers restarted, time to ready).

Only formatting of ``scenarios.Result``; ``duration`` and ``quantile`` are shared with the cost table.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from bench.fleet.scenarios import Restart, Result
from bench.fleet.world import (
    REPRESENTED_PODS,
    SECRETS,
    SERVICE_ACCESS_PER_MINUTE,
    WORKERS,
    scaled_access_quota,
)


def duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds * 1000:,.0f} ms" if seconds < 1 else f"{seconds:.2f} s"
    return f"{seconds:,.0f} s" if seconds < 600 else f"{seconds / 60:,.0f} min"


def print_tables(result: Result) -> None:
    print_restart_table(result.restarts)
    n = result.agents
    print(
        f"\nFleet: {n} agents x {SECRETS} secrets ({WORKERS} processes), one emulator with quotas on, "
        f"scaled to {n}/{REPRESENTED_PODS:,} of the access quota ({scaled_access_quota(n):,}/min); polling "
        f"compressed to {result.wall_interval:g} s of wall time per interval (quotas x the same factor)"
    )
    print(
        "| mode | compression | convergence after a rotation (max over agents) | peak access calls / min "
        f"| scaled to {REPRESENTED_PODS:,} pods | quota errors | access calls / secret / pod-hour |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for s in result.scenarios:
        convergence = ", ".join(duration(c) for c in s.convergence)
        scaled = s.peak_per_minute * REPRESENTED_PODS / n
        share = scaled / SERVICE_ACCESS_PER_MINUTE
        print(
            f"| {s.title} | x{s.compression:g} | {convergence} | {s.peak_per_minute:,} "
            f"(quota {s.quota_per_minute:,}) | {scaled:,.0f} ({share:.0%} of 90,000) | {s.quota_errors} "
            f"| {s.per_secret_pod_hour:.2f} ({s.steady_calls:,} calls in {s.steady_wall:.0f} s) |"
        )
    if result.find("events") is None:
        print(f"| events | - | not measured: {result.events_note} | | | | |")
    events = result.find("events")
    if events is not None:
        print(
            f"Events: start of each pod = {events.startup_calls_per_secret:.2f} access calls per secret "
            f"(bootstrap, then a catch-up check once its subscription exists); idle {events.idle_wall:.0f} s "
            f"with events flowing: {events.idle_calls} access calls; a rotation costs "
            f"{events.calls_per_rotation:.2f} access calls per pod; peak and quota errors are over the "
            f"rotations, in real minutes; the per-pod-hour figure is the safety poll, compressed x"
            f"{events.compression:g}."
        )
        print(
            f"\nEvent mode, each rotation across the {n} agents (real time, from just before "
            f"AddSecretVersion; after the event each agent waits a random [0, max_delay], fetches, swaps)"
        )
        print(
            "| rotation | event reached the agent p50 | its max | files swapped p50 | p99 "
            f"| max (convergence) | CPU cores busy (of {os.cpu_count()}) |"
        )
        print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for number, r in enumerate(events.rotations, 1):
            delivered = sorted(r.delivered) or [float("nan")]
            served = sorted(r.served)
            print(
                f"| {number} | {duration(quantile(delivered, 0.5))} | {duration(delivered[-1])} "
                f"| {duration(quantile(served, 0.5))} | {duration(quantile(served, 0.99))} "
                f"| {duration(served[-1])} | {r.busy_cores:.2f} |"
            )


def print_restart_table(restarts: Sequence[Restart]) -> None:
    if not restarts:
        return
    print(
        "\nFleet restart: every pod's init container (`init`, default settings unless a concurrency is "
        "given: timeout 60 s, backoff 0.5 s doubling to 30 s, full jitter) starts at a random moment within "
        "the window, access quota on and scaled to the pods simulated, real time; an init container whose "
        "bootstrap fails is restarted after the kubelet's back-off (10 s, doubling)"
    )
    print(
        "| pods x secrets (simulated) | concurrency | window | access quota / min | accesses needed "
        "| admitted (peak in 60 s) | RESOURCE_EXHAUSTED (per access needed) "
        "| init containers restarted (pods) | fleet ready after | pod ready p50 / p99 / max |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in restarts:
        ready = r.pod_ready
        print(
            f"| {r.shape.pods:,} x {r.shape.secrets} ({r.agents}) | {r.concurrency or 'default'} "
            f"| {r.spread:g} s | {r.quota_per_minute:,} | {r.needed:,} "
            f"| {r.admitted:,} ({r.peak_admitted:,}) "
            f"| {r.exhausted:,} ({r.exhausted_per_call:.2f}) | {r.init_failures} ({r.pods_restarted}) "
            f"| {duration(r.ready)} | {duration(quantile(ready, 0.5))} / {duration(quantile(ready, 0.99))} "
            f"/ {duration(ready[-1])} |"
        )


def quantile(ordered: Sequence[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

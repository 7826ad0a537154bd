"""The tables of the fleet with selections (``selections.SelectionResult``): the restart side by side
(resolved at admission, nothing known), the steady state with events, ``rotate all``. Only formatting.

Reads are ListSecrets: the agents' scaled by 10,000 / agents, admission's (the webhook's shared listing)
not, since it lists once per cache period for the whole fleet; quota figures are against the quota.
"""

from __future__ import annotations

from bench.fleet.report import duration, quantile
from bench.fleet.selections import Reads, SelectionResult
from bench.fleet.world import REPRESENTED_PODS, SECRETS, SELECTED, SERVICE_READ_WRITE_PER_MINUTE


def _errors(exhausted: dict[str, int]) -> str:
    return ", ".join(f"{m} {n:,}" for m, n in sorted(exhausted.items())) or "0"


def _reads(reads: Reads, agents: int) -> str:
    scaled = reads.scaled_peak(agents)
    return (
        f"{reads.peak_per_minute} (quota {reads.quota_per_minute}) -> {scaled:,.0f} "
        f"({scaled / SERVICE_READ_WRITE_PER_MINUTE:.0%} of 600)"
    )


def print_selection_tables(result: SelectionResult) -> None:
    n = result.agents
    print(
        f"\nFleet with selections: {n} agents ({REPRESENTED_PODS:,} pods simulated), each {SECRETS} secrets "
        f"by name + select team=payments ({SELECTED} match); read quota on, scaled to "
        f"{SERVICE_READ_WRITE_PER_MINUTE * n / REPRESENTED_PODS:g}/simulated minute. Reads: the agents' "
        f"ListSecrets (peak in one simulated minute, then x{REPRESENTED_PODS // n} to {REPRESENTED_PODS:,} "
        f"pods) + admission's (the fleet's shared listing, not scaled)"
    )
    print(
        "| restart within 1 simulated minute | admission | agents' listings (RESOURCE_EXHAUSTED) "
        "| admission's listings | reads / simulated min: peak -> 10,000 pods | RESOURCE_EXHAUSTED by method "
        "| every pod converged after | pod converged p50 / p99 |"
    )
    print("| --- | --- | ---: | ---: | ---: | --- | ---: | ---: |")
    for r in result.restarts:
        ready = r.pod_converged
        admission = "-" if r.admission_seconds is None else f"webhook, {r.admission_seconds:.1f} s real"
        print(
            f"| {r.title} (x{r.compression:g}) | {admission} | {r.reads.agent_calls:,} "
            f"({r.reads.agent_exhausted:,}) | {r.reads.admission_calls} | {_reads(r.reads, n)} "
            f"| {_errors(r.exhausted)} | {duration(r.converged)} "
            f"| {duration(quantile(ready, 0.5))} / {duration(quantile(ready, 0.99))} |"
        )
    steady = result.steady
    if steady is None:
        print(f"Steady state and rotate all with events: not measured: {result.events_note}")
        return
    print(
        f"\nSteady state with events + selections (admission: webhook; re-list auto = 1 h, "
        f"safety poll 1 h, both compressed x{steady.compression:g}; events real time, spread "
        f"{steady.spread:.1f} s)"
    )
    print(
        "| phase | agents' listings (RESOURCE_EXHAUSTED) | reads / simulated min: peak -> 10,000 pods "
        "| figure |"
    )
    print("| --- | ---: | ---: | --- |")
    print(
        f"| first re-list after the restart (every known_at from one listing) | {steady.wave.agent_calls:,} "
        f"({steady.wave.agent_exhausted:,}) | {_reads(steady.wave, n)} "
        f"| spread over {duration(steady.wave_seconds)} simulated |"
    )
    created = steady.new_secret
    print(
        f"| steady window, {steady.window_hours:.1f} simulated h | {steady.window.agent_calls:,} "
        f"({steady.window.agent_exhausted:,}) | {_reads(steady.window, n)} "
        f"| per pod-hour: {steady.reads_per_pod_hour:.2f} reads, {steady.access_per_pod_hour:.1f} access "
        f"calls ({steady.access_per_pod_hour / (SECRETS + SELECTED):.2f} per secret) |"
    )
    print(
        f"| a new matching secret created in the window | | | every agent delivered it: p50 "
        f"{duration(quantile(created, 0.5))}, max {duration(created[-1])} (real time) |"
    )
    print(f"RESOURCE_EXHAUSTED over the steady phase, by method: {_errors(steady.exhausted)}")
    rotated = result.rotate_all
    if rotated is None:
        return
    worst = max(rotated.convergence.values())
    print(
        f"\n`rotate {' '.join(rotated.targets)}` ({len(rotated.convergence)} secrets) across the fleet with "
        f"events, real time, access quota {rotated.access_quota:,}/min (scaled), pacing "
        f"{rotated.spacing:.1f} s (as for 10,000 pods)"
    )
    print(
        "| rotations (rotate's summary) | rotate took | last pod served the last version after "
        "| convergence per rotation p50 / max | peak access calls / min (quota) "
        "| RESOURCE_EXHAUSTED by method |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | --- |")
    ordered = sorted(rotated.convergence.values())
    summary = ", ".join(f"{k} {v}" for k, v in sorted(rotated.run.summary.items()))
    print(
        f"| {len(ordered)} ({summary}) | {duration(rotated.run.seconds)} | {duration(rotated.done)} "
        f"| {duration(quantile(ordered, 0.5))} / {duration(worst)} "
        f"| {rotated.peak_access_per_minute:,} ({rotated.access_quota:,}) | {_errors(rotated.exhausted)} |"
    )

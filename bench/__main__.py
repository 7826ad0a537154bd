"""`python -m bench`: run every benchmark, print its table, then the targets and whether each is met.

``--quick`` (or ``BENCH_QUICK=1``): the propagation benchmark runs no polling agents (their measurement takes
two poll intervals, over two minutes; the model is still printed), and the fleet is 100 agents with polling
compressed to 5 s per interval instead of 10 s: about 4 minutes less.
"""

from __future__ import annotations

import os
import sys

from bench import (
    bootstrap,
    emulator_access,
    endpoint,
    fleet,
    init_cost,
    propagation,
    render,
    run_footprint,
    webhook,
)


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def main() -> None:
    quick = "--quick" in sys.argv[1:] or os.environ.get("BENCH_QUICK", "") not in ("", "0")
    emulator_access.main()
    init = init_cost.main()
    boot = bootstrap.main()
    footprint = run_footprint.main()
    rendering = render.main()
    local = endpoint.main()
    rotation = propagation.main(quick)
    fleet_result = fleet.main(quick)
    hook = webhook.main(quick)

    n, limit = bootstrap.TARGET_SIZE, bootstrap.TARGET_RATIO
    print("\nSummary")
    print("| figure | target | measured | verdict |")
    print("| --- | ---: | ---: | --- |")
    print(
        f"| `init` whole process vs the official async client making the same calls, wall / CPU / peak RSS, "
        f"median of {init.runs} interleaved, by secrets | <= {init_cost.TARGET}x each | {init.ratios_text()} "
        f"| {verdict(init.met)} |"
    )
    print(
        f"| init bootstrap, {n} secrets vs 1, {bootstrap.LATENCY_MS} ms per call, default concurrency "
        f"{bootstrap.DEFAULT_CONCURRENCY} | <= {limit}x | {boot.default_ratio:.2f}x "
        f"| {verdict(boot.default_ratio <= limit)} |"
    )
    print(
        f"| the same with --concurrency {bootstrap.WIDE_CONCURRENCY} (all {n} in flight) | <= {limit}x "
        f"| {boot.wide_ratio:.2f}x | {verdict(boot.wide_ratio <= limit)} |"
    )
    print(
        f"| peak RSS of `run`, {run_footprint.SECRETS} secrets vs importing the dependencies "
        f"| <= {run_footprint.RSS_TARGET}x | {footprint.rss_ratio:.2f}x ({footprint.agent_mib:.1f} MiB; "
        f"{footprint.rss_ratio_to_client:.2f}x the official client after the same calls) "
        f"| {verdict(footprint.rss_ratio <= run_footprint.RSS_TARGET)} |"
    )
    print(
        f"| CPU of `run` idle, {run_footprint.SECRETS} secrets, {run_footprint.POLL_INTERVAL} interval "
        f"(idle / with one poll round per interval) | none set | {footprint.idle_percent:.3f}% / "
        f"{footprint.amortised_percent:.3f}% of one core | reported |"
    )
    print(
        f"| rotation swap (render + write), {render.SECRETS} secrets + {render.TEMPLATES} templates, "
        f"the rotated secret feeding {render.ROTATED_FEEDS}, vs the {render.SECRETS} without templates, "
        f"median of {render.ROUNDS} interleaved | <= {render.TARGET_RATIO}x | {rendering.ratio:.2f}x "
        f"(worst case, a secret in all {render.TEMPLATES}: {rendering.worst_ratio:.2f}x) "
        f"| {verdict(rendering.met)} |"
    )
    print_endpoint_summary(local)
    print_propagation_summary(rotation)
    print_fleet_summary(fleet_result)
    print(
        f"| webhook review of a {webhook.ANNOTATION_SET // 1024} KiB annotation set, worst shape "
        f"('{hook.worst.title}'), median | < {webhook.TARGET_MS:g} ms | {hook.worst.median_ms:.1f} ms "
        f"({hook.ratio(hook.worst):.1f}x a one-secret pod's review) | {verdict(hook.met)} |"
    )
    print(
        f"| webhook /healthz p99 while the worst reviews run back to back | none set "
        f"| {hook.health_p99_ms:.1f} ms | reported |"
    )


def print_endpoint_summary(local: endpoint.Result) -> None:
    rows = local.throughput.rows
    for title, label in (
        (endpoint.AUDIT_ON, "audit log on (default)"),
        (endpoint.AUDIT_OFF, "audit log off"),
    ):
        ratio, p99 = local.throughput.ratio(title), rows[title].p99_ms
        print(
            f"| local endpoint requests/s vs a bare aiohttp handler, {endpoint.CONNECTIONS} connections, "
            f"{label} | >= {endpoint.RATIO_TARGET}x | {ratio:.2f}x (CPU per request: "
            f"{local.throughput.cpu_ratio(title):.2f}x) | {verdict(ratio >= endpoint.RATIO_TARGET)} |"
        )
        print(
            f"| local endpoint p99 latency, {label} | < {endpoint.P99_TARGET_MS:g} ms | {p99:.2f} ms "
            f"| {verdict(p99 < endpoint.P99_TARGET_MS)} |"
        )
    watchers = local.watchers
    print(
        f"| {endpoint.WATCHERS} long-poll watchers all woken after a rotation (worst of "
        f"{len(watchers.rounds)}) | <= {endpoint.WAKE_TARGET_MS:g} ms | {watchers.worst_max_ms:.0f} ms "
        f"| {verdict(watchers.worst_max_ms <= endpoint.WAKE_TARGET_MS)} |"
    )
    print(
        f"| memory of a waiting long-poll watcher (server RSS) | none set | "
        f"{watchers.per_watcher_kib:.1f} KiB | reported |"
    )


def print_propagation_summary(result: propagation.Result) -> None:
    target = propagation.EVENTS_TARGET
    default = f" ({result.default_max_delay:g} s)" if result.default_max_delay is not None else ""
    for title, label in (
        (propagation.EVENTS_NO_DELAY, "max_delay 0"),
        (propagation.EVENTS_DEFAULT, f"default max_delay{default}"),
    ):
        p99 = result.events_p99(title)
        if p99 is None:
            print(
                f"| rotation -> files swapped and app signalled, Pub/Sub events, {label} | < {target:g} s "
                f"| not measured: {result.events_note} | MISSED |"
            )
            continue
        print(
            f"| rotation -> files swapped and app signalled, Pub/Sub events, {label}, p99 of "
            f"{result.rotations} | < {target:g} s | {p99 * 1000:,.0f} ms | {verdict(p99 < target)} |"
        )
    if result.polling is not None:
        signalled = result.polling.signalled
        print(
            f"| the same, polling every {propagation.POLL_INTERVAL:g} s, p50 / p99 of "
            f"{len(signalled)} | none set | {propagation.percentile(signalled, 0.5):.1f} s / "
            f"{propagation.percentile(signalled, 0.99):.1f} s | reported |"
        )


def print_fleet_summary(result: fleet.Result) -> None:
    n = result.agents
    events = result.find("events")
    if events is None:
        print(f"| fleet of {n} agents with events | - | not measured: {result.events_note} | MISSED |")
    else:
        worst = max(events.convergence)
        # The rate is counted over a window of two compressed intervals: +-2-3% from where each agent's
        # polls fall. 5% tells a real regression (polling at the normal interval: 12x; twice: 2x) from that.
        allowance = fleet.PER_POD_HOUR_TARGET * 1.05
        hourly = result.find("poll every 1 h")
        baseline = f"; hourly polling, same run: {hourly.per_secret_pod_hour:.2f}" if hourly else ""
        print(
            f"| fleet of {n} agents with events: every agent serves a rotated version (worst of "
            f"{len(events.convergence)}) | < {fleet.CONVERGENCE_TARGET:g} s | {worst:.2f} s "
            f"| {verdict(worst < fleet.CONVERGENCE_TARGET)} |"
        )
        print(
            f"| fleet with events: steady access calls per secret per pod-hour (1 h safety poll; 5% "
            f"allowed for the window's sampling error) | <= {fleet.PER_POD_HOUR_TARGET:g} "
            f"| {events.per_secret_pod_hour:.2f}{baseline} "
            f"| {verdict(events.per_secret_pod_hour <= allowance)} |"
        )
    errors = sum(s.quota_errors for s in result.scenarios)
    print(
        f"| fleet, quota errors (RESOURCE_EXHAUSTED), access quota scaled to {n} of "
        f"{fleet.REPRESENTED_PODS:,} pods, every mode | 0 | {errors} | {verdict(errors == 0)} |"
    )
    for scenario in result.scenarios:
        if not scenario.title.startswith("events"):
            print(
                f"| fleet, {scenario.title}: access calls per secret per pod-hour | none set "
                f"| {scenario.per_secret_pod_hour:.2f} | reported |"
            )
    if result.selections is not None:
        print_selection_summary(result.selections)


def print_selection_summary(result: fleet.SelectionResult) -> None:
    """DESIGN's fleet figure: 10,000 pods restarting within one minute, with label selectors, get 0
    read-quota errors (600 reads/min per project)."""
    n, pods = result.agents, fleet.REPRESENTED_PODS
    for r in result.restarts:
        errors = r.exhausted.get("ListSecrets", 0)
        peak = r.reads.scaled_peak(n)
        judged = r.title.startswith("resolved")
        met = errors == 0 and peak < 600
        print(
            f"| fleet with selections, {pods:,} pods ({n} simulated) restarting within a simulated minute, "
            f"{r.title} ({r.admitted_by}): read-quota errors, peak reads/min scaled "
            f"| {'0, < 600' if judged else 'none set'} | {errors}, {peak:,.0f}; every pod converged after "
            f"{r.converged:,.0f} s | {verdict(met) if judged else 'reported'} |"
        )
    steady = result.steady
    if steady is None:
        print(f"| fleet with selections and events | - | not measured: {result.events_note} | MISSED |")
        return
    per_secret = steady.access_per_pod_hour / (fleet.SECRETS + 10)
    print(
        f"| fleet with selections and events, steady: reads / access calls per pod-hour (access per "
        f"secret) | <= 1 access per secret | {steady.reads_per_pod_hour:.2f} / "
        f"{steady.access_per_pod_hour:.1f} ({per_secret:.2f}) | {verdict(per_secret <= 1.05)} |"
    )
    print(
        f"| fleet with selections: a new matching secret delivered by every agent (events, spread "
        f"{steady.spread:.1f} s) | none set | {max(steady.new_secret):.1f} s | reported |"
    )
    rotated = result.rotate_all
    if rotated is not None:
        errors = rotated.exhausted.get("AccessSecretVersion", 0)
        failed = sum(v for k, v in rotated.run.summary.items() if k != "rotated")
        print(
            f"| fleet: `rotate {' '.join(rotated.targets)}` of {len(rotated.convergence)} secrets paced "
            f"{rotated.spacing:.1f} s: access-quota errors (done after {rotated.done:.0f} s) | 0 | {errors} "
            f"| {verdict(errors == 0 and failed == 0)} |"
        )


if __name__ == "__main__":
    main()

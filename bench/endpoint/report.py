"""The endpoint tables: throughput and latency per server with the ratios to the bare handler, then the
long-poll watchers' wake-up latency per rotation and the server's memory per waiting watcher.

Only formatting of ``measure.Result``.
"""

from __future__ import annotations

from bench.endpoint.measure import AUDIT_OFF, AUDIT_ON, Result
from bench.endpoint.processes import pinning_note
from bench.endpoint.settings import (
    CONNECTIONS,
    CPU_RATIO_TARGET,
    DURATION_SECONDS,
    P99_TARGET_MS,
    RATIO_TARGET,
    REPEATS,
    VALUE_BYTES,
    WATCH_WAIT,
    WATCHERS,
)


def _verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def print_tables(result: Result) -> None:
    t = result.throughput
    print(
        f"\nLocal endpoint: GET /v1/secrets/{{name}} ({VALUE_BYTES}-byte value), {CONNECTIONS} keep-alive "
        f"connections, {t.generator}; {REPEATS} interleaved {DURATION_SECONDS} s runs per server, medians; "
        f"ratios to the bare handler's run of the same round, median (min-max); {pinning_note()}"
    )
    print(
        "| server | requests/s | vs bare | p50 ms | p99 ms (min-max) | max ms | server CPU µs/request "
        "| vs bare |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for title, load in t.rows.items():
        p99 = t.p99s(title)
        print(
            f"| {title} | {load.rps:,.0f} | {t.rps_ratios(title)} | {load.p50_ms:.2f} "
            f"| {p99.median:.2f} ({p99.low:.2f}-{p99.high:.2f}) | {load.max_ms:.1f} | {load.cpu_us:.1f} "
            f"| {t.cpu_ratios(title)} |"
        )
    for title in (AUDIT_ON, AUDIT_OFF):
        rps, cpu, latency = t.ratio(title), t.cpu_ratio(title), t.rows[title].p99_ms
        print(
            f"{title}: requests/s {rps:.2f}x (target >= {RATIO_TARGET}x: {_verdict(rps >= RATIO_TARGET)}), "
            f"CPU per request {cpu:.2f}x (target <= {CPU_RATIO_TARGET}x: "
            f"{_verdict(cpu <= CPU_RATIO_TARGET)}), p99 {latency:.2f} ms (target < {P99_TARGET_MS:g} ms: "
            f"{_verdict(latency < P99_TARGET_MS)})"
        )
    w = result.watchers
    print(
        f"\n{WATCHERS} long-poll watchers (?wait={WATCH_WAIT}, If-None-Match) on the agent endpoint, audit "
        f"on: wake-up latency from the snapshot's publish to each watcher's complete 200 (ms)"
    )
    print("| rotation | woken | p50 ms | p99 ms | max (all woken) ms |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for number, watch_round in enumerate(w.rounds, 1):
        print(
            f"| {number} | {watch_round.woken} | {watch_round.p50_ms:.1f} | {watch_round.p99_ms:.1f} "
            f"| {watch_round.max_ms:.1f} |"
        )
    print(
        f"Server VmRSS: {w.rss_before_kib / 1024:.1f} MiB before the watchers, "
        f"{w.rss_waiting_kib / 1024:.1f} MiB with {WATCHERS} waiting: "
        f"{w.per_watcher_kib:.1f} KiB per watcher"
    )

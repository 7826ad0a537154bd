"""The endpoint tables: throughput and latency per server with the ratios to the bare handler, then the
long-poll watchers' wake-up latency per rotation and the server's memory per waiting watcher.

Only formatting of ``measure.Result``.
"""

from __future__ import annotations

from bench.endpoint.measure import Result
from bench.endpoint.processes import pinning_note
from bench.endpoint.settings import CONNECTIONS, DURATION_SECONDS, REPEATS, VALUE_BYTES, WATCH_WAIT, WATCHERS


def print_tables(result: Result) -> None:
    t = result.throughput
    print(
        f"\nLocal endpoint: GET /v1/secrets/{{name}} ({VALUE_BYTES}-byte value), {CONNECTIONS} keep-alive "
        f"connections, {t.generator}; median of {REPEATS} interleaved {DURATION_SECONDS} s runs; "
        f"{pinning_note()}"
    )
    print("| server | requests/s | vs bare | p50 ms | p99 ms | max ms | server CPU µs/request | vs bare |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for title, load in t.rows.items():
        print(
            f"| {title} | {load.rps:,.0f} | {t.ratio(title):.2f}x | {load.p50_ms:.2f} | {load.p99_ms:.2f} "
            f"| {load.max_ms:.1f} | {load.cpu_us:.1f} | {t.cpu_ratio(title):.2f}x |"
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

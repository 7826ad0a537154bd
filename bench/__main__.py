"""`python -m bench`: run every benchmark, print its table, then the targets and whether each is met."""

from __future__ import annotations

from bench import bootstrap, emulator_access, endpoint, run_footprint


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def main() -> None:
    emulator_access.main()
    boot = bootstrap.main()
    footprint = run_footprint.main()
    local = endpoint.main()

    n, limit = bootstrap.TARGET_SIZE, bootstrap.TARGET_RATIO
    print("\nSummary")
    print("| figure | target | measured | verdict |")
    print("| --- | ---: | ---: | --- |")
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
        f"| <= {run_footprint.RSS_TARGET}x | {footprint.rss_ratio:.2f}x "
        f"| {verdict(footprint.rss_ratio <= run_footprint.RSS_TARGET)} |"
    )
    print(
        f"| CPU of `run` idle, {run_footprint.SECRETS} secrets, {run_footprint.POLL_INTERVAL} interval "
        f"(idle / with one poll round per interval) | none set | {footprint.idle_percent:.3f}% / "
        f"{footprint.amortised_percent:.3f}% of one core | reported |"
    )
    print_endpoint_summary(local)


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


if __name__ == "__main__":
    main()

"""`python -m bench`: run every benchmark, print its table, then the targets and whether each is met."""

from __future__ import annotations

from bench import bootstrap, emulator_access, run_footprint


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def main() -> None:
    emulator_access.main()
    boot = bootstrap.main()
    footprint = run_footprint.main()

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


if __name__ == "__main__":
    main()

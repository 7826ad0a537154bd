"""What a hostile pod costs the webhook: AdmissionReviews whose annotations total 256 KiB (the API server's
own limit for a pod's annotations), POSTed over HTTPS to the webhook's real application, one at a time.

The webhook answers for every pod that asks for injection, under ``failurePolicy: Fail`` and a 5 s
timeout: a review whose cost a pod can choose stalls the injection of every other pod. Issue 13 measured
15 s for 250 secrets plus 250 near-miss keys (about 30 KB), quadratic in the keys. Each shape below is a
256 KiB annotation set built to cost as much as the limits in ``agent.webhook.limits`` let it:

* the issue's: secrets and near-miss keys in pairs, 256 KiB of them (refused: too many of ours);
* at the caps: ``MAX_SECRETS`` secrets, each with every option, ``MAX_TOTAL`` characters of ours made of
  long references, env names and files (the agent's configuration loader checks them all), the rest of the
  256 KiB other tools' annotations; once with long names, once with file paths as deep as allowed;
* every one of ours a problem: near-miss keys up to the caps (one problem each, suggestions for those the
  refusal lists);
* one annotation of ours holding the whole 256 KiB;
* another tool's 256 KiB of annotations and one secret of ours (what the webhook must skip cheaply).

Figure: the median time of each, as a ratio to the median of a small pod's review (one secret) measured
in the same run, and the target: every shape answered in under ``TARGET_MS``. While the worst shape is
sent by two clients back to back, ``/healthz`` is timed too: reviews run in worker threads, off the event
loop that answers the probes.

The server is ``agent.webhook.server.build_app`` on an aiohttp runner with a trustme certificate on
127.0.0.1: the request handling and the review, not the listener (whose limits are the listener's own
benchmark's business).
"""

from __future__ import annotations

import asyncio
import json
import ssl
import statistics
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import trustme
from aiohttp import web

from agent.webhook import limits
from agent.webhook.annotations import GLOBAL_KEYS
from agent.webhook.server import build_app
from agent.webhook.settings import PREFIX, InjectorSettings
from testing.admission import admission_review

PROJECT = "bench-project"
ANNOTATION_SET = 256 * 1024
"""Bytes of a pod's annotations (keys and values), the API server's limit (``TotalAnnotationSizeLimitB``)."""
TARGET_MS = 100.0
REPEATS, QUICK_REPEATS = 21, 7
HEALTH_PROBES = 200


# --------------------------------------------------------------------------------------------------
# The annotation sets
# --------------------------------------------------------------------------------------------------


def size(annotations: dict[str, str]) -> int:
    return sum(len(key) + len(value) for key, value in annotations.items())


def filled(annotations: dict[str, str]) -> dict[str, str]:
    """``annotations`` and another tool's, up to ANNOTATION_SET bytes in all."""
    out = dict(annotations)
    index = 0
    while (room := ANNOTATION_SET - size(out)) > 0:
        key = f"example.com/filler-{index:05d}"
        out[key] = "f" * max(0, min(4096, room - len(key)))
        index += 1
    return out


def ours_size(annotations: dict[str, str]) -> int:
    """What ``limits.MAX_TOTAL`` counts: our keys after the prefix, and values."""
    return sum(len(k) - len(PREFIX) + len(v) for k, v in annotations.items() if k.startswith(PREFIX))


def small_pod() -> dict[str, str]:
    return {PREFIX + "inject": "true", PREFIX + "secret-db": f"projects/{PROJECT}/secrets/db"}


def issue_pairs() -> dict[str, str]:
    out = {PREFIX + "inject": "true", PREFIX + "project": PROJECT}
    index = 0
    while size(out) < ANNOTATION_SET:
        out[f"{PREFIX}secret-s{index:05d}"] = f"db-{index}"
        out[f"{PREFIX}secre-s{index:05d}"] = f"db-{index}"  # a near miss of secret-s...
        index += 1
    return out


def at_the_caps(deep: bool) -> dict[str, str]:
    """MAX_SECRETS secrets with every option, their values grown together until MAX_TOTAL is used."""

    def build(pad: int) -> dict[str, str]:
        out = {PREFIX + "inject": "true", PREFIX + "project": PROJECT, PREFIX + "env-file": "app.env"}
        for index in range(limits.MAX_SECRETS):
            name = f"s{index:02d}"
            if deep:
                dirs = limits.MAX_PATH_PARTS - 1
                part = "d" * max(1, pad // dirs)
                file = "/".join([part] * dirs + [name])
            else:
                file = f"files/{'f' * pad}-{name}"
            out[f"{PREFIX}secret-{name}"] = f"projects/{PROJECT}/secrets/{'r' * min(255, pad + 1)}{index:02d}"
            out[f"{PREFIX}secret-{name}-env"] = f"E_{'X' * pad}_{index:02d}"
            out[f"{PREFIX}secret-{name}-file"] = file
            out[f"{PREFIX}secret-{name}-mode"] = "0400"
        return out

    pad = 1
    while ours_size(build(pad + 1)) <= limits.MAX_TOTAL:
        pad += 1
    return filled(build(pad))


def all_problems() -> dict[str, str]:
    """As many near-miss keys as the caps allow: each one a problem."""
    out = {PREFIX + "inject": "true"}
    room = limits.max_annotations(len(GLOBAL_KEYS)) - 1
    index = 0
    while index < room:
        key = f"{PREFIX}secre-{index:04d}-{'x' * 20}"
        if ours_size({**out, key: "db"}) > limits.MAX_TOTAL:
            break
        out[key] = "db"
        index += 1
    return filled(out)


def one_huge_value() -> dict[str, str]:
    key = PREFIX + "secret-db"
    return {PREFIX + "inject": "true", key: "r" * (ANNOTATION_SET - len(key) - 30)}


def others_only() -> dict[str, str]:
    return filled(small_pod())


SHAPES: dict[str, Callable[[], dict[str, str]]] = {
    "issue 13: secrets + near-miss keys": issue_pairs,
    "at the caps, long names": lambda: at_the_caps(deep=False),
    "at the caps, deep file paths": lambda: at_the_caps(deep=True),
    "every annotation of ours a problem": all_problems,
    "one 256 KiB value of ours": one_huge_value,
    "256 KiB of another tool's, one secret": others_only,
}
BASELINE = "small pod, one secret (baseline)"


def review_body(annotations: dict[str, str]) -> bytes:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "web-", "namespace": "shop", "annotations": annotations},
        "spec": {
            "securityContext": {"runAsUser": 1000, "fsGroup": 1000},
            "containers": [{"name": "app", "image": "example.com/app:1"}],
        },
    }
    review = admission_review(pod)
    return json.dumps(review).encode()


# --------------------------------------------------------------------------------------------------
# The server and the measurement
# --------------------------------------------------------------------------------------------------


@dataclass
class Row:
    title: str
    annotation_bytes: int
    times_ms: list[float]
    allowed: bool

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times_ms)

    @property
    def max_ms(self) -> float:
        return max(self.times_ms)


@dataclass
class Result:
    baseline: Row
    rows: list[Row]
    health_p99_ms: float
    """``/healthz`` p99 while two clients send the worst shape back to back."""
    health_baseline_p99_ms: float
    """``/healthz`` p99 with no review in flight."""

    @property
    def worst(self) -> Row:
        return max(self.rows, key=lambda row: row.median_ms)

    def ratio(self, row: Row) -> float:
        return row.median_ms / self.baseline.median_ms

    @property
    def met(self) -> bool:
        return self.worst.median_ms < TARGET_MS


@asynccontextmanager
async def webhook_server(tmp: Path) -> AsyncIterator[tuple[str, aiohttp.ClientSession]]:
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    cert, key = tmp / "tls.crt", tmp / "tls.key"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    runner = web.AppRunner(build_app(InjectorSettings()), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context)
    await site.start()
    port = runner.addresses[0][1]
    connector = aiohttp.TCPConnector(ssl=client_context, limit=8)
    try:
        async with aiohttp.ClientSession(connector=connector) as session:
            yield f"https://127.0.0.1:{port}", session
    finally:
        await runner.cleanup()


async def timed_review(session: aiohttp.ClientSession, url: str, body: bytes) -> tuple[float, bool]:
    started = time.perf_counter()
    async with session.post(
        url + "/mutate", data=body, headers={"Content-Type": "application/json"}
    ) as response:
        answer: dict[str, Any] = await response.json()
    elapsed = (time.perf_counter() - started) * 1000
    assert response.status == 200, answer
    return elapsed, bool(answer["response"]["allowed"])


async def health_p99(session: aiohttp.ClientSession, url: str, probes: int) -> float:
    times = []
    for _ in range(probes):
        started = time.perf_counter()
        async with session.get(url + "/healthz") as response:
            await response.read()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.quantiles(times, n=100)[98]


async def measure_async(repeats: int, tmp: Path) -> Result:
    bodies = {BASELINE: (small_pod(), review_body(small_pod()))}
    for title, build in SHAPES.items():
        annotations = build()
        bodies[title] = (annotations, review_body(annotations))
    async with webhook_server(tmp) as (url, session):
        samples: dict[str, list[float]] = {title: [] for title in bodies}
        allowed: dict[str, bool] = {}
        for _, body in bodies.values():  # warm-up: imports, caches, the TLS session
            await timed_review(session, url, body)
        for _ in range(repeats):  # interleaved: a slow moment of the machine hits every shape alike
            for title, (_, body) in bodies.items():
                elapsed, allowed[title] = await timed_review(session, url, body)
                samples[title].append(elapsed)
        rows = {
            title: Row(title, size(annotations), samples[title], allowed[title])
            for title, (annotations, _) in bodies.items()
        }
        quiet = await health_p99(session, url, HEALTH_PROBES)
        worst = max((rows[t] for t in SHAPES), key=lambda row: row.median_ms)
        stop = asyncio.Event()

        async def flood() -> None:
            while not stop.is_set():
                await timed_review(session, url, bodies[worst.title][1])

        flooders = [asyncio.create_task(flood()) for _ in range(2)]
        try:
            loaded = await health_p99(session, url, HEALTH_PROBES)
        finally:
            stop.set()
            await asyncio.gather(*flooders)
    return Result(rows.pop(BASELINE), [rows[t] for t in SHAPES], loaded, quiet)


def measure(quick: bool) -> Result:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="bench-webhook-") as tmp:
        return asyncio.run(measure_async(QUICK_REPEATS if quick else REPEATS, Path(tmp)))


def print_tables(result: Result) -> None:
    print(f"\nWebhook: AdmissionReviews of {ANNOTATION_SET // 1024} KiB annotation sets over HTTPS")
    print("| annotations | bytes | answer | median | max | vs baseline |")
    print("| --- | ---: | --- | ---: | ---: | ---: |")
    for row in [result.baseline, *result.rows]:
        answer = "allowed" if row.allowed else "refused"
        print(
            f"| {row.title} | {row.annotation_bytes:,} | {answer} | {row.median_ms:.1f} ms "
            f"| {row.max_ms:.1f} ms | {result.ratio(row):.1f}x |"
        )
    print(
        f"\n/healthz p99: {result.health_baseline_p99_ms:.1f} ms idle, {result.health_p99_ms:.1f} ms while "
        f"two clients send '{result.worst.title}' back to back"
    )


def main(quick: bool = False) -> Result:
    result = measure(quick)
    print_tables(result)
    return result


if __name__ == "__main__":
    import sys

    main("--quick" in sys.argv[1:])

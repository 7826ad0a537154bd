"""The local endpoint under load: ``GET /v1/secrets/{name}`` throughput and latency, and 1,000 long-polls.

**Throughput.** Three servers, each a process of its own pinned to CPU 0, answer the same 64-byte value:

* the agent's endpoint (``build_endpoint_app`` + ``serve_endpoint``, as ``run`` wires it: token check,
  ``X-Forwarded-For`` check, metrics, JSON logs to stderr with the redaction filter, a 10-secret store), with
  the audit log on (the default: one JSON line per read, written to a file) and with it off;
* the baseline: a bare aiohttp handler on the same aiohttp version that returns the same bytes (no token,
  no headers of ours, no logging, no metrics).

The load generator runs on CPU 1 so it never takes the servers' CPU: ``wrk`` (Debian's package) with one
thread and 32 keep-alive connections, percentiles from a Lua ``done()`` hook; without ``wrk``, a lean
asyncio HTTP/1.1 loader in ``client`` (raw protocols, same 32 connections, one request in flight on each).
Each server gets a short warm-up, then ``REPEATS`` interleaved runs (every server, then again). The table
shows medians over the runs, and each ratio as the median (min-max) of the ratios to the bare handler's run
of the same round: requests/s, and the server's CPU time per request (read from ``/proc`` around each run),
which moves less when something else on the machine takes the servers' CPU for a while.

**Long-poll watchers.** The agent's endpoint (audit on, ``max_connections`` above 1,000) and a watcher
process on the other CPU holding 1,000 connections, each a ``?wait=60s`` request with ``If-None-Match`` of
the current ETag. Once all 1,000 requests are inside the endpoint's handler (counted by an innermost
middleware: a handler does not yield before its wait), a control listener inside the server process
publishes a new snapshot and notes the time (``CLOCK_MONOTONIC``, which both processes share); the watchers
note when each complete 200 arrives. Wake-up latency = arrival - publish. Memory: the server's ``VmRSS``
before the watchers connect and while all of them wait. ``WATCH_ROUNDS`` rotations in a row.

The modules, bottom up: ``settings`` (what every process agrees on), ``serve`` (the server processes),
``client`` (the fallback load generator and the watchers), ``processes`` (starting them and reading
them), ``measure`` (both measurements: ``measure``), ``report`` (the tables), ``__main__``
(``python -m bench.endpoint [serve|load|watch ...]``).
"""

from __future__ import annotations

from bench.endpoint.measure import (
    AUDIT_OFF,
    AUDIT_ON,
    BARE,
    Result,
    Spread,
    Throughput,
    Watchers,
    WatchRound,
    measure,
)
from bench.endpoint.processes import Load
from bench.endpoint.report import print_tables
from bench.endpoint.settings import (
    CONNECTIONS,
    CPU_RATIO_TARGET,
    P99_TARGET_MS,
    RATIO_TARGET,
    WAKE_TARGET_MS,
    WATCH_ROUNDS,
    WATCHERS,
)

__all__ = [
    "AUDIT_OFF",
    "AUDIT_ON",
    "BARE",
    "CONNECTIONS",
    "CPU_RATIO_TARGET",
    "P99_TARGET_MS",
    "RATIO_TARGET",
    "WAKE_TARGET_MS",
    "WATCHERS",
    "WATCH_ROUNDS",
    "Load",
    "Result",
    "Spread",
    "Throughput",
    "WatchRound",
    "Watchers",
    "main",
    "measure",
    "print_tables",
]


def main() -> Result:
    """Measure, print the tables, and return the figures (``python -m bench`` judges them)."""
    result = measure()
    print_tables(result)
    return result

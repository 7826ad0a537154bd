"""A fleet of agents against one Secret Manager with quotas on: polling every 2 minutes, hourly, events.

**The fleet.** ``AGENTS`` agents (``Syncer`` + ``GcpSource`` + ``SnapshotSink`` on ``/dev/shm``, built by
``agent.app``'s own builders from a ``load_config`` Config, as ``run`` builds them), ``SECRETS`` secrets each
(the same ones for every pod: one deployment, one project), split over ``WORKERS`` worker processes
(``python -m bench.fleet worker``) so that both cores work. In event mode every agent has its own
``EventFeed``: its own Pub/Sub subscription (created at start, deleted at the end) on the topic the secrets
publish to, wired as ``agent.app`` wires it (``Syncer.follow`` with ``events.max_delay``; while events flow
the poll loop runs at ``events.poll_interval``, the safety net). One emulator process serves them all,
publishing to the official Pub/Sub emulator; its admin counters (sampled every few tens of ms) are the
record of every call and every RESOURCE_EXHAUSTED. ``BENCH_FLEET_AGENTS`` sets another fleet size.

**Scale.** The simulated fleet stands for ``REPRESENTED_PODS`` pods, so the access quota is scaled by
``AGENTS / REPRESENTED_PODS`` (90,000/min -> 1,800/min for 200 agents). The read and write quotas are not
per pod (without selections the agent reads nothing; writes are the rotations) and stay at the service's
600/min; with selections the read quota is scaled like the access quota (``selections``).

**Time.** Polling every 2 minutes and every hour is compressed so that one interval lasts
``WALL_INTERVAL`` s of wall time (10 s: x12 and x360; 5 s with ``--quick``); each quota is multiplied by the
compression too (the emulator's quota window is 60 s of wall time, i.e. that many compressed minutes, so
bursts inside it are judged more leniently: the peak per compressed minute is reported separately and
compared with the quota). The checks' own duration does not shrink with the interval, so compressed
intervals come out ~1% longer than configured and the per-pod-hour rates ~1% lower than at real
intervals. Event mode runs in real time (Pub/Sub delivery, ``max_delay`` and fetches are what is
measured), except its last phase, where the safety poll is compressed like hourly polling to measure it.

**Phases.** Polling: the agents start at random moments over one interval (pods started at different
times), then, after ``SETTLE_INTERVALS``, a steady window of ``WINDOW_INTERVALS`` intervals with one
rotation in it (convergence = until every agent's snapshot, i.e. its files, holds the new version).
Events: start (each agent bootstraps, creates its subscription and catches up), then quotas on, an idle
window (no rotation: every access call counts against "at most one per secret per pod-hour"),
``EVENT_ROTATIONS`` rotations of one secret each (convergence, calls per rotation, quota errors), then the
safety poll compressed (each agent switches at a random moment within one compressed interval; the steady
window follows).

**The host is part of the measurement.** Every agent's CPU, both emulators and the Pub/Sub fan-out share
this machine's cores: the event table prints how many were busy during each rotation. At 300 agents on 2
cores both stayed busy through each rotation (1.97 of 2) and convergence took 2.5-3.8 s, most of it waiting
for CPU; at 100 agents (1.1-1.3 cores busy) 1.0-1.2 s.

**Selections** (``selections``, ``python -m bench.fleet selections [--quick]``, also the last part of
``run``): every agent asks for 10 secrets by name and one selection (10 more secrets labelled
``team=payments``), with its ``Discovery`` wired as ``run`` wires it, and the read quota on (scaled like
the access quota, per simulated minute): a restart within one simulated minute resolved at admission by
the webhook (``admission``) beside one where nothing is known, the steady state with events (re-lists and
access calls per pod-hour, a new matching secret), and ``rotate all`` of 20 secrets paced for the fleet.
That module's docstring says how time and quotas are scaled there.

The modules, bottom up: ``world`` (sizes, quotas, compression, targets, the seeds), ``worker`` (a slice of
the fleet in one process: the measured agents), ``driver`` (the worker processes and what they report),
``instruments`` (the emulator's counters and quotas, per simulated minute too, rotations, busy cores),
``admission`` (each pod's configuration from the webhook), ``rotate_all`` (the rotation tooling across the
fleet), ``scenarios`` (each mode measured; ``measure``), ``selections`` (the fleet with selections),
``report`` and ``selections_report`` (the tables), ``cost`` (the monthly cost table), ``__main__``
(``python -m bench.fleet [run [--quick]] | restart | selections [--quick] | worker ...``). The Pub/Sub
emulator with the topic and the scratch directory come from ``bench.common``, shared with
``bench.propagation``.
"""

from __future__ import annotations

import dataclasses

from bench.fleet.cost import print_cost_table
from bench.fleet.report import print_tables
from bench.fleet.scenarios import Result, Scenario, measure
from bench.fleet.selections import SelectionResult, measure_selections
from bench.fleet.selections_report import print_selection_tables
from bench.fleet.world import (
    AGENTS,
    CONVERGENCE_TARGET,
    PER_POD_HOUR_TARGET,
    QUICK_AGENTS,
    REPRESENTED_PODS,
    SECRETS,
    SERVICE_ACCESS_PER_MINUTE,
)

__all__ = [
    "AGENTS",
    "CONVERGENCE_TARGET",
    "PER_POD_HOUR_TARGET",
    "QUICK_AGENTS",
    "REPRESENTED_PODS",
    "SECRETS",
    "SERVICE_ACCESS_PER_MINUTE",
    "Result",
    "Scenario",
    "SelectionResult",
    "main",
    "measure",
    "print_cost_table",
    "print_tables",
]


def main(quick: bool = False) -> Result:
    """Measure, print the tables (the fleet with selections last), and return the figures (``python -m
    bench`` judges them)."""
    result = measure(quick)
    print_tables(result)
    print_cost_table(result)
    selections = measure_selections(quick)
    print_selection_tables(selections)
    return dataclasses.replace(result, selections=selections)

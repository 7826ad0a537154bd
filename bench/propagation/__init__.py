"""Rotation propagation: AddSecretVersion -> files swapped -> app signalled; Pub/Sub events, and polling.

One run, one Secret Manager emulator (a process of its own) publishing to the official Pub/Sub emulator, one
secret rotated ``ROTATIONS`` times through the official client. Watching it:

* the **events** agent: ``python -m agent run`` subscribed to the secret's topic (``events.topic``; the agent
  creates its own filtered subscription), poll interval one hour (the safety net only);
* ``POLLING_AGENTS`` **polling** agents: ``python -m agent run`` with a 60 s poll interval (+-10% jitter, the
  default), no events.

Every agent is a real process with its own output directory on ``/dev/shm`` and its own app: a real child
(``testing/apps/reloading_app.py``) that re-reads its file on SIGHUP and logs what it read; the agent finds it
by ``--pid-file``. ``notify.debounce`` is 0 for every agent (its default, 1 s, would add a second to every
signal: the debounce waits for quiet before it signals). The bench process watches, with inotify, each
output directory (the rename of ``..data``: files swapped) and each app's log (the line the app writes after
reading its file on SIGHUP: app signalled), and notes the ``CLOCK_MONOTONIC`` time of each; it reads which
rotation each swap and each read carried from the file itself. Latency of rotation *r* on an agent = first
swap (first signalled read) carrying *r* or a later rotation, minus the moment just before the
AddSecretVersion call of *r*.

**Why polling takes only about two minutes here.** 100 rotations x a 30 s mean wait, one after the other,
would take close to an hour. Instead the rotations are spread over one poll interval (stratified: one in
each ``60 s / ROTATIONS`` slot, each after the events agent signalled the previous one), and the polling
agents keep polling through them; a rotation made at a random moment of an agent's poll cycle waits the
rest of that cycle, which is what a rotation in a real pod waits. Rotations spread over a whole interval
cover every phase of each agent's cycle once, so the samples are the residual waits of the poll schedule;
the ``POLLING_AGENTS`` agents have independent phases (jitter). All ``ROTATIONS x POLLING_AGENTS`` samples
are pooled; samples of one agent are not independent (they share its poll times). The table also prints
the distribution the model predicts for uniform phase and +-10% jitter, next to the measurement.

The modules, bottom up: ``world`` (the secret, the settings, the configs and the seed), ``inotify`` (the
timestamps), ``agents`` (the measured agents and their apps), ``model`` (the percentile and the polling
model), ``run`` (one run: ``measure``), ``report`` (the table), ``__main__`` (``python -m bench.propagation
[--quick]``). The Pub/Sub emulator and the scratch directory come from ``bench.common``, shared with
``bench.fleet``.
"""

from __future__ import annotations

from bench.propagation.model import percentile, residual_wait_quantile
from bench.propagation.report import print_table
from bench.propagation.run import Latencies, Result, measure
from bench.propagation.world import (
    EVENTS_DEFAULT,
    EVENTS_NO_DELAY,
    EVENTS_TARGET,
    POLL_INTERVAL,
    POLL_JITTER,
    POLLING_AGENTS,
    QUICK_ROTATIONS,
    ROTATIONS,
)

__all__ = [
    "EVENTS_DEFAULT",
    "EVENTS_NO_DELAY",
    "EVENTS_TARGET",
    "POLLING_AGENTS",
    "POLL_INTERVAL",
    "POLL_JITTER",
    "QUICK_ROTATIONS",
    "ROTATIONS",
    "Latencies",
    "Result",
    "main",
    "measure",
    "percentile",
    "print_table",
    "residual_wait_quantile",
]


def main(quick: bool = False) -> Result:
    """Measure, print the table, and return the figures (``python -m bench`` judges them)."""
    result = measure(quick)
    print_table(result)
    return result

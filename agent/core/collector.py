"""The cyclic garbage collector around a command's start-up: paused while the command imports its modules,
reads its configuration and builds its pipeline, then resumed with everything that exists by then frozen.

Start-up allocates a few hundred thousand objects (modules, classes, functions, the Google client's
protobuf descriptors) that live as long as the process. The collector, left on, runs about 95 times while
they pile up (17-25 ms of CPU in an ``init`` of 3 secrets, on the 2-core machine of ``bench/init_cost.py``)
and frees next to nothing; paused, it runs 10 times (3 ms). Frozen (``gc.freeze``), those objects are never
examined again, which also spares the sidecar's later full collections a walk over all of them. What the
command allocates once it works (fetches, snapshots, requests) is collected as usual.

``cli.main`` pauses for the commands of the agent; ``agent.app`` calls ``startup_done()`` once a
command's pipeline is built. Nested or repeated use (tests call ``main`` many times in one process) leaves
the collector as it found it: ``paused()`` undoes its own pause and freeze on the way out.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

_paused = False
"""Whether ``paused()`` turned the collector off and nothing has turned it on since."""
_froze = False
"""Whether ``startup_done()`` froze the objects of this start-up (undone when ``paused()`` ends)."""


@contextmanager
def paused() -> Iterator[None]:
    """Turn the cyclic collector off for the ``with`` block (if it is on), until ``startup_done()``; on the
    way out the collector is as it was before, and what ``startup_done()`` froze is unfrozen."""
    global _paused, _froze
    if not gc.isenabled() or _paused:  # off already (someone else's choice), or paused by an outer block
        yield
        return
    gc.disable()
    _paused = True
    try:
        yield
    finally:
        if _froze:
            gc.unfreeze()
            _froze = False
        if _paused:
            _paused = False
        gc.enable()


def startup_done(*, long_running: bool = False) -> None:
    """The command's modules are imported and its pipeline is built: freeze what exists and collect again.

    ``long_running`` (the sidecar, ``dev``, ``exec --watch``): collect once before freezing, so that the
    garbage start-up left (the configuration's parse, say) is freed rather than kept for the life of the
    process; a one-off 20-40 ms that a command which exits in a second (``init``) does not pay.

    Does nothing unless ``paused()`` is in effect (a test calling the app's functions directly, or the
    collector switched off by whoever embeds the agent)."""
    global _paused, _froze
    if not _paused:
        return
    if long_running:
        gc.collect()
    gc.freeze()
    _froze = True
    _paused = False
    gc.enable()

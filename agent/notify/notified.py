"""What the app was last told about: the versions of the snapshot it reloaded (or started) with.

The agent swaps the files, then signals the app after a short debounce. An agent killed in between leaves
new files the app never heard of, and the restarted agent, finding the files already current, would not
signal either: the app would run on the old values until the next rotation. So the versions the app was
told about are kept beside the files (``.notified``, versions only, never values): ``init`` writes them (the
app starts after it and reads what is there), ``run`` after each delivered notification; a ``run`` that
starts and finds the files ahead of them tells the app once.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

from agent.config import NOTIFIED_FILE_NAME
from agent.core.atomicfile import read_regular_file, write_atomically

log = logging.getLogger(__name__)

MAX_NOTIFIED_BYTES = 1 << 20
"""Largest record read: versions only, a few dozen bytes per secret."""


def read_notified(output_dir: Path) -> dict[str, str] | None:
    """The versions last told to the app; ``None`` when unknown (no file, or one we cannot read, or not a
    regular file of ours)."""
    try:
        # Our own file or nothing: a link, FIFO or huge file planted in its place is not read.
        document = json.loads(read_regular_file(output_dir / NOTIFIED_FILE_NAME, MAX_NOTIFIED_BYTES))
    except (OSError, ValueError):
        return None
    versions = document.get("versions") if isinstance(document, dict) else None
    if not isinstance(versions, dict):
        return None
    return {str(name): str(version) for name, version in versions.items()}


def write_notified(output_dir: Path, versions: Mapping[str, str]) -> None:
    """Record ``versions`` as told to the app (atomically, mode 0600; a link planted there is replaced, not
    followed). A failure is logged, never raised: losing this record costs at most one reload the app did
    not need, or one it misses after a crash."""
    path = output_dir / NOTIFIED_FILE_NAME
    document = json.dumps({"versions": dict(sorted(versions.items()))}).encode("utf-8")
    try:
        write_atomically(path, document, mode=0o600)
    except OSError as error:
        log.warning("cannot record the versions told to the app in %s: %s", path, error.strerror)

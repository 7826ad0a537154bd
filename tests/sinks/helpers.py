"""Building blocks for the sink tests: specs, snapshots and a reader that resolves ``..data`` once."""

from __future__ import annotations

import json
import os
from pathlib import Path

from agent.config import SecretSpec
from agent.config.refs import parse_ref
from agent.core.model import Fetched, Snapshot, crc32c


def spec(name: str, ref: str | None = None, **fields: object) -> SecretSpec:
    """A SecretSpec for ``ref`` (default ``projects/test-project/secrets/<name>``); env and file default
    from the name."""
    text = ref or f"projects/test-project/secrets/{name.replace('.', '-')}/versions/latest"
    return SecretSpec(name=name, ref=parse_ref(text), **fields)  # type: ignore[arg-type]


def fetched(name: str, data: bytes, version: str = "1") -> Fetched:
    return Fetched(name=name, version=version, data=data, crc32c=crc32c(data))


def snapshot(values: dict[str, bytes], version: str = "1") -> Snapshot:
    return Snapshot({name: fetched(name, data, version) for name, data in values.items()})


def read_consistent(root: Path, *paths: str) -> list[bytes]:
    """Read ``paths`` from ONE snapshot: open ``root/..data`` once and read relative to it (openat).

    Raises FileNotFoundError when a newer snapshot removed the one it held (callers retry).
    """
    directory = os.open(root / "..data", os.O_RDONLY | os.O_DIRECTORY)
    try:
        contents = []
        for path in paths:
            fd = os.open(path, os.O_RDONLY, dir_fd=directory)
            try:
                contents.append(os.read(fd, 1 << 20))
            finally:
                os.close(fd)
        return contents
    finally:
        os.close(directory)


def snapshot_dirs(root: Path) -> list[str]:
    """The ``..<timestamp>`` directories in ``root``."""
    return sorted(name for name in os.listdir(root) if name.startswith("..") and name[2:3].isdigit())


def internal_entries(root: Path) -> list[str]:
    """Every ``..``-prefixed entry of ``root``."""
    return sorted(name for name in os.listdir(root) if name.startswith(".."))


def manifest_versions(root: Path) -> dict[str, tuple[str, int]]:
    """Local name -> (version, crc32c) as the current snapshot's manifest records them, read the way any
    reader of the output directory would (``..data/..manifest.json``)."""
    document = json.loads((root / "..data" / "..manifest.json").read_bytes())
    return {name: (entry["version"], entry["crc32c"]) for name, entry in document["secrets"].items()}

"""Fixtures for the sink tests: real directories on tmpfs (``/dev/shm``) and tiny tmpfs mounts (root)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.sinks.tmpfs import filesystem_type

SHM = Path("/dev/shm")


@pytest.fixture
def shm() -> Iterator[Path]:
    """A fresh directory on tmpfs, removed afterwards (what a pod's ``emptyDir: {medium: Memory}`` gives)."""
    if filesystem_type(SHM) != "tmpfs":
        pytest.skip("/dev/shm is not a tmpfs on this machine")
    path = Path(tempfile.mkdtemp(prefix="sinks-", dir=SHM))
    yield path
    shutil.rmtree(path, ignore_errors=True)


MountTmpfs = Callable[..., Path]


@pytest.fixture
def mount_tmpfs(tmp_path: Path) -> Iterator[MountTmpfs]:
    """``mount_tmpfs(size="64k", name="mnt")`` mounts a tmpfs of that size; unmounted in teardown."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (mount -t tmpfs); run the suite as root to cover it")
    mounted: list[Path] = []

    def mount(size: str = "64k", name: str = "mnt") -> Path:
        target = tmp_path / name
        target.mkdir()
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(target)],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            pytest.skip(f"mount -t tmpfs failed even as root: {result.stderr.strip()}")
        mounted.append(target)
        return target

    yield mount
    for target in reversed(mounted):
        subprocess.run(["umount", "-l", str(target)], check=False)

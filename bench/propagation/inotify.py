"""inotify: when exactly a file changed, without polling it.

The propagation benchmark times each swap of an agent's ``..data`` link and each line its app logs by the
kernel's events, not by reading the files in a loop: a polling reader would add its own period to every
latency it measures.
"""

from __future__ import annotations

import ctypes
import os
import select
import struct
import threading
import time
from pathlib import Path
from typing import Any

IN_MODIFY = 0x00000002
IN_MOVED_TO = 0x00000080
_EVENT_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len


class Inotify:
    """A thread that notes the monotonic time of inotify events and hands them to ``on_event``.

    ``on_event(watch_key, name, when)`` runs in the thread; ``watch_key`` is what ``watch`` was given.
    """

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._fd = self._libc.inotify_init1(os.O_CLOEXEC | os.O_NONBLOCK)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self._keys: dict[int, str] = {}
        self._handlers: dict[str, Any] = {}
        self._stop_read, self._stop_write = os.pipe()
        self._thread = threading.Thread(target=self._run, name="inotify", daemon=True)

    def watch(self, key: str, path: Path, mask: int, handler: Any) -> None:
        wd = self._libc.inotify_add_watch(self._fd, os.fsencode(path), mask)
        if wd < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {path} failed")
        self._keys[wd] = key
        self._handlers[key] = handler

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        poller.register(self._stop_read, select.POLLIN)
        while True:
            ready = {fd for fd, _ in poller.poll()}
            when = time.monotonic()
            if self._stop_read in ready:
                return
            try:
                buffer = os.read(self._fd, 1 << 16)
            except BlockingIOError:
                continue
            offset = 0
            while offset < len(buffer):
                wd, _mask, _cookie, length = _EVENT_HEADER.unpack_from(buffer, offset)
                name = buffer[offset + _EVENT_HEADER.size : offset + _EVENT_HEADER.size + length]
                offset += _EVENT_HEADER.size + length
                key = self._keys.get(wd)
                if key is not None:
                    self._handlers[key](key, name.rstrip(b"\0").decode(), when)

    def close(self) -> None:
        os.write(self._stop_write, b"x")
        if self._thread.is_alive():
            self._thread.join(5)
        for fd in (self._fd, self._stop_read, self._stop_write):
            os.close(fd)

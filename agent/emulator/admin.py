"""STUB - to be replaced: the emulator's admin API under /emulator/v1 (faults, counters, clock)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from agent.emulator.clock import Clock
from agent.emulator.faults import CallCounters, FaultController


def add_admin_routes(
    app: web.Application, *, faults: FaultController, counters: CallCounters, clock: Clock, store: Any
) -> None:
    """Mount ``/emulator/v1/...``: faults (GET/PUT/clear), counters (GET/reset), clock (GET/advance)."""

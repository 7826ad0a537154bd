"""STUB - to be replaced: fault injection, quotas and call counters."""

from __future__ import annotations

import grpc

from agent.emulator.clock import Clock
from agent.emulator.methods import Method
from agent.emulator.options import EmulatorOptions


class FaultController:
    """Implements dispatch.FaultInjector: latency, injected errors, corrupted CRCs, per-minute quotas."""

    @classmethod
    def from_options(cls, options: EmulatorOptions, clock: Clock) -> FaultController:
        return cls()

    async def before_call(self, method: Method, project: str) -> None:
        return None

    def corrupt_crc(self, method: Method) -> bool:
        return False


class CallCounters:
    """Implements dispatch.CallRecorder: calls per method and status code."""

    def __init__(self) -> None:
        self.counts: dict[str, dict[str, int]] = {}

    def record(self, method: Method, code: grpc.StatusCode) -> None:
        by_code = self.counts.setdefault(method.name, {})
        by_code[code.name] = by_code.get(code.name, 0) + 1

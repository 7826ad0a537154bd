"""Applying the fault configuration (``agent_emulator.fault_config``) to each call: latency, injected
errors, corrupted checksums, quotas, and the call counters of the admin API."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from agent_emulator.clock import Clock
from agent_emulator.errors import EmulatorError
from agent_emulator.fault_config import (
    ALL_METHODS,
    ERROR_KINDS,
    FAIL_CODES,
    FaultConfig,
    FaultRule,
    load_fault_config,
)
from agent_emulator.methods import METHODS, Method
from agent_emulator.options import EmulatorOptions
from agent_emulator.quotas import QuotaTracker, quota_exceeded_message

_MESSAGES: dict[grpc.StatusCode, str] = {
    grpc.StatusCode.UNAVAILABLE: "The service is currently unavailable.",
    grpc.StatusCode.DEADLINE_EXCEEDED: "Deadline expired before operation could complete.",
    grpc.StatusCode.INTERNAL: "Internal error encountered.",
    grpc.StatusCode.PERMISSION_DENIED: "The caller does not have permission",
}
"""What an injected failure says, per status (the service's own wording)."""


@dataclass(frozen=True)
class Decision:
    """What to do to one call: delay it, then fail it with ``error`` (``None`` = let it through)."""

    delay_seconds: float = 0.0
    error: grpc.StatusCode | None = None


def decide(rule: FaultRule, rng: random.Random, forced: grpc.StatusCode | None = None) -> Decision:
    """Draw the fate of one call from its effective rule.

    One uniform draw picks at most one error (the error kinds split [0, 1) cumulatively, in
    :data:`ERROR_KINDS` order); a second draw, only when ``jitter_ms`` is set, adds the jitter. A ``forced``
    code (from ``fail_next``) wins without a draw. Draws happen only when they matter, so a seeded run is
    replayed exactly by the same calls.
    """
    error = forced
    probabilities = [(kind, rule.probability(kind)) for kind in ERROR_KINDS]
    if error is None and any(p > 0 for _, p in probabilities):
        draw = rng.random()
        cumulative = 0.0
        for kind, p in probabilities:
            cumulative += p
            if p > 0 and draw < cumulative:
                error = FAIL_CODES[kind.upper()]
                break
    delay_ms = rule.latency_ms or 0.0
    if rule.jitter_ms:
        delay_ms += rng.uniform(0.0, rule.jitter_ms)
    return Decision(delay_seconds=delay_ms / 1000.0, error=error)


def injected_error(code: grpc.StatusCode, method: Method, project: str) -> EmulatorError:
    """The error the service would send with ``code`` for this call (quota wording for RESOURCE_EXHAUSTED)."""
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return EmulatorError(code, quota_exceeded_message(method.quota, project))
    return EmulatorError(code, _MESSAGES[code])


# ---- the controller the dispatcher calls --------------------------------------------------------------


class FaultController:
    """Implements dispatch.FaultInjector: latency, injected errors, corrupted CRCs, per-minute quotas.

    State changes (``replace``/``clear``) and per-call decisions hold one lock and never await inside it,
    so the admin API and calls on other threads see a consistent config.
    """

    def __init__(
        self,
        config: FaultConfig | None = None,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self._monotonic = monotonic
        self._sleep = sleep
        self._lock = threading.Lock()
        self._released = False
        self._sleepers: set[asyncio.Future[object]] = set()
        self.replace(config or FaultConfig())

    @classmethod
    def from_options(cls, options: EmulatorOptions, clock: Clock) -> FaultController:
        """Build from ``--faults``/``--fault``/``--quotas``; raises ConfigError naming every bad entry.

        ``clock`` is deliberately unused: quota windows run on the monotonic clock, so moving the emulated
        clock forward (for rotation schedules) never refills a quota.
        """
        return cls(load_fault_config(options))

    def replace(self, config: FaultConfig) -> None:
        """Switch to ``config``: reseeds the RNG, restarts ``fail_next`` countdowns and quota windows."""
        with self._lock:
            self._config = config
            # A None seed makes random.Random seed itself from the OS: faults then differ run to run.
            self._rng = random.Random(config.seed)  # noqa: S311 - fault draws, not cryptography
            self._effective = {name: config.rule_for(name) for name in METHODS}
            self._remaining = {key: rule.fail_next for key, rule in config.rules.items() if rule.fail_next}
            self._quotas = QuotaTracker(config.quotas, self._monotonic) if config.quotas is not None else None
            self._active = bool(config.rules) or config.quotas is not None

    def clear(self) -> None:
        """Remove every fault rule; the seed and the quota settings stay."""
        self.replace(FaultConfig(seed=self._config.seed, quotas=self._config.quotas))

    @property
    def config(self) -> FaultConfig:
        """The current config, with ``fail_next`` showing how many forced failures are still to come."""
        with self._lock:
            rules = {
                key: dataclasses.replace(rule, fail_next=self._remaining.get(key, 0))
                if rule.fail_next is not None
                else rule
                for key, rule in self._config.rules.items()
            }
            return dataclasses.replace(self._config, rules=rules)

    async def before_call(self, method: Method, project: str) -> None:
        """Sleep for the configured latency, then raise EmulatorError if over quota or a fault fires.

        A call refused by its quota does not use up a ``fail_next`` failure.
        """
        if not self._active:
            return
        with self._lock:
            rule = self._effective[method.name]
            # An empty project means a malformed name: the store rejects it, no quota applies.
            within_quota = self._quotas is None or not project or self._quotas.admit(project, method.quota)
            forced = self._take_forced(method.name, rule) if within_quota else None
            decision = decide(rule, self._rng, forced)
        if decision.delay_seconds > 0:
            await self._delay(decision.delay_seconds)
        if not within_quota:
            raise EmulatorError(
                grpc.StatusCode.RESOURCE_EXHAUSTED, quota_exceeded_message(method.quota, project)
            )
        if decision.error is not None:
            raise injected_error(decision.error, method, project)

    async def _delay(self, seconds: float) -> None:
        """Sleep for an injected latency, unless :meth:`release` cuts it short: the call then fails
        UNAVAILABLE, as a call to a server that is going away does."""
        going_away = EmulatorError(grpc.StatusCode.UNAVAILABLE, _MESSAGES[grpc.StatusCode.UNAVAILABLE])
        if self._released:
            raise going_away
        sleeper = asyncio.ensure_future(self._sleep(seconds))
        self._sleepers.add(sleeper)
        try:
            await sleeper
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if self._released and sleeper.cancelled() and not (current and current.cancelling()):
                raise going_away from None
            raise
        finally:
            self._sleepers.discard(sleeper)

    @property
    def delayed_calls(self) -> int:
        """How many calls are asleep in an injected latency right now."""
        return len(self._sleepers)

    def release(self) -> None:
        """End every injected delay now, and inject none from here on: the server is stopping, and its
        shutdown must not wait for a latency fault (call it on the event loop that runs the calls)."""
        self._released = True
        for sleeper in list(self._sleepers):
            sleeper.cancel()

    def _take_forced(self, method_name: str, rule: FaultRule) -> grpc.StatusCode | None:
        for key in (method_name, ALL_METHODS):
            if self._remaining.get(key, 0) > 0:
                self._remaining[key] -= 1
                return FAIL_CODES[rule.fail_code or "UNAVAILABLE"]
        return None

    def corrupt_crc(self, method: Method) -> bool:
        """True when this AccessSecretVersion response should carry a wrong ``data_crc32c``."""
        if not self._active:
            return False
        with self._lock:
            probability = self._effective[method.name].probability("corrupt_crc")
            return probability > 0 and self._rng.random() < probability


class CallCounters:
    """Implements dispatch.CallRecorder: calls per method and resulting status code, and the same per
    project a call counted against (its quota project when it named one, else the project it addressed)."""

    def __init__(self) -> None:
        self._counts: dict[str, dict[str, int]] = {}
        self._by_project: dict[str, dict[str, dict[str, int]]] = {}
        self._lock = threading.Lock()

    def record(self, method: Method, code: grpc.StatusCode, project: str = "") -> None:
        """Count one finished call of ``method`` that ended with ``code``, billed to ``project``."""
        with self._lock:
            by_code = self._counts.setdefault(method.name, {})
            by_code[code.name] = by_code.get(code.name, 0) + 1
            if project:
                of_project = self._by_project.setdefault(project, {}).setdefault(method.name, {})
                of_project[code.name] = of_project.get(code.name, 0) + 1

    def count(self, method_name: str, code_name: str | None = None) -> int:
        """Calls of one method, with one status code (e.g. ``"OK"``) or with any (``None``)."""
        with self._lock:
            by_code = self._counts.get(method_name, {})
            return by_code.get(code_name, 0) if code_name is not None else sum(by_code.values())

    def snapshot(self) -> dict[str, Any]:
        """``{"methods": {"AccessSecretVersion": {"OK": 3, "UNAVAILABLE": 2}, ...}, "total": N}``."""
        with self._lock:
            methods = {name: dict(sorted(by_code.items())) for name, by_code in sorted(self._counts.items())}
        return {"methods": methods, "total": sum(sum(by_code.values()) for by_code in methods.values())}

    def by_project(self) -> dict[str, Any]:
        """``{"projects": {"billing-a": {"AccessSecretVersion": {"OK": 3}}, ...}, "total": N}``: the same
        counts, per project a call counted against (calls that named no valid project are left out)."""
        with self._lock:
            projects = {
                project: {name: dict(sorted(codes.items())) for name, codes in sorted(methods.items())}
                for project, methods in sorted(self._by_project.items())
            }
        total = sum(sum(codes.values()) for methods in projects.values() for codes in methods.values())
        return {"projects": projects, "total": total}

    def reset(self) -> None:
        """Forget every count."""
        with self._lock:
            self._counts.clear()
            self._by_project.clear()

"""One render's budget: the steps, memory, nesting and time a template may still spend, and the keys its
messages may name.

Why a budget: a template's text is hostile input (see ``agent.render.sandbox``), so no template may take
more than its share of the agent's time and memory. Every operation that runs a template — a loop
iteration, a call, an operator, a filter, an output — charges the one ``Budget`` of the render in progress,
which a context variable holds (``rendering`` sets it, ``current`` finds it), and a template that loops,
nests or builds values past its limits fails with a ``RenderFault``. The budget also holds the template's
literals, so a message names a key only when the template itself spelled it out (``Budget.label``):
``ComputedStr`` and ``ComputedInt`` mark the keys computed at render time, which are never named.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

MAX_INT_BITS = 14_000
"""Largest number a template may compute: about 4,200 digits, all of which Python can still write."""
MAX_NESTING = 40
"""Deepest nesting of macro calls and recursive loops."""
_TIME_EVERY = 32
"""Steps between two looks at the clock."""


class RenderFault(Exception):
    """A render failed; ``reason`` is our own text, which names no value."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ComputedStr(str):
    """A key computed at render time (``data[secrets.b.value]``): messages never name it."""

    __slots__ = ()


class ComputedInt(int):
    """An index computed at render time: messages never name it."""

    __slots__ = ()


@dataclass(eq=False)
class Budget:
    """What one render may still spend, and the template's literals (the keys messages may name)."""

    max_output: int
    max_steps: int
    max_memory: int
    max_seconds: float
    literals: frozenset[object] = frozenset()
    steps: int = 0
    memory: int = 0
    nesting: int = 0
    deadline: float = field(init=False)
    cache: dict[object, object] = field(default_factory=dict)
    """Results worth keeping for the rest of the render (PKCS#12 files already read)."""
    _next_look: int = field(default=_TIME_EVERY, repr=False)

    def __post_init__(self) -> None:
        self.deadline = time.monotonic() + self.max_seconds

    def step(self, count: int = 1) -> None:
        """Charge ``count`` steps; every few steps, look at the clock."""
        self.steps += count
        if self.steps > self.max_steps:
            raise RenderFault(
                f"the template takes more than {self.max_steps} steps (loop iterations, calls, filters)"
            )
        if self.steps >= self._next_look:
            self._next_look = self.steps + _TIME_EVERY
            self.check_time()

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise RenderFault(f"the template takes longer than {self.max_seconds:g} s")

    def fits(self, size: int, what: str) -> None:
        """Refuse to make ``what`` of ``size`` characters or items if it could never be output."""
        if size > self.max_output:
            raise RenderFault(f"{what} would be larger than the output limit ({self.max_output} bytes)")

    def allocate(self, size: int) -> None:
        self.memory += size
        if self.memory > self.max_memory:
            mib = self.max_memory // (1024 * 1024)
            raise RenderFault(f"the template builds more than {mib} MiB of values along the way")

    def account(self, value: Any) -> Any:
        """Measure a value just made (size, memory, number of bits), look at the clock, return it."""
        if isinstance(value, str | bytes | bytearray):
            self.fits(len(value), "a value")
            self.allocate(len(value))
        elif isinstance(value, list | tuple | dict | set | frozenset):
            self.fits(len(value), "a list or mapping")
            self.allocate(16 * len(value))
        elif isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
            raise RenderFault(f"a number would have more than {MAX_INT_BITS} bits")
        self.check_time()
        return value

    def enter(self) -> None:
        self.nesting += 1
        if self.nesting > MAX_NESTING:
            raise RenderFault(f"macro calls or recursive loops nest more than {MAX_NESTING} deep")

    def label(self, key: object) -> str | None:
        """How a message may name ``key``: quoted when it is a literal of the template (config, not a
        value), else None. A key marked as computed (``ComputedStr``) is never named, even when it happens
        to equal a literal."""
        if isinstance(key, ComputedStr | ComputedInt | bool) or not isinstance(key, str | int):
            return None
        try:
            if key not in self.literals:
                return None
        except TypeError:
            return None
        text = repr(str(key)) if isinstance(key, str) else str(int(key))
        return text if len(text) <= 120 else text[:116] + "...'"


_BUDGET: ContextVar[Budget | None] = ContextVar("secrets_agent_render_budget", default=None)


@contextlib.contextmanager
def rendering(budget: Budget) -> Iterator[Budget]:
    """Make ``budget`` the one every operation of the current render charges."""
    token = _BUDGET.set(budget)
    try:
        yield budget
    finally:
        _BUDGET.reset(token)


def current() -> Budget:
    """The budget of the render in progress. Outside a render (Jinja folding constants while compiling)
    this fails, so no filter, output or operator ever runs at compile time."""
    budget = _BUDGET.get()
    if budget is None:
        raise RenderFault("no render in progress")
    return budget


def active() -> Budget | None:
    """The budget of the render in progress, or None outside a render (for a message that may be made
    either way)."""
    return _BUDGET.get()


__all__ = [
    "MAX_INT_BITS",
    "MAX_NESTING",
    "Budget",
    "ComputedInt",
    "ComputedStr",
    "RenderFault",
    "active",
    "current",
    "rendering",
]

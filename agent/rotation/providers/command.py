"""``command``: external programs mint, check, apply and revoke a credential (API keys, OAuth tokens).

Third parties mint these credentials, so a small program of the operator's does it:

* ``generate: [argv...]`` prints the new credential on stdout (one trailing newline is stripped; an empty
  output is an error);
* ``validate: [argv...]`` reads the new value on STDIN and exits 0 when it works; otherwise the last line
  of its stderr is the reason shown;
* ``apply`` (optional) reads the new value on stdin; ``rollback`` (optional) reads the OLD value on stdin
  (e.g. to revoke the new key or re-activate the old one).

Values travel only through pipes: never in argv (``ps`` shows it to every user) and never in the
environment (``/proc/PID/environ``). Each program gets the agent's environment plus ``SECRET_ID``,
``SECRET_TYPE`` and ``OLD_VERSION``, minus the credentials the agent holds (``agent.config.childenv``:
``ADMIN_DSN``, the endpoint token...). Programs run without a shell, in their own session, and the whole
session is killed when one outlives ``timeout`` seconds. Their stdout (other than generate's) is discarded
and their stderr is used only for the one-line reason, with any copy of the value removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from agent.config.childenv import child_environment
from agent.core.process import describe_exit, kill_session
from agent.rotation.providers.base import (
    MAX_VALUE_BYTES,
    ProviderError,
    ProviderSettings,
    RotationContext,
    ValidationFailed,
    strip_newline,
)
from agent.rotation.providers.settings import SettingsReader

DEFAULT_TIMEOUT: Final = 60.0
MAX_TIMEOUT: Final = 3600.0
MAX_REASON_CHARS: Final = 300
_STDERR_KEEP: Final = 8192
"""Bytes of stderr kept (the tail) to find the reason's last line."""


@dataclass(frozen=True)
class Outcome:
    """How a program ended: exit status (negative = killed by that signal), its stdout, its stderr tail."""

    status: int
    stdout: bytes
    stderr_tail: bytes


class CommandProvider:
    """Runs the configured programs for each step (see the module docstring)."""

    name = "command"

    def __init__(
        self,
        generate: Sequence[str],
        validate: Sequence[str],
        *,
        apply: Sequence[str] | None = None,
        rollback: Sequence[str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.generate_argv = tuple(generate)
        self.validate_argv = tuple(validate)
        self.apply_argv = tuple(apply) if apply else None
        self.rollback_argv = tuple(rollback) if rollback else None
        self.timeout = timeout

    @classmethod
    def from_settings(cls, settings: ProviderSettings) -> CommandProvider:
        """Settings: ``generate`` and ``validate`` (required), ``apply``, ``rollback`` (commands as lists),
        ``timeout`` (seconds per program, default 60)."""
        reader = SettingsReader(cls.name, settings)
        generate = reader.argv("generate", required=True)
        validate = reader.argv("validate", required=True)
        apply = reader.argv("apply")
        rollback = reader.argv("rollback")
        timeout = reader.number("timeout", default=DEFAULT_TIMEOUT, minimum=0, maximum=MAX_TIMEOUT)
        reader.finish()
        assert generate is not None
        assert validate is not None
        return cls(generate, validate, apply=apply, rollback=rollback, timeout=timeout)

    def __repr__(self) -> str:
        return f"CommandProvider(generate={self.generate_argv[0]!r}, validate={self.validate_argv[0]!r})"

    async def generate(self, ctx: RotationContext) -> bytes:
        outcome = await self._run("generate", self.generate_argv, ctx, stdin=None, capture_stdout=True)
        if outcome.status != 0:
            # What it printed may be the new credential: keep it out of the reason as well.
            printed = (strip_newline(outcome.stdout),)
            raise ProviderError(self._failure("generate", self.generate_argv, ctx, outcome, printed))
        value = strip_newline(outcome.stdout)
        if not value:
            raise ProviderError(
                f"secret {ctx.secret_id!r}: generate command {_program(self.generate_argv)!r} printed nothing"
            )
        if len(value) > MAX_VALUE_BYTES:
            raise ProviderError(
                f"secret {ctx.secret_id!r}: generate command {_program(self.generate_argv)!r} printed "
                f"{len(value)} bytes, more than the {MAX_VALUE_BYTES} a secret version can hold"
            )
        return value

    async def apply(self, ctx: RotationContext, new_value: bytes) -> None:
        if self.apply_argv is None:
            return
        outcome = await self._run("apply", self.apply_argv, ctx, stdin=new_value)
        if outcome.status != 0:
            raise ProviderError(self._failure("apply", self.apply_argv, ctx, outcome, (new_value,)))

    async def validate(self, ctx: RotationContext, new_value: bytes) -> None:
        outcome = await self._run("validate", self.validate_argv, ctx, stdin=new_value)
        if outcome.status != 0:
            raise ValidationFailed(self._failure("validate", self.validate_argv, ctx, outcome, (new_value,)))

    async def rollback(self, ctx: RotationContext, new_value: bytes) -> None:
        """Run the rollback command with the OLD value on stdin (nothing when there is none)."""
        if self.rollback_argv is None or ctx.old_value is None:
            return
        outcome = await self._run("rollback", self.rollback_argv, ctx, stdin=ctx.old_value)
        if outcome.status != 0:
            raise ProviderError(self._failure("rollback", self.rollback_argv, ctx, outcome, (new_value,)))

    # --- running a program ------------------------------------------------------------------------------

    async def _run(
        self,
        step: str,
        argv: tuple[str, ...],
        ctx: RotationContext,
        *,
        stdin: bytes | None,
        capture_stdout: bool = False,
    ) -> Outcome:
        env = child_environment()
        env["SECRET_ID"] = ctx.secret_id
        env["SECRET_TYPE"] = ctx.secret_type.value if ctx.secret_type is not None else ""
        env["OLD_VERSION"] = ctx.old_version or ""
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE if capture_stdout else asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                start_new_session=True,  # its own process group: a timeout kills what it started too
            )
        except OSError as e:
            what = "not found" if isinstance(e, FileNotFoundError) else f"could not start: {e.strerror}"
            raise ProviderError(f"secret {ctx.secret_id!r}: {step} command {argv[0]!r} {what}") from None
        io = asyncio.ensure_future(_exchange(process, stdin))
        try:
            async with asyncio.timeout(self.timeout):
                stdout, stderr_tail = await asyncio.shield(io)
                status = await process.wait()
        except TimeoutError:
            await kill_session(process, io)
            raise ProviderError(
                f"secret {ctx.secret_id!r}: {step} command {_program(argv)!r} did not finish within "
                f"{self.timeout:g} s; killed"
            ) from None
        except BaseException:  # cancelled: leave nothing running behind us
            await kill_session(process, io)
            raise
        return Outcome(status, stdout, stderr_tail)

    def _failure(
        self,
        step: str,
        argv: tuple[str, ...],
        ctx: RotationContext,
        outcome: Outcome,
        values: tuple[bytes, ...],
    ) -> str:
        message = (
            f"secret {ctx.secret_id!r}: {step} command {_program(argv)!r} {describe_exit(outcome.status)}"
        )
        reason = _reason(outcome.stderr_tail, (*values, *((ctx.old_value,) if ctx.old_value else ())))
        return f"{message}: {reason}" if reason else message


async def _exchange(process: asyncio.subprocess.Process, stdin: bytes | None) -> tuple[bytes, bytes]:
    """Write ``stdin`` and close it, read stdout (bounded) and the tail of stderr, concurrently."""

    async def feed() -> None:
        if process.stdin is None:
            return
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # a program may not read it all
            if stdin:
                process.stdin.write(stdin)
                await process.stdin.drain()
            process.stdin.close()
            await process.stdin.wait_closed()

    async def read_stdout() -> bytes:
        if process.stdout is None:
            return b""
        data = bytearray()
        while chunk := await process.stdout.read(65536):
            if len(data) <= MAX_VALUE_BYTES:  # keep one byte over the limit to report "too long"
                data += chunk[: MAX_VALUE_BYTES + 1 - len(data)]
        return bytes(data)

    async def read_stderr_tail() -> bytes:
        assert process.stderr is not None
        tail = b""
        while chunk := await process.stderr.read(65536):
            tail = (tail + chunk)[-_STDERR_KEEP:]
        return tail

    _, stdout, stderr_tail = await asyncio.gather(feed(), read_stdout(), read_stderr_tail())
    return stdout, stderr_tail


def _reason(stderr_tail: bytes, values: tuple[bytes, ...]) -> str:
    """The last non-empty line of stderr, with any copy of a value blanked out, cut to a sane length."""
    lines = [line.strip() for line in stderr_tail.splitlines() if line.strip()]
    if not lines:
        return ""
    line = lines[-1]
    for value in values:
        stripped = value.strip()
        if stripped:
            line = line.replace(stripped, b"[REDACTED]")
    text = line.decode("utf-8", "replace")
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 3] + "..."


def _program(argv: tuple[str, ...]) -> str:
    return os.path.basename(argv[0])

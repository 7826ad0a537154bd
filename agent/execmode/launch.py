"""Starting the app with the secrets in its environment: exec in place, or spawn in its own session.

Exit statuses follow the shell: the app's own status, ``128 + N`` when it died of signal N, 127 when the
command was not found and 126 when it could not be executed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import sys
from collections.abc import Mapping, Sequence
from typing import NoReturn

from agent.config import SecretSpec
from agent.config.schema import CREDENTIAL_ENV
from agent.core.model import Snapshot
from agent.errors import AgentError

log = logging.getLogger(__name__)

EXIT_CANNOT_EXECUTE = 126
"""Exit status when the command exists but cannot be executed (permissions, not a program)."""
EXIT_NOT_FOUND = 127
"""Exit status when the command is not found on ``PATH``, as in a shell."""


class ExecError(AgentError):
    """The app could not be started; ``exit_status`` is what the agent should exit with (126 or 127)."""

    def __init__(self, message: str, exit_status: int) -> None:
        super().__init__(message)
        self.exit_status = exit_status


# --------------------------------------------------------------------------------------------------
# The environment (pure)
# --------------------------------------------------------------------------------------------------


def child_environment(
    base: Mapping[str, str], snapshot: Snapshot, specs: Sequence[SecretSpec]
) -> dict[str, str]:
    """``base`` plus one variable per output with an env name (a secret's value, a key of a JSON secret, a
    template's text), minus the agent's own credential settings (``SECRETS_AGENT_SERVER_TOKEN``,
    ``SECRETS_AGENT_NOTIFY_URL``...): they configure the agent, and the app's environment is readable in
    ``/proc/PID/environ`` and lands in crash reports.

    A secret variable overrides a ``base`` variable of the same name. Optional secrets missing from the
    snapshot are left out. A required secret missing, a value that is not UTF-8 or that contains NUL (which
    no environment can carry) is an AgentError listing every such output by name, never by value.
    ``snapshot`` must be rendered (``Snapshot.outputs``); an unrendered one carries the secrets' own values.
    """
    env = {name: value for name, value in base.items() if name not in CREDENTIAL_ENV}
    problems: list[str] = []
    entries: list[tuple[str, str, bytes | None]] = []  # (label, variable, value); None: missing, required
    for spec in specs:
        fetched = snapshot.get(spec.name)
        if fetched is None:
            if spec.required:
                entries.append((spec.name, spec.env, None))
        elif snapshot.outputs is None and spec.deliver:
            entries.append((spec.name, spec.env, fetched.data))
        else:  # its own value and its keys, in the order of the configuration
            entries += [
                (o.label, o.env, o.data)
                for o in snapshot.outputs or ()
                if o.owner == spec.name and o.kind != "template" and o.env is not None
            ]
    entries += [(o.label, o.env, o.data) for o in snapshot.outputs or () if o.kind == "template" and o.env]
    for label, name, data in entries:
        if data is None:
            problems.append(f"{label} (env {name}): no value was fetched")
            continue
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            problems.append(f"{label} (env {name}): value is not UTF-8 text; deliver it as a file")
            continue
        if "\0" in text:
            problems.append(f"{label} (env {name}): value contains a NUL byte; deliver it as a file")
            continue
        env[name] = text
    if problems:
        raise AgentError("cannot pass secrets as environment variables:\n  " + "\n  ".join(problems))
    return env


def shell_exit_status(wait_status: int) -> int:
    """A ``waitpid()`` status as a shell reports it: the exit code, or ``128 + N`` after death by signal N."""
    code = os.waitstatus_to_exitcode(wait_status)
    return 128 - code if code < 0 else code


# --------------------------------------------------------------------------------------------------
# Starting the app
# --------------------------------------------------------------------------------------------------

# Python ignores these at start-up and the "ignored" disposition survives exec; an app that inherits an
# ignored SIGPIPE misbehaves in pipelines (``yes | head`` never ends), so children get the defaults back.
_RESET_TO_DEFAULT = tuple(
    getattr(signal, name) for name in ("SIGPIPE", "SIGXFZ", "SIGXFSZ") if hasattr(signal, name)
)


def resolve_command(program: str, env: Mapping[str, str]) -> str:
    """The path to execute for ``program``, searched in the *child's* ``PATH`` like ``execvpe`` does.

    ExecError with status 127 when it is not found.
    """
    if not program:
        raise ExecError("no command given", EXIT_NOT_FOUND)
    if "/" in program:
        return program  # used as given; exec reports a missing or non-executable file itself
    found = shutil.which(program, path=env.get("PATH", os.defpath))
    if found is None:
        raise ExecError(f"command {program!r} not found in PATH", EXIT_NOT_FOUND)
    return found


def _start_error(program: str, error: OSError) -> ExecError:
    if isinstance(error, FileNotFoundError):
        return ExecError(f"command {program!r} not found", EXIT_NOT_FOUND)
    return ExecError(f"cannot execute {program!r}: {error.strerror}", EXIT_CANNOT_EXECUTE)


def exec_replace(argv: Sequence[str], env: Mapping[str, str]) -> NoReturn:
    """Replace this process with ``argv`` (``PATH`` taken from ``env``) running with exactly ``env``.

    The app takes over our pid, so it is PID 1 in a container when we were, gets signals directly and
    leaves no agent process behind. Only returns by raising ExecError: exit status 127 when the command is
    not found, 126 when it cannot be executed, as a shell would.
    """
    if not argv:
        raise ExecError("no command given", EXIT_NOT_FOUND)
    path = resolve_command(argv[0], env)
    # Whatever we printed must come out before the process image (and its buffers) is gone.
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    saved_handlers = {sig: signal.signal(sig, signal.SIG_DFL) for sig in _RESET_TO_DEFAULT}
    saved_mask = signal.pthread_sigmask(signal.SIG_SETMASK, ())  # a blocked mask would survive exec too
    try:
        os.execve(path, list(argv), dict(env))  # noqa: S606 - no shell on purpose: argv is the app's command
    except OSError as error:
        signal.pthread_sigmask(signal.SIG_SETMASK, saved_mask)
        for sig, previous in saved_handlers.items():
            signal.signal(sig, previous)
        raise _start_error(argv[0], error) from None


def spawn(argv: Sequence[str], env: Mapping[str, str]) -> int:
    """Start ``argv`` as a child in a new session (its own process group, no controlling terminal).

    Its own session means a Ctrl-C at a terminal reaches only the supervisor, which forwards it: the app
    gets each signal exactly once, and the whole group can be killed when the app is replaced. Signal
    dispositions and the signal mask are reset to the defaults. Returns the pid.
    """
    if not argv:
        raise ExecError("no command given", EXIT_NOT_FOUND)
    path = resolve_command(argv[0], env)
    try:
        return os.posix_spawn(
            path, list(argv), dict(env), setsid=True, setsigdef=_RESET_TO_DEFAULT, setsigmask=()
        )
    except OSError as error:
        raise _start_error(argv[0], error) from None

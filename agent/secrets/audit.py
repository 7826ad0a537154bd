"""The audit trail of the secrets API: one INFO event on ``agent.audit`` per call, never a value.

Every read and every change made through ``SecretManager`` or ``LocalSecretManager`` is logged as::

    secrets api: access db v3 ok        fields: secret=db version=3 operation=access result=ok
                                                caller="alice@laptop pid 4242" backend=gcp

``result`` is ``ok`` or the error's status name (``NOT_FOUND``, ``FAILED_PRECONDITION``, ``DATA_LOSS``...).
``version`` is the version the call resolved to when it succeeded (``latest`` becomes ``3``), else the one
asked for (or None for calls that name no version). Use it as::

    with audited("access", secret_id, caller=self.caller, backend="gcp", version=version) as event:
        ...                       # raise SecretsError on failure
        event.version = "3"       # what the call resolved to
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from agent.observe.logs import fields
from agent.secrets.interface import SecretsError

AUDIT_LOGGER = "agent.audit"
audit_log = logging.getLogger(AUDIT_LOGGER)

Operation = Literal[
    "create",
    "access",
    "resolve",
    "describe",
    "list",
    "list-versions",
    "add",
    "enable",
    "disable",
    "destroy",
    "annotate",
    "schedule",
    "rotate",
    "delete",
]
"""What a call did: ``access`` reads a value, ``resolve``/``describe``/``list``/``list-versions`` read
metadata, the others change something (``schedule`` moves the next rotation time)."""


def default_caller() -> str:
    """``user@host pid N``: who is acting, when the application does not say."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (some containers)
        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()} pid {os.getpid()}"


@dataclass
class AuditEvent:
    """The event being built for one call; set ``version`` to what the call resolved to."""

    version: str | None


@contextmanager
def audited(
    operation: Operation, secret: str, *, caller: str, backend: str, version: str | None = None
) -> Iterator[AuditEvent]:
    """Log one audit event when the block ends: ``ok``, the SecretsError's code, or ``error``/``cancelled``.

    The exception itself propagates unchanged; its text is not logged here (it is the caller's to show).
    """
    event = AuditEvent(version)
    try:
        yield event
    except SecretsError as error:
        audit_event(operation, secret, event.version, error.code, caller=caller, backend=backend)
        raise
    except BaseException as error:
        result = "CANCELLED" if isinstance(error, asyncio.CancelledError) else "error"
        audit_event(operation, secret, event.version, result, caller=caller, backend=backend)
        raise
    audit_event(operation, secret, event.version, "ok", caller=caller, backend=backend)


def audit_event(
    operation: Operation, secret: str, version: str | None, result: str, *, caller: str, backend: str
) -> None:
    """Write one audit event (INFO on ``agent.audit``)."""
    audit_log.info(
        "secrets api: %s %s%s %s",
        operation,
        secret,
        f" v{version}" if version else "",
        result,
        extra=fields(
            secret=secret,
            version=version,
            operation=operation,
            result=result,
            caller=caller,
            backend=backend,
        ),
    )

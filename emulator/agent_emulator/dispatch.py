"""One path for every call, whatever the transport: authenticate it, count it, inject faults, check its
permission, run it on the store, log it.

The gRPC and REST adapters only translate wire formats (and hand over the caller's ``authorization`` and
``x-goog-user-project``); everything that makes the emulator behave like the service (or misbehave on
purpose) happens here or in the store. The order is the service's: authentication (UNAUTHENTICATED), the
quota project (PERMISSION_DENIED), quotas and injected faults, the IAM permission (PERMISSION_DENIED, "or it
may not exist"), then the call itself (NOT_FOUND, ...).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import grpc

from agent_emulator.calls import SECRET_MANAGER, CallLog, CallRecord
from agent_emulator.clock import Clock
from agent_emulator.errors import EmulatorError
from agent_emulator.methods import METHODS, Method

_PROJECT = re.compile(r"^projects/([^/]+)")

Transport = Literal["grpc", "rest"]

MAX_HEADER_CHARS = 8192
"""Longest ``authorization`` or ``x-goog-user-project`` value looked at (longer ones are cut: no token
the emulator issues comes close)."""


@dataclass(frozen=True)
class Caller:
    """What a call says about who makes it: its ``authorization`` and ``x-goog-user-project`` (gRPC
    metadata or HTTP headers), and the transport it came by."""

    authorization: str | None = None
    quota_project: str | None = None
    transport: Transport = "grpc"

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[str, Any]], transport: Transport) -> Caller:
        """From gRPC metadata or HTTP headers (names compared case-insensitively; the first value wins)."""
        found: dict[str, str] = {}
        for key, value in pairs:
            name = key.lower()
            if (
                name in ("authorization", "x-goog-user-project")
                and name not in found
                and isinstance(value, str)
            ):
                found[name] = value[:MAX_HEADER_CHARS]
        quota = found.get("x-goog-user-project")
        return cls(found.get("authorization"), quota.strip() if quota is not None else None, transport)


class FaultInjector(Protocol):
    """Decides, per call, whether to delay it, fail it, or corrupt its payload checksum."""

    async def before_call(self, method: Method, project: str) -> None:
        """Sleep for configured latency; raise EmulatorError for an injected failure or exhausted quota."""

    def corrupt_crc(self, method: Method) -> bool:
        """True when this AccessSecretVersion response should carry a wrong ``data_crc32c``."""


class CallRecorder(Protocol):
    """Counts calls per method and resulting status code (for the admin API)."""

    def record(self, method: Method, code: grpc.StatusCode, project: str = "") -> None: ...


class AccessGate(Protocol):
    """Authentication and authorization of Secret Manager calls (``agent_emulator.identity``)."""

    def authenticate(self, method: Method, caller: Caller) -> str | None:
        """The caller's principal (None: anonymous, and allowed); EmulatorError UNAUTHENTICATED for a
        missing, unknown or expired token when tokens are required."""

    def check_quota_project(self, method: Method, caller: Caller, principal: str | None) -> None:
        """EmulatorError PERMISSION_DENIED when the call bills a quota project its principal may not use."""

    def authorize(self, method: Method, request: Any, principal: str | None) -> None:
        """EmulatorError PERMISSION_DENIED unless ``principal`` holds the method's permission."""


class OpenGate:
    """The gate of an emulator without identity: everyone is anonymous and allowed."""

    def authenticate(self, method: Method, caller: Caller) -> str | None:
        return None

    def check_quota_project(self, method: Method, caller: Caller, principal: str | None) -> None:
        return None

    def authorize(self, method: Method, request: Any, principal: str | None) -> None:
        return None


def project_of(request: Any) -> str:
    """The project a request addresses ('' when its name is malformed; the store then rejects it)."""
    match = _PROJECT.match(resource_of(request))
    return match.group(1) if match else ""


def resource_of(request: Any) -> str:
    """The resource name a request addresses, as it named it (``name``, ``parent`` or ``secret.name``)."""
    for attr in ("name", "parent"):
        value = getattr(request, attr, None)
        if isinstance(value, str) and value:
            return value
    secret = getattr(request, "secret", None)
    value = getattr(secret, "name", "") if secret is not None else ""
    return value if isinstance(value, str) else ""


class Dispatcher:
    def __init__(
        self,
        store: Any,
        faults: FaultInjector,
        recorder: CallRecorder,
        *,
        gate: AccessGate | None = None,
        calls: CallLog | None = None,
        clock: Clock | None = None,
    ) -> None:
        # store: the SecretStore; one method per RPC, named ``Method.store_attr``, found by name.
        self.store = store
        self.faults = faults
        self.recorder = recorder
        self.gate: AccessGate = gate or OpenGate()
        self.calls = calls
        self.clock = clock or Clock()

    async def call(self, method_name: str, request: Any, caller: Caller | None = None) -> Any:
        """Run one RPC; raises EmulatorError with the status the service would return."""
        method = METHODS.get(method_name)
        if method is None:
            raise EmulatorError(grpc.StatusCode.UNIMPLEMENTED, f"Method {method_name} is not implemented.")
        caller = caller or Caller()
        # Quotas count against the quota project when the call names one, as the service bills them.
        billed = caller.quota_project or project_of(request)
        principal: str | None = None
        try:
            principal = self.gate.authenticate(method, caller)
            self.gate.check_quota_project(method, caller, principal)
            await self.faults.before_call(method, billed)
            self.gate.authorize(method, request, principal)
            response = getattr(self.store, method.store_attr)(request)
            if method.name == "AccessSecretVersion" and self.faults.corrupt_crc(method):
                # Flip one bit: the payload is intact, the checksum lies, so clients must notice.
                response.payload.data_crc32c = (int(response.payload.data_crc32c) ^ 1) & 0xFFFFFFFF
        except EmulatorError as error:
            self.recorder.record(method, error.code, billed)
            self._log(method, request, caller, principal, error.code.name, error.message)
            raise
        self.recorder.record(method, grpc.StatusCode.OK, billed)
        self._log(method, request, caller, principal, "OK", None)
        return response

    def _log(
        self,
        method: Method,
        request: Any,
        caller: Caller,
        principal: str | None,
        result: str,
        message: str | None,
    ) -> None:
        if self.calls is None:
            return
        self.calls.record(
            CallRecord(
                time=self.clock.now(),
                service=SECRET_MANAGER,
                method=method.name,
                resource=resource_of(request),
                principal=principal,
                quota_project=caller.quota_project,
                result=result,
                transport=caller.transport,
                message=message,
            )
        )

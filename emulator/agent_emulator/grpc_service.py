"""google.cloud.secretmanager.v1.SecretManagerService over plaintext gRPC (grpc.aio generic handlers).

No generated code: every method in ``METHODS`` becomes a unary-unary handler that deserializes the
proto-plus request, awaits the dispatcher and serializes the proto-plus response. Methods not in the table
(IAM, RotateSecret, ...) get no handler, so gRPC itself answers UNIMPLEMENTED.

The call's ``authorization`` and ``x-goog-user-project`` metadata go to the dispatcher (identity checks);
an error carrying a ``google.rpc.ErrorInfo`` sends it in the ``grpc-status-details-bin`` trailer, where
google-api-core finds it (``exception.reason``, ``exception.domain``), as with the real service.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from agent_emulator.dispatch import Caller, Dispatcher
from agent_emulator.errors import EmulatorError, ErrorInfo
from agent_emulator.methods import METHODS, SERVICE, Method, serialize_response

log = logging.getLogger(__name__)

INTERNAL_MESSAGE = "Internal error encountered."
"""What the service says for a failure of its own; details stay in the emulator's log."""

Handler = Callable[[bytes, grpc.aio.ServicerContext[Any, Any]], Awaitable[bytes]]


def _handler(dispatcher: Dispatcher, method: Method) -> Handler:
    async def handle(raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        # Deserialized here rather than by gRPC, so garbage bytes are the client's INVALID_ARGUMENT
        # instead of gRPC's generic INTERNAL.
        try:
            request = method.request_type.deserialize(raw)
        except Exception:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "Request contains an invalid argument.")
        caller = Caller.from_pairs(context.invocation_metadata() or (), "grpc")
        trailers: tuple[tuple[str, bytes], ...] = ()
        try:
            response = await dispatcher.call(method.name, request, caller)
            return serialize_response(method, response)
        except EmulatorError as error:
            failure: tuple[grpc.StatusCode, str] = (error.code, error.message)
            if error.info is not None:
                trailers = (
                    ("grpc-status-details-bin", status_details(error.code, error.message, error.info)),
                )
        except Exception:
            # Never a crash and never a stack trace on the wire; the log has the details (no payloads:
            # exceptions from the store carry names and states only).
            log.exception("%s failed unexpectedly", method.name)
            failure = (grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)
        await context.abort(*failure, trailing_metadata=trailers)
        raise AssertionError("context.abort returned")  # pragma: no cover - abort always raises

    return handle


def status_details(code: grpc.StatusCode, message: str, info: ErrorInfo) -> bytes:
    """A serialized ``google.rpc.Status`` carrying one ErrorInfo detail (the trailer's value)."""
    detail = any_pb2.Any()
    detail.Pack(
        error_details_pb2.ErrorInfo(reason=info.reason, domain=info.domain, metadata=dict(info.metadata))
    )
    value: int = code.value[0]
    return status_pb2.Status(code=value, message=message, details=[detail]).SerializeToString()  # type: ignore[no-any-return]


def secret_manager_handler(dispatcher: Dispatcher) -> grpc.GenericRpcHandler:
    """The SecretManagerService handler for ``grpc.aio.Server.add_generic_rpc_handlers``."""
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            _handler(dispatcher, method),
            request_deserializer=None,
            response_serializer=None,
        )
        for name, method in METHODS.items()
    }
    return grpc.method_handlers_generic_handler(SERVICE, handlers)

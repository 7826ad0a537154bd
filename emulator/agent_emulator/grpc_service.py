"""google.cloud.secretmanager.v1.SecretManagerService over plaintext gRPC (grpc.aio generic handlers).

No generated code: every method in ``METHODS`` becomes a unary-unary handler that deserializes the
proto-plus request, awaits the dispatcher and serializes the proto-plus response. Methods not in the table
(IAM, RotateSecret, ...) get no handler, so gRPC itself answers UNIMPLEMENTED.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from agent_emulator.dispatch import Dispatcher
from agent_emulator.errors import EmulatorError
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
        try:
            response = await dispatcher.call(method.name, request)
            return serialize_response(method, response)
        except EmulatorError as error:
            failure: tuple[grpc.StatusCode, str] = (error.code, error.message)
        except Exception:
            # Never a crash and never a stack trace on the wire; the log has the details (no payloads:
            # exceptions from the store carry names and states only).
            log.exception("%s failed unexpectedly", method.name)
            failure = (grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)
        await context.abort(*failure)
        raise AssertionError("context.abort returned")  # pragma: no cover - abort always raises

    return handle


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

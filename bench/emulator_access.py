"""How much the emulator costs per AccessSecretVersion, next to a bare gRPC server returning the same bytes.

Later benchmarks (bootstrap, propagation, fleet) run against the emulator; this one shows how much of their
time is the emulator's own overhead. Baseline: a grpc.aio generic handler that answers every call with the
pre-serialised response, over the same official client and channel type, in the same run.
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import grpc
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import secretmanager_v1
from google.cloud.secretmanager_v1.services.secret_manager_service.transports import (
    SecretManagerServiceGrpcTransport,
)

from agent_emulator.options import EmulatorOptions
from agent_emulator.server import running_emulator

CALLS = 2000
SECRET = "projects/bench-project/secrets/bench"
PAYLOAD = b"x" * 64


@contextmanager
def bare_grpc_server(response: bytes) -> Iterator[str]:
    """A gRPC server that answers every unary call with ``response``: the floor for any server."""
    ready = threading.Event()
    target: list[str] = []
    stop: list[Callable[[], object]] = []

    def run() -> None:
        async def serve() -> None:
            async def handler(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
                return response

            class Generic(grpc.GenericRpcHandler):  # type: ignore[misc]  # grpc has no type hints: Any
                def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[bytes, bytes]:
                    return grpc.unary_unary_rpc_method_handler(handler)

            server = grpc.aio.server()
            server.add_generic_rpc_handlers((Generic(),))
            port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
            done = asyncio.Event()
            loop = asyncio.get_running_loop()
            stop.append(lambda: loop.call_soon_threadsafe(done.set))
            target.append(f"127.0.0.1:{port}")
            ready.set()
            await done.wait()
            await server.stop(None)

        asyncio.run(serve())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield target[0]
    finally:
        stop[0]()
        thread.join(10)


def timed_calls(call: Callable[[], object]) -> list[float]:
    for _ in range(100):  # warm up connections and caches
        call()
    latencies = []
    for _ in range(CALLS):
        start = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - start)
    return latencies


def summary(name: str, latencies: list[float], baseline: list[float] | None) -> str:
    rate = len(latencies) / sum(latencies)
    p50 = statistics.median(latencies) * 1000
    p99 = statistics.quantiles(latencies, n=100)[98] * 1000
    ratio = "1.00x (baseline)" if baseline is None else f"{rate / (len(baseline) / sum(baseline)):.2f}x"
    return f"| {name} | {rate:,.0f} | {p50:.2f} | {p99:.2f} | {ratio} |"


def main() -> None:
    with running_emulator(EmulatorOptions(grpc_port=0, http_port=0)) as ep:
        channel = grpc.insecure_channel(ep.grpc_target)
        client = secretmanager_v1.SecretManagerServiceClient(
            transport=SecretManagerServiceGrpcTransport(channel=channel)
        )
        client.create_secret(
            parent="projects/bench-project", secret_id="bench", secret=secretmanager_v1.Secret()
        )
        client.add_secret_version(parent=SECRET, payload=secretmanager_v1.SecretPayload(data=PAYLOAD))
        name = f"{SECRET}/versions/latest"
        response = client.access_secret_version(name=name)
        emulator_grpc = timed_calls(lambda: client.access_secret_version(name=name))

        rest = secretmanager_v1.SecretManagerServiceClient(
            transport="rest",
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            client_options=ClientOptions(api_endpoint=ep.rest_url),
        )
        emulator_rest = timed_calls(lambda: rest.access_secret_version(name=name))
        rest.transport.close()  # type: ignore[no-untyped-call]
        client.transport.close()  # type: ignore[no-untyped-call]

    wire = secretmanager_v1.AccessSecretVersionResponse.serialize(response)
    with bare_grpc_server(wire) as target:
        bare = secretmanager_v1.SecretManagerServiceClient(
            transport=SecretManagerServiceGrpcTransport(channel=grpc.insecure_channel(target))
        )
        baseline = timed_calls(lambda: bare.access_secret_version(name=name))
        bare.transport.close()  # type: ignore[no-untyped-call]

    print(f"AccessSecretVersion, official sync client, {CALLS} sequential calls, {len(PAYLOAD)}-byte payload")
    print("| server | calls/s | p50 ms | p99 ms | vs bare gRPC |")
    print("| --- | ---: | ---: | ---: | ---: |")
    print(summary("bare grpc.aio handler (baseline)", baseline, None))
    print(summary("emulator, gRPC", emulator_grpc, baseline))
    print(summary("emulator, REST", emulator_rest, baseline))


if __name__ == "__main__":
    main()

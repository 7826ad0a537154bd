"""Composition root of the emulator: store, faults, dispatcher, gRPC and HTTP listeners, timers.

Three ways to run it:

- :func:`serve` - a coroutine that runs until its ``stop`` event is set (the building block);
- :func:`running_emulator` - a context manager running ``serve`` in a background thread, for tests and
  synchronous code (``with running_emulator() as endpoints: ...``);
- :func:`serve_forever` - the ``secrets-agent emulator`` command: logs where it listens, stops on
  SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
from aiohttp import web

from agent.errors import AgentError
from agent_emulator import events, guard, persistence
from agent_emulator.admin import add_admin_routes
from agent_emulator.calls import CallLog
from agent_emulator.clock import Clock
from agent_emulator.dispatch import Dispatcher
from agent_emulator.faults import CallCounters, FaultController
from agent_emulator.grpc_service import secret_manager_handler
from agent_emulator.identity import IdentityService
from agent_emulator.identity_config import IdentityConfig, load_identity_config
from agent_emulator.identity_http import add_identity_routes
from agent_emulator.options import EmulatorOptions
from agent_emulator.rest import add_rest_routes
from agent_emulator.store import SecretStore

log = logging.getLogger("agent_emulator")

STARTUP_TIMEOUT_SECONDS = 30.0
SHUTDOWN_GRACE_SECONDS = 1.0


class EmulatorStartError(AgentError):
    """The emulator could not start (a port in use, an address that cannot be bound)."""


@dataclass(frozen=True)
class EmulatorEndpoints:
    """Where a running emulator listens."""

    grpc_target: str
    """``host:port`` for ``grpc.insecure_channel`` (and ``SECRET_MANAGER_EMULATOR_HOST``)."""
    rest_url: str
    """Base URL of the REST/JSON API, e.g. ``http://127.0.0.1:8781`` (``/v1/...`` below it)."""
    admin_url: str
    """Base URL of the admin API: faults, counters, clock, identity... (``rest_url + "/emulator/v1"``)."""

    @property
    def token_url(self) -> str:
        """The STS token endpoint: an ``external_account`` credential config's ``token_url``."""
        return f"{self.rest_url}/v1/token"

    def impersonation_url(self, email: str) -> str:
        """generateAccessToken for one account: ``service_account_impersonation_url`` /
        ``iam_endpoint_override``."""
        return f"{self.rest_url}/v1/projects/-/serviceAccounts/{email}:generateAccessToken"

    @classmethod
    def for_ports(cls, host: str, grpc_port: int, http_port: int) -> EmulatorEndpoints:
        # A wildcard bind is reachable on loopback; clients cannot connect to 0.0.0.0 portably.
        connect = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)  # noqa: S104
        hostpart = f"[{connect}]" if ":" in connect else connect
        rest_url = f"http://{hostpart}:{http_port}"
        return cls(f"{hostpart}:{grpc_port}", rest_url, f"{rest_url}/emulator/v1")


def _bind_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _check_options(options: EmulatorOptions) -> None:
    # The CLI refuses these as usage errors; code building EmulatorOptions itself gets the same verdict.
    for flag, value in (("--grpc-port", options.grpc_port), ("--http-port", options.http_port)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
            raise EmulatorStartError(f"{flag} must be a port number from 0 to 65535, got {value!r}")
    if not options.host.isprintable() or len(options.host) > 255:
        raise EmulatorStartError("--host must be a host name or address")


async def _start_grpc(options: EmulatorOptions, dispatcher: Dispatcher) -> tuple[grpc.aio.Server, int]:
    # so_reuseport off: with it, a second emulator would silently share the port instead of failing.
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((secret_manager_handler(dispatcher),))
    address = _bind_address(options.host, options.grpc_port)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError:
        port = 0
    if port == 0:
        raise EmulatorStartError(f"cannot listen for gRPC on {address} (port in use or address unavailable)")
    await server.start()
    return server, port


async def _start_http(
    options: EmulatorOptions,
    dispatcher: Dispatcher,
    faults: FaultController,
    counters: CallCounters,
    clock: Clock,
    store: SecretStore,
    identity: IdentityService,
) -> tuple[web.AppRunner, int]:
    # The guard runs first: a request a web page sent never reaches a handler (see agent_emulator.guard).
    app = web.Application(middlewares=[guard.middleware(options.host)])
    add_identity_routes(app, identity)
    add_rest_routes(app, dispatcher)
    add_admin_routes(
        app,
        faults=faults,
        counters=counters,
        clock=clock,
        store=store,
        identity=identity,
        calls=identity.calls,
    )
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, options.host, options.http_port, reuse_address=True)
    try:
        await site.start()
    except OSError as error:
        await runner.cleanup()
        reason = "port in use" if error.errno == errno.EADDRINUSE else error.strerror or str(error)
        address = _bind_address(options.host, options.http_port)
        raise EmulatorStartError(f"cannot listen for HTTP on {address} ({reason})") from None
    port = int(runner.addresses[0][1])
    return runner, port


async def _run_timers(store: SecretStore, interval: float, stop: asyncio.Event) -> None:
    """Fire due rotations, expiries and scheduled destructions every ``interval`` seconds until ``stop``."""
    while not stop.is_set():
        try:
            store.fire_due_rotations()
            store.apply_due_lifecycle()
        except Exception:
            log.exception("rotation/lifecycle timer failed; will try again")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)


def build_store(options: EmulatorOptions, clock: Clock, publisher: events.EventPublisher) -> SecretStore:
    """A store with the data file (if any) and the seed (if any) loaded, persisting from now on.

    ConfigError for a bad seed or data file, before any port is opened.
    """
    store = SecretStore(clock, publisher)
    if options.data is not None and persistence.load_data(store, options.data):
        log.info("loaded %s", options.data)
    if options.seed is not None:
        seeds = persistence.load_seed(options.seed)
        created = persistence.apply_seed(store, seeds, options.seed, clock.now())
        log.info("seeded %d secret(s) from %s", created, options.seed)
    if options.data is not None:
        store.on_change = persistence.persister(store, options.data)
        store.on_change()
    return store


async def serve(
    options: EmulatorOptions,
    started: Callable[[EmulatorEndpoints], None] | None,
    stop: asyncio.Event,
) -> None:
    """Run the emulator until ``stop`` is set; call ``started`` once both listeners accept connections."""
    _check_options(options)
    clock = Clock()
    publisher = events.make_publisher()
    try:
        store = build_store(options, clock, publisher)
        faults = FaultController.from_options(options, clock)
        identity_config = load_identity_config(options.identity) if options.identity else IdentityConfig()
        calls = CallLog()
        identity = IdentityService(identity_config, clock, calls)
        counters = CallCounters()
        dispatcher = Dispatcher(store, faults, counters, gate=identity, calls=calls, clock=clock)
        grpc_server, grpc_port = await _start_grpc(options, dispatcher)
        try:
            runner, http_port = await _start_http(
                options, dispatcher, faults, counters, clock, store, identity
            )
        except BaseException:
            await grpc_server.stop(None)
            raise
        timers = asyncio.create_task(_run_timers(store, options.rotation_check_seconds, stop), name="timers")
        try:
            if started is not None:
                started(EmulatorEndpoints.for_ports(options.host, grpc_port, http_port))
            await stop.wait()
        finally:
            timers.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timers
            # Calls asleep in an injected latency (up to a minute) would hold both shutdowns up.
            faults.release()
            await grpc_server.stop(SHUTDOWN_GRACE_SECONDS)
            await runner.cleanup()
    finally:
        await publisher.close()


@contextlib.contextmanager
def running_emulator(options: EmulatorOptions | None = None) -> Iterator[EmulatorEndpoints]:
    """Run an emulator in a background thread (its own event loop) for the duration of the block.

    Defaults to ports chosen by the OS. Startup errors (a bad seed, a port in use) are raised here.
    """
    options = options or EmulatorOptions(grpc_port=0, http_port=0)
    ready = threading.Event()
    endpoints: list[EmulatorEndpoints] = []
    failure: list[BaseException] = []
    loop_box: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    def on_started(found: EmulatorEndpoints) -> None:
        endpoints.append(found)
        ready.set()

    async def main() -> None:
        stop = asyncio.Event()
        loop_box.append((asyncio.get_running_loop(), stop))
        await serve(options, on_started, stop)

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as error:
            failure.append(error)
        finally:
            ready.set()

    thread = threading.Thread(target=run, name="secret-manager-emulator", daemon=True)
    thread.start()
    if not ready.wait(STARTUP_TIMEOUT_SECONDS):
        raise EmulatorStartError(f"the emulator did not start within {STARTUP_TIMEOUT_SECONDS:.0f} s")
    if failure:
        thread.join()
        raise failure[0]
    try:
        yield endpoints[0]
    finally:
        loop, stop = loop_box[0]
        with contextlib.suppress(RuntimeError):  # the loop already ended (it crashed after starting)
            loop.call_soon_threadsafe(stop.set)
        thread.join()
        if failure:
            raise failure[0]


def _configure_logging() -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def serve_forever(options: EmulatorOptions) -> int:
    """The ``secrets-agent emulator`` command: serve until SIGINT/SIGTERM, then stop cleanly (exit 0).

    Startup problems raise AgentError (ConfigError for a bad seed/data file), which the CLI prints as one
    line; the exit code is 1 (2 for configuration).
    """
    _configure_logging()

    def announce(found: EmulatorEndpoints) -> None:
        log.info("listening: gRPC on %s, REST on %s", found.grpc_target, found.rest_url)
        log.info("point clients at it: SECRET_MANAGER_EMULATOR_HOST=%s", found.grpc_target)
        log.info(
            "  python: SecretManagerServiceGrpcTransport(channel=grpc.insecure_channel(%r))",
            found.grpc_target,
        )
        log.info("  REST: ClientOptions(api_endpoint=%r) with transport='rest'", found.rest_url)
        log.info(
            "  gcloud: CLOUDSDK_API_ENDPOINT_OVERRIDES_SECRETMANAGER=%s/ CLOUDSDK_AUTH_ACCESS_TOKEN=any "
            "gcloud secrets list --project PROJECT",
            found.rest_url,
        )
        log.info("  curl: curl %s/v1/projects/PROJECT/secrets/SECRET/versions/latest:access", found.rest_url)
        log.info("admin API (faults, counters, calls, clock, identity, tokens): %s", found.admin_url)
        log.info(
            "  identity: STS token_url=%s, generateAccessToken under %s",
            found.token_url,
            found.rest_url + "/v1/projects/-/serviceAccounts/",
        )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        try:
            await serve(options, announce, stop)
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)

    asyncio.run(main())
    log.info("stopped")
    return 0

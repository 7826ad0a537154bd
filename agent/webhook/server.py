"""The webhook's HTTPS server (aiohttp): ``POST /mutate``, ``GET /healthz``, ``GET /readyz``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from agent.config import split_listen
from agent.core.serving import serve_site
from agent.observe.logs import fields
from agent.supervisor import Listener, Part, signal_handlers, supervise
from agent.webhook.listings import ListingCache, Resolver
from agent.webhook.review import answer_review
from agent.webhook.settings import InjectorSettings, ResolverSettings, WebhookOptions
from agent.webhook.tls import ReloadingCertificate

log = logging.getLogger(__name__)

MAX_BODY = 3 * 1024 * 1024
"""The API server's own request limit (3 MiB): no AdmissionReview of a real Pod is larger."""
REVIEW_THREADS = 1
"""Reviews decided at once, in a worker thread, never on the event loop: ``/healthz`` (the kubelet's
probes) and the TLS handshakes of other requests are answered while a review runs. One: a review is pure
Python and holds the GIL, so a second thread would not decide more reviews per second, only make the event
loop wait for the GIL behind two threads instead of one."""
RESOLVING_REVIEW_THREADS = 8
"""Reviews decided at once when selections are resolved (``--resolve-selections``): a review waiting for a
listing (at most ``--listing-timeout``) holds its thread but not the GIL, and the reviews behind it must
not wait for it."""
REVIEW_DEADLINE = 4.0
"""Seconds a review may wait for a thread and run: the API server gives up after the webhook's
``timeoutSeconds`` (5), so a later answer helps nobody. A review that has not started by then never
starts; one that has (its cost is bounded by ``agent.webhook.limits``) finishes in its thread."""


def build_app(settings: InjectorSettings, resolver: Resolver | None = None) -> web.Application:
    """The routes; TLS is the listener's business. ``resolver``: where pods' selections are resolved
    (``listing_cache``); None: they are not."""
    threads = REVIEW_THREADS if resolver is None else RESOLVING_REVIEW_THREADS
    reviews = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="webhook-review")

    async def mutate(request: web.Request) -> web.StreamResponse:
        raw = await request.read()  # at most MAX_BODY (client_max_size), else 413
        decided = asyncio.get_running_loop().run_in_executor(reviews, answer_review, raw, settings, resolver)
        try:
            answer = await asyncio.wait_for(decided, REVIEW_DEADLINE)
        except TimeoutError:
            log.warning("admission review not decided in time", extra=fields(deadline=REVIEW_DEADLINE))
            return web.json_response(
                {"error": f"the review was not decided within {REVIEW_DEADLINE:g} s (the webhook is busy)"},
                status=503,
                headers={"Retry-After": "1"},
            )
        if answer.status == 200:
            # One line per review; the webhook never knows a secret value, and logs annotation names only.
            log.info("admission review", extra=fields(**answer.log_fields))
        else:
            log.warning("malformed admission review refused", extra=fields(error=answer.body["error"]))
        return web.json_response(answer.body, status=answer.status)

    async def healthz(request: web.Request) -> web.StreamResponse:
        return web.json_response({"status": "ok"})

    async def stop_reviews(app: web.Application) -> None:
        reviews.shutdown(wait=False, cancel_futures=True)

    app = web.Application(client_max_size=MAX_BODY, middlewares=[_json_errors])
    app.on_cleanup.append(stop_reviews)
    app.router.add_post("/mutate", mutate)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", healthz)  # serving means ready: the certificate loaded at start
    return app


@web.middleware
async def _json_errors(request: web.Request, handler: Callable[..., object]) -> web.StreamResponse:
    """HTTP errors (404, 405, 413) as JSON with fixed messages, like every other answer."""
    try:
        response = await handler(request)  # type: ignore[misc]
    except web.HTTPException as error:
        reason = error.reason
        if error.status == 413:
            reason = f"the body is larger than {MAX_BODY // (1024 * 1024)} MiB, the API server's own limit"
        return web.json_response({"error": reason}, status=error.status)
    assert isinstance(response, web.StreamResponse)
    return response


MAX_CONNECTIONS = 256
"""Most connections open at once: the API servers keep a pool each; a flood beyond this evicts idle ones."""
IDLE_TIMEOUT = 60.0
"""Seconds a connection may sit without a complete request (under the API server's 90 s idle timeout)."""
REQUEST_TIMEOUT = 30.0
"""Seconds one request may take, body included: the API server's longest ``timeoutSeconds``."""


async def serve(
    app: web.Application,
    host: str,
    port: int,
    certificate: ReloadingCertificate,
    *,
    started: Callable[[int], None] | None = None,
    max_connections: int = MAX_CONNECTIONS,
    idle_timeout: float = IDLE_TIMEOUT,
    request_timeout: float = REQUEST_TIMEOUT,
) -> None:
    """Serve ``app`` over TLS on ``host:port`` until cancelled; ``started(port)`` gets the bound port.

    With the defences of every listener (``agent.core.serving``): at most ``max_connections`` connections
    (idle ones evicted first; TLS handshakes bounded in time and number), closed after ``idle_timeout``
    seconds without a complete request, each request answered within ``request_timeout`` seconds (a body
    sent slowly gets 408)."""
    await serve_site(
        app,
        host,
        port,
        name="webhook",
        routes="/mutate, /healthz, /readyz",
        max_connections=max_connections,
        idle_timeout=idle_timeout,
        request_timeout=request_timeout,
        shutdown_timeout=2.0,
        ssl_context=certificate.context,
        logger_name="agent.webhook.aiohttp",
        started=started,
        cannot_listen=("the webhook", "set --listen to a free address"),
    )


def listing_cache(settings: ResolverSettings) -> tuple[ListingCache, Callable[[], None]]:
    """The cache of listings ``settings`` ask for, on Secret Manager (the Google client is loaded here),
    and what closes it."""
    from agent.webhook.lister import SecretManagerLister

    lister = SecretManagerLister(settings.endpoint)
    cache = ListingCache(
        lister,
        ttl=settings.cache_ttl,
        per_minute=settings.listings_per_minute,
        timeout=settings.listing_timeout,
        max_entries=settings.max_entries,
    )
    return cache, lister.close


def _nothing() -> None:
    return None


async def run_webhook(options: WebhookOptions) -> None:
    """The webhook until SIGTERM: the HTTPS server and the certificate watcher."""
    certificate = ReloadingCertificate(options.cert_file, options.key_file)
    host, port = split_listen(options.listen)
    terminating, stop = asyncio.Event(), asyncio.Event()

    async def stop_after_delay() -> None:
        await terminating.wait()
        log.info("stopping in %gs (answering until then)", options.shutdown_delay)
        await asyncio.sleep(options.shutdown_delay)
        stop.set()

    resolver: ListingCache | None = None
    close_resolver: Callable[[], None] = _nothing
    if options.resolver is not None:
        resolver, close_resolver = listing_cache(options.resolver)
        log.info(
            "resolving selections at admission",
            extra=fields(
                endpoint=options.resolver.endpoint or "Google",
                ttl=options.resolver.cache_ttl,
                listings_per_minute=options.resolver.listings_per_minute,
            ),
        )
    app = build_app(options.injector, resolver)

    def server(started: Callable[[int], None]) -> Part:
        return serve(app, host, port, certificate, started=started)

    # The server is a listener: the certificate watcher starts only once the port is bound, and a port
    # that is taken is one line naming --listen, nothing else started.
    listeners: dict[str, Listener] = {"webhook server": server}
    parts = {"certificate watcher": certificate.watch(options.reload_interval)}
    delayed = asyncio.create_task(stop_after_delay(), name="delayed stop")
    try:
        with signal_handlers(terminating):
            await supervise(parts, stop, grace=5.0, listeners=listeners)
    finally:
        delayed.cancel()
        await asyncio.to_thread(close_resolver)

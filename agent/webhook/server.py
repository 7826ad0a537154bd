"""The webhook's HTTPS server (aiohttp): ``POST /mutate``, ``GET /healthz``, ``GET /readyz``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiohttp import web

from agent.config import split_listen
from agent.core.serving import serve_site
from agent.observe.logs import fields
from agent.supervisor import signal_handlers, supervise
from agent.webhook.review import answer_review
from agent.webhook.settings import InjectorSettings, WebhookOptions
from agent.webhook.tls import ReloadingCertificate

log = logging.getLogger(__name__)

MAX_BODY = 3 * 1024 * 1024
"""The API server's own request limit (3 MiB): no AdmissionReview of a real Pod is larger."""


def build_app(settings: InjectorSettings) -> web.Application:
    """The routes; TLS is the listener's business."""

    async def mutate(request: web.Request) -> web.StreamResponse:
        answer = answer_review(await request.read(), settings)
        if answer.status == 200:
            # One line per review; the webhook never knows a secret value, and logs annotation names only.
            log.info("admission review", extra=fields(**answer.log_fields))
        else:
            log.warning("malformed admission review refused", extra=fields(error=answer.body["error"]))
        return web.json_response(answer.body, status=answer.status)

    async def healthz(request: web.Request) -> web.StreamResponse:
        return web.json_response({"status": "ok"})

    app = web.Application(client_max_size=MAX_BODY, middlewares=[_json_errors])
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
        return web.json_response({"error": error.reason}, status=error.status)
    assert isinstance(response, web.StreamResponse)
    return response


async def serve(
    app: web.Application,
    host: str,
    port: int,
    certificate: ReloadingCertificate,
    *,
    started: Callable[[int], None] | None = None,
) -> None:
    """Serve ``app`` over TLS on ``host:port`` until cancelled; ``started(port)`` gets the bound port."""
    await serve_site(
        app,
        host,
        port,
        name="webhook",
        routes="/mutate, /healthz, /readyz",
        shutdown_timeout=2.0,
        ssl_context=certificate.context,
        started=started,
    )


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

    parts = {
        "webhook server": serve(build_app(options.injector), host, port, certificate),
        "certificate watcher": certificate.watch(options.reload_interval),
    }
    delayed = asyncio.create_task(stop_after_delay(), name="delayed stop")
    try:
        with signal_handlers(terminating):
            await supervise(parts, stop, grace=5.0)
    finally:
        delayed.cancel()

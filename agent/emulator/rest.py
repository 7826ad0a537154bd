"""STUB - to be replaced: Google's v1 REST/JSON API over the dispatcher."""

from __future__ import annotations

from aiohttp import web

from agent.emulator.dispatch import Dispatcher


def add_rest_routes(app: web.Application, dispatcher: Dispatcher) -> None:
    """Mount ``/v1/...`` routes exactly as Google's REST API defines them."""

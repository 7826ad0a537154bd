"""The HTTP side of identity, on the REST port: Google's STS token endpoint and IAM Credentials'
generateAccessToken, at the paths google-auth's overrides point at.

- ``POST /v1/token``: the STS token exchange (an ``external_account`` credential config's ``token_url``);
- ``POST /v1/projects/-/serviceAccounts/EMAIL:generateAccessToken``: IAM Credentials (the config's
  ``service_account_impersonation_url``, or impersonated credentials' ``iam_endpoint_override``).

``/v1/token`` takes ``application/x-www-form-urlencoded`` (what google-auth sends; the guard lets that
content type through for this path only) or JSON, at most ``sts.MAX_BODY_BYTES``; it answers as the STS does
(:mod:`agent_emulator.sts`). generateAccessToken takes ``Authorization: Bearer <token>`` and a JSON body
``{"scope": [...], "delegates": [...], "lifetime": "3600s"}`` and answers
``{"accessToken", "expireTime"}`` or Google's JSON error (:mod:`agent_emulator.identity`). The other
IAM Credentials methods (signBlob, signJwt, generateIdToken) answer 501.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

import grpc
from aiohttp import web

from agent_emulator import bounded, rest, sts
from agent_emulator.dispatch import Caller
from agent_emulator.errors import EmulatorError
from agent_emulator.identity import IdentityService
from agent_emulator.rest_codec import RestInputError

TOKEN_PATH = "/v1/token"  # noqa: S105 - a URL path
SERVICE_ACCOUNTS_PREFIX = "/v1/projects/-/serviceAccounts/"
MAX_IAM_BODY_BYTES = 64 * 1024
"""Largest generateAccessToken body (a few scopes and delegates)."""
MAX_FORM_FIELDS = 32

_FORM = "application/x-www-form-urlencoded"
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _oauth_error(status: int, error: str, description: str) -> web.Response:
    return web.json_response(
        {"error": error, "error_description": description}, status=status, headers=_NO_STORE
    )


def parse_form(raw: bytes, content_type: str) -> dict[str, str] | str:
    """The exchange's parameters from a form or JSON body, or why they cannot be read."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "The request body is not UTF-8."
    if content_type == "application/json":
        try:
            document = bounded.loads_json(text)
        except (json.JSONDecodeError, bounded.InputError):
            return "The request body is not valid JSON."
        if not isinstance(document, dict) or not all(isinstance(v, str) for v in document.values()):
            return "The request body must be a JSON object of string parameters."
        return {str(k): v for k, v in document.items()}
    try:
        pairs = urllib.parse.parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
    except ValueError:
        return f"The request has more than {MAX_FORM_FIELDS} parameters."
    form: dict[str, str] = {}
    for key, value in pairs:
        form.setdefault(key, value)  # the first of a repeated parameter counts
    return form


def add_identity_routes(app: web.Application, identity: IdentityService) -> None:
    """Mount ``/v1/token`` and ``/v1/projects/-/serviceAccounts/...`` (before the Secret Manager routes'
    catch-all, though aiohttp's longest-prefix lookup would find them first anyway)."""

    async def token(request: web.Request) -> web.StreamResponse:
        if request.method != "POST":
            return _oauth_error(405, "invalid_request", "The token endpoint only accepts POST.")
        if request.content_type not in (_FORM, "application/json"):
            return _oauth_error(
                400, "invalid_request", f"Expected Content-Type {_FORM} (or application/json)."
            )
        raw = await bounded.read_body(request, sts.MAX_BODY_BYTES)
        if raw is None:
            return _oauth_error(
                413, "invalid_request", f"The request is larger than {sts.MAX_BODY_BYTES} bytes."
            )
        form = parse_form(raw, request.content_type)
        if isinstance(form, str):
            return _oauth_error(400, "invalid_request", form)
        try:
            answer = identity.exchange(form)
        except sts.StsError as error:
            return web.json_response(error.to_json(), status=400, headers=_NO_STORE)
        return web.json_response(answer, headers=_NO_STORE)

    async def service_account(request: web.Request) -> web.StreamResponse:
        try:
            return await _service_account(request)
        except EmulatorError as error:
            return rest.error_response(error)

    async def _service_account(request: web.Request) -> web.StreamResponse:
        account, colon, verb = request.match_info["tail"].rpartition(":")
        if not colon or not account or "/" in account:
            raise rest.not_found(request)
        if verb != "generateAccessToken":
            if verb in ("signBlob", "signJwt", "generateIdToken"):
                raise EmulatorError(grpc.StatusCode.UNIMPLEMENTED, f"Method {verb} is not implemented.")
            raise rest.not_found(request)
        if request.method != "POST":
            raise RestInputError(
                grpc.StatusCode.UNIMPLEMENTED,
                f"HTTP method {request.method} is not allowed on this URL; allowed: POST.",
                http_status=405,
            )
        raw = await bounded.read_body(request, MAX_IAM_BODY_BYTES)
        if raw is None:
            raise RestInputError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Request payload size exceeds the limit: {MAX_IAM_BODY_BYTES} bytes.",
                http_status=413,
            )
        body = _json_body(raw)
        caller = Caller.from_pairs(request.headers.items(), "rest")
        answer = identity.generate_access_token(account, caller, body)
        return web.json_response(answer, headers=_NO_STORE)

    app.router.add_route("*", TOKEN_PATH, token)
    app.router.add_route("*", SERVICE_ACCOUNTS_PREFIX + "{tail:.+}", service_account)


def _json_body(raw: bytes) -> Any:
    if not raw.strip():
        return {}
    try:
        return bounded.loads_json(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, bounded.InputError):
        raise EmulatorError(
            grpc.StatusCode.INVALID_ARGUMENT, "Invalid JSON payload received. The body is not valid JSON."
        ) from None

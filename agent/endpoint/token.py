"""The local endpoint's token: from configuration, from a file, or generated and shared through the volume.

Apps in the same pod read ``<output_dir>/.token`` (mode 0440, like the secret files) when no token was
configured, so the token never has to be copied into a manifest. The token is never logged.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from pathlib import Path

from agent.config import TOKEN_FILE_NAME, ServerConfig
from agent.core.atomicfile import write_atomically
from agent.errors import AgentError

log = logging.getLogger("agent.endpoint.token")

TOKEN_HEADER = "X-Secrets-Agent-Token"  # noqa: S105 - a header name
"""The request header every ``/v1`` request carries the token in."""
TOKEN_FILE_MODE = 0o440
"""Readable by the agent's user and group (containers sharing the volume), writable by nobody."""
MIN_TOKEN_LENGTH = 16
"""Same rule as ``server.token`` in the configuration."""


def resolve_token(server: ServerConfig, output_dir: Path) -> str:
    """The token the endpoint requires: ``server.token``, else ``server.token_file``'s content, else a new
    random token written to ``<output_dir>/.token`` (mode 0440). Raises AgentError for an unusable file."""
    if server.token is not None:
        return server.token
    if server.token_file is not None:
        return read_token_file(server.token_file)
    token = secrets.token_urlsafe(32)
    path = output_dir / TOKEN_FILE_NAME
    try:
        write_token_file(path, token)
    except OSError as error:
        raise AgentError(
            f"cannot write the endpoint token to {path} ({error.strerror or 'I/O error'}); "
            "set server.token or server.token_file instead"
        ) from None
    log.info("generated the endpoint token and wrote it to %s", path)
    return token


def read_token_file(path: Path) -> str:
    """The token in ``path`` without its trailing newline. Errors name the file, never its content."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise AgentError(
            f"server.token_file {path}: cannot read it ({error.strerror or 'I/O error'})"
        ) from None
    try:
        token = raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise AgentError(f"server.token_file {path}: the token is not UTF-8 text") from None
    if len(token) < MIN_TOKEN_LENGTH:
        raise AgentError(
            f"server.token_file {path}: the token must be at least {MIN_TOKEN_LENGTH} characters long"
        )
    if any(c.isspace() or not c.isprintable() for c in token):
        raise AgentError(f"server.token_file {path}: the token must not contain spaces or control characters")
    return token


def write_token_file(path: Path, token: str) -> None:
    """Write ``token`` to ``path`` atomically with mode 0440 (an app polling for the file never reads half a
    token); the directory is created if missing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, token.encode("utf-8"), mode=TOKEN_FILE_MODE)


def token_matches(presented: str, expected: str) -> bool:
    """Constant-time comparison, so response timing does not reveal how much of a guess was right."""
    # surrogatepass: a header can carry any code point; encoding must never raise on attacker input.
    return hmac.compare_digest(
        presented.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )

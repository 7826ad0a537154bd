"""The local endpoint's token: from configuration, from a file, or generated and shared through the volume.

Apps in the same pod read ``<output_dir>/.token`` (mode 0440, like the secret files) when no token was
configured, so the token never has to be copied into a manifest. The token is never logged.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Callable
from pathlib import Path

from agent.config import TOKEN_FILE_NAME, ServerConfig
from agent.core.atomicfile import SHARED_DIR_MODE, make_directories, read_regular_file, write_atomically
from agent.errors import AgentError

log = logging.getLogger("agent.endpoint.token")

TOKEN_HEADER = "X-Secrets-Agent-Token"  # noqa: S105 - a header name
"""The request header every ``/v1`` request carries the token in."""
TOKEN_FILE_MODE = 0o440
"""Readable by the agent's user and group (containers sharing the volume), writable by nobody."""
MIN_TOKEN_LENGTH = 16
"""Same rule as ``server.token`` in the configuration."""
MAX_TOKEN_FILE_BYTES = 4096
"""Largest ``server.token_file`` read."""


def resolve_token(server: ServerConfig, output_dir: Path) -> str:
    """The token the endpoint requires: ``server.token``, else ``server.token_file``'s content, else a new
    random token written to ``<output_dir>/.token`` (mode 0440). Raises AgentError for an unusable file."""
    token, share = prepare_token(server, output_dir)
    share()
    return token


def prepare_token(server: ServerConfig, output_dir: Path) -> tuple[str, Callable[[], None]]:
    """``resolve_token`` in two steps: the token, and the step that shares it (writing ``.token`` for a
    generated one, nothing for a configured one). ``run`` takes that step only once its listeners are
    bound, so an agent that cannot start leaves the token of the one already running alone."""
    if server.token is not None:
        return server.token, _nothing
    if server.token_file is not None:
        return read_token_file(server.token_file), _nothing
    token = secrets.token_urlsafe(32)

    def share() -> None:  # a closure, not a partial: a partial's repr would show the token
        share_token(output_dir / TOKEN_FILE_NAME, token)

    return token, share


def _nothing() -> None:
    pass


def share_token(path: Path, token: str) -> None:
    """Write a generated token to ``path`` for the apps; AgentError (naming the file) when that fails."""
    try:
        write_token_file(path, token)
    except OSError as error:
        raise AgentError(
            f"cannot write the endpoint token to {path} ({error.strerror or 'I/O error'}); "
            "set server.token or server.token_file instead"
        ) from None
    log.info("generated the endpoint token and wrote it to %s", path)


def read_token_file(path: Path) -> str:
    """The token in ``path`` without its trailing newline. Errors name the file, never its content."""
    try:
        # Links followed (a mounted Kubernetes Secret is made of them), but never a FIFO, a device or a
        # file far bigger than any token: reading those would block or fill the memory.
        raw = read_regular_file(path, MAX_TOKEN_FILE_BYTES, follow_links=True)
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
    token); the directory and its missing parents are created 0755 whatever the umask. A link planted at
    ``path`` is replaced, never written through."""
    make_directories(path.parent, SHARED_DIR_MODE)
    write_atomically(path, token.encode("utf-8"), mode=TOKEN_FILE_MODE)


def token_matches(presented: str, expected: str) -> bool:
    """Constant-time comparison, so response timing does not reveal how much of a guess was right."""
    # surrogatepass: a header can carry any code point; encoding must never raise on attacker input.
    return hmac.compare_digest(
        presented.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )


def token_bytes(token: str) -> bytes:
    """The bytes ``raw_token_matches`` compares a presented token with (what a client sends in the header)."""
    return token.encode("utf-8", "surrogatepass")


raw_token_matches: Callable[[bytes, bytes], bool] = hmac.compare_digest
"""``token_matches`` on the raw bytes of the header (``request.raw_headers``) and ``token_bytes`` of the
token, in constant time too, without decoding anything per request (``hmac.compare_digest`` itself: no
Python call around it). The same answer: aiohttp decodes a header as UTF-8, so only the token's own UTF-8
bytes ever matched (a token has no surrogates: it is printable, see ``read_token_file`` and the
configuration's rule)."""

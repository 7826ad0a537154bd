"""The environment of the commands the agent runs (notify and rotation commands): the agent's own, minus
the credentials it holds.

A notify command is often a short script of the app's team, a rotation ``generate`` program a third party's
CLI: neither needs the endpoint token or the database admin URL, and a child's environment is readable in
``/proc/PID/environ`` by its user and ends up in crash reports and ``env`` dumps. Everything else (``PATH``,
``HOME``, ``GOOGLE_APPLICATION_CREDENTIALS``, which names a file, the other ``SECRETS_AGENT_*`` settings) is
inherited as before.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from agent.config.schema import CREDENTIAL_ENV

ADMIN_DSN_ENV = "ADMIN_DSN"
"""The conventional variable holding the database admin URL of ``rotate``'s postgres provider."""

WITHHELD_ENV: frozenset[str] = CREDENTIAL_ENV | {ADMIN_DSN_ENV}
"""Variables no command the agent runs inherits."""


def child_environment(
    base: Mapping[str, str] | None = None, *, withhold: Iterable[str] = ()
) -> dict[str, str]:
    """``base`` (default ``os.environ``) without ``WITHHELD_ENV`` and the names in ``withhold``."""
    source = os.environ if base is None else base
    excluded = WITHHELD_ENV | set(withhold)
    return {name: value for name, value in source.items() if name not in excluded}

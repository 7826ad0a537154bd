"""What one pod's annotations may cost the webhook: how many of ours, how long each key and value, which
characters (pure).

The webhook answers for every pod of the cluster that asks for injection, under ``failurePolicy: Fail``
and the API server's 5 s timeout: a review whose cost a pod can choose would let one pod stall the
injection of all others. Every check here is linear in the text it looks at, and runs before anything
more expensive (the agent's configuration loader), so the rest of a review works on bounded input.
"""

from __future__ import annotations

import re

from agent.config import control_character_problem

MAX_SECRETS = 64
"""Secrets (``secret-<name>`` annotations) per pod."""
MAX_TOTAL = 16 * 1024
"""Characters of all our annotations together (keys after the prefix, and values): 64 secrets with
every option and resource names of about 60 characters take 10 KiB. What a review costs is bounded by this
(``bench/webhook.py``): the agent's configuration loader, which checks them all, costs time in proportion
to its text."""
MAX_PATH_PARTS = 16
"""Components of a file path (``secret-<name>-file``, ``env-file``): checking that no path lies inside
another costs the square of the depth."""
OPTIONS_PER_SECRET = 3
"""``-env``, ``-file``, ``-mode`` (``annotations.SECRET_OPTIONS``)."""
MAX_KEY_LENGTH = 63
"""An annotation name after the ``secrets-agent.io/`` prefix, as Kubernetes limits the name part."""
MAX_PROBLEM_TEXT = 512
"""Characters of one problem in a refusal: a loader message may quote a value up to its length limit."""
MAX_LOGGED = 253
"""Characters of a name from the request in a log line (a pod's name: at most 253 once the API server
has checked it, but the webhook sees the pod first)."""
MAX_SHOWN = 20
"""Problems listed in one refusal; the rest are counted. Past that, a list helps nobody and costs every
reader (the creator's terminal, a controller's events, the audit log)."""

DEFAULT_MAX_VALUE = 255
"""Characters of an annotation value, unless ``MAX_VALUE`` says otherwise."""
MAX_VALUE: dict[str, int] = {
    "output-path": 1024,
    "containers": 4096,  # comma-separated container names of 63 characters at most
    "image": 1024,
    "events-topic": 512,  # projects/<30>/topics/<255>
    # reload-process keeps the default: Python's regular expression parser recurses once per nested group
    # (1,000 '(' exhaust its stack), and the agent's loader compiles the pattern.
    "reload-url": 2048,
    "reload-command": 4096,
}
MAX_REFERENCE = 512
"""A ``secret-<name>`` reference: ``projects/<30>/locations/<L>/secrets/<255>/versions/<V>`` fits."""

_SEPARATORS = re.compile("[\u2028\u2029]")
"""The Unicode line and paragraph separators, which YAML reads as line breaks, like the C0 and C1 controls
(U+0085 among them) that ``control_character_problem`` finds. No annotation of ours needs any of them, and a
newline or NUL in a path, a command or a reference would become another value, or none, on the agent's
side."""


def max_value(key: str, secret_ref: bool) -> int:
    """The longest value the annotation ``key`` (without the prefix) may have."""
    if secret_ref:
        return MAX_REFERENCE
    return MAX_VALUE.get(key, DEFAULT_MAX_VALUE)


def value_problem(value: str, limit: int) -> str | None:
    """What is wrong with a value whatever its annotation (too long, a control character), or None. The
    message never quotes the value: it may be a secret pasted in the wrong place."""
    if len(value) > limit:
        return f"longer than {limit} characters ({len(value)}; value not shown)"
    problem = control_character_problem(value)
    if problem is None and (found := _SEPARATORS.search(value)) is not None:
        problem = (
            f"must not contain a line separator (U+{ord(found[0]):04X}) (at character {found.start() + 1})"
        )
    if problem is not None:
        return f"{problem}: annotation values are single-line text (value not shown)"
    return None


def path_problem(value: str) -> str | None:
    """What is wrong with a file path's shape whatever it names, or None."""
    if value.count("/") >= MAX_PATH_PARTS:
        return f"a path of more than {MAX_PATH_PARTS} components"
    return None


def key_problem(key: str) -> str | None:
    """What is wrong with an annotation name (after the prefix) whatever it names, or None."""
    if len(key) > MAX_KEY_LENGTH:
        return f"the name after the prefix is longer than {MAX_KEY_LENGTH} characters"
    if control_character_problem(key) is not None or _SEPARATORS.search(key) is not None:
        return "the name contains a control character"
    return None


def shown_key(key: str) -> str:
    """``key`` as a refusal may print it: escaped and cut short when it is not a plausible name."""
    if key_problem(key) is None:
        return key
    escaped = key[:MAX_KEY_LENGTH].encode("unicode_escape").decode("ascii")
    return escaped + ("..." if len(key) > MAX_KEY_LENGTH else "")


def shown_value(value: str, limit: int = 64) -> str:
    """``repr(value)``, cut short: for values that are quoted in a refusal (not credentials)."""
    if len(value) <= limit:
        return repr(value)
    return repr(value[:limit]) + f"... ({len(value)} characters)"


def shortened(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, saying so."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def max_annotations(global_keys: int) -> int:
    """The most annotations of ours a pod may carry: every pod-wide one, and each secret with its options."""
    return global_keys + MAX_SECRETS * (1 + OPTIONS_PER_SECRET)

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
MAX_TEMPLATES = 32
"""Templates (``template-<name>`` annotations) per pod."""
MAX_SELECTIONS = 16
"""Selections (``select-<name>`` annotations) per pod: each may cost the webhook a listing at admission
(``agent.webhook.selections``), so a pod can make it list at most this many keys (and the replica's
``--listings-per-minute`` bounds the listings of all pods together)."""
MAX_KNOWN_CHARS = 32 * 1024
"""Characters of the ``known`` ids the webhook writes into one pod's configuration, all selections together
(about 1,000 ids of 30 characters): the configuration is in the pod's spec twice (the init container and
the sidecar), and a pod is at most 1.5 MiB. A selection whose ids would not fit is left for the agent to
list, with a warning."""
MAX_KEY_OUTPUTS = 64
"""Items of all the ``secret-<name>-key-outputs`` lists of a pod together: as many more outputs as there
may be secrets."""
MAX_TOTAL = 16 * 1024
"""Characters of all our annotations together (keys after the prefix, and values), template texts
included: 64 secrets with every option and resource names of about 60 characters take 10 KiB. What a review
costs is bounded by this (``bench/webhook.py``): the agent's configuration loader, which checks them all,
costs time in proportion to its text."""
MAX_TEMPLATE_TEXT = 8 * 1024
"""Characters of one ``template-<name>`` text: a configuration file with its placeholders. Larger templates
belong in the agent's own configuration (``templates[].source``), not in a pod's annotations."""
MAX_TEMPLATE_CODE = 1024
"""Characters of template code (``{{ ... }}``, ``{% ... %}``, ``{# ... #}``, delimiters included) in all the
templates of a pod together, as ``template_code_size`` counts them: about forty placeholders such as
``{{ secrets.db.value }}``. The webhook compiles every template (``agent.render.outputs.check_outputs``):
the sandbox checks and rewrites the tree, and Jinja2 generates and compiles Python, which costs 20 to 80
microseconds per character of code against a tenth of a microsecond per character of the text around it.
Measured over HTTPS with the rest of a pod at the caps, 2 KiB of the densest code (``{{1+1+1+...}}``,
filter chains) took 95 to 135 ms; 1 KiB keeps the review under the 100 ms of ``bench/webhook.py``."""
MAX_PATH_PARTS = 16
"""Components of a file path (``secret-<name>-file``, ``env-file``): checking that no path lies inside
another costs the square of the depth."""
OPTIONS_PER_SECRET = 10
"""``-env``, ``-file``, ``-mode``, ``-key-path``, ``-format``, ``-decode``, ``-deliver``, ``-key-outputs``,
``-impersonate-service-account``, ``-delegates`` (``shaping.SECRET_OPTIONS``)."""
OPTIONS_PER_TEMPLATE = 5
"""``-env``, ``-file``, ``-mode``, ``-format``, ``-secrets`` (``shaping.TEMPLATE_OPTIONS``)."""
OPTIONS_PER_SELECTION = 13
"""``-name-prefix``, ``-name-regex``, ``-project``, ``-location``, ``-env-prefix``, ``-file-prefix``,
``-required``, ``-version``, ``-mode``, ``-format``, ``-key-path``, ``-decode``, ``-deliver``
(``shaping.SELECT_OPTIONS``)."""
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
    "gcp-credentials-file": 1024,
    "gcp-credentials-configmap": 253,  # a ConfigMap's name: a DNS subdomain
    "gcp-token-audience": 1024,
    "gcp-iam-endpoint": 2048,
    # A delegation chain: at most 16 emails (the agent's MAX_DELEGATES) of 254 characters, and separators.
    "gcp-delegates": 4096,
    # Per-secret and per-template annotations, by their pattern (``shaping.pattern_of``).
    "secret-<name>-key-path": 1024,  # the agent's own limit of a key path (MAX_KEY_PATH_CHARS)
    "secret-<name>-key-outputs": 4096,  # a YAML or JSON list of about 64 short items
    "template-<name>": MAX_TEMPLATE_TEXT,
    "template-<name>-secrets": 4096,  # comma-separated secret names of about 60 characters
    "secret-<name>-delegates": 4096,  # as gcp-delegates
    "select-<name>": 2048,  # a label selector: the agent's MAX_LABELS pairs of short keys and values
    "select-<name>-key-path": 1024,  # as secret-<name>-key-path
    # select-<name>-name-regex keeps the default, as reload-process does (the loader compiles it).
}
MAX_REFERENCE = 512
"""A ``secret-<name>`` reference: ``projects/<30>/locations/<L>/secrets/<255>/versions/<V>`` fits."""
MULTILINE = frozenset({"template-<name>", "secret-<name>-key-outputs"})
"""The patterns whose values are text of several lines (a template, a YAML list written with ``|``), which
may hold newlines and tabs; what they hold is read as a whole (Jinja2, YAML), never as one line of the
agent's configuration."""

_SEPARATORS = re.compile("[\u2028\u2029]")
"""The Unicode line and paragraph separators, which YAML reads as line breaks, like the C0 and C1 controls
(U+0085 among them) that ``control_character_problem`` finds. No annotation of ours needs any of them, and a
newline or NUL in a path, a command or a reference would become another value, or none, on the agent's
side."""


def max_value(key: str, secret_ref: bool = False) -> int:
    """The longest value the annotation ``key`` (without the prefix; a per-secret or per-template one by its
    pattern, ``secret-<name>-key-path``) may have."""
    if secret_ref:
        return MAX_REFERENCE
    return MAX_VALUE.get(key, DEFAULT_MAX_VALUE)


def value_problem(value: str, limit: int, *, multiline: bool = False) -> str | None:
    """What is wrong with a value whatever its annotation (too long, a control character), or None. The
    message never quotes the value: it may be a secret pasted in the wrong place. A ``multiline`` value
    (``MULTILINE``) may hold newlines, carriage returns and tabs."""
    if len(value) > limit:
        return f"longer than {limit} characters ({len(value)}; value not shown)"
    problem = control_character_problem(value, allow="\n\r\t" if multiline else "")
    if problem is None and (found := _SEPARATORS.search(value)) is not None:
        problem = (
            f"must not contain a line separator (U+{ord(found[0]):04X}) (at character {found.start() + 1})"
        )
    if problem is not None:
        kind = "text" if multiline else "single-line text"
        return f"{problem}: annotation values are {kind} (value not shown)"
    return None


def path_problem(value: str) -> str | None:
    """What is wrong with a file path's shape whatever it names, or None."""
    if value.count("/") >= MAX_PATH_PARTS:
        return f"a path of more than {MAX_PATH_PARTS} components"
    if value.strip("/") and all(part in ("", ".") for part in value.split("/")):
        # The agent's loader reads "." (and "./") as a file named like the output directory itself.
        return "names the output directory itself, not a file in it"
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
    """The most annotations of ours a pod may carry: every pod-wide one, each secret, each template and
    each selection with its options."""
    return (
        global_keys
        + MAX_SECRETS * (1 + OPTIONS_PER_SECRET)
        + MAX_TEMPLATES * (1 + OPTIONS_PER_TEMPLATE)
        + MAX_SELECTIONS * (1 + OPTIONS_PER_SELECTION)
    )


# -- template code ------------------------------------------------------------------------------------------

_OPENING = re.compile(r"\{[{%#]")
_RAW_BEGIN = re.compile(r"\{%[-+]?\s*raw\s*[-+]?%\}")
_RAW_END = re.compile(r"\{%[-+]?\s*endraw\s*[-+]?%\}")
_CODE_TOKEN = re.compile(
    r"""(?P<run>[^'"()\[\]{}%]+)"""
    r"""|(?P<string>'[^'\\]*(?:\\.[^'\\]*)*'|"[^"\\]*(?:\\.[^"\\]*)*")"""
    r"""|(?P<char>.)""",
    re.DOTALL,
)
"""One step of ``_code_end``: a run of characters that neither open nor close anything, a string literal as
Jinja2's lexer reads one (its closing quote may be escaped), or one other character."""


def template_code_size(text: str, limit: int) -> int:
    """Characters of ``text`` that Jinja2 reads as code: every ``{{ ... }}``, ``{% ... %}`` and
    ``{# ... #}``, delimiters included; counted until more than ``limit`` (the caller's budget) are found,
    so that the cost of counting is bounded by the budget, not by the text.

    Never fewer than Jinja2 reads as code, so that no code passes for text: a block ends where Jinja2's
    lexer ends it, at its closing delimiter outside string literals and brackets (``{{ "}}" }}`` and
    ``{{ {"a": 1}}}`` are one block each), a ``{% raw %}`` section (text to Jinja2, whatever it holds)
    counts whole up to its ``{% endraw %}``, and a block that never ends takes the rest of the text. It may
    count more than Jinja2 would (the inside of a raw section, a block Jinja2 gives up on), which costs a
    legitimate template only some of its budget. One pass, linear in what it counts.
    """
    size, position = 0, 0
    while size <= limit:
        opening = _OPENING.search(text, position)
        if opening is None:
            break
        kind = text[opening.start() + 1]
        if kind == "#":  # comments end at the first "#}", quotes or not, as Jinja2's comment pattern does
            end = text.find("#}", opening.end())
            end = len(text) if end < 0 else end + 2
        elif kind == "%" and _RAW_BEGIN.match(text, opening.start()):
            raw_end = _RAW_END.search(text, opening.end())
            end = len(text) if raw_end is None else raw_end.end()
        else:
            end = _code_end(text, opening.end(), "}" if kind == "{" else "%", limit - size)
        size += end - opening.start()
        position = end
    return size


def _code_end(text: str, position: int, closer: str, budget: int) -> int:
    """Where the block whose body starts at ``position`` ends: after ``closer`` + ``}`` outside strings and
    brackets (Jinja2 does not end a block while a bracket is open), else the end of the text; or wherever
    the scan stops once ``budget`` characters are passed."""
    start, depth, length = position, 0, len(text)
    while position < length and position - start <= budget:
        token = _CODE_TOKEN.match(text, position)
        assert token is not None  # `.` with DOTALL matches any character
        char = token["char"]
        if char is None:
            position = token.end()
            continue
        if depth == 0 and char == closer and text.startswith("}", position + 1):
            return position + 2
        if char in "([{":
            depth += 1
        elif char in ")]}" and depth > 0:
            depth -= 1
        position += 1
    return min(position, length)

"""The per-secret and per-template annotations (pure): their names, each secret's and template's options
gathered by name, and the checks of them that the agent's loader cannot make, because it never sees the
annotations they came from (``agent_config`` then writes them into the agent's configuration).

A secret is ``secret-<name>`` (its reference) with ``-env``, ``-file``, ``-mode`` and the output shaping,
one annotation per setting of the agent's configuration where a setting is one value:

* ``secret-<name>-key-path``, ``-format``, ``-decode``, ``-deliver``: a secret's ``key``, ``format``,
  ``decode`` and ``deliver``. Not ``-key``: ``secret-api-key`` is a secret named ``api-key`` in every pod
  that uses one, and each option is a suffix a secret's name can no longer end with (``SECRET_OPTIONS``);
* ``secret-<name>-impersonate-service-account``, ``-delegates``: the identity the secret is fetched as
  (a secret another team owns), the secret's ``impersonate_service_account`` and ``delegates`` (emails
  separated by commas or spaces, read by the agent's loader as it reads ``SECRETS_AGENT_GCP_DELEGATES``);
* ``secret-<name>-key-outputs``: the secret's ``keys``, as one YAML or JSON list
  (``[{key: username, file: db/username, env: DB_USER}]``), the agent's own words for it. One annotation
  per output was the other way, but a key path (``labels["app.kubernetes.io/name"]``, ``/db/0``) cannot
  be part of an annotation's name, so each output would need a numbered name and up to four annotations:
  four times the annotations to count, and items that are only whole when all four are read. The list is
  bounded like any value (``limits.MAX_VALUE``, ``limits.MAX_KEY_OUTPUTS`` items per pod) and read by
  libyaml's composer, not by the agent's strict pure-Python reader, which costs ten times as much per
  character (8 to 13 microseconds; the same reason ``agent_config`` reads the injected text back with
  libyaml): the strictness that matters is kept here, on the node tree (a list of mappings of text, no
  field twice, only ``KEY_OUTPUT_FIELDS``), and every value is taken as the text that was written
  (``mode: 0440`` is ``"0440"``, never YAML 1.1's octal integer);
* ``template-<name>``: a template's text (Jinja2), with ``-file``, ``-env``, ``-mode``, ``-format`` (then
  the text is empty: the output is the secrets in that format) and ``-secrets`` (a comma-separated list).
  The webhook never renders a template: it compiles it (``check_outputs``: syntax, unknown secrets), and
  what it may cost to compile is bounded by the characters of code in the pod's templates
  (``limits.MAX_TEMPLATE_CODE``), the text around the code costing next to nothing. A template that is
  valid Jinja2 but reaches for what the sandbox forbids (``''.__class__``) is admitted: the agent's
  sandbox refuses it when it renders, and the pod's own agent is the one that pays;
* ``select-<name>``: a selection's label selector (``team=payments,env=*``, the agent's ``labels`` as text;
  empty with ``-name-prefix`` or ``-name-regex``), with the options of ``SELECT_OPTIONS``, each one setting
  of the selection. At most ``limits.MAX_SELECTIONS`` per pod: each may cost the webhook a listing at
  admission (``agent.webhook.selections``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import yaml

from agent.config import RESERVED_FILE_NAMES, reserved_name_reason
from agent.webhook.limits import (
    MAX_KEY_OUTPUTS,
    MAX_SECRETS,
    MAX_SELECTIONS,
    MAX_TEMPLATE_CODE,
    MAX_TEMPLATES,
    path_problem,
    shown_value,
    template_code_size,
)
from agent.webhook.problems import Problems, prefixed

SECRET_KEY = "secret-"  # noqa: S105 - an annotation name prefix
SECRET_OPTIONS = (
    "env",
    "file",
    "mode",
    "key-path",
    "format",
    "decode",
    "deliver",
    "key-outputs",
    "impersonate-service-account",
    "delegates",
)
"""Per-secret options: ``secret-<name>-env`` etc. A secret's own name therefore cannot end in any of them
(``-env``, ``-file``, ``-mode``, ``-key-path``, ``-format``, ``-decode``, ``-deliver``, ``-key-outputs``,
``-impersonate-service-account``, ``-delegates``): ``secret-db-format`` is always the ``format`` of secret
``db``. The identity options are the settings' own names, at the cost of the name's length: an annotation
name has 63 characters after the prefix, so ``secret-<name>-impersonate-service-account`` leaves 28 for
the secret's name."""
TEMPLATE_KEY = "template-"
TEMPLATE_OPTIONS = ("env", "file", "mode", "format", "secrets")
"""Per-template options: ``template-<name>-file`` etc.; a template's name cannot end in any of them."""
SELECT_KEY = "select-"
SELECT_OPTIONS = (
    "name-prefix",
    "name-regex",
    "project",
    "location",
    "env-prefix",
    "file-prefix",
    "required",
    "version",
    "mode",
    "format",
    "key-path",
    "decode",
    "deliver",
)
"""Per-selection options: ``select-<name>-name-prefix`` etc., the settings of a selection (``select[]``)
that are one value each; a selection's name cannot end in any of them. Not the ones a selection's secrets
would need a list for (``rewrite``, ``keys``), nor its own identity (``impersonate_service_account``): the
webhook resolves a selection by listing it as itself (``agent.webhook.selections``), and the listing of a
selection made as another account is that account's to make."""
KEY_OUTPUT_FIELDS = ("key", "file", "env", "mode")
"""The fields of an item of ``secret-<name>-key-outputs``: the agent's ``keys[]`` without ``uid`` and
``gid``, which annotations never set (the webhook decides who owns the files, ``annotations._identity``)."""
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's parser when PyYAML has it, for composing a ``-key-outputs`` list (see the module docstring)."""


@dataclass
class Item:
    """A secret, a template or a selection: its main annotation's value (a reference, a template's text,
    a label selector) and options."""

    name: str
    value: str | None = None
    options: dict[str, str] = field(default_factory=dict)
    refused: bool = False
    """One of its annotations was refused already (too long, a control character, an unreadable list): a
    secret is then a placeholder in the agent configuration (``agent_config``), a template or a selection
    is left out, since the loader would only repeat the problem."""


def parts(key: str) -> tuple[str, str, str | None] | None:
    """``secret-db-key-path`` -> (``secret-``, ``db``, ``key-path``), ``template-url`` -> (``template-``,
    ``url``, None); None for a key that is neither a secret's nor a template's."""
    for family, options in _FAMILIES:
        if key.startswith(family) and key != family:
            rest = key[len(family) :]
            for option in options:
                if rest.endswith("-" + option):
                    return family, rest[: -len(option) - 1], option
            return family, rest, None
    return None


_FAMILIES = ((SECRET_KEY, SECRET_OPTIONS), (TEMPLATE_KEY, TEMPLATE_OPTIONS), (SELECT_KEY, SELECT_OPTIONS))
_NOUNS = {SECRET_KEY: "secret", TEMPLATE_KEY: "template", SELECT_KEY: "selection"}


def pattern_of(key: str) -> str:
    """``secret-db-env`` -> ``secret-<name>-env``, ``template-url`` -> ``template-<name>``; a pod-wide (or
    unknown) key is its own pattern. The names ``limits.MAX_VALUE`` and ``limits.MULTILINE`` know."""
    found = parts(key)
    if found is None:
        return key
    family, _, option = found
    return family + "<name>" + ("" if option is None else "-" + option)


@dataclass(frozen=True)
class Items:
    """A pod's per-item annotations, each family by name (sorted), and the keys of none of them."""

    secrets: dict[str, Item]
    templates: dict[str, Item]
    selections: dict[str, Item]
    unknown: list[str]


def read_items(keys: Iterable[str], ours: Mapping[str, str], problems: Problems) -> Items:
    """``secret-<name>``, ``template-<name>`` and ``select-<name>`` with their options, by name, from
    ``keys`` (well-formed keys that are not pod-wide; ``ours`` holds the accepted values); and the keys
    that are none of them, in the order of ``keys``."""
    found: dict[str, dict[str, Item]] = {family: {} for family, _ in _FAMILIES}
    unknown: list[str] = []
    options: list[tuple[str, str, str, str, str | None]] = []  # (key, family, name, option, value)
    for key in keys:
        value = ours.get(key)  # None: refused already (annotations._Reader._checked)
        key_parts = parts(key)
        if key_parts is None:
            unknown.append(key)
            continue
        family, name, option = key_parts
        if option is None:
            item = found[family].setdefault(name, Item(name))
            item.value, item.refused = value, value is None
        else:
            options.append((key, family, name, option, value))
    for key, family, name, option, value in options:
        items = found[family]
        if name not in items:
            noun, choices = _NOUNS[family], dict(_FAMILIES)[family]
            problems.add(
                key,
                f"no {prefixed(family + name)} annotation for this option (a {noun}'s name cannot end "
                f"in {_alternatives(choices)})",
            )
            continue
        if value is None:
            items[name].refused = True
        else:
            items[name].options[option] = value
    secrets, templates = found[SECRET_KEY], found[TEMPLATE_KEY]
    if len(secrets) > MAX_SECRETS:
        problems.add(SECRET_KEY + "*", f"{len(secrets)} secrets; at most {MAX_SECRETS} are allowed per pod")
    if len(templates) > MAX_TEMPLATES:
        problems.add(
            TEMPLATE_KEY + "*",
            f"{len(templates)} templates; at most {MAX_TEMPLATES} are allowed per pod",
        )
        for template in templates.values():
            template.refused = True  # none is compiled
    selections = found[SELECT_KEY]
    if len(selections) > MAX_SELECTIONS:
        # Each selection may cost the webhook a listing (``agent.webhook.selections``): none is kept.
        problems.add(
            SELECT_KEY + "*",
            f"{len(selections)} selections; at most {MAX_SELECTIONS} are allowed per pod",
        )
        for selection in selections.values():
            selection.refused = True
    return Items(
        {name: secrets[name] for name in sorted(secrets)},
        {name: templates[name] for name in sorted(templates)},
        {name: selections[name] for name in sorted(selections)},
        unknown,
    )


def delivered_secrets(secrets: Mapping[str, Item], problems: Problems) -> set[str]:
    """The secrets whose own file and variable are written: ``-deliver`` is ``true`` (or absent) or
    ``false``, nothing else (like ``inject``: a guess would hide a value, or write one)."""
    delivered: set[str] = set()
    for name, secret in secrets.items():
        value = secret.options.get("deliver", "true")
        lowered = value.strip().lower()
        if lowered not in ("true", "false"):
            problems.add(f"{SECRET_KEY}{name}-deliver", f"expected true or false, got {shown_value(value)}")
            secret.refused = True
        elif lowered == "true":
            delivered.add(name)
    return delivered


def read_key_outputs(secrets: Mapping[str, Item], problems: Problems) -> dict[str, list[dict[str, str]]]:
    """Each secret's ``-key-outputs`` list, read (``_read_list``); a secret whose list cannot be
    read is refused, and all of them when the pod asks for more than ``MAX_KEY_OUTPUTS`` outputs."""
    found: dict[str, list[dict[str, str]]] = {}
    for name, secret in secrets.items():
        text = secret.options.get("key-outputs")
        if text is None or secret.refused:
            continue
        outputs = _read_list(f"{SECRET_KEY}{name}-key-outputs", text, problems)
        if outputs is None:
            secret.refused = True
        else:
            found[name] = outputs
    count = sum(len(outputs) for outputs in found.values())
    if count > MAX_KEY_OUTPUTS:
        problems.add(
            f"{SECRET_KEY}*-key-outputs",
            f"{count} key outputs in all; at most {MAX_KEY_OUTPUTS} are allowed per pod",
        )
        for name in found:
            secrets[name].refused = True
        return {}
    return found


def _read_list(key: str, text: str, problems: Problems) -> list[dict[str, str]] | None:
    """A ``-key-outputs`` value as the items of the agent's ``keys``, or None with the (first) problem
    reported. YAML or JSON, composed by libyaml (see the module docstring); every value is text."""
    try:
        root = yaml.compose(text, Loader=_LOADER)  # nodes only: nothing is constructed
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"line {mark.line + 1}: " if mark is not None and "\n" in text.rstrip("\n") else ""
        problems.add(key, f"{where}invalid YAML: {error.problem or error.context}")
        return None
    except yaml.YAMLError:
        problems.add(key, "invalid YAML")
        return None
    example = "[{key: username, file: db/username, env: DB_USER}]"
    if not isinstance(root, yaml.SequenceNode):
        problems.add(key, f"expected a list of keys such as {example}")
        return None
    if len(root.value) > MAX_KEY_OUTPUTS:
        problems.add(key, f"{len(root.value)} items; at most {MAX_KEY_OUTPUTS} are allowed per pod")
        return None
    outputs: list[dict[str, str]] = []
    for index, node in enumerate(root.value):
        problem, fields = _key_output(node)
        if problem is None and (file := fields.get("file")) is not None:
            why = reserved(file)
            problem = path_problem(file) or (f"{shown_value(file)}: {why}" if why else None)
            problem = None if problem is None else f".file: {problem}"
        if problem is not None:
            problems.add(key, f"[{index}]{problem}")
            return None
        outputs.append(fields)
    return outputs


def _key_output(node: yaml.Node) -> tuple[str | None, dict[str, str]]:
    """One item of a ``-key-outputs`` list: (None, its fields as text), or (the problem, {})."""
    if not isinstance(node, yaml.MappingNode):
        return (
            f": expected a mapping such as {{key: username, file: db/username}}, got {_node_kind(node)}",
            {},
        )
    fields: dict[str, str] = {}
    for name_node, value_node in node.value:
        name = name_node.value if isinstance(name_node, yaml.ScalarNode) else None
        if name not in KEY_OUTPUT_FIELDS:
            shown = _node_kind(name_node) if name is None else shown_value(name)
            return f": unknown field {shown} (an item has {_listing(KEY_OUTPUT_FIELDS, 'and')})", {}
        if name in fields:
            return f".{name}: set twice", {}
        if not isinstance(value_node, yaml.ScalarNode):
            return f".{name}: expected text, got {_node_kind(value_node)}", {}
        fields[name] = value_node.value
    return None, fields


def _node_kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return "a mapping" if isinstance(node, yaml.MappingNode) else "text"


def check_templates(templates: Mapping[str, Item], problems: Problems) -> None:
    """What the loader cannot see in a template's annotations (its text or its format, where its output
    goes, its files), and what compiling them all may cost: problems refuse the template; too much code in
    all refuses every template, so that none is compiled."""
    for name, template in templates.items():
        if template.refused:
            continue
        base = TEMPLATE_KEY + name
        text, options = template.value or "", template.options
        problem: str | None = None
        if "format" in options and text.strip():
            problem = (
                f"must be empty with {prefixed(base + '-format')}: the output is the secrets in that "
                "format, not a template"
            )
        elif "format" not in options and not text.strip():
            problem = f"empty: give the template's text (Jinja2), or set {prefixed(base + '-format')}"
        if problem is not None:
            problems.add(base, problem)
            template.refused = True
            continue
        if "file" not in options and "env" not in options:
            problems.add(
                base,
                f"set {prefixed(base + '-file')}, {prefixed(base + '-env')} or both: where should "
                "the output go?",
            )
        if "secrets" in options and not secret_names(options["secrets"]):
            problems.add(f"{base}-secrets", "expected a comma-separated list of secret names")
            template.refused = True
        if "file" in options and (why := reserved(options["file"])) is not None:
            problems.add(f"{base}-file", f"{shown_value(options['file'])}: {why}")
            template.refused = True
    budget = MAX_TEMPLATE_CODE
    for name, template in templates.items():
        if template.refused or "format" in template.options:
            continue
        budget -= template_code_size(template.value or "", budget)
        if budget >= 0:
            continue
        alone = template_code_size(template.value or "", MAX_TEMPLATE_CODE) > MAX_TEMPLATE_CODE
        problems.add(
            TEMPLATE_KEY + (name if alone else "*"),
            f"{'this template has' if alone else 'the templates have'} more than {MAX_TEMPLATE_CODE} "
            "characters of template code ({{ }}, {% %} and {# #} blocks, delimiters included); at most "
            f"{MAX_TEMPLATE_CODE} are allowed per pod: the webhook compiles every template, and code "
            "costs it time (the text around the code does not count)",
        )
        for other in templates.values():
            other.refused = True
        return


def check_files(secrets: Mapping[str, Item], problems: Problems) -> None:
    """Secret files the agent keeps for itself (``.token``, ``.notified``, ``.selection``, ``..``-names).
    The loader refuses such an explicit ``file``, but a file named after the secret (``secret-.token``) is
    never checked as a file, and a path inside a reserved name (``.token/x``) is not a reserved name."""
    for secret in secrets.values():
        explicit = "file" in secret.options
        path = secret.options.get("file", secret.name)
        why = reserved(path)
        if why is None:
            continue
        if explicit:
            problems.add(f"{SECRET_KEY}{secret.name}-file", f"{shown_value(path)}: {why}")
        else:
            problems.add(
                SECRET_KEY + secret.name,
                f"its file would be {shown_value(path)} (the secret's name): {why}; set "
                f"{prefixed(SECRET_KEY + secret.name + '-file')} to another name",
            )


def reserved(path: str) -> str | None:
    """Why ``path`` (relative to the output directory) would take a name the agent writes itself (the
    names and the reasons are the agent's own, ``agent.config``), or None. A path inside a reserved file
    (``.token/x``) needs it to be a directory: as much a collision as the name itself."""
    pure = PurePosixPath(path)
    reason = reserved_name_reason(pure.as_posix())
    if reason is None and pure.parts and pure.parts[0] in RESERVED_FILE_NAMES:
        reason = f"inside {pure.parts[0]!r}, which is {reserved_name_reason(pure.parts[0])}"
    return reason


def secret_names(value: str) -> list[str]:
    """``db, api`` -> ``["db", "api"]``: a template's ``-secrets``."""
    return [name.strip() for name in value.split(",") if name.strip()]


def _alternatives(options: Sequence[str]) -> str:
    """``-env, -file or -mode``."""
    return _listing(["-" + option for option in options], "or")


def _listing(words: Sequence[str], conjunction: str) -> str:
    """``a, b and c``."""
    return ", ".join(words[:-1]) + f" {conjunction} " + words[-1] if len(words) > 1 else "".join(words)

"""The agent configuration an Injection carries, written from a pod's accepted annotations and checked as
the injected agent will check it (pure: no I/O, no clock).

The text is validated by the agent's own loader (``load_config`` reading ``SECRETS_AGENT_CONFIG_YAML``,
exactly as the injected container will), and its outputs by the agent's own ``check_outputs`` (key paths,
templates), so whatever the webhook admits the agent accepts. Each path of the configuration is noted with
the annotation it came from as the text is written (``problems.Located``), so that the problems of both
(``secrets[1].file``, ``templates[0].text``) are refused naming annotations (``problems.translate``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import yaml

from agent.config import CONFIG_YAML_ENV, Config, SelectSpec, load_config
from agent.errors import ConfigError
from agent.webhook.limits import MAX_SECRETS, shown_value
from agent.webhook.problems import Located, Problems, prefixed, translate
from agent.webhook.settings import CREDENTIALS_FILE
from agent.webhook.shaping import (
    KEY_OUTPUT_FIELDS,
    SECRET_KEY,
    SELECT_KEY,
    TEMPLATE_KEY,
    Item,
    check_files,
    check_templates,
    delivered_secrets,
    read_key_outputs,
    reserved,
    secret_names,
)

# The settings of the agent configuration that annotations set directly: config path -> annotation.
_CONFIG_PATHS = {
    "project": "project",
    "poll_interval": "poll-interval",
    "events.topic": "events-topic",
    "notify.signal": "reload-signal",
    "notify.process": "reload-process",
    "notify.url": "reload-url",
    "notify.command": "reload-command",
    "output_dir": "output-path",
    "env_file": "env-file",
    "gcp.credentials_file": "gcp-credentials-file",
    "gcp.impersonate_service_account": "gcp-impersonate-service-account",
    "gcp.delegates": "gcp-delegates",
    "gcp.quota_project": "gcp-quota-project",
    "gcp.iam_endpoint": "gcp-iam-endpoint",
}
_SECRET_SETTINGS = {
    "env": "env",
    "file": "file",
    "mode": "mode",
    "key-path": "key",
    "format": "format",
    "decode": "decode",
    "impersonate-service-account": "impersonate_service_account",
    "delegates": "delegates",
}
"""Per-secret options whose value is the setting's value, text for text: option -> setting. A delegation
chain stays the text of its annotation (emails separated by commas or spaces), which the agent's loader
reads as it reads ``SECRETS_AGENT_GCP_DELEGATES``: one reading of it, the agent's."""
_SELECT_SETTINGS = {
    "name-prefix": "name_prefix",
    "name-regex": "name_regex",
    "project": "project",
    "location": "location",
    "env-prefix": "env_prefix",
    "file-prefix": "file_prefix",
    "required": "required",
    "version": "version",
    "mode": "mode",
    "format": "format",
    "key-path": "key",
    "decode": "decode",
    "deliver": "deliver",
}
"""Per-selection options, each the text of one setting of ``select[]``: option -> setting. The label
selector is the value of ``select-<name>`` itself (``labels`` as text, as the agent reads it from an
annotation or a variable)."""
_PLACEHOLDER_REF = "projects/placeholder-project/secrets/refused"
"""The reference of a secret whose annotations were refused already: it stays in the configuration the
loader checks (not delivered, so it claims no file and no variable), so that the templates naming it are
checked as they are written instead of being refused for a secret that does exist."""
_DUMPER: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's emitter and parser when PyYAML has them: the same documents, several times faster. The agent
reads the injected text with its own strict pure-Python loader, which a review cannot afford for 64
secrets (three quarters of the review's time); the text the webhook writes is flat, has no duplicate keys
and is read back here to the very mapping it was written from, so both read the same settings."""


@dataclass(frozen=True)
class Written:
    """The agent's configuration for one pod: the YAML text, the mapping it was written from, and the
    selections as the agent's loader read them (empty when it refused the configuration)."""

    text: str
    config: dict[str, Any] = field(default_factory=dict)
    selections: tuple[SelectSpec, ...] = ()


def agent_config(
    ours: Mapping[str, str],
    secrets: Mapping[str, Item],
    templates: Mapping[str, Item],
    output_path: str,
    default_mode: str,
    default_project: str | None,
    problems: Problems,
    *,
    selections: Mapping[str, Item] | None = None,
    fleet_size: int | None = None,
) -> Written:
    """The agent's configuration; problems of the per-secret, per-template and per-selection annotations
    (``shaping``), of the agent's loader and of its check of the outputs (key paths, templates) are added
    to ``problems``, on annotations. ``fleet_size`` is written as ``fleet.size`` when there is a
    selection."""
    selections = selections or {}
    delivered = delivered_secrets(secrets, problems)
    key_outputs = read_key_outputs(secrets, problems)
    written = {name: s for name, s in secrets.items() if not s.refused and name in delivered}
    check_files(written, problems)
    check_templates(templates, problems)
    config: dict[str, Any] = {}
    project = ours.get("project", default_project)
    if project is not None:
        config["project"] = project
    config["output_dir"] = output_path
    config["require_tmpfs"] = True  # the volume is memory-backed: anything else is a mistake
    if "env-file" in ours:
        config["env_file"] = _env_file(ours["env-file"], written, problems)
    if "poll-interval" in ours:
        config["poll_interval"] = ours["poll-interval"]
    notify = {
        path[len("notify.") :]: ours[key]
        for path, key in _CONFIG_PATHS.items()
        if path.startswith("notify.") and key in ours
    }
    if notify:
        config["notify"] = notify
    if "events-topic" in ours:
        config["events"] = {"topic": ours["events-topic"]}
    located = Located({path: (key, "") for path, key in _CONFIG_PATHS.items() if key in ours})
    gcp = {
        path[len("gcp.") :]: ours[key]
        for path, key in _CONFIG_PATHS.items()
        if path.startswith("gcp.") and key in ours
    }
    if "gcp-credentials-configmap" in ours:
        # Mounted by the webhook (mutate); a gcp-credentials-file beside it is refused (annotations).
        gcp["credentials_file"] = CREDENTIALS_FILE
        located.paths["gcp.credentials_file"] = ("gcp-credentials-configmap", "")
    if gcp:
        config["gcp"] = gcp
    _check_identities({name: s for name, s in secrets.items() if not s.refused}, problems)
    config["secrets"] = [
        _secret_item(f"secrets[{index}]", secret, delivered, key_outputs, default_mode, located)
        for index, secret in enumerate(secrets.values())
    ]
    chosen = [template for template in templates.values() if not template.refused]
    if chosen:
        config["templates"] = [
            _template_item(f"templates[{index}]", template, default_mode, located)
            for index, template in enumerate(chosen)
        ]
    selected = [selection for selection in selections.values() if not selection.refused]
    if selected:
        config["select"] = [
            _select_item(f"select[{index}]", selection, default_mode, located)
            for index, selection in enumerate(selected)
        ]
        if fleet_size is not None:
            config["fleet"] = {"size": fleet_size}
    text = dump(config)
    if len(secrets) > MAX_SECRETS:
        return Written(text)  # refused already; the loader's cost grows with the secrets
    reported = problems.annotations()
    # A value pasted in place of a reference or a label selector is never quoted back.
    located.references = {SECRET_KEY + name for name in secrets} | {SELECT_KEY + name for name in selections}
    document = yaml.load(text, Loader=_LOADER)  # noqa: S506 - a safe loader (libyaml's when present)
    if document != config:  # never seen; then the agent's own reading of the text decides
        document = None
    try:
        loaded = load_config(None, {CONFIG_YAML_ENV: text}, {}, document=document)
    except ConfigError as error:
        translate(error.problems, located, ours, reported, problems)
        return Written(text)
    if _shapes_outputs(loaded):
        # Key paths and templates (their syntax, the secrets they name) are understood by the agent's
        # renderer, loaded only for the pods that need it, as the agent's CLI does.
        from agent.render.outputs import check_outputs

        translate(check_outputs(loaded.secrets, loaded.templates), located, ours, reported, problems)
    return Written(text, config, loaded.select)


def dump(config: Mapping[str, Any]) -> str:
    """The configuration's YAML text, as the injected container gets it."""
    return yaml.dump(
        dict(config), Dumper=_DUMPER, sort_keys=False, default_flow_style=False, allow_unicode=True
    )


def _secret_item(
    where: str,
    secret: Item,
    delivered: set[str],
    key_outputs: Mapping[str, list[dict[str, str]]],
    default_mode: str,
    located: Located,
) -> dict[str, Any]:
    """One item of the configuration's ``secrets``, its paths noted in ``located``."""
    base = SECRET_KEY + secret.name
    located.labels[where] = prefixed(base)
    for path in (where, f"{where}.name", f"{where}.ref"):
        located.paths[path] = (base, "")
    if secret.refused:
        return {"name": secret.name, "ref": _PLACEHOLDER_REF, "deliver": False}
    item: dict[str, Any] = {"name": secret.name, "ref": secret.value or ""}
    for option, setting in _SECRET_SETTINGS.items():
        if option in secret.options:
            item[setting] = secret.options[option]
        derived = option == "file" and option not in secret.options  # the loader derives it from name
        located.paths[f"{where}.{setting}"] = (base if derived else f"{base}-{option}", "")
    item.setdefault("mode", default_mode)
    if secret.name not in delivered:
        item["deliver"] = False
    located.paths[f"{where}.deliver"] = (f"{base}-deliver", "")
    outputs = key_outputs.get(secret.name)
    if outputs is not None:
        item["keys"] = outputs
        listed = f"{base}-key-outputs"
        located.paths[f"{where}.keys"] = (listed, "")
        for position in range(len(outputs)):
            at = f"{where}.keys[{position}]"
            located.labels[at] = f"{prefixed(listed)}[{position}]"
            located.paths[at] = (listed, f"[{position}]: ")
            for name in KEY_OUTPUT_FIELDS:
                located.paths[f"{at}.{name}"] = (listed, f"[{position}].{name}: ")
    return item


def _template_item(where: str, template: Item, default_mode: str, located: Located) -> dict[str, Any]:
    """One item of the configuration's ``templates``, its paths noted in ``located``."""
    base = TEMPLATE_KEY + template.name
    located.labels[where] = prefixed(base)
    for path in (where, f"{where}.name", f"{where}.text"):
        located.paths[path] = (base, "")
    located.redundant[f"{where}.text"] = f"template {template.name!r}"
    item: dict[str, Any] = {"name": template.name}
    if "format" not in template.options:
        item["text"] = template.value or ""
    for option in ("file", "env", "mode", "format"):
        if option in template.options:
            item[option] = template.options[option]
        located.paths[f"{where}.{option}"] = (f"{base}-{option}", "")
    item.setdefault("mode", default_mode)
    if "secrets" in template.options:
        names = secret_names(template.options["secrets"])
        item["secrets"] = names
        for path in [f"{where}.secrets"] + [f"{where}.secrets[{i}]" for i in range(len(names))]:
            located.paths[path] = (f"{base}-secrets", "")
    return item


def _select_item(where: str, selection: Item, default_mode: str, located: Located) -> dict[str, Any]:
    """One item of the configuration's ``select``, its paths noted in ``located``."""
    base = SELECT_KEY + selection.name
    located.labels[where] = prefixed(base)
    for path in (where, f"{where}.name", f"{where}.labels"):
        located.paths[path] = (base, "")
    item: dict[str, Any] = {"name": selection.name}
    labels = (selection.value or "").strip()
    if labels:
        item["labels"] = labels  # text: the agent's loader reads KEY=VALUE,KEY=* itself
    for option, setting in _SELECT_SETTINGS.items():
        if option in selection.options:
            item[setting] = selection.options[option]
        located.paths[f"{where}.{setting}"] = (f"{base}-{option}", "")
    item.setdefault("mode", default_mode)
    return item


def _check_identities(secrets: Mapping[str, Item], problems: Problems) -> None:
    """A secret's ``-delegates`` without its ``-impersonate-service-account``, named by annotation (the
    loader would name the configuration's paths)."""
    for secret in secrets.values():
        if "delegates" in secret.options and "impersonate-service-account" not in secret.options:
            base = SECRET_KEY + secret.name
            problems.add(
                f"{base}-delegates",
                f"needs {prefixed(base + '-impersonate-service-account')}: a delegation chain leads to an "
                "impersonated account",
            )


def _env_file(value: str, secrets: Mapping[str, Item], problems: Problems) -> str:
    """``env-file``, checked against the files of the delivered ``secrets``, which the loader cannot do
    for a file named after its secret."""
    parts = value.split("/")
    if value.startswith("/") or any(p in ("", ".", "..") for p in parts):
        problems.add(
            "env-file",
            f"expected a file name relative to the output path such as app.env, got {shown_value(value)}",
        )
        return value
    if (why := reserved(value)) is not None:
        problems.add("env-file", f"{shown_value(value)}: {why}")
        return value
    # The env file shares the output directory (and its atomic swap) with the secrets: the same path,
    # or one inside the other, would have to be a file and a directory at once.
    for secret in secrets.values():
        file = str(PurePosixPath(secret.options.get("file", secret.name)))  # as the loader reads it
        if file == value:
            problems.add(
                "env-file",
                f"{shown_value(value)} is also the file of {prefixed(SECRET_KEY + secret.name)}",
            )
        elif value.startswith(file + "/") or file.startswith(value + "/"):
            problems.add(
                "env-file",
                f"{shown_value(value)} and {shown_value(file)}, the file of "
                f"{prefixed(SECRET_KEY + secret.name)}, would be one inside the other",
            )
    return value


def _shapes_outputs(config: Config) -> bool:
    """Whether the configuration has outputs only the agent's renderer understands (as the agent's CLI
    decides when to check them)."""
    return bool(config.templates) or any(spec.key is not None or spec.keys for spec in config.secrets)

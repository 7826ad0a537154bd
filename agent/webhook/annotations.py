"""A pod's ``secrets-agent.io/`` annotations -> an Injection plan, or every problem, each naming its
annotation (pure: no I/O, no clock).

The agent configuration the plan carries is validated by the agent's own loader (``load_config`` reading
``SECRETS_AGENT_CONFIG_YAML``, exactly as the injected container will), and its outputs by the agent's own
``check_outputs`` (key paths, templates), so whatever the webhook admits the agent accepts; their problem
paths (``secrets[1].file``, ``templates[0].text``) are translated back to annotation names.

Output shaping, one annotation per setting of the agent's configuration where a setting is one value:

* ``secret-<name>-key-path``, ``-format``, ``-decode``, ``-deliver``: a secret's ``key``, ``format``,
  ``decode`` and ``deliver``. Not ``-key``: ``secret-api-key`` is a secret named ``api-key`` in every pod
  that uses one, and each option is a suffix a secret's name can no longer end with (``SECRET_OPTIONS``);
* ``secret-<name>-key-outputs``: the secret's ``keys``, as one YAML or JSON list
  (``[{key: username, file: db/username, env: DB_USER}]``), the agent's own words for it. One annotation
  per output was the other way, but a key path (``labels["app.kubernetes.io/name"]``, ``/db/0``) cannot
  be part of an annotation's name, so each output would need a numbered name and up to four annotations:
  four times the annotations to count, and items that are only whole when all four are read. The list is
  bounded like any value (``limits.MAX_VALUE``, ``limits.MAX_KEY_OUTPUTS`` items per pod) and read by
  libyaml's composer, not by the agent's strict pure-Python reader, which costs ten times as much per
  character (8 to 13 microseconds; the same reason ``_LOADER`` reads the injected text back): the
  strictness that matters is kept here, on the node tree (a list of mappings of text, no field twice, only
  ``KEY_OUTPUT_FIELDS``), and every value is taken as the text that was written (``mode: 0440`` is
  ``"0440"``, never YAML 1.1's octal integer);
* ``template-<name>``: a template's text (Jinja2), with ``-file``, ``-env``, ``-mode``, ``-format`` (then
  the text is empty: the output is the secrets in that format) and ``-secrets`` (a comma-separated list).
  The webhook never renders a template: it compiles it (``check_outputs``: syntax, unknown secrets), and
  what it may cost to compile is bounded by the characters of code in the pod's templates
  (``limits.MAX_TEMPLATE_CODE``), the text around the code costing next to nothing. A template that is
  valid Jinja2 but reaches for what the sandbox forbids (``''.__class__``) is admitted: the agent's
  sandbox refuses it when it renders, and the pod's own agent is the one that pays.
"""

from __future__ import annotations

import difflib
import posixpath
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import yaml

from agent.config import (
    CONFIG_YAML_ENV,
    RESERVED_FILE_NAMES,
    Config,
    load_config,
    reserved_name_reason,
)
from agent.errors import AgentError, ConfigError, Problem
from agent.webhook.limits import (
    MAX_KEY_OUTPUTS,
    MAX_PROBLEM_TEXT,
    MAX_SECRETS,
    MAX_SHOWN,
    MAX_TEMPLATE_CODE,
    MAX_TEMPLATES,
    MAX_TOTAL,
    MULTILINE,
    key_problem,
    max_annotations,
    max_value,
    path_problem,
    shortened,
    shown_key,
    shown_value,
    template_code_size,
    value_problem,
)
from agent.webhook.quantity import parse_quantity
from agent.webhook.settings import (
    AGENT_CONTAINER,
    AGENT_USER,
    INIT_CONTAINER,
    INJECTED,
    INJECTION_MODES,
    PREFIX,
    InjectionMode,
    InjectorSettings,
    Resources,
)

# Pod-wide annotations (after the prefix). Per-secret ones are "secret-<name>[-<option>]", per-template
# ones "template-<name>[-<option>]".
GLOBAL_KEYS = (
    "inject",
    "status",
    "mode",
    "image",
    "project",
    "output-path",
    "env-file",
    "containers",
    "poll-interval",
    "events-topic",
    "reload-signal",
    "reload-process",
    "reload-url",
    "reload-command",
    "cpu-request",
    "memory-request",
    "cpu-limit",
    "memory-limit",
)
SECRET_KEY = "secret-"  # noqa: S105 - an annotation name prefix
SECRET_OPTIONS = ("env", "file", "mode", "key-path", "format", "decode", "deliver", "key-outputs")
"""Per-secret options: ``secret-<name>-env`` etc. A secret's own name therefore cannot end in any of them
(``-env``, ``-file``, ``-mode``, ``-key-path``, ``-format``, ``-decode``, ``-deliver``, ``-key-outputs``):
``secret-db-format`` is always the ``format`` of secret ``db``."""
TEMPLATE_KEY = "template-"
TEMPLATE_OPTIONS = ("env", "file", "mode", "format", "secrets")
"""Per-template options: ``template-<name>-file`` etc.; a template's name cannot end in any of them."""
KEY_OUTPUT_FIELDS = ("key", "file", "env", "mode")
"""The fields of an item of ``secret-<name>-key-outputs``: the agent's ``keys[]`` without ``uid`` and
``gid``, which annotations never set (the webhook decides who owns the files, ``_identity``)."""
DEFAULT_OUTPUT_PATH = "/secrets"

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
}
_SECRET_SETTINGS = {
    "env": "env",
    "file": "file",
    "mode": "mode",
    "key-path": "key",
    "format": "format",
    "decode": "decode",
}
"""Per-secret options whose value is the setting's value, text for text: option -> setting."""
_RESOURCE_KEYS = {
    "cpu-request": "cpu_request",
    "memory-request": "memory_request",
    "cpu-limit": "cpu_limit",
    "memory-limit": "memory_limit",
}
_IMAGE = re.compile(r"[^\s]+")
_CONFIG_ITEM = re.compile(r"(?:secrets|templates)\[[0-9]+\](?:\.keys\[[0-9]+\])?")
"""The configuration's names of secrets, their keys and templates, as the loader's messages mention them
(``also used by secrets[0].keys[1]``)."""
_PLACEHOLDER_REF = "projects/placeholder-project/secrets/refused"
"""The reference of a secret whose annotations were refused already: it stays in the configuration the
loader checks (not delivered, so it claims no file and no variable), so that the templates naming it are
checked as they are written instead of being refused for a secret that does exist."""
_UNQUOTED = ("reload-url", "reload-command")
"""Annotations whose value may carry a credential (a URL's user:password, a token on a command line); the
``secret-<name>`` references join them, since a secret's value pasted in place of its reference is the
likeliest mistake of all. The refusal message travels further than the pod (the creator's terminal, a
controller's FailedCreate events, the API server's audit log), so it names these annotations without
quoting their values."""
NOT_SHOWN = "(value not shown)"
_DUMPER: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's emitter and parser when PyYAML has them: the same documents, several times faster. The agent
reads the injected text with its own strict pure-Python loader, which a review cannot afford for 64
secrets (three quarters of the review's time); the text the webhook writes is flat, has no duplicate keys
and is read back here to the very mapping it was written from, so both read the same settings."""


@dataclass(frozen=True)
class AnnotationProblem:
    """One invalid annotation: its full key and what is wrong with it."""

    annotation: str
    message: str

    def __str__(self) -> str:
        return f"{self.annotation}: {self.message}"


class InvalidAnnotations(AgentError):
    """The pod's annotations cannot be honoured; the pod is refused with every problem."""

    def __init__(self, problems: Iterable[AnnotationProblem]) -> None:
        self.problems = tuple(sorted(problems, key=lambda p: p.annotation))
        shown = [shortened(str(p), MAX_PROBLEM_TEXT) for p in self.problems[:MAX_SHOWN]]
        if len(self.problems) > MAX_SHOWN:
            shown.append(f"and {len(self.problems) - MAX_SHOWN} more problems")
        super().__init__("; ".join(shown))

    @property
    def annotations(self) -> tuple[str, ...]:
        """The keys of the invalid annotations (for logs: the messages may quote the values)."""
        return tuple(dict.fromkeys(p.annotation for p in self.problems))


@dataclass(frozen=True)
class Injection:
    """What to inject into one pod; ``mutate`` turns it into a JSONPatch."""

    mode: InjectionMode
    image: str
    output_path: str
    """Where the volume is mounted, in the agent and in every container of ``mounted``."""
    mounted: tuple[str, ...]
    """Names of the pod's containers (and init containers) that get the volume, read-only."""
    resources: Resources
    config_text: str
    """The agent configuration (YAML), injected as ``SECRETS_AGENT_CONFIG_YAML``."""
    share_process_namespace: bool
    """A signal reload was asked for: the agent must see the app's processes."""
    user: int
    group: int
    """The injected containers' user and group (see ``_identity``)."""
    size_limit: str = "16Mi"
    """``sizeLimit`` of the memory-backed volume."""
    warnings: tuple[str, ...] = ()
    """Shown to whoever created the pod (AdmissionResponse warnings)."""


def prefixed(key: str) -> str:
    return PREFIX + key


def injection_requested(pod: Mapping[str, Any]) -> bool:
    """Whether ``secrets-agent.io/inject`` says true. Raises InvalidAnnotations for a value that is neither
    true nor false: guessing could start an app without its secrets, or inject into one that opted out."""
    value = _annotations(pod).get(prefixed("inject"))
    if value is None:
        return False
    lowered = value.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    raise InvalidAnnotations(
        [AnnotationProblem(prefixed("inject"), f"expected true or false, got {shown_value(value)}")]
    )


def already_injected(pod: Mapping[str, Any]) -> bool:
    """The marker annotation, or one of our containers (e.g. a pod template copied from a running pod)."""
    if _annotations(pod).get(prefixed("status")) == INJECTED:
        return True
    spec = pod.get("spec") or {}
    names = {c.get("name") for c in (spec.get("containers") or []) + (spec.get("initContainers") or [])}
    return AGENT_CONTAINER in names or INIT_CONTAINER in names


def read_injection(pod: Mapping[str, Any], settings: InjectorSettings) -> Injection:
    """The plan for a pod that asked for injection; raises InvalidAnnotations with every problem."""
    reader = _Reader(pod, settings)
    injection = reader.read()
    if reader.problems:
        raise InvalidAnnotations(reader.problems)
    assert injection is not None
    return injection


@dataclass
class _Item:
    """A secret or a template: its main annotation's value (a reference, a template's text) and options."""

    name: str
    value: str | None = None
    options: dict[str, str] = field(default_factory=dict)
    refused: bool = False
    """One of its annotations was refused already (too long, a control character, an unreadable list): a
    secret is then a placeholder in the agent configuration (``_PLACEHOLDER_REF``), a template is left out,
    since the loader would only repeat the problem."""


@dataclass
class _Reader:
    pod: Mapping[str, Any]
    settings: InjectorSettings
    problems: list[AnnotationProblem] = field(default_factory=list)
    present: set[str] = field(default_factory=set)
    """Every well-formed key of ours, its value accepted or not (``ours`` holds the accepted ones)."""
    unknown: list[str] = field(default_factory=list)

    def problem(self, key: str, message: str) -> None:
        self.problems.append(AnnotationProblem(prefixed(key), message))

    def read(self) -> Injection | None:
        ours = {k[len(PREFIX) :]: v for k, v in _annotations(self.pod).items() if k.startswith(PREFIX)}
        limit = max_annotations(len(GLOBAL_KEYS))
        if len(ours) > limit:
            # Refused before any per-key work: what a review costs must not grow with what a pod sends.
            self.problem(
                "*",
                f"{len(ours)} annotations under {PREFIX}; at most {limit} are allowed (the pod-wide ones, "
                f"{MAX_SECRETS} secrets with their {len(SECRET_OPTIONS)} options and {MAX_TEMPLATES} "
                f"templates with their {len(TEMPLATE_OPTIONS)})",
            )
            return None
        total = sum(len(key) + len(value) for key, value in ours.items())
        if total > MAX_TOTAL:
            self.problem(
                "*",
                f"{total} characters in the annotations under {PREFIX} (names after the prefix, and "
                f"values); at most {MAX_TOTAL} are allowed",
            )
            return None
        ours = self._checked(ours)
        secrets, templates = self._items(ours)
        self._report_unknown()
        mode = self._mode(ours.get("mode"))
        image = ours.get("image", self.settings.image)
        if not _IMAGE.fullmatch(image):
            self.problem("image", f"expected an image reference without spaces, got {shown_value(image)}")
        output_path = self._output_path(ours.get("output-path", DEFAULT_OUTPUT_PATH))
        mounted = self._mounted(ours.get("containers"), output_path)
        resources = self._resources(ours)
        if "reload-signal" in self.present and "reload-process" not in self.present:
            self.problem(
                "reload-signal",
                f"needs {prefixed('reload-process')} (a regular expression matching the app's command "
                "line) to know which process to signal",
            )
        if not secrets:
            self.problem(
                "inject", f"no secret to deliver: add {prefixed('secret-<name>')}: <reference> annotations"
            )
        app_user, app_group, fs_group = _identity(self.pod, mounted)
        user = app_user or AGENT_USER
        group = fs_group or app_group or AGENT_USER
        private = app_user is not None or app_group is not None or fs_group is not None
        warnings: list[str] = []
        if not private:
            warnings.append(
                "secrets-agent: the pod declares no runAsUser, runAsGroup or fsGroup, so secret files are "
                "written readable by every user of the containers that mount them (0444); set "
                "securityContext.fsGroup to keep them 0440"
            )
        if "reload-process" in self.present and app_user is None:
            warnings.append(
                f"{prefixed('reload-process')}: the app's runAsUser is not declared; the agent runs as uid "
                f"{AGENT_USER} and can signal only processes of that user"
            )
        config_text = self._agent_config(ours, secrets, templates, output_path, "0440" if private else "0444")
        if self.problems:
            return None
        return Injection(
            mode=mode,
            image=image,
            output_path=output_path,
            mounted=mounted,
            resources=resources,
            config_text=config_text,
            share_process_namespace="reload-process" in ours,
            user=user,
            group=group,
            size_limit=self.settings.volume_size,
            warnings=tuple(warnings),
        )

    # -- single annotations -----------------------------------------------------------------------------

    def _checked(self, ours: Mapping[str, str]) -> dict[str, str]:
        """The annotations whose key and value pass the checks every annotation gets (length, control
        characters); the others are reported here, and only their keys (in ``present``) are kept."""
        accepted: dict[str, str] = {}
        for key, value in ours.items():
            if (problem := key_problem(key)) is not None:
                self.problems.append(AnnotationProblem(PREFIX + shown_key(key), problem))
                continue
            self.present.add(key)
            pattern = pattern_of(key)
            problem = value_problem(
                value, max_value(pattern, pattern == "secret-<name>"), multiline=pattern in MULTILINE
            )
            if problem is None and pattern in ("env-file", "secret-<name>-file", "template-<name>-file"):
                problem = path_problem(value)
            if problem is not None:
                self.problem(key, problem)
                continue
            accepted[key] = value
        return accepted

    def _items(self, ours: Mapping[str, str]) -> tuple[dict[str, _Item], dict[str, _Item]]:
        """``secret-<name>`` and ``template-<name>`` with their options, by name; unknown keys are noted
        here too."""
        found: dict[str, dict[str, _Item]] = {SECRET_KEY: {}, TEMPLATE_KEY: {}}
        options: list[tuple[str, str, str, str, str | None]] = []  # (key, family, name, option, value)
        for key in sorted(self.present):
            value = ours.get(key)  # None: refused by _checked
            if key in GLOBAL_KEYS:
                continue
            parts = _parts(key)
            if parts is None:
                self.unknown.append(key)
                continue
            family, name, option = parts
            if option is None:
                item = found[family].setdefault(name, _Item(name))
                item.value, item.refused = value, value is None
            else:
                options.append((key, family, name, option, value))
        for key, family, name, option, value in options:
            items = found[family]
            if name not in items:
                noun, choices = (
                    ("secret", SECRET_OPTIONS) if family == SECRET_KEY else ("template", TEMPLATE_OPTIONS)
                )
                self.problem(
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
            self.problem(
                SECRET_KEY + "*", f"{len(secrets)} secrets; at most {MAX_SECRETS} are allowed per pod"
            )
        if len(templates) > MAX_TEMPLATES:
            self.problem(
                TEMPLATE_KEY + "*",
                f"{len(templates)} templates; at most {MAX_TEMPLATES} are allowed per pod",
            )
            for template in templates.values():
                template.refused = True  # none is compiled
        return (
            {name: secrets[name] for name in sorted(secrets)},
            {name: templates[name] for name in sorted(templates)},
        )

    def _report_unknown(self) -> None:
        """One problem per unknown key; a suggestion for those a refusal can show (the first MAX_SHOWN in
        the order problems are listed), each computed against our fixed keys only: linear in the keys."""
        for index, key in enumerate(sorted(self.unknown)):
            close = _suggestion(key) if index < MAX_SHOWN else None
            hint = f" (did you mean {prefixed(close)}?)" if close else ""
            self.problem(key, f"unknown annotation{hint}")

    def _mode(self, value: str | None) -> InjectionMode:
        if value is None:
            return self.settings.default_mode
        for mode in INJECTION_MODES:
            if value.strip().lower() == mode:
                return mode
        self.problem("mode", f"expected one of {', '.join(INJECTION_MODES)}, got {shown_value(value)}")
        return self.settings.default_mode

    def _output_path(self, value: str) -> str:
        if (
            not value.startswith("/")
            or value == "/"
            or value.startswith("//")  # normpath keeps a leading "//" (POSIX leaves its meaning open)
            or posixpath.normpath(value) != value
            or ".." in value.split("/")
        ):
            self.problem(
                "output-path",
                f"expected an absolute, normalised directory such as /secrets, got {shown_value(value)}",
            )
        return value

    def _mounted(self, value: str | None, output_path: str) -> tuple[str, ...]:
        spec = self.pod.get("spec") or {}
        app = [c["name"] for c in spec.get("containers") or []]
        init = [c["name"] for c in spec.get("initContainers") or []]
        by_name = {c["name"]: c for c in (spec.get("initContainers") or []) + (spec.get("containers") or [])}
        if value is None:
            chosen = app
        else:
            chosen = [name.strip() for name in value.split(",") if name.strip()]
            if not chosen:
                self.problem("containers", "expected a comma-separated list of container names")
            missing = list(dict.fromkeys(name for name in chosen if name not in by_name))
            if missing:
                # One problem for all of them, each list cut short: a pod may have many containers.
                self.problem(
                    "containers",
                    f"the pod has no container {_listed(missing)} (containers: {_listed(app)}; "
                    f"init containers: {_listed(init)})",
                )
        mounted = tuple(dict.fromkeys(name for name in chosen if name in by_name))
        for name in mounted:
            for mount in by_name[name].get("volumeMounts") or []:
                if posixpath.normpath(str(mount.get("mountPath", ""))) == output_path:
                    self.problem(
                        "output-path",
                        f"container {shown_value(name)} already mounts volume "
                        f"{shown_value(str(mount.get('name')))} at {output_path}",
                    )
        return mounted

    def _resources(self, ours: Mapping[str, str]) -> Resources:
        defaults = self.settings.resources
        values: dict[str, str | None] = {
            attr: getattr(defaults, attr)
            for attr in ("cpu_request", "memory_request", "cpu_limit", "memory_limit")
        }
        parsed: dict[str, Any] = {}
        for key, attr in _RESOURCE_KEYS.items():
            if key in ours:
                values[attr] = ours[key]
            text = values[attr]
            if text is None:
                continue
            try:
                parsed[attr] = parse_quantity(text)
            except ValueError as error:
                self.problem(key, str(error))
        for resource in ("cpu", "memory"):
            request, limit = parsed.get(f"{resource}_request"), parsed.get(f"{resource}_limit")
            if request is not None and limit is not None and request > limit:
                key = f"{resource}-request" if f"{resource}-request" in ours else f"{resource}-limit"
                self.problem(
                    key,
                    f"the {resource} request {values[f'{resource}_request']} is more than the limit "
                    f"{values[f'{resource}_limit']}",
                )
        return Resources(**values)

    # -- the agent configuration ------------------------------------------------------------------------

    def _agent_config(
        self,
        ours: Mapping[str, str],
        secrets: Mapping[str, _Item],
        templates: Mapping[str, _Item],
        output_path: str,
        default_mode: str,
    ) -> str:
        """The agent's configuration as YAML; problems of the agent's loader and of its check of the
        outputs (key paths, templates) become annotation problems."""
        delivered = self._delivered(secrets)
        key_outputs = self._key_outputs(secrets)
        written = {name: s for name, s in secrets.items() if not s.refused and name in delivered}
        self._files(written)
        self._templates(templates)
        config: dict[str, Any] = {}
        project = ours.get("project", self.settings.project)
        if project is not None:
            config["project"] = project
        config["output_dir"] = output_path
        config["require_tmpfs"] = True  # the volume is memory-backed: anything else is a mistake
        if "env-file" in ours:
            config["env_file"] = self._env_file(ours["env-file"], written)
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
        located = _Located({path: (key, "") for path, key in _CONFIG_PATHS.items() if key in ours})
        config["secrets"] = [
            self._secret_item(f"secrets[{index}]", secret, delivered, key_outputs, default_mode, located)
            for index, secret in enumerate(secrets.values())
        ]
        chosen = [template for template in templates.values() if not template.refused]
        if chosen:
            config["templates"] = [
                _template_item(f"templates[{index}]", template, default_mode, located)
                for index, template in enumerate(chosen)
            ]
        text = yaml.dump(
            config, Dumper=_DUMPER, sort_keys=False, default_flow_style=False, allow_unicode=True
        )
        if len(secrets) > MAX_SECRETS:
            return text  # refused already; the loader's cost grows with the secrets
        reported = {p.annotation for p in self.problems}
        located.references = {SECRET_KEY + name for name in secrets}
        document = yaml.load(text, Loader=_LOADER)  # noqa: S506 - a safe loader (libyaml's when present)
        if document != config:  # never seen; then the agent's own reading of the text decides
            document = None
        try:
            loaded = load_config(None, {CONFIG_YAML_ENV: text}, {}, document=document)
        except ConfigError as error:
            self._translate(error.problems, located, ours, reported)
            return text
        if _shapes_outputs(loaded):
            # Key paths and templates (their syntax, the secrets they name) are understood by the agent's
            # renderer, loaded only for the pods that need it, as the agent's CLI does.
            from agent.render.outputs import check_outputs

            self._translate(check_outputs(loaded.secrets, loaded.templates), located, ours, reported)
        return text

    def _secret_item(
        self,
        where: str,
        secret: _Item,
        delivered: set[str],
        key_outputs: Mapping[str, list[dict[str, str]]],
        default_mode: str,
        located: _Located,
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

    def _translate(
        self, problems: Iterable[Problem], located: _Located, ours: Mapping[str, str], reported: set[str]
    ) -> None:
        """Problems of the agent's configuration, each on the annotation its path came from."""
        for problem in problems:
            at = located.paths.get(problem.path)
            if at is None:  # a setting no annotation maps to: a bug here, reported rather than hidden
                self.problem("inject", f"agent configuration {problem}")
                continue
            key, prefix = at
            if prefixed(key) in reported:
                continue  # the webhook's own check of that annotation said it first
            message = problem.message
            redundant = located.redundant.get(problem.path)
            if redundant is not None and message.startswith(redundant):
                message = message[len(redundant) :].lstrip(":").lstrip()  # "line 2: unknown secret 'dbb'"
            message = prefix + _CONFIG_ITEM.sub(lambda m: located.labels.get(m[0], m[0]), message)
            value = ours.get(key)
            if value and (key in _UNQUOTED or key in located.references):
                message = _without_value(message, value)
            self.problem(key, message)

    def _delivered(self, secrets: Mapping[str, _Item]) -> set[str]:
        """The secrets whose own file and variable are written: ``-deliver`` is ``true`` (or absent) or
        ``false``, nothing else (like ``inject``: a guess would hide a value, or write one)."""
        delivered: set[str] = set()
        for name, secret in secrets.items():
            value = secret.options.get("deliver", "true")
            lowered = value.strip().lower()
            if lowered not in ("true", "false"):
                self.problem(
                    f"{SECRET_KEY}{name}-deliver", f"expected true or false, got {shown_value(value)}"
                )
                secret.refused = True
            elif lowered == "true":
                delivered.add(name)
        return delivered

    def _key_outputs(self, secrets: Mapping[str, _Item]) -> dict[str, list[dict[str, str]]]:
        """Each secret's ``-key-outputs`` list, read (``_read_key_outputs``); a secret whose list cannot be
        read is refused, and all of them when the pod asks for more than ``MAX_KEY_OUTPUTS`` outputs."""
        found: dict[str, list[dict[str, str]]] = {}
        for name, secret in secrets.items():
            text = secret.options.get("key-outputs")
            if text is None or secret.refused:
                continue
            outputs = self._read_key_outputs(f"{SECRET_KEY}{name}-key-outputs", text)
            if outputs is None:
                secret.refused = True
            else:
                found[name] = outputs
        count = sum(len(outputs) for outputs in found.values())
        if count > MAX_KEY_OUTPUTS:
            self.problem(
                f"{SECRET_KEY}*-key-outputs",
                f"{count} key outputs in all; at most {MAX_KEY_OUTPUTS} are allowed per pod",
            )
            for name in found:
                secrets[name].refused = True
            return {}
        return found

    def _read_key_outputs(self, key: str, text: str) -> list[dict[str, str]] | None:
        """A ``-key-outputs`` value as the items of the agent's ``keys``, or None with the (first) problem
        reported. YAML or JSON, composed by libyaml (see the module docstring); every value is text."""
        try:
            root = yaml.compose(text, Loader=_LOADER)  # nodes only: nothing is constructed
        except yaml.MarkedYAMLError as error:
            mark = error.problem_mark or error.context_mark
            where = f"line {mark.line + 1}: " if mark is not None and "\n" in text.rstrip("\n") else ""
            self.problem(key, f"{where}invalid YAML: {error.problem or error.context}")
            return None
        except yaml.YAMLError:
            self.problem(key, "invalid YAML")
            return None
        example = "[{key: username, file: db/username, env: DB_USER}]"
        if not isinstance(root, yaml.SequenceNode):
            self.problem(key, f"expected a list of keys such as {example}")
            return None
        if len(root.value) > MAX_KEY_OUTPUTS:
            self.problem(key, f"{len(root.value)} items; at most {MAX_KEY_OUTPUTS} are allowed per pod")
            return None
        outputs: list[dict[str, str]] = []
        for index, node in enumerate(root.value):
            problem, fields = _key_output(node)
            if problem is None and (file := fields.get("file")) is not None:
                reserved = _reserved(file)
                problem = path_problem(file) or (f"{shown_value(file)}: {reserved}" if reserved else None)
                problem = None if problem is None else f".file: {problem}"
            if problem is not None:
                self.problem(key, f"[{index}]{problem}")
                return None
            outputs.append(fields)
        return outputs

    def _templates(self, templates: Mapping[str, _Item]) -> None:
        """What the loader cannot see in a template's annotations (its text or its format, where its output
        goes, its files), and what compiling them all may cost: problems refuse the template; too much
        code in all refuses every template, so that none is compiled."""
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
                self.problem(base, problem)
                template.refused = True
                continue
            if "file" not in options and "env" not in options:
                self.problem(
                    base,
                    f"set {prefixed(base + '-file')}, {prefixed(base + '-env')} or both: where should "
                    "the output go?",
                )
            if "secrets" in options and not _names(options["secrets"]):
                self.problem(f"{base}-secrets", "expected a comma-separated list of secret names")
                template.refused = True
            if "file" in options and (reserved := _reserved(options["file"])) is not None:
                self.problem(f"{base}-file", f"{shown_value(options['file'])}: {reserved}")
                template.refused = True
        budget = MAX_TEMPLATE_CODE
        for name, template in templates.items():
            if template.refused or "format" in template.options:
                continue
            budget -= template_code_size(template.value or "", budget)
            if budget >= 0:
                continue
            alone = template_code_size(template.value or "", MAX_TEMPLATE_CODE) > MAX_TEMPLATE_CODE
            self.problem(
                TEMPLATE_KEY + (name if alone else "*"),
                f"{'this template has' if alone else 'the templates have'} more than {MAX_TEMPLATE_CODE} "
                "characters of template code ({{ }}, {% %} and {# #} blocks, delimiters included); at most "
                f"{MAX_TEMPLATE_CODE} are allowed per pod: the webhook compiles every template, and code "
                "costs it time (the text around the code does not count)",
            )
            for other in templates.values():
                other.refused = True
            return

    def _files(self, secrets: Mapping[str, _Item]) -> None:
        """Secret files the agent keeps for itself (``.token``, ``.notified``, ``..``-names). The loader
        refuses such an explicit ``file``, but a file named after the secret (``secret-.token``) is never
        checked as a file, and a path inside a reserved name (``.token/x``) is not a reserved name."""
        for secret in secrets.values():
            explicit = "file" in secret.options
            path = secret.options.get("file", secret.name)
            reserved = _reserved(path)
            if reserved is None:
                continue
            if explicit:
                self.problem(f"{SECRET_KEY}{secret.name}-file", f"{shown_value(path)}: {reserved}")
            else:
                self.problem(
                    SECRET_KEY + secret.name,
                    f"its file would be {shown_value(path)} (the secret's name): {reserved}; set "
                    f"{prefixed(SECRET_KEY + secret.name + '-file')} to another name",
                )

    def _env_file(self, value: str, secrets: Mapping[str, _Item]) -> str:
        parts = value.split("/")
        if value.startswith("/") or any(p in ("", ".", "..") for p in parts):
            self.problem(
                "env-file",
                f"expected a file name relative to the output path such as app.env, got {shown_value(value)}",
            )
            return value
        if (reserved := _reserved(value)) is not None:
            self.problem("env-file", f"{shown_value(value)}: {reserved}")
            return value
        # The env file shares the output directory (and its atomic swap) with the secrets: the same path,
        # or one inside the other, would have to be a file and a directory at once.
        for secret in secrets.values():
            file = str(PurePosixPath(secret.options.get("file", secret.name)))  # as the loader reads it
            if file == value:
                self.problem(
                    "env-file",
                    f"{shown_value(value)} is also the file of {prefixed(SECRET_KEY + secret.name)}",
                )
            elif value.startswith(file + "/") or file.startswith(value + "/"):
                self.problem(
                    "env-file",
                    f"{shown_value(value)} and {shown_value(file)}, the file of "
                    f"{prefixed(SECRET_KEY + secret.name)}, would be one inside the other",
                )
        return value


@dataclass
class _Located:
    """Where the configuration's paths come from, for ``_Reader._translate``."""

    paths: dict[str, tuple[str, str]]
    """Config path -> (the annotation, a prefix for the message: ``[1].env: `` for an item of a list)."""
    labels: dict[str, str] = field(default_factory=dict)
    """``secrets[0]``, ``secrets[0].keys[1]``, ``templates[2]`` -> how a message names them instead."""
    references: set[str] = field(default_factory=set)
    """The ``secret-<name>`` annotations, whose values are never quoted."""
    redundant: dict[str, str] = field(default_factory=dict)
    """Config path -> how its messages start that the annotation's name says already (``template 'url'``
    of a compile problem on ``template-url``)."""


def _template_item(where: str, template: _Item, default_mode: str, located: _Located) -> dict[str, Any]:
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
        names = _names(template.options["secrets"])
        item["secrets"] = names
        for path in [f"{where}.secrets"] + [f"{where}.secrets[{i}]" for i in range(len(names))]:
            located.paths[path] = (f"{base}-secrets", "")
    return item


def _shapes_outputs(config: Config) -> bool:
    """Whether the configuration has outputs only the agent's renderer understands (as the agent's CLI
    decides when to check them)."""
    return bool(config.templates) or any(spec.key is not None or spec.keys for spec in config.secrets)


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


def _names(value: str) -> list[str]:
    """``db, api`` -> ``["db", "api"]``: a template's ``-secrets``."""
    return [name.strip() for name in value.split(",") if name.strip()]


def _parts(key: str) -> tuple[str, str, str | None] | None:
    """``secret-db-key-path`` -> (``secret-``, ``db``, ``key-path``), ``template-url`` -> (``template-``,
    ``url``, None); None for a key that is neither a secret's nor a template's."""
    for family, options in ((SECRET_KEY, SECRET_OPTIONS), (TEMPLATE_KEY, TEMPLATE_OPTIONS)):
        if key.startswith(family) and key != family:
            rest = key[len(family) :]
            for option in options:
                if rest.endswith("-" + option):
                    return family, rest[: -len(option) - 1], option
            return family, rest, None
    return None


def pattern_of(key: str) -> str:
    """``secret-db-env`` -> ``secret-<name>-env``, ``template-url`` -> ``template-<name>``; a pod-wide (or
    unknown) key is its own pattern. The names ``limits.MAX_VALUE`` and ``limits.MULTILINE`` know."""
    parts = _parts(key)
    if parts is None:
        return key
    family, _, option = parts
    return family + "<name>" + ("" if option is None else "-" + option)


def _alternatives(options: Sequence[str]) -> str:
    """``-env, -file or -mode``."""
    return _listing(["-" + option for option in options], "or")


def _listing(words: Sequence[str], conjunction: str) -> str:
    """``a, b and c``."""
    return ", ".join(words[:-1]) + f" {conjunction} " + words[-1] if len(words) > 1 else "".join(words)


def _suggestion(key: str) -> str | None:
    """The annotation an unknown key was probably meant to be, from our fixed keys (never the pod's own:
    comparing every unknown key with every key a pod sends is what made reviews quadratic)."""
    head, dash, rest = key.partition("-")
    if dash and rest:
        # First: no pod-wide key starts like these, and templat-url is not reload-url. In turn: most near
        # misses are of secret-.
        for family in (SECRET_KEY, TEMPLATE_KEY):
            if difflib.get_close_matches(head, [family[:-1]], n=1):
                return family + rest  # secert-db, secrets-db -> secret-db; templat-url -> template-url
    close = difflib.get_close_matches(key, GLOBAL_KEYS, n=1)
    return close[0] if close else None


def _reserved(path: str) -> str | None:
    """Why ``path`` (relative to the output directory) would take a name the agent writes itself (the
    names and the reasons are the agent's own, ``agent.config``), or None. A path inside a reserved file
    (``.token/x``) needs it to be a directory: as much a collision as the name itself."""
    pure = PurePosixPath(path)
    reason = reserved_name_reason(pure.as_posix())
    if reason is None and pure.parts and pure.parts[0] in RESERVED_FILE_NAMES:
        reason = f"inside {pure.parts[0]!r}, which is {reserved_name_reason(pure.parts[0])}"
    return reason


def _listed(names: list[str], limit: int = 10) -> str:
    """``'a', 'b', ... (12 in all)``: a list a refusal can carry, whatever the pod holds."""
    if not names:
        return "none"
    shown = ", ".join(shown_value(name) for name in names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


_QUOTED = re.compile(r"'([^'\\]*)'|\"([^\"\\]*)\"")


def _without_value(message: str, value: str) -> str:
    """``message`` with the value, and every quoted part of it (a reference's version, its project), as
    NOT_SHOWN; quoted text that is not part of the value (a hint such as 'latest') stays."""
    message = message.replace(repr(value), NOT_SHOWN)
    return _QUOTED.sub(lambda m: NOT_SHOWN if (part := m[1] or m[2]) and part in value else m[0], message)


def _annotations(pod: Mapping[str, Any]) -> Mapping[str, str]:
    metadata = pod.get("metadata") or {}
    annotations: Mapping[str, str] = metadata.get("annotations") or {}
    return annotations


def _identity(pod: Mapping[str, Any], mounted: Iterable[str]) -> tuple[int | None, int | None, int | None]:
    """(user, group, fsGroup) the containers that read the secrets run as, where the pod declares them.

    The agent takes the app's user when all of them agree on one: files it owns (0440) are then the app's
    to read, and a signal to another container's process needs the same user (the restricted profile
    drops CAP_KILL). Otherwise the files' group (the fsGroup, which every container of the pod has, or the
    app's group) keeps them private to the pod's containers.
    """
    spec = pod.get("spec") or {}
    pod_context = spec.get("securityContext") or {}
    by_name = {c["name"]: c for c in (spec.get("initContainers") or []) + (spec.get("containers") or [])}

    def agreed(field_name: str) -> int | None:
        values = set()
        for name in mounted:
            context = by_name[name].get("securityContext") or {}
            values.add(_id(context.get(field_name, pod_context.get(field_name))))
        return values.pop() if len(values) == 1 else None

    return agreed("runAsUser"), agreed("runAsGroup"), _id(pod_context.get("fsGroup"))


def _id(value: object) -> int | None:
    """A declared user or group id; root (0) is never taken: the restricted profile forbids running as
    it, and it is nobody's private id. Anything else the API server would refuse anyway."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None

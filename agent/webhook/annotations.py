"""A pod's ``secrets-agent.io/`` annotations -> an Injection plan, or every problem, each naming its
annotation (pure: no I/O, no clock).

The agent configuration the plan carries is validated by the agent's own loader (``load_config`` reading
``SECRETS_AGENT_CONFIG_YAML``, exactly as the injected container will), so whatever the webhook admits the
agent accepts; the loader's problem paths (``secrets[1].file``) are translated back to annotation names.
"""

from __future__ import annotations

import difflib
import posixpath
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import yaml

from agent.config import CONFIG_YAML_ENV, RESERVED_FILE_NAMES, load_config, reserved_name_reason
from agent.errors import AgentError, ConfigError
from agent.webhook.limits import (
    MAX_PROBLEM_TEXT,
    MAX_SECRETS,
    MAX_SHOWN,
    MAX_TOTAL,
    key_problem,
    max_annotations,
    max_value,
    path_problem,
    shortened,
    shown_key,
    shown_value,
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

# Pod-wide annotations (after the prefix). Per-secret ones are "secret-<name>[-env|-file|-mode]".
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
SECRET_OPTIONS = ("env", "file", "mode")
"""Per-secret options: ``secret-<name>-env`` etc. A secret's own name therefore cannot end in ``-env``,
``-file`` or ``-mode``."""
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
_RESOURCE_KEYS = {
    "cpu-request": "cpu_request",
    "memory-request": "memory_request",
    "cpu-limit": "cpu_limit",
    "memory-limit": "memory_limit",
}
_IMAGE = re.compile(r"[^\s]+")
_SECRET_PATH = re.compile(r"secrets\[([0-9]+)\]")
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
class _Secret:
    name: str
    ref: str | None = None
    options: dict[str, str] = field(default_factory=dict)
    refused: bool = False
    """One of its annotations was refused already (too long, a control character): it is left out of the
    agent configuration, whose loader would only repeat the problem."""


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
                f"{len(ours)} annotations under {PREFIX}; at most {limit} are allowed (the pod-wide ones "
                f"and {MAX_SECRETS} secrets with their -env, -file and -mode options)",
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
        secrets = self._secrets(ours)
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
        config_text = self._agent_config(ours, secrets, output_path, "0440" if private else "0444")
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
            secret_ref = key.startswith(SECRET_KEY) and _option_of(key) is None
            problem = value_problem(value, max_value(key, secret_ref))
            if problem is None and (
                key == "env-file" or (key.startswith(SECRET_KEY) and _option_of(key) == "file")
            ):
                problem = path_problem(value)
            if problem is not None:
                self.problem(key, problem)
                continue
            accepted[key] = value
        return accepted

    def _secrets(self, ours: Mapping[str, str]) -> dict[str, _Secret]:
        """``secret-<name>`` and its options, by name; unknown keys are noted here too."""
        secrets: dict[str, _Secret] = {}
        options: list[tuple[str, str, str, str | None]] = []  # (key, name, option, value)
        for key in sorted(self.present):
            value = ours.get(key)  # None: refused by _checked
            if key in GLOBAL_KEYS:
                continue
            if not key.startswith(SECRET_KEY) or key == SECRET_KEY:
                self.unknown.append(key)
                continue
            rest = key[len(SECRET_KEY) :]
            option = _option_of(key)
            if option is None:
                secret = secrets.setdefault(rest, _Secret(rest))
                secret.ref, secret.refused = value, value is None
            else:
                options.append((key, rest[: -len(option) - 1], option, value))
        for key, name, option, value in options:
            if name not in secrets:
                self.problem(
                    key,
                    f"no {prefixed(SECRET_KEY + name)} annotation for this option (a secret's name "
                    "cannot end in -env, -file or -mode)",
                )
                continue
            if value is None:
                secrets[name].refused = True
            else:
                secrets[name].options[option] = value
        if len(secrets) > MAX_SECRETS:
            self.problem(
                SECRET_KEY + "*", f"{len(secrets)} secrets; at most {MAX_SECRETS} are allowed per pod"
            )
        return {name: secrets[name] for name in sorted(secrets)}

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
        self, ours: Mapping[str, str], secrets: Mapping[str, _Secret], output_path: str, default_mode: str
    ) -> str:
        """The agent's configuration as YAML; problems of the agent's loader become annotation problems."""
        secrets = {name: secret for name, secret in secrets.items() if not secret.refused}
        self._files(secrets)
        config: dict[str, Any] = {}
        project = ours.get("project", self.settings.project)
        if project is not None:
            config["project"] = project
        config["output_dir"] = output_path
        config["require_tmpfs"] = True  # the volume is memory-backed: anything else is a mistake
        if "env-file" in ours:
            config["env_file"] = self._env_file(ours["env-file"], secrets)
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
        paths = {path: key for path, key in _CONFIG_PATHS.items() if key in ours}
        items: list[dict[str, str]] = []
        for index, secret in enumerate(secrets.values()):
            item = {"name": secret.name, "ref": secret.ref or ""}
            item.update(
                {option: secret.options[option] for option in ("env", "file") if option in secret.options}
            )
            item["mode"] = secret.options.get("mode", default_mode)
            items.append(item)
            base = SECRET_KEY + secret.name
            paths[f"secrets[{index}]"] = base
            for option in ("name", "ref"):
                paths[f"secrets[{index}].{option}"] = base
            for option in SECRET_OPTIONS:
                derived = option == "file" and option not in secret.options
                paths[f"secrets[{index}].{option}"] = base if derived else f"{base}-{option}"
        config["secrets"] = items
        text = yaml.dump(
            config, Dumper=_DUMPER, sort_keys=False, default_flow_style=False, allow_unicode=True
        )
        if len(secrets) > MAX_SECRETS:
            return text  # refused already; the loader's cost grows with the secrets
        reported = {p.annotation for p in self.problems}
        document = yaml.load(text, Loader=_LOADER)  # noqa: S506 - a safe loader (libyaml's when present)
        if document != config:  # never seen; then the agent's own reading of the text decides
            document = None
        try:
            load_config(None, {CONFIG_YAML_ENV: text}, {}, document=document)
        except ConfigError as error:
            for problem in error.problems:
                key = paths.get(problem.path)
                if key is None:  # a setting no annotation maps to: a bug here, reported rather than hidden
                    key, message = "inject", f"agent configuration {problem}"
                elif prefixed(key) in reported:
                    continue  # the webhook's own check of that annotation said it first
                else:
                    message = _SECRET_PATH.sub(lambda m: prefixed(paths[m[0]]), problem.message)
                    value = ours.get(key)
                    if value and (key in _UNQUOTED or key[len(SECRET_KEY) :] in secrets):
                        message = _without_value(message, value)
                self.problem(key, message)
        return text

    def _files(self, secrets: Mapping[str, _Secret]) -> None:
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

    def _env_file(self, value: str, secrets: Mapping[str, _Secret]) -> str:
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


def _option_of(key: str) -> str | None:
    """``secret-db-env`` -> ``env``; None for a secret's reference (``secret-db``)."""
    _, dash, tail = key[len(SECRET_KEY) :].rpartition("-")
    return tail if dash and tail in SECRET_OPTIONS else None


def _suggestion(key: str) -> str | None:
    """The annotation an unknown key was probably meant to be, from our fixed keys (never the pod's own:
    comparing every unknown key with every key a pod sends is what made reviews quadratic)."""
    close = difflib.get_close_matches(key, GLOBAL_KEYS, n=1)
    if close:
        return close[0]
    head, dash, rest = key.partition("-")
    if dash and rest and difflib.get_close_matches(head, [SECRET_KEY[:-1]], n=1):
        return SECRET_KEY + rest  # secert-db, secrets-db -> secret-db
    return None


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

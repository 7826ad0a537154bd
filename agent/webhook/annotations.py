"""A pod's ``secrets-agent.io/`` annotations -> an Injection plan, or every problem, each naming its
annotation (pure: no I/O, no clock). The entry point of the webhook's reading of a pod (``mutate``).

This module reads what applies to the whole pod: the bounds on all our annotations together, the checks
every annotation gets (``limits``), the pod-wide keys (``GLOBAL_KEYS``: mode, image, output path, mounted
containers, resources, reload, the Google identity), the volumes the webhook adds (and the pod's own volumes
of the same names), the ids the injected containers run as, and unknown keys. The rest has a
module of its own: the per-secret and per-template annotations (``shaping``), the agent configuration the
plan carries and its check by the agent's own loader (``agent_config``), and the problems, with the
translation of the configuration's problem paths back to annotation names (``problems``).
"""

from __future__ import annotations

import difflib
import posixpath
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.config import SelectSpec
from agent.webhook.agent_config import agent_config
from agent.webhook.limits import (
    MAX_SECRETS,
    MAX_SELECTIONS,
    MAX_SHOWN,
    MAX_TEMPLATES,
    MAX_TOTAL,
    MULTILINE,
    key_problem,
    max_annotations,
    max_value,
    path_problem,
    shown_key,
    shown_value,
    value_problem,
)
from agent.webhook.problems import AnnotationProblem, InvalidAnnotations, Problems, prefixed
from agent.webhook.quantity import parse_quantity
from agent.webhook.settings import (
    AGENT_CONTAINER,
    AGENT_USER,
    CREDENTIALS_DIR,
    CREDENTIALS_FILE,
    CREDENTIALS_KEY,
    CREDENTIALS_VOLUME,
    INIT_CONTAINER,
    INJECTED,
    INJECTION_MODES,
    PREFIX,
    TOKEN_DIR,
    TOKEN_FILE,
    TOKEN_VOLUME,
    VOLUME,
    InjectionMode,
    InjectorSettings,
    Resources,
)
from agent.webhook.shaping import (
    SECRET_KEY,
    SECRET_OPTIONS,
    SELECT_KEY,
    SELECT_OPTIONS,
    TEMPLATE_KEY,
    TEMPLATE_OPTIONS,
    pattern_of,
    read_items,
)

# Pod-wide annotations (after the prefix). Per-secret ones are "secret-<name>[-<option>]", per-template
# ones "template-<name>[-<option>]", per-selection ones "select-<name>[-<option>]".
GLOBAL_KEYS = (
    "inject",
    "status",
    "mode",
    "image",
    "project",
    "gcp-credentials-configmap",
    "gcp-token-audience",
    "gcp-credentials-file",
    "gcp-impersonate-service-account",
    "gcp-delegates",
    "gcp-quota-project",
    "gcp-iam-endpoint",
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
DEFAULT_OUTPUT_PATH = "/secrets"
_RESOURCE_KEYS = {
    "cpu-request": "cpu_request",
    "memory-request": "memory_request",
    "cpu-limit": "cpu_limit",
    "memory-limit": "memory_limit",
}
_IMAGE = re.compile(r"[^\s]+")
_CONFIGMAP_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
"""A ConfigMap's name (a DNS subdomain: at most 253 characters, ``limits.MAX_VALUE``)."""
_IMPERSONATES = "-impersonate-service-account"
_VOLUME_KEYS = {
    VOLUME: "inject",
    CREDENTIALS_VOLUME: "gcp-credentials-configmap",
    TOKEN_VOLUME: "gcp-token-audience",
}
"""The volumes the webhook adds -> the annotation that asks for each."""
_VOLUME_USES = {
    VOLUME: "its volume for the secrets",
    CREDENTIALS_VOLUME: "its volume for the credential configuration",
    TOKEN_VOLUME: "its volume for the projected service account token",
}


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
    credentials_configmap: str | None = None
    """A ConfigMap whose ``credentials.json`` is mounted read-only at ``CREDENTIALS_DIR`` in the injected
    containers (``gcp-credentials-configmap``); the configuration's ``gcp.credentials_file`` names it."""
    token_audience: str | None = None
    """The audience of a projected service account token mounted read-only at ``TOKEN_DIR`` in the injected
    containers (``gcp-token-audience``), the subject token of Workload Identity Federation."""
    warnings: tuple[str, ...] = ()
    """Shown to whoever created the pod (AdmissionResponse warnings)."""
    config: Mapping[str, Any] = field(default_factory=dict)
    """The mapping ``config_text`` was written from (``agent.webhook.selections`` adds the ids it resolves
    to its ``select`` items and writes it again)."""
    selections: tuple[SelectSpec, ...] = ()
    """The selections of the configuration as the agent's loader read them (project filled in), in the
    order of ``config["select"]``."""


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
        raise InvalidAnnotations(reader.problems.found)
    assert injection is not None
    return injection


@dataclass
class _Reader:
    """One pod's annotations read into a plan: every problem is collected, none raised, so that a refusal
    lists them all."""

    pod: Mapping[str, Any]
    settings: InjectorSettings
    problems: Problems = field(default_factory=Problems)
    present: set[str] = field(default_factory=set)
    """Every well-formed key of ours, its value accepted or not (``ours`` holds the accepted ones)."""

    def read(self) -> Injection | None:
        ours = {k[len(PREFIX) :]: v for k, v in _annotations(self.pod).items() if k.startswith(PREFIX)}
        limit = max_annotations(len(GLOBAL_KEYS))
        if len(ours) > limit:
            # Refused before any per-key work: what a review costs must not grow with what a pod sends.
            self.problems.add(
                "*",
                f"{len(ours)} annotations under {PREFIX}; at most {limit} are allowed (the pod-wide ones, "
                f"{MAX_SECRETS} secrets with their {len(SECRET_OPTIONS)} options, {MAX_TEMPLATES} "
                f"templates with their {len(TEMPLATE_OPTIONS)} and {MAX_SELECTIONS} selections with "
                f"their {len(SELECT_OPTIONS)})",
            )
            return None
        total = sum(len(key) + len(value) for key, value in ours.items())
        if total > MAX_TOTAL:
            self.problems.add(
                "*",
                f"{total} characters in the annotations under {PREFIX} (names after the prefix, and "
                f"values); at most {MAX_TOTAL} are allowed",
            )
            return None
        ours = self._checked(ours)
        items = read_items(
            [key for key in sorted(self.present) if key not in GLOBAL_KEYS], ours, self.problems
        )
        secrets, templates, selections = items.secrets, items.templates, items.selections
        self._report_unknown(items.unknown)
        mode = self._mode(ours.get("mode"))
        image = ours.get("image", self.settings.image)
        if not _IMAGE.fullmatch(image):
            self.problems.add(
                "image", f"expected an image reference without spaces, got {shown_value(image)}"
            )
        output_path = self._output_path(ours.get("output-path", DEFAULT_OUTPUT_PATH))
        mounted = self._mounted(ours.get("containers"), output_path)
        resources = self._resources(ours)
        warnings: list[str] = []
        self._identity_settings(ours, output_path, warnings)
        self._volumes(ours, output_path)
        if "reload-signal" in self.present and "reload-process" not in self.present:
            self.problems.add(
                "reload-signal",
                f"needs {prefixed('reload-process')} (a regular expression matching the app's command "
                "line) to know which process to signal",
            )
        if not secrets and not selections:
            self.problems.add(
                "inject",
                f"no secret to deliver: add {prefixed('secret-<name>')}: <reference> annotations, or "
                f"{prefixed('select-<name>')}: <labels> ones",
            )
        app_user, app_group, fs_group = _identity(self.pod, mounted)
        user = app_user or AGENT_USER
        group = fs_group or app_group or AGENT_USER
        private = app_user is not None or app_group is not None or fs_group is not None
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
        default_mode = "0440" if private else "0444"
        written = agent_config(
            ours,
            secrets,
            templates,
            output_path,
            default_mode,
            self.settings.project,
            self.problems,
            selections=selections,
            fleet_size=self.settings.fleet_size,
        )
        if self.problems:
            return None
        return Injection(
            mode=mode,
            image=image,
            output_path=output_path,
            mounted=mounted,
            resources=resources,
            config_text=written.text,
            share_process_namespace="reload-process" in ours,
            user=user,
            group=group,
            size_limit=self.settings.volume_size,
            credentials_configmap=ours.get("gcp-credentials-configmap"),
            token_audience=ours.get("gcp-token-audience"),
            warnings=tuple(warnings),
            config=written.config,
            selections=written.selections,
        )

    # -- single annotations -----------------------------------------------------------------------------

    def _checked(self, ours: Mapping[str, str]) -> dict[str, str]:
        """The annotations whose key and value pass the checks every annotation gets (length, control
        characters); the others are reported here, and only their keys (in ``present``) are kept."""
        accepted: dict[str, str] = {}
        for key, value in ours.items():
            if (problem := key_problem(key)) is not None:
                self.problems.add(shown_key(key), problem)
                continue
            self.present.add(key)
            pattern = pattern_of(key)
            problem = value_problem(
                value, max_value(pattern, pattern == "secret-<name>"), multiline=pattern in MULTILINE
            )
            if problem is None and pattern in ("env-file", "secret-<name>-file", "template-<name>-file"):
                problem = path_problem(value)
            if problem is not None:
                self.problems.add(key, problem)
                continue
            accepted[key] = value
        return accepted

    def _report_unknown(self, unknown: Iterable[str]) -> None:
        """One problem per unknown key; a suggestion for those a refusal can show (the first MAX_SHOWN in
        the order problems are listed), each computed against our fixed keys only: linear in the keys."""
        for index, key in enumerate(sorted(unknown)):
            close = _suggestion(key) if index < MAX_SHOWN else None
            hint = f" (did you mean {prefixed(close)}?)" if close else ""
            self.problems.add(key, f"unknown annotation{hint}")

    def _mode(self, value: str | None) -> InjectionMode:
        if value is None:
            return self.settings.default_mode
        for mode in INJECTION_MODES:
            if value.strip().lower() == mode:
                return mode
        self.problems.add("mode", f"expected one of {', '.join(INJECTION_MODES)}, got {shown_value(value)}")
        return self.settings.default_mode

    def _output_path(self, value: str) -> str:
        if not _normal_absolute(value):
            self.problems.add(
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
                self.problems.add("containers", "expected a comma-separated list of container names")
            missing = list(dict.fromkeys(name for name in chosen if name not in by_name))
            if missing:
                # One problem for all of them, each list cut short: a pod may have many containers.
                self.problems.add(
                    "containers",
                    f"the pod has no container {_listed(missing)} (containers: {_listed(app)}; "
                    f"init containers: {_listed(init)})",
                )
        mounted = tuple(dict.fromkeys(name for name in chosen if name in by_name))
        for name in mounted:
            for mount in by_name[name].get("volumeMounts") or []:
                if posixpath.normpath(str(mount.get("mountPath", ""))) == output_path:
                    self.problems.add(
                        "output-path",
                        f"container {shown_value(name)} already mounts volume "
                        f"{shown_value(str(mount.get('name')))} at {output_path}",
                    )
        return mounted

    def _identity_settings(self, ours: Mapping[str, str], output_path: str, warnings: list[str]) -> None:
        """The ``gcp-*`` annotations' checks that the agent's loader cannot make: what the pod must hold
        (a ConfigMap's name, a token's audience, a file's path in the pod) and which of them go together.
        The values of the settings themselves (emails, a project, a URL) are the loader's to check."""
        configmap = ours.get("gcp-credentials-configmap")
        if configmap is not None and not _CONFIGMAP_NAME.fullmatch(configmap):
            self.problems.add(
                "gcp-credentials-configmap",
                "expected the name of a ConfigMap in the pod's namespace (lowercase letters, digits, '-' "
                f"and '.'), got {shown_value(configmap)}",
            )
        if "gcp-credentials-configmap" in self.present and "gcp-credentials-file" in self.present:
            self.problems.add(
                "gcp-credentials-file",
                f"set either this or {prefixed('gcp-credentials-configmap')} (whose {CREDENTIALS_KEY} the "
                f"agent reads at {CREDENTIALS_FILE}), not both",
            )
        file = ours.get("gcp-credentials-file")
        if file is not None:
            if not _normal_absolute(file):
                self.problems.add(
                    "gcp-credentials-file",
                    "expected an absolute, normalised path in the agent's containers such as "
                    f"/etc/gcp/credentials.json, got {shown_value(file)}",
                )
            elif file == output_path or file.startswith(output_path.rstrip("/") + "/"):
                self.problems.add(
                    "gcp-credentials-file",
                    f"{shown_value(file)} is inside the output path {output_path}, which holds only what the "
                    "agent writes",
                )
        audience = ours.get("gcp-token-audience")
        if audience is not None:
            if not _IMAGE.fullmatch(audience):
                self.problems.add(
                    "gcp-token-audience",
                    "expected the audience the workload identity pool provider allows, without spaces, "
                    f"such as https://iam.googleapis.com/projects/NUMBER/locations/global/"
                    f"workloadIdentityPools/POOL/providers/PROVIDER, got {shown_value(audience)}",
                )
            elif audience.startswith("//iam.googleapis.com/"):
                # The credential configuration's audience, not the token's: the commonest mix-up of the two.
                warnings.append(
                    f"secrets-agent: {prefixed('gcp-token-audience')} starts with //iam.googleapis.com/, as "
                    "the credential configuration's audience does; a pool provider allows tokens for "
                    "https://iam.googleapis.com/ + its name unless it was given other --allowed-audiences"
                )
        credentials = {"gcp-credentials-configmap", "gcp-credentials-file"} & self.present
        if "gcp-token-audience" in self.present and not credentials:
            self.problems.add(
                "gcp-token-audience",
                f"needs {prefixed('gcp-credentials-configmap')} (or {prefixed('gcp-credentials-file')}): "
                f"the credential configuration tells google-auth to read the token at {TOKEN_FILE}",
            )
        if "gcp-delegates" in self.present and "gcp-impersonate-service-account" not in self.present:
            self.problems.add(
                "gcp-delegates",
                f"needs {prefixed('gcp-impersonate-service-account')}: a delegation chain leads to an "
                "impersonated account",
            )
        impersonates = any(
            key == "gcp-impersonate-service-account"
            or (key.startswith(SECRET_KEY) and key.endswith(_IMPERSONATES))
            for key in self.present
        )
        if "gcp-iam-endpoint" in self.present and not impersonates:
            self.problems.add(
                "gcp-iam-endpoint",
                f"only used to impersonate a service account ({prefixed('gcp-impersonate-service-account')} "
                f"or {prefixed('secret-<name>' + _IMPERSONATES)})",
            )

    def _volumes(self, ours: Mapping[str, str], output_path: str) -> None:
        """A pod volume named like one the webhook adds is refused, naming the annotation that asks for
        ours: two volumes of one name are a pod the API server refuses, less clearly. So is an output path
        at or around the identity's mounts in the agent's containers (one mount inside the directory the
        agent swaps its snapshots in, or two at one path)."""
        wanted = [VOLUME]
        wanted += [CREDENTIALS_VOLUME] if "gcp-credentials-configmap" in ours else []
        wanted += [TOKEN_VOLUME] if "gcp-token-audience" in ours else []
        for volume, directory in ((CREDENTIALS_VOLUME, CREDENTIALS_DIR), (TOKEN_VOLUME, TOKEN_DIR)):
            if volume in wanted and _overlap(output_path, directory):
                self.problems.add(
                    "output-path",
                    f"{output_path} and {directory}, where {prefixed(_VOLUME_KEYS[volume])} mounts "
                    f"{_VOLUME_USES[volume]} in the agent's containers, would be one "
                    "inside the other",
                )
        spec = self.pod.get("spec") or {}
        volumes = spec.get("volumes")
        # Whatever a pod holds (the API server checks the shape after us): only names that are text count.
        names = {
            volume.get("name")
            for volume in (volumes if isinstance(volumes, list) else [])
            if isinstance(volume, Mapping) and isinstance(volume.get("name"), str)
        }
        for volume in wanted:
            if volume in names:
                self.problems.add(
                    _VOLUME_KEYS[volume],
                    f"the pod already has a volume named {shown_value(volume)}, which the webhook gives "
                    f"{_VOLUME_USES[volume]}: rename the pod's volume",
                )

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
                self.problems.add(key, str(error))
        for resource in ("cpu", "memory"):
            request, limit = parsed.get(f"{resource}_request"), parsed.get(f"{resource}_limit")
            if request is not None and limit is not None and request > limit:
                key = f"{resource}-request" if f"{resource}-request" in ours else f"{resource}-limit"
                self.problems.add(
                    key,
                    f"the {resource} request {values[f'{resource}_request']} is more than the limit "
                    f"{values[f'{resource}_limit']}",
                )
        return Resources(**values)


def _overlap(first: str, second: str) -> bool:
    """Two absolute directories that are one, or one inside the other."""
    a, b = first.rstrip("/") + "/", second.rstrip("/") + "/"
    return a.startswith(b) or b.startswith(a)


def _normal_absolute(value: str) -> bool:
    """An absolute, normalised path other than ``/``."""
    return (
        value.startswith("/")
        and value != "/"
        and not value.startswith("//")  # normpath keeps a leading "//" (POSIX leaves its meaning open)
        and posixpath.normpath(value) == value
        and ".." not in value.split("/")
    )


def _suggestion(key: str) -> str | None:
    """The annotation an unknown key was probably meant to be, from our fixed keys (never the pod's own:
    comparing every unknown key with every key a pod sends is what made reviews quadratic)."""
    head, dash, rest = key.partition("-")
    if dash and rest:
        # First: no pod-wide key starts like these, and templat-url is not reload-url. The closest family
        # wins: secert-db, secrets-db -> secret-db; templat-url -> template-url; selct-db -> select-db.
        families = {family[:-1]: family for family in (SECRET_KEY, TEMPLATE_KEY, SELECT_KEY)}
        close = difflib.get_close_matches(head, list(families), n=1)
        if close:
            return families[close[0]] + rest
    close = difflib.get_close_matches(key, GLOBAL_KEYS, n=1)
    return close[0] if close else None


def _listed(names: list[str], limit: int = 10) -> str:
    """``'a', 'b', ... (12 in all)``: a list a refusal can carry, whatever the pod holds."""
    if not names:
        return "none"
    shown = ", ".join(shown_value(name) for name in names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


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

"""reference/annotations.md, from the webhook's annotation tables.

The keys come from the code (``agent.webhook.webhook.GLOBAL_KEYS``, ``shaping.SECRET_OPTIONS`` and
``TEMPLATE_OPTIONS``), as do the agent settings each one sets (``agent_config``), the value limits
(``limits``) and the webhook's defaults (``settings``). The code keeps no sentence per annotation, so the
meanings are kept here, one per key: a key the webhook reads without a meaning here (or a meaning whose key
it no longer reads) fails the generation, and so the tests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agent.webhook import agent_config, limits, settings, shaping
from agent.webhook import annotations as webhook  # not `annotations`: the __future__ import's name
from docs_gen.configuration import anchor as setting_anchor
from docs_gen.configuration import blocks, module_docs
from docs_gen.markdown import code, docstring, page, table

SOURCE = "`agent/webhook/annotations.py`, `shaping.py`, `agent_config.py`, `limits.py` and `settings.py`"

_MODES = " | ".join(f"``{mode}``" for mode in settings.INJECTION_MODES)
_RESOURCES = settings.Resources()

MEANINGS: dict[str, tuple[str | None, str]] = {
    # pattern: (the value's form, None for the type of the agent setting it sets; what it does)
    "inject": (
        "``true`` | ``false``",
        "Ask for injection. Any other value is refused: guessing could start an app without its secrets.",
    ),
    "status": (
        f"``{settings.INJECTED}``",
        "Written by the webhook on every pod it changed: a pod that carries it (or one of the agent's "
        "containers) is left as it is, so a reinvocation changes nothing. Not for users to set.",
    ),
    "mode": (
        _MODES,
        f"``sidecar``: the init container ``{settings.INIT_CONTAINER}`` fetches everything, then the sidecar "
        f"``{settings.AGENT_CONTAINER}`` keeps it fresh; ``native``: one restartable init container "
        "(Kubernetes' native sidecar), started and ready before the app; ``init``: the init container only "
        "(the secrets are fetched once). Default: the webhook's ``--default-mode``.",
    ),
    "image": ("image reference", "Image of the injected containers. Default: the webhook's ``--image``."),
    "project": (None, "Default project for short secret references. Default: the webhook's ``--project``."),
    "gcp-credentials-configmap": (
        "ConfigMap name",
        "Workload Identity Federation off GKE: the ConfigMap (in the pod's namespace) whose "
        f"``{settings.CREDENTIALS_KEY}`` is the credential configuration (what ``gcloud iam "
        "workload-identity-pools create-cred-config`` writes). Its volume "
        f"``{settings.CREDENTIALS_VOLUME}`` (that key only) is mounted read-only at "
        f"``{settings.CREDENTIALS_DIR}`` in the injected containers, never the app's, and the agent reads "
        f"``{settings.CREDENTIALS_FILE}``. Not with ``gcp-credentials-file``.",
    ),
    "gcp-token-audience": (
        "audience",
        "A projected service account token with this audience (the pool provider's, by default "
        "``https://iam.googleapis.com/projects/NUMBER/locations/global/workloadIdentityPools/POOL/providers/"
        f"PROVIDER``), rewritten by the kubelet (``expirationSeconds: {settings.TOKEN_EXPIRATION}``): the "
        f"volume ``{settings.TOKEN_VOLUME}``, mounted read-only at ``{settings.TOKEN_DIR}`` in the injected "
        f"containers. The credential configuration must read ``{settings.TOKEN_FILE}`` (``create-cred-config "
        f"--credential-source-file={settings.TOKEN_FILE}``). Needs ``gcp-credentials-configmap`` or "
        "``gcp-credentials-file``.",
    ),
    "gcp-credentials-file": (
        "absolute path in the agent's containers",
        "A credential configuration or key file the injected containers have already (built into a custom "
        "``image``); for one in a ConfigMap, ``gcp-credentials-configmap`` instead.",
    ),
    "gcp-impersonate-service-account": (
        None,
        "Call Secret Manager as this service account, impersonated with the pod's own credentials (which "
        "need ``roles/iam.serviceAccountTokenCreator`` on it).",
    ),
    "gcp-delegates": (
        "service account emails, separated by commas or spaces",
        "The delegation chain to ``gcp-impersonate-service-account``, in order; needs it.",
    ),
    "gcp-quota-project": (None, "The project Secret Manager calls count against (quota and billing)."),
    "gcp-iam-endpoint": (
        None,
        "Where impersonation asks for tokens instead of Google's IAM Credentials (a private endpoint); only "
        "with an impersonated account. A refusal never quotes it.",
    ),
    "output-path": (
        "absolute directory",
        "Where the memory-backed volume is mounted, in the agent and in every container that gets it. "
        f"Default ``{webhook.DEFAULT_OUTPUT_PATH}``.",
    ),
    "env-file": (
        "file name relative to the output path",
        "Also write every secret into this env file, in the same volume and the same atomic swap.",
    ),
    "containers": (
        "comma-separated container names",
        "The containers (or init containers) that get the volume, read-only. Default: every container of "
        "the pod (not its init containers).",
    ),
    "poll-interval": (None, "Time between polls of Secret Manager (``30s``, ``5m``)."),
    "events-topic": (None, "Follow Secret Manager's Pub/Sub notifications on this topic instead of polling."),
    "reload-signal": (None, "Signal sent to the app's processes on change; needs ``reload-process``."),
    "reload-process": (
        None,
        "Signal the processes whose command line matches this expression; the pod gets "
        "``shareProcessNamespace: true`` so that the agent sees them.",
    ),
    "reload-url": (None, "POST to this URL after each change."),
    "reload-command": (None, "Run this command after each change (split like a shell would)."),
    "cpu-request": (
        "Kubernetes quantity",
        f"CPU request of each injected container. Default ``{_RESOURCES.cpu_request}``.",
    ),
    "memory-request": (
        "Kubernetes quantity",
        f"Memory request of each injected container. Default ``{_RESOURCES.memory_request}``.",
    ),
    "cpu-limit": (
        "Kubernetes quantity",
        f"CPU limit of each injected container. Default ``{_RESOURCES.cpu_limit}``.",
    ),
    "memory-limit": (
        "Kubernetes quantity",
        f"Memory limit of each injected container (it also covers the volume's pages). Default "
        f"``{_RESOURCES.memory_limit}``.",
    ),
    "secret-<name>": (
        None,
        "Deliver the secret at this reference as ``<name>``: the file ``<name>`` in the output path and the "
        "variable ``<NAME>`` in the env file. ``<name>`` cannot end in one of the options below.",
    ),
    "secret-<name>-env": (None, "The secret's variable name, instead of ``<NAME>``."),
    "secret-<name>-file": (None, "The secret's file, relative to the output path, instead of ``<name>``."),
    "secret-<name>-mode": (
        None,
        "Permission bits of the file. Default ``0440`` when the pod declares ``runAsUser``, ``runAsGroup`` "
        "or ``fsGroup``, else ``0444``.",
    ),
    "secret-<name>-key-path": (
        None,
        "Deliver one field of the secret's JSON or YAML payload instead of all of it.",
    ),
    "secret-<name>-format": (
        None,
        "How the payload is read for ``key-path``, ``key-outputs`` and templates.",
    ),
    "secret-<name>-decode": (None, "``base64``: the payload is stored base64-encoded."),
    "secret-<name>-deliver": (
        "``true`` | ``false``",
        "``false``: no file or variable of its own; the secret only feeds its key outputs and the templates.",
    ),
    "secret-<name>-impersonate-service-account": (
        None,
        "Fetch this secret as this service account (a secret another team owns), in place of "
        "``gcp-impersonate-service-account``. The annotation's name leaves 28 characters for ``<name>``.",
    ),
    "secret-<name>-delegates": (
        "service account emails, separated by commas or spaces",
        "The delegation chain to the secret's own account, in order (``gcp-delegates`` is not inherited); "
        "needs ``-impersonate-service-account``.",
    ),
    "secret-<name>-key-outputs": (
        "YAML or JSON list",
        "More outputs from the same payload: a list of mappings with "
        + ", ".join(f"``{name}``" for name in shaping.KEY_OUTPUT_FIELDS)
        + " (``[{key: username, file: db/username, env: DB_USER}]``).",
    ),
    "template-<name>": (
        "Jinja2 template (several lines)",
        "Render this template (it sees ``secrets.<name>.value``, ``.data``, ``.version``) as the output "
        "``<name>``. Empty with ``-format``.",
    ),
    "template-<name>-env": (None, "Variable that carries the rendered text (env file)."),
    "template-<name>-file": (None, "File of the rendered text, relative to the output path."),
    "template-<name>-mode": (None, "Permission bits of the file (defaults as for a secret's)."),
    "template-<name>-format": (None, "No template: the secrets as one file in this format."),
    "template-<name>-secrets": (
        "comma-separated secret names",
        "The secrets the template may see. Default: all.",
    ),
    "select-<name>": (
        "labels: ``team=payments,env=*``",
        "A selection named ``<name>``: every secret with these labels (``*``: has the label); empty with "
        "``-name-prefix`` or ``-name-regex``. Resolved at admission with ``--resolve-selections`` "
        "(``known`` ids).",
    ),
    **{
        f"select-<name>-{option}": (None, f"The selection's ``{setting}``, for each secret it selects.")
        for option, setting in (
            ("name-prefix", "name_prefix"),
            ("name-regex", "name_regex"),
            ("project", "project"),
            ("location", "location"),
            ("env-prefix", "env_prefix"),
            ("file-prefix", "file_prefix"),
            ("required", "required"),
            ("version", "version"),
            ("mode", "mode"),
            ("format", "format"),
            ("key-path", "key"),
            ("decode", "decode"),
            ("deliver", "deliver"),
        )
    },
}

# The settings the per-item annotations (and gcp-credentials-configmap) set that agent_config writes without
# a table of its own.
_ITEM_SETTINGS = {
    "gcp-credentials-configmap": ("gcp.credentials_file",),
    "secret-<name>": ("secrets[].name", "secrets[].ref"),
    "secret-<name>-deliver": ("secrets[].deliver",),
    "secret-<name>-key-outputs": ("secrets[].keys",),
    "template-<name>": ("templates[].name", "templates[].text"),
    **{
        f"template-<name>-{option}": (f"templates[].{option}",)
        for option in ("env", "file", "mode", "format")
    },
    "template-<name>-secrets": ("templates[].secrets",),
    "select-<name>": ("select[].name", "select[].labels"),
    **{
        f"select-<name>-{option}": (f"select[].{setting}",)
        for option, setting in agent_config._SELECT_SETTINGS.items()
    },
}


@dataclass(frozen=True)
class Annotation:
    """One annotation (a pattern for the per-secret and per-template ones)."""

    pattern: str
    """After the prefix: ``mode``, ``secret-<name>-env``."""
    value: str
    sets: tuple[str, ...]
    """The agent settings it sets (key paths of the configuration reference)."""
    max_length: int
    multiline: bool
    meaning: str

    @property
    def key(self) -> str:
        return settings.PREFIX + self.pattern

    @property
    def anchor(self) -> str:
        return self.pattern.replace("<name>", "name")


def patterns() -> list[str]:
    """Every annotation the webhook reads, as the code lists them."""
    found = list(webhook.GLOBAL_KEYS)
    found += [shaping.SECRET_KEY + "<name>"] + [
        f"{shaping.SECRET_KEY}<name>-{o}" for o in shaping.SECRET_OPTIONS
    ]
    found += [shaping.TEMPLATE_KEY + "<name>"] + [
        f"{shaping.TEMPLATE_KEY}<name>-{o}" for o in shaping.TEMPLATE_OPTIONS
    ]
    found += [shaping.SELECT_KEY + "<name>"] + [
        f"{shaping.SELECT_KEY}<name>-{o}" for o in shaping.SELECT_OPTIONS
    ]
    return found


def _sets(pattern: str) -> tuple[str, ...]:
    by_annotation = {key: path for path, key in agent_config._CONFIG_PATHS.items()}
    if pattern in by_annotation:
        return (by_annotation[pattern],)
    prefix = shaping.SECRET_KEY + "<name>-"
    if pattern.startswith(prefix) and pattern.removeprefix(prefix) in agent_config._SECRET_SETTINGS:
        return ("secrets[]." + agent_config._SECRET_SETTINGS[pattern.removeprefix(prefix)],)
    return _ITEM_SETTINGS.get(pattern, ())


def entries() -> list[Annotation]:
    """Every annotation with its value form, settings, limits and meaning."""
    known = patterns()
    missing = [pattern for pattern in known if pattern not in MEANINGS]
    extra = [pattern for pattern in MEANINGS if pattern not in known]
    if missing or extra:
        raise LookupError(
            "docs_gen.pod_annotations.MEANINGS is out of date with the webhook: "
            f"no meaning for {missing}, no annotation for {extra}"
        )
    types = {row.path: row.type for block in blocks() for row in block.rows}
    found: list[Annotation] = []
    for pattern in known:
        value, meaning = MEANINGS[pattern]
        sets = _sets(pattern)
        # None: the form of the setting it sets (the last one: ``secret-<name>`` sets the name and the ref).
        value = types[sets[-1]] if value is None else docstring(value)
        found.append(
            Annotation(
                pattern,
                value,
                sets,
                limits.max_value(shaping.pattern_of(pattern), pattern == shaping.SECRET_KEY + "<name>"),
                pattern in limits.MULTILINE,
                docstring(meaning),
            )
        )
    return found


def _row(entry: Annotation) -> list[str]:
    sets = ", ".join(f"[{code(path)}](configuration.md#{setting_anchor(path)})" for path in entry.sets) or "—"
    length = f"{entry.max_length:,}" + (" (several lines)" if entry.multiline else "")
    return [f'<a id="{entry.anchor}"></a>{code(entry.pattern)}', entry.value, sets, length, entry.meaning]


_LIMITS = (
    "MAX_SECRETS",
    "MAX_TEMPLATES",
    "MAX_SELECTIONS",
    "MAX_KNOWN_CHARS",
    "MAX_KEY_OUTPUTS",
    "MAX_TOTAL",
    "MAX_TEMPLATE_TEXT",
    "MAX_TEMPLATE_CODE",
    "MAX_PATH_PARTS",
    "MAX_KEY_LENGTH",
)


def first_sentence(text: str) -> str:
    """Up to the first full stop that ends a sentence (not one inside a ````literal````)."""
    for match in re.finditer(r"\.(\s|$)", text):
        if text[: match.start()].count("``") % 2 == 0:
            return text[: match.start() + 1]
    return text


def _limits() -> str:
    notes = module_docs(limits)
    rows = [[f"{getattr(limits, name):,}", docstring(first_sentence(notes[name]))] for name in _LIMITS]
    return table(["Limit", "What"], rows)


def render() -> str:
    """The whole page."""
    every = entries()
    pod_wide = [entry for entry in every if entry.pattern in webhook.GLOBAL_KEYS]
    secret = [entry for entry in every if entry.pattern.startswith(shaping.SECRET_KEY)]
    template = [entry for entry in every if entry.pattern.startswith(shaping.TEMPLATE_KEY)]
    selection = [entry for entry in every if entry.pattern.startswith(shaping.SELECT_KEY)]
    headers = ["Annotation", "Value", "Sets", "Longest value", "Meaning"]
    prefix = settings.PREFIX
    intro = (
        f"The annotations the admission webhook (`secrets-agent webhook`) reads on a pod. Every key starts "
        f'with `{prefix}` (left out below); a pod annotated `{prefix}inject: "true"` gets the agent. The '
        "webhook writes the agent's configuration from them (the **Sets** column links each to its setting) "
        "and checks it with the agent's own loader: a pod whose annotations the agent would refuse is "
        "refused at creation, with every problem named by its annotation. Unknown keys under the prefix are "
        "errors, with the closest key as a hint."
    )
    return page(
        "Pod annotations reference",
        SOURCE,
        intro,
        "## Pod-wide {#pod-wide}",
        table(headers, [_row(entry) for entry in pod_wide]),
        "## Per secret {#per-secret}",
        f"One `{prefix}secret-<name>` per secret, with options named after it (`{prefix}secret-db-env`).",
        table(headers, [_row(entry) for entry in secret]),
        "## Per template {#per-template}",
        f"One `{prefix}template-<name>` per template, with options named after it.",
        table(headers, [_row(entry) for entry in template]),
        "## Per selection {#per-selection}",
        f"One `{prefix}select-<name>` per selection (a label selector), with options named after it "
        f"(`{prefix}select-payments-env-prefix`).",
        table(headers, [_row(entry) for entry in selection]),
        "## Limits {#limits}",
        "What one pod's annotations may hold (the webhook answers every pod of the cluster, under the API "
        "server's timeout: what a review costs must not be the pod's to choose).",
        _limits(),
    )


__all__ = ["MEANINGS", "Annotation", "entries", "patterns", "render"]

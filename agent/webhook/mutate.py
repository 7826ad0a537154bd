"""The mutation: a Pod -> the JSONPatch that injects the agent (pure; the decision kopf-style, testable with
tables of pods).

What a pod that asked for injection gets:

* a memory-backed ``emptyDir`` (``secrets-agent``) mounted read-only into the chosen containers;
* ``sidecar`` mode: an init container (``secrets-agent init``: every secret is on disk before the app
  starts) and a sidecar (``secrets-agent run``) appended to the containers;
* ``native`` mode: one restartable init container (``restartPolicy: Always``, Kubernetes 1.29+) running
  ``run``, whose startup probe on ``/readyz`` holds the app back until every secret is written; Jobs still
  complete, because native sidecars do not keep a pod alive;
* ``init`` mode: only the init container;
* the agent configuration as ``SECRETS_AGENT_CONFIG_YAML``, its selections resolved when the webhook
  resolves them (``known`` ids, ``agent.webhook.selections``), a restricted security context, resources,
  probes; ``shareProcessNamespace`` when a signal reload was asked for; the ``status: injected`` marker;
* Workload Identity Federation off GKE, mounted read-only into the injected containers only (the app never
  sees them): the ConfigMap of ``gcp-credentials-configmap`` (its ``credentials.json`` only) at
  ``/etc/secrets-agent``, and for ``gcp-token-audience`` a ``projected`` service account token with that
  audience at ``/var/run/secrets/tokens/gcp/token``, the paths of the hand-written manifests
  (k8s/examples/workload-identity-federation), so that one credential configuration serves both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agent.config import CONFIG_YAML_ENV
from agent.webhook.annotations import (
    Injection,
    already_injected,
    injection_requested,
    read_injection,
)
from agent.webhook.listings import Resolver
from agent.webhook.selections import with_known
from agent.webhook.settings import (
    AGENT_CONTAINER,
    CREDENTIALS_DIR,
    CREDENTIALS_KEY,
    CREDENTIALS_VOLUME,
    INIT_CONTAINER,
    INJECTED,
    PROBES_PORT,
    STATUS_ANNOTATION,
    TOKEN_DIR,
    TOKEN_EXPIRATION,
    TOKEN_PATH,
    TOKEN_VOLUME,
    VOLUME,
    InjectorSettings,
)

Operation = dict[str, Any]
"""One RFC 6902 operation: ``{"op": "add", "path": "/spec/volumes/-", "value": {...}}``."""

STARTUP_SECONDS = 120
"""How long a native sidecar may take to write every secret before the kubelet restarts it."""


@dataclass(frozen=True)
class Mutation:
    """The answer for one pod: the patch (empty: leave the pod alone) and warnings for its creator."""

    patch: tuple[Operation, ...] = ()
    warnings: tuple[str, ...] = ()
    mode: str | None = None
    """The injection mode, when the pod was changed."""
    resolved: tuple[str, ...] = ()
    """The selections given ``known`` ids at admission."""
    unresolved: tuple[str, ...] = ()
    """The selections left to their agent to list (each with a warning)."""


def mutate(
    pod: Mapping[str, Any], settings: InjectorSettings, resolver: Resolver | None = None
) -> list[Operation]:
    """The JSONPatch for ``pod``; empty when it did not ask for injection or already has it.
    Raises InvalidAnnotations (naming each bad annotation) when it asked in a way we cannot honour."""
    return list(review_pod(pod, settings, resolver).patch)


def review_pod(
    pod: Mapping[str, Any], settings: InjectorSettings, resolver: Resolver | None = None
) -> Mutation:
    """``mutate`` with the warnings: the whole decision for one pod. ``resolver``: where its selections'
    listings come from (``agent.webhook.listings.ListingCache``); None: they are not resolved."""
    if not injection_requested(pod) or already_injected(pod):
        return Mutation()
    injection = read_injection(pod, settings)
    done = with_known(injection, resolver)
    injection = done.injection
    return Mutation(
        tuple(_operations(pod, injection)), injection.warnings, injection.mode, done.resolved, done.unresolved
    )


def _operations(pod: Mapping[str, Any], injection: Injection) -> list[Operation]:
    spec = pod["spec"]
    ops: list[Operation] = []
    # Mounts first: they address the containers by their original indexes, before ours are inserted.
    mount = {"name": VOLUME, "mountPath": injection.output_path, "readOnly": True}
    for field_name in ("initContainers", "containers"):
        for index, container in enumerate(spec.get(field_name) or []):
            if container["name"] in injection.mounted:
                ops.append(
                    _append(f"/spec/{field_name}/{index}/volumeMounts", container.get("volumeMounts"), mount)
                )
    volumes: list[dict[str, Any]] = [
        {"name": VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": injection.size_limit}}
    ]
    if injection.credentials_configmap is not None:
        items = [{"key": CREDENTIALS_KEY, "path": CREDENTIALS_KEY}]  # a missing key: the kubelet says so
        volumes.append(
            {
                "name": CREDENTIALS_VOLUME,
                "configMap": {"name": injection.credentials_configmap, "items": items},
            }
        )
    if injection.token_audience is not None:
        token = {
            "audience": injection.token_audience,
            "expirationSeconds": TOKEN_EXPIRATION,
            "path": TOKEN_PATH,
        }
        volumes.append({"name": TOKEN_VOLUME, "projected": {"sources": [{"serviceAccountToken": token}]}})
    if isinstance(spec.get("volumes"), list):
        ops += [{"op": "add", "path": "/spec/volumes/-", "value": volume} for volume in volumes]
    else:
        ops.append({"op": "add", "path": "/spec/volumes", "value": volumes})
    if injection.mode in ("sidecar", "init"):
        ops.append(_prepend("/spec/initContainers", spec.get("initContainers"), _init_container(injection)))
    if injection.mode == "native":
        ops.append(_prepend("/spec/initContainers", spec.get("initContainers"), _native_sidecar(injection)))
    if injection.mode == "sidecar":
        ops.append(_append("/spec/containers", spec.get("containers"), _sidecar(injection)))
    if injection.share_process_namespace:
        ops.append({"op": "add", "path": "/spec/shareProcessNamespace", "value": True})
    ops.append(
        {"op": "add", "path": "/metadata/annotations/" + _escape(STATUS_ANNOTATION), "value": INJECTED}
    )
    return ops


def _append(path: str, current: object, item: object) -> Operation:
    if isinstance(current, list):
        return {"op": "add", "path": path + "/-", "value": item}
    return {"op": "add", "path": path, "value": [item]}  # absent or null: "add" creates (or replaces) it


def _prepend(path: str, current: object, item: object) -> Operation:
    # First: the app's own init containers may then read the secrets too.
    if isinstance(current, list):
        return {"op": "add", "path": path + "/0", "value": item}
    return {"op": "add", "path": path, "value": [item]}


def _escape(key: str) -> str:
    """A JSON Pointer token (RFC 6901): ``secrets-agent.io/status`` -> ``secrets-agent.io~1status``."""
    return key.replace("~", "~0").replace("/", "~1")


# -- the containers -------------------------------------------------------------------------------------


def _base(name: str, command: str, injection: Injection) -> dict[str, Any]:
    return {
        "name": name,
        "image": injection.image,
        "imagePullPolicy": "IfNotPresent",
        "args": [command],  # the image's entrypoint is `secrets-agent`
        "env": [{"name": CONFIG_YAML_ENV, "value": injection.config_text}],
        "resources": injection.resources.to_k8s(),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": injection.user,
            "runAsGroup": injection.group,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": _agent_mounts(injection),
        # `init` prints one line per failed secret: `kubectl describe pod` shows them.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def _agent_mounts(injection: Injection) -> list[dict[str, Any]]:
    """The injected containers' mounts: the secrets' volume (written), and the identity's (read-only)."""
    mounts: list[dict[str, Any]] = [{"name": VOLUME, "mountPath": injection.output_path}]
    if injection.credentials_configmap is not None:
        mounts.append({"name": CREDENTIALS_VOLUME, "mountPath": CREDENTIALS_DIR, "readOnly": True})
    if injection.token_audience is not None:
        mounts.append({"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": True})
    return mounts


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": PROBES_PORT},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": 2,
    }


def _with_probes(container: dict[str, Any]) -> dict[str, Any]:
    container["ports"] = [{"name": "agent-probes", "containerPort": PROBES_PORT, "protocol": "TCP"}]
    # Stale secrets make the pod unready (max_staleness), a backend outage does not restart the agent.
    container["readinessProbe"] = _probe("/readyz", 10, 3)
    container["livenessProbe"] = _probe("/healthz", 10, 6)
    return container


def _init_container(injection: Injection) -> dict[str, Any]:
    return _base(INIT_CONTAINER, "init", injection)


def _sidecar(injection: Injection) -> dict[str, Any]:
    return _with_probes(_base(AGENT_CONTAINER, "run", injection))


def _native_sidecar(injection: Injection) -> dict[str, Any]:
    container = _with_probes(_base(AGENT_CONTAINER, "run", injection))
    container["restartPolicy"] = "Always"
    # The kubelet starts the next container only once this passes: /readyz is 200 when every required
    # secret is written.
    container["startupProbe"] = _probe("/readyz", 1, STARTUP_SECONDS)
    return container

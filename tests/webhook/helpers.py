"""Pods, annotations and AdmissionReviews for the webhook tests."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import jsonpatch
import kubernetes_validate
import yaml

from agent.config import CONFIG_YAML_ENV
from agent.webhook.mutate import mutate
from agent.webhook.settings import PREFIX, InjectorSettings
from testing.admission import admission_review

K8S_VERSION = "1.30.0"
"""Native sidecars (init containers with restartPolicy: Always) are on by default from 1.29."""
PROJECT = "my-project"
DB_REF = f"projects/{PROJECT}/secrets/db-password"


def pod_annotations(**values: str) -> dict[str, str]:
    """``pod_annotations(inject="true")`` -> ``{"secrets-agent.io/inject": "true"}``; ``_`` is ``-`` in
    keys."""
    return {PREFIX + key.replace("_", "-"): value for key, value in values.items()}


def ours(values: Mapping[str, str]) -> dict[str, str]:
    """Prefix raw keys (for keys that are not Python names, e.g. ``secret-db.url``)."""
    return {PREFIX + key: value for key, value in values.items()}


def container(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "image": f"example.com/{name}:1", **fields}


def make_pod(
    annotations: Mapping[str, str] | None = None,
    containers: Sequence[dict[str, Any]] = (),
    init_containers: Sequence[dict[str, Any]] = (),
    **spec: Any,
) -> dict[str, Any]:
    """A Pod as the API server sends it to a webhook (apiVersion and kind included)."""
    metadata: dict[str, Any] = {"generateName": "web-7d9f-", "namespace": "shop"}
    if annotations is not None:
        metadata["annotations"] = dict(annotations)
    body: dict[str, Any] = {"containers": list(containers) or [container("app")], **spec}
    if init_containers:
        body["initContainers"] = list(init_containers)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": body}


def injected_pod(**values: str) -> dict[str, Any]:
    """A pod asking for injection of ``db`` plus the given annotations."""
    return make_pod(pod_annotations(inject="true", secret_db=DB_REF, **values))


def apply(pod: Mapping[str, Any], settings: InjectorSettings | None = None) -> dict[str, Any]:
    """The pod after the webhook's patch, applied with ``jsonpatch`` as the API server would."""
    patch = mutate(copy.deepcopy(dict(pod)), settings or InjectorSettings())
    return jsonpatch.apply_patch(pod, patch)  # type: ignore[no-any-return]


def find(pod: Mapping[str, Any], name: str) -> dict[str, Any]:
    """A container or init container by name."""
    spec = pod["spec"]
    for c in (spec.get("initContainers") or []) + spec["containers"]:
        if c["name"] == name:
            return c  # type: ignore[no-any-return]
    raise AssertionError(f"no container {name!r} in {[c['name'] for c in spec['containers']]}")


def agent_config(container: Mapping[str, Any]) -> dict[str, Any]:
    """The inline configuration an injected container carries, parsed."""
    values = [e["value"] for e in container["env"] if e["name"] == CONFIG_YAML_ENV]
    assert len(values) == 1
    return yaml.safe_load(values[0])  # type: ignore[no-any-return]


def validate_strict(pod: Mapping[str, Any]) -> None:
    """Raises kubernetes_validate.ValidationError when the API server's schema would refuse the pod."""
    kubernetes_validate.validate(dict(pod), K8S_VERSION, strict=True)


review = admission_review
"""An AdmissionReview request as kube-apiserver sends it for a pod (``testing.admission``)."""

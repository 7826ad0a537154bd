"""One AdmissionReview (``admission.k8s.io/v1``) in, the HTTP answer out (pure).

A body that is not an AdmissionReview of a Pod is the caller's mistake: HTTP 400 with a fixed JSON error
that names the field, never the value and never a 500. A well-formed review always gets HTTP 200 with an
AdmissionReview response carrying the request's uid: allowed with a base64 JSONPatch, allowed without one,
or refused (code 400) with a message naming every invalid annotation.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.webhook.limits import MAX_LOGGED, MAX_SHOWN, shortened
from agent.webhook.listings import Resolver
from agent.webhook.mutate import Mutation, review_pod
from agent.webhook.problems import AnnotationProblem, InvalidAnnotations
from agent.webhook.settings import PREFIX, InjectorSettings

API_VERSION = "admission.k8s.io/v1"
KIND = "AdmissionReview"


class BadReview(ValueError):
    """The body is not an AdmissionReview of a Pod; the message names what is wrong, never a value."""


@dataclass(frozen=True)
class Answer:
    """The HTTP answer to one POST /mutate, and the fields of its log line."""

    status: int
    body: dict[str, Any]
    log_fields: dict[str, object] = field(default_factory=dict)


def answer_review(raw: bytes, settings: InjectorSettings, resolver: Resolver | None = None) -> Answer:
    """Decode, decide, encode. Never raises for any input. ``resolver``: the listings a pod's selections
    are resolved from (``review_pod``); it may wait for one, at most its own timeout."""
    try:
        request = _request(raw)
    except BadReview as error:
        return Answer(400, {"error": str(error)})
    uid: str = request["uid"]
    pod: dict[str, Any] = request["object"]
    metadata = pod.get("metadata") or {}
    # Names as the pod's creator wrote them (the API server checks them after the webhook): cut short.
    log_fields: dict[str, object] = {
        "uid": shortened(uid, MAX_LOGGED),
        "namespace": shortened(request.get("namespace") or metadata.get("namespace") or "", MAX_LOGGED),
        "pod": shortened(metadata.get("name") or (metadata.get("generateName") or "") + "*", MAX_LOGGED),
        "operation": request["operation"],
        "dry_run": request.get("dryRun") is True,
    }
    response: dict[str, Any] = {"uid": uid, "allowed": True}
    mutation = Mutation()
    refused: InvalidAnnotations | None = None
    if request["operation"] == "CREATE":  # a pod's containers cannot change after creation
        try:
            mutation = review_pod(pod, settings, resolver)
        except InvalidAnnotations as error:
            refused = error
        except RecursionError:
            # The parsers a review relies on (regular expressions, YAML) recurse; the limits keep every
            # value too short for that, and this keeps a miss a refusal rather than a 500.
            refused = InvalidAnnotations([AnnotationProblem(PREFIX + "*", "nested too deeply to be checked")])
    if refused is not None:
        response = {
            "uid": uid,
            "allowed": False,
            "status": {"code": 400, "status": "Failure", "reason": "BadRequest", "message": str(refused)},
        }
        # Only the names (a message may quote an annotation's value), as many as the refusal lists.
        log_fields["invalid"] = list(refused.annotations[:MAX_SHOWN])
        if len(refused.annotations) > MAX_SHOWN:
            log_fields["invalid_count"] = len(refused.annotations)
    if mutation.patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(json.dumps(mutation.patch).encode()).decode("ascii")
        log_fields["mode"] = mutation.mode
    if mutation.warnings:
        response["warnings"] = list(mutation.warnings)
    if mutation.resolved:
        log_fields["selections_resolved"] = list(mutation.resolved)
    if mutation.unresolved:
        # Names only; the reasons are in the warnings and in the listing's own log line.
        log_fields["selections_unresolved"] = list(mutation.unresolved)
    log_fields["allowed"] = response["allowed"]
    log_fields["patch_ops"] = len(mutation.patch)
    return Answer(200, {"apiVersion": API_VERSION, "kind": KIND, "response": response}, log_fields)


# -- decoding -------------------------------------------------------------------------------------------


def _request(raw: bytes) -> dict[str, Any]:
    """The review's ``request``, checked as far as the mutation reads it."""
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError):  # bad JSON, bad UTF-8, a 5,000-digit number, deep nesting
        raise BadReview("the body is not a JSON document") from None
    if not isinstance(document, dict):
        raise BadReview("expected an AdmissionReview object")
    if document.get("apiVersion") != API_VERSION or document.get("kind") != KIND:
        raise BadReview(f"expected apiVersion {API_VERSION} and kind {KIND}")
    request = document.get("request")
    if not isinstance(request, dict):
        raise BadReview("request: expected an object")
    if not isinstance(request.get("uid"), str) or not request["uid"]:
        raise BadReview("request.uid: expected a non-empty string")
    if not isinstance(request.get("operation"), str):
        raise BadReview("request.operation: expected a string")
    for name in ("namespace", "name"):
        _optional(request, name, str, f"request.{name}")
    _optional(request, "dryRun", bool, "request.dryRun")
    kind = request.get("kind")
    if kind is not None and (
        not isinstance(kind, dict) or kind.get("group") != "" or kind.get("kind") != "Pod"
    ):
        raise BadReview("request.kind: only core/v1 Pods are handled")
    pod = request.get("object")
    if not isinstance(pod, dict):
        raise BadReview("request.object: expected a Pod")
    _check_pod(pod)
    return request


def _check_pod(pod: dict[str, Any]) -> None:
    if pod.get("kind", "Pod") != "Pod":
        raise BadReview("request.object.kind: only Pods are handled")
    metadata = _optional(pod, "metadata", dict, "request.object.metadata") or {}
    for name in ("name", "generateName", "namespace"):
        _optional(metadata, name, str, f"request.object.metadata.{name}")
    annotations = _optional(metadata, "annotations", dict, "request.object.metadata.annotations") or {}
    if not all(isinstance(value, str) for value in annotations.values()):
        raise BadReview("request.object.metadata.annotations: expected string values")
    spec = pod.get("spec")
    if not isinstance(spec, dict):
        raise BadReview("request.object.spec: expected an object")
    _optional(spec, "securityContext", dict, "request.object.spec.securityContext")
    _optional(spec, "volumes", list, "request.object.spec.volumes")
    if not isinstance(spec.get("containers"), list):
        raise BadReview("request.object.spec.containers: expected a list")
    for field_name in ("containers", "initContainers"):
        where = f"request.object.spec.{field_name}"
        for container in _optional(spec, field_name, list, where) or []:
            if not isinstance(container, dict) or not isinstance(container.get("name"), str):
                raise BadReview(f"{where}: expected objects with a name")
            _optional(container, "securityContext", dict, f"{where}[].securityContext")
            for mount in _optional(container, "volumeMounts", list, f"{where}[].volumeMounts") or []:
                if not isinstance(mount, dict):
                    raise BadReview(f"{where}[].volumeMounts: expected objects")


def _optional(parent: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    """``parent[key]`` when it is a ``kind``; absent or null is None; anything else is a BadReview."""
    value = parent.get(key)
    if value is not None and not isinstance(value, kind):
        raise BadReview(f"{where}: expected {_NAMES[kind]}")
    return value


_NAMES = {dict: "an object", list: "a list", str: "a string", bool: "true or false"}

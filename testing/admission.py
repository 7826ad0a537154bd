"""An AdmissionReview request as kube-apiserver sends it for a pod: what the webhook's tests and the
benchmarks that drive the webhook (``bench.webhook``, ``bench.fleet.admission``) post to ``/mutate``."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any


def admission_review(
    pod: Mapping[str, Any], *, dry_run: bool = False, operation: str = "CREATE", namespace: str = "shop"
) -> dict[str, Any]:
    """The AdmissionReview of ``pod`` (a new uid each time), created by a ReplicaSet in ``namespace``."""
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
            "operation": operation,
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": dict(pod),
            "oldObject": None,
            "dryRun": dry_run,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }

"""k8s/webhook, rendered by the real ``kubectl kustomize``: valid objects (Kubernetes' schemas strictly,
cert-manager's by schema), wired to each other (Service -> Deployment port -> the webhook's --listen,
Certificate -> Secret -> the --tls-* files, MutatingWebhookConfiguration -> Service and Certificate), and the
README's failurePolicy patch and example pod doing what it says."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.cli import parse
from agent.config import split_listen
from agent.webhook.cli import options_from
from agent.webhook.settings import InjectorSettings
from tests.k8s import render as k8s
from tests.webhook.helpers import apply, validate_strict

WEBHOOK = k8s.K8S / "webhook"
README = WEBHOOK / "README.md"
NAMESPACE = "secrets-agent"


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    return k8s.render(WEBHOOK)


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind}"
    return found[0]


def test_the_objects(docs: list[dict[str, Any]]) -> None:
    kinds = sorted(k8s.name_of(d) for d in docs)
    assert kinds == [
        "Certificate/secrets-agent-webhook-ca",
        "Certificate/secrets-agent-webhook-tls",
        "Deployment/secrets-agent-webhook",
        "Issuer/secrets-agent-webhook-ca",
        "Issuer/secrets-agent-webhook-selfsigned",
        "MutatingWebhookConfiguration/secrets-agent",
        "Namespace/secrets-agent",
        "NetworkPolicy/secrets-agent-webhook",
        "PodDisruptionBudget/secrets-agent-webhook",
        "Service/secrets-agent-webhook",
        "ServiceAccount/secrets-agent-webhook",
    ]
    for doc in docs:
        if doc["kind"] not in ("Namespace", "MutatingWebhookConfiguration"):
            assert doc["metadata"]["namespace"] == NAMESPACE, k8s.name_of(doc)


def test_every_object_is_valid(docs: list[dict[str, Any]]) -> None:
    problems = [p for d in docs for p in (k8s.validate_core(d) if k8s.is_core(d) else k8s.validate_custom(d))]
    assert not problems, "\n".join(problems)


def webhook_options(deployment: dict[str, Any]) -> Any:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    invocation = parse(container["args"], {})
    assert invocation.command == "webhook"
    return options_from(invocation.args)


def test_the_deployment_is_highly_available_and_restricted(docs: list[dict[str, Any]]) -> None:
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = k8s.pod_specs([deployment])[0]
    assert k8s.security_problems(pod) == []
    assert pod.spec["automountServiceAccountToken"] is False
    spread = {c["topologyKey"] for c in pod.spec["topologySpreadConstraints"]}
    assert spread == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    for constraint in pod.spec["topologySpreadConstraints"]:
        assert constraint["labelSelector"]["matchLabels"].items() <= pod.labels.items()
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod.labels.items()


def test_service_port_and_probes_reach_the_webhook_s_listener(docs: list[dict[str, Any]]) -> None:
    deployment = one(docs, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    _, listen_port = split_listen(webhook_options(deployment).listen)
    service = one(docs, "Service")
    (port,) = service["spec"]["ports"]
    assert port["port"] == 443
    assert k8s.container_port(container, port["targetPort"]) == listen_port
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        check = container[probe]["httpGet"]
        assert (check["path"], check["scheme"]) == (path, "HTTPS")
        assert k8s.container_port(container, check["port"]) == listen_port


def test_the_certificate_reaches_the_webhook_s_tls_flags(docs: list[dict[str, Any]]) -> None:
    deployment = one(docs, "Deployment")
    options = webhook_options(deployment)
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    serving = next(d for d in docs if d["kind"] == "Certificate" and not d["spec"].get("isCA"))
    for file in (options.cert_file, options.key_file):
        mount = k8s.mount_for(container, str(file))
        assert mount is not None, file
        assert mount["readOnly"] is True, file
        volume = k8s.volume(pod, mount["name"])
        assert volume is not None
        assert volume["secret"]["secretName"] == serving["spec"]["secretName"]
        items = {item["path"]: item["key"] for item in volume["secret"]["items"]}
        assert items[file.name] == file.name  # cert-manager's keys: tls.crt, tls.key
    # readable by the webhook's group only
    assert volume is not None
    assert volume["secret"]["defaultMode"] == 0o440
    assert pod["securityContext"]["fsGroup"] == container["securityContext"]["runAsGroup"]
    service = one(docs, "Service")
    assert f"{service['metadata']['name']}.{NAMESPACE}.svc" in serving["spec"]["dnsNames"]
    # Signed by a CA issuer, itself from a self-signed CA certificate: renewals keep the same CA.
    issuer = next(
        d
        for d in docs
        if d["kind"] == "Issuer" and d["metadata"]["name"] == serving["spec"]["issuerRef"]["name"]
    )
    ca = next(d for d in docs if d["kind"] == "Certificate" and d["spec"].get("isCA"))
    assert issuer["spec"]["ca"]["secretName"] == ca["spec"]["secretName"]
    root = next(
        d for d in docs if d["kind"] == "Issuer" and d["metadata"]["name"] == ca["spec"]["issuerRef"]["name"]
    )
    assert root["spec"] == {"selfSigned": {}}


def test_the_webhook_configuration(docs: list[dict[str, Any]]) -> None:
    configuration = one(docs, "MutatingWebhookConfiguration")
    serving = next(d for d in docs if d["kind"] == "Certificate" and not d["spec"].get("isCA"))
    annotations = configuration["metadata"]["annotations"]
    assert annotations["cert-manager.io/inject-ca-from"] == f"{NAMESPACE}/{serving['metadata']['name']}"
    (webhook,) = configuration["webhooks"]
    assert webhook["admissionReviewVersions"] == ["v1"]
    assert webhook["sideEffects"] == "None"
    assert webhook["reinvocationPolicy"] == "IfNeeded"
    assert webhook["failurePolicy"] == "Fail"
    assert webhook["timeoutSeconds"] <= 5
    assert webhook["rules"] == [
        {
            "operations": ["CREATE"],
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "resources": ["pods"],
            "scope": "Namespaced",
        }
    ]
    service = one(docs, "Service")
    assert webhook["clientConfig"]["service"] == {
        "name": service["metadata"]["name"],
        "namespace": NAMESPACE,
        "path": "/mutate",
        "port": service["spec"]["ports"][0]["port"],
    }
    assert "caBundle" not in webhook["clientConfig"]  # cert-manager injects it
    expressions = webhook["namespaceSelector"]["matchExpressions"]
    assert {"key": "secrets-agent.io/inject", "operator": "In", "values": ["enabled"]} in expressions
    excluded = next(e for e in expressions if e["key"] == "kubernetes.io/metadata.name")
    assert excluded["operator"] == "NotIn"
    assert NAMESPACE in excluded["values"]
    (condition,) = webhook["matchConditions"]
    assert "'secrets-agent.io/inject' in object.metadata.annotations" in condition["expression"]


def test_the_network_policy_admits_only_the_https_port_and_no_egress(docs: list[dict[str, Any]]) -> None:
    deployment = one(docs, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    _, listen_port = split_listen(webhook_options(deployment).listen)
    policy = one(docs, "NetworkPolicy")["spec"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    assert policy["egress"] == []  # the webhook calls nobody
    (rule,) = policy["ingress"]
    ports = [(k8s.container_port(container, p["port"]), p["protocol"]) for p in rule["ports"]]
    assert ports == [(listen_port, "TCP")]
    # Sources are address ranges (the API server is no pod): never a selector that admits pods.
    assert rule["from"]
    assert all(set(source) == {"ipBlock"} for source in rule["from"])


def test_the_readme_s_network_policy_patch_admits_only_the_control_plane(tmp_path: Path) -> None:
    (overlay,) = [b for b in readme_yaml_blocks() if "kind: NetworkPolicy" in b]
    data = yaml.safe_load(overlay)
    data["resources"] = [os.path.relpath(WEBHOOK, tmp_path)]
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(data))
    rendered = subprocess.run(
        [k8s.kubectl(), "kustomize", str(tmp_path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert rendered.returncode == 0, rendered.stderr
    policy = next(d for d in yaml.safe_load_all(rendered.stdout) if d and d["kind"] == "NetworkPolicy")
    assert policy["spec"]["ingress"][0]["from"] == [{"ipBlock": {"cidr": "172.16.0.0/28"}}]
    assert k8s.validate_core(policy) == []


def test_the_webhook_s_namespace_runs_restricted(docs: list[dict[str, Any]]) -> None:
    labels = one(docs, "Namespace")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert "secrets-agent.io/inject" not in labels


def test_the_injected_image_is_the_deployed_one(docs: list[dict[str, Any]]) -> None:
    deployment = one(docs, "Deployment")
    options = webhook_options(deployment)
    assert options.injector.image == deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert options.injector == InjectorSettings(image=options.injector.image)


# --- the README -----------------------------------------------------------------------------------------


def readme_yaml_blocks() -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_the_readme_s_failure_policy_patch_switches_to_ignore(tmp_path: Path) -> None:
    (overlay,) = [b for b in readme_yaml_blocks() if "failurePolicy" in b]
    data = yaml.safe_load(overlay)
    data["resources"] = [os.path.relpath(WEBHOOK, tmp_path)]  # kustomize wants a relative path
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(data))
    rendered = subprocess.run(
        [k8s.kubectl(), "kustomize", str(tmp_path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert rendered.returncode == 0, rendered.stderr
    configuration = next(
        d for d in yaml.safe_load_all(rendered.stdout) if d and d["kind"] == "MutatingWebhookConfiguration"
    )
    assert configuration["webhooks"][0]["failurePolicy"] == "Ignore"


def test_the_readme_s_example_pod_is_injected_into_a_valid_pod() -> None:
    (example,) = [yaml.safe_load(b) for b in readme_yaml_blocks() if "kind: Deployment" in b]
    template = example["spec"]["template"]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": template["metadata"], "spec": template["spec"]}
    patched = apply(pod)
    validate_strict(patched)
    names = [c["name"] for c in patched["spec"]["initContainers"] + patched["spec"]["containers"]]
    assert names == ["secrets-agent-init", "app", "secrets-agent"]
    assert patched["spec"]["shareProcessNamespace"] is True
    assert patched["metadata"]["annotations"]["secrets-agent.io/status"] == "injected"


def test_the_readme_lists_every_annotation_and_flag() -> None:
    from agent.webhook.annotations import GLOBAL_KEYS
    from agent.webhook.shaping import SECRET_OPTIONS, SELECT_OPTIONS, TEMPLATE_OPTIONS

    text = README.read_text()
    for key in GLOBAL_KEYS:
        assert f"`{key}`" in text or f"`{key}`," in text, key
    for option in SECRET_OPTIONS:
        assert f"`secret-<name>-{option}`" in text
    assert "`template-<name>`" in text
    for option in TEMPLATE_OPTIONS:
        assert f"`template-<name>-{option}`" in text
    assert "`select-<name>`" in text
    for option in SELECT_OPTIONS:
        assert f"`select-<name>-{option}`" in text
    help_text = subprocess.run(
        [sys.executable, "-m", "agent", "webhook", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=k8s.REPO,
    )
    flags = set(re.findall(r"(--[a-z][a-z-]+)", help_text.stdout)) - {"--help"}
    assert flags
    for flag in flags:
        assert f"`{flag}" in text, flag


# --- resolving selections: an opt-in component ------------------------------------------------------------


def test_the_readme_s_resolution_overlay_opens_only_what_listing_needs(tmp_path: Path) -> None:
    (overlay,) = [b for b in readme_yaml_blocks() if "components:" in b]
    data = yaml.safe_load(overlay)
    data["resources"] = [os.path.relpath(WEBHOOK, tmp_path)]
    data["components"] = [os.path.relpath(k8s.K8S / "components" / "webhook-resolve-selections", tmp_path)]
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(data))
    rendered = subprocess.run(
        [k8s.kubectl(), "kustomize", str(tmp_path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert rendered.returncode == 0, rendered.stderr
    docs = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    problems = [p for d in docs if k8s.is_core(d) for p in k8s.validate_core(d)]
    assert not problems, "\n".join(problems)
    options = webhook_options(one(docs, "Deployment"))
    assert options.resolver is not None
    assert options.resolver.listings_per_minute == 30
    policies = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "NetworkPolicy"}
    assert policies["secrets-agent-webhook"]["egress"] == []  # the shipped policy is left as it is
    egress = policies["secrets-agent-webhook-egress"]
    assert egress["policyTypes"] == ["Egress"]
    assert "ingress" not in egress
    ports = sorted((p["port"], p["protocol"]) for rule in egress["egress"] for p in rule["ports"])
    assert ports == [(53, "TCP"), (53, "UDP"), (80, "TCP"), (443, "TCP"), (988, "TCP")]
    account = one(docs, "ServiceAccount")
    assert "iam.gke.io/gcp-service-account" in account["metadata"]["annotations"]


def test_the_default_webhook_does_not_resolve_selections(docs: list[dict[str, Any]]) -> None:
    assert webhook_options(one(docs, "Deployment")).resolver is None

"""The manifests under k8s/: every kustomization renders with the real ``kubectl kustomize``, validates
against Kubernetes' schemas (strict, oldest and newest supported version) or the custom kinds' schemas, runs
every pod under the restricted security profile, refers only to things that exist, and runs the agent with
flags and settings the agent's own CLI accepts."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent import __version__
from agent.cli import parse
from agent.config import Config
from agent.errors import ConfigError
from agent.rotation.config import load_rotation_config
from tests.k8s import render as k8s
from tests.k8s.render import Container, Doc, PodTemplate

KUSTOMIZATIONS = k8s.kustomizations()
EXAMPLES = k8s.K8S / "examples"
EXPECTED_EXAMPLES = {"sidecar", "native-sidecar", "native-sidecar-job", "init-only", "external-secrets"}


def by_name(directories: list[Path]) -> dict[str, Path]:
    return {k8s.relative(d): d for d in directories}


@pytest.fixture(params=sorted(by_name(KUSTOMIZATIONS)))
def kustomization(request: pytest.FixtureRequest) -> Path:
    return by_name(KUSTOMIZATIONS)[request.param]


def rendered(directory: Path) -> list[Doc]:
    return k8s.render(directory)


def example(name: str) -> list[Doc]:
    return rendered(EXAMPLES / name)


def renderable() -> Iterator[tuple[Path, list[Doc]]]:
    """Each kustomization that renders, for parametrizing at collection time. One that does not render is
    left out here and fails test_renders, rather than breaking the collection of the whole module."""
    for directory in KUSTOMIZATIONS:
        try:
            yield directory, rendered(directory)
        except k8s.RenderError:
            continue


def all_pods() -> Iterator[tuple[str, PodTemplate]]:
    for directory, docs in renderable():
        for pod in k8s.pod_specs(docs):
            yield k8s.relative(directory), pod


# --------------------------------------------------------------------------------------------------
# What is there, and that it renders
# --------------------------------------------------------------------------------------------------


def test_every_example_the_issue_asks_for_is_there() -> None:
    found = {d.name for d in KUSTOMIZATIONS if d.parent == EXAMPLES}
    assert found >= EXPECTED_EXAMPLES, f"missing examples: {sorted(EXPECTED_EXAMPLES - found)}"
    assert k8s.K8S / "base" in KUSTOMIZATIONS


def test_the_test_finds_kubectl() -> None:
    # Not a skip when absent: kubectl ships with the Google Cloud SDK on every machine that runs these tests.
    assert Path(k8s.kubectl()).is_file()


def test_renders(kustomization: Path) -> None:
    docs = rendered(kustomization)
    assert docs, f"{k8s.relative(kustomization)} renders nothing"
    names = [(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs]
    assert len(names) == len(set(names)), f"duplicate objects: {names}"


def test_every_component_is_used() -> None:
    used: set[Path] = set()
    for directory in KUSTOMIZATIONS:
        file = next(directory / n for n in k8s.KUSTOMIZATION_FILES if (directory / n).is_file())
        for entry in yaml.safe_load(file.read_text()).get("components", []):
            used.add((directory / entry).resolve())
    unused = [k8s.relative(c) for c in k8s.components() if c.resolve() not in used]
    assert not unused, f"components no kustomization uses: {unused}"


def test_examples_build_on_the_shared_base() -> None:
    for name in EXPECTED_EXAMPLES:
        file = EXAMPLES / name / "kustomization.yaml"
        resources = yaml.safe_load(file.read_text())["resources"]
        assert "../../base" in resources, f"{file}: resources must include ../../base"


# --------------------------------------------------------------------------------------------------
# Schemas
# --------------------------------------------------------------------------------------------------


def test_core_kinds_are_valid_for_kubernetes_1_29_and_the_newest(kustomization: Path) -> None:
    core = [doc for doc in rendered(kustomization) if k8s.is_core(doc)]
    problems = [p for doc in core for p in k8s.validate_core(doc)]
    assert not problems, "\n".join(problems)


def test_other_kinds_match_their_published_schemas(kustomization: Path) -> None:
    others = [doc for doc in rendered(kustomization) if not k8s.is_core(doc)]
    problems = [p for doc in others for p in k8s.validate_custom(doc)]
    assert not problems, "\n".join(problems)


def test_the_schema_check_catches_a_misspelt_field() -> None:
    """The validation above would pass everything if strictness were lost somewhere on the way."""
    deployment = next(d for d in example("sidecar") if d["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFileSystem"] = True
    assert any("readOnlyRootFileSystem" in p for p in k8s.validate_core(deployment))
    store = next(d for d in example("external-secrets") if d["kind"] == "SecretStore")
    store["spec"]["provider"]["gcpsm"]["auth"]["workloadIdentity"]["clusterNmae"] = "x"
    assert any("clusterNmae" in p for p in k8s.validate_custom(store))


# --------------------------------------------------------------------------------------------------
# Restricted pods, table-driven
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "pod"), list(all_pods()), ids=lambda v: v if isinstance(v, str) else v.name
)
def test_every_pod_and_container_is_restricted(where: str, pod: PodTemplate) -> None:
    problems = k8s.security_problems(pod)
    assert not problems, f"{where}:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    ("field", "value", "complaint"),
    [
        ("runAsNonRoot", False, "runAsNonRoot"),
        ("readOnlyRootFilesystem", False, "readOnlyRootFilesystem"),
        ("allowPrivilegeEscalation", True, "allowPrivilegeEscalation"),
        ("capabilities", {"drop": ["NET_RAW"]}, "capabilities.drop"),
        ("capabilities", {"drop": ["ALL"], "add": ["NET_ADMIN"]}, "capabilities.add"),
        ("seccompProfile", {"type": "Unconfined"}, "seccompProfile"),
        ("runAsUser", 0, "runAsUser"),
        ("privileged", True, "privileged"),
    ],
)
def test_the_security_check_catches_each_loosened_setting(field: str, value: object, complaint: str) -> None:
    deployment = next(d for d in example("sidecar") if d["kind"] == "Deployment")
    pod = k8s.pod_specs([deployment])[0]
    assert k8s.security_problems(pod) == []
    agent = next(c for c in pod.spec["containers"] if c["name"] == "secrets-agent")
    agent["securityContext"][field] = value
    problems = k8s.security_problems(pod)
    assert any(complaint in p and "secrets-agent" in p for p in problems), problems


def test_the_agent_runs_as_65532_everywhere() -> None:
    agents = [(where, c) for where, pod in all_pods() for c in k8s.containers(pod.spec) if c.is_agent]
    assert len(agents) >= 5  # sidecar: init + run; native sidecar; job; init-only
    for where, container in agents:
        security = container.spec["securityContext"]
        assert (security["runAsUser"], security["runAsGroup"]) == (65532, 65532), f"{where} {container.name}"


# --------------------------------------------------------------------------------------------------
# References between objects
# --------------------------------------------------------------------------------------------------


def secret_names(docs: list[Doc]) -> set[str]:
    """Secrets this kustomization creates: Secrets, ExternalSecret targets, cert-manager certificates."""
    names = {d["metadata"]["name"] for d in docs if d["kind"] == "Secret"}
    for doc in docs:
        if doc["kind"] == "ExternalSecret":
            names.add(doc["spec"].get("target", {}).get("name") or doc["metadata"]["name"])
        if doc["kind"] == "Certificate":
            names.add(doc["spec"]["secretName"])
    return names


def secret_references(pod: Doc) -> Iterator[tuple[str, str]]:
    for volume in pod.get("volumes", []):
        if "secret" in volume:
            yield f"volume {volume['name']}", volume["secret"]["secretName"]
    for container in k8s.containers(pod):
        for item in container.spec.get("env", []):
            ref = item.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                yield f"{container.name} env {item['name']}", ref["name"]
        for source in container.spec.get("envFrom", []):
            if "secretRef" in source:
                yield f"{container.name} envFrom", source["secretRef"]["name"]


def test_references_resolve(kustomization: Path) -> None:
    problems = reference_problems(rendered(kustomization))
    assert not problems, "\n".join(problems)


def test_the_reference_check_catches_dangling_names() -> None:
    docs = example("external-secrets")
    store = next(d for d in docs if d["kind"] == "SecretStore")
    store["spec"]["provider"]["gcpsm"]["auth"]["workloadIdentity"]["serviceAccountRef"]["name"] = "nobody"
    next(d for d in docs if d["kind"] == "ExternalSecret")["spec"]["target"]["name"] = "other-secrets"
    problems = reference_problems(docs)
    assert any("Secret app-secrets is not created" in p for p in problems), problems
    assert any("ServiceAccount nobody" in p for p in problems), problems
    docs = example("sidecar")
    pod = k8s.pod_specs(docs)[0].spec
    pod["serviceAccountName"] = "typo"
    pod["containers"][1]["readinessProbe"]["httpGet"]["port"] = "probe"
    pod["volumes"][1]["configMap"]["name"] = "demo-app-secrets-agent"  # without kustomize's hash suffix
    assert len(reference_problems(docs)) == 3, reference_problems(docs)


def reference_problems(docs: list[Doc]) -> list[str]:
    """Names that point at nothing: ServiceAccounts, volumes, ConfigMaps, Secrets, probe ports, stores,
    selectors, Service ports, webhook Services, issuers."""
    problems = []
    service_accounts = {d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"}
    config_maps = {d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"}
    secrets = secret_names(docs)
    for pod in k8s.pod_specs(docs):
        account = pod.spec.get("serviceAccountName")
        if account is not None and account not in service_accounts:
            problems.append(f"{pod.name}: serviceAccountName {account} is not in this kustomization")
        volumes = {v["name"]: v for v in pod.spec.get("volumes", [])}
        for container in k8s.containers(pod.spec):
            for mount in container.spec.get("volumeMounts", []):
                if mount["name"] not in volumes:
                    problems.append(f"{pod.name} {container.name}: mounts unknown volume {mount['name']}")
            for probe_kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                port = k8s.lookup(container.spec, f"{probe_kind}.httpGet.port")
                if port is not None and k8s.container_port(container.spec, port) is None:  # type: ignore[arg-type]
                    problems.append(
                        f"{pod.name} {container.name}: {probe_kind} port {port} is not a port of it"
                    )
        for volume in volumes.values():
            if "configMap" in volume and volume["configMap"]["name"] not in config_maps:
                problems.append(
                    f"{pod.name}: volume {volume['name']}: no ConfigMap {volume['configMap']['name']}"
                )
        for what, name in secret_references(pod.spec):
            if name not in secrets:
                problems.append(f"{pod.name} {what}: Secret {name} is not created by this kustomization")
    for doc in docs:
        if doc["kind"] == "ExternalSecret":
            store = doc["spec"]["secretStoreRef"]
            if store.get("kind", "SecretStore") == "SecretStore" and not k8s.find(
                docs, "SecretStore", store["name"]
            ):
                problems.append(
                    f"{k8s.name_of(doc)}: SecretStore {store['name']} is not in this kustomization"
                )
        if doc["kind"] == "SecretStore":
            account = k8s.lookup(doc, "spec.provider.gcpsm.auth.workloadIdentity.serviceAccountRef.name")
            if account is not None and account not in service_accounts:
                problems.append(f"{k8s.name_of(doc)}: ServiceAccount {account} is not in this kustomization")
        if doc["kind"] in {"Service", "PodDisruptionBudget"}:
            selector = doc["spec"].get("selector") or {}
            selector = (
                selector.get("matchLabels", selector) if doc["kind"] == "PodDisruptionBudget" else selector
            )
            matched = [p for p in k8s.pod_specs(docs) if selector.items() <= dict(p.labels).items()]
            if not matched:
                problems.append(
                    f"{k8s.name_of(doc)}: selector {selector} matches no pod of this kustomization"
                )
            if doc["kind"] == "Service":
                problems += service_port_problems(doc, matched)
        problems += webhook_problems(doc, docs)
    return problems


def service_port_problems(service: Doc, pods: list[PodTemplate]) -> list[str]:
    """Each Service port's targetPort (a number, or a port name) is a port of the pods it selects."""
    problems = []
    for port in service["spec"].get("ports", []):
        target = port.get("targetPort", port["port"])
        ports = [p for pod in pods for c in k8s.containers(pod.spec) for p in c.spec.get("ports", [])]
        found = any(p.get("name" if isinstance(target, str) else "containerPort") == target for p in ports)
        if not found:
            problems.append(f"{k8s.name_of(service)}: targetPort {target} is no port of the pods it selects")
    return problems


def webhook_problems(doc: Doc, docs: list[Doc]) -> list[str]:
    """Admission webhooks call a Service of this kustomization; cert-manager's CA injection and issuers
    name objects that exist."""
    problems = []
    if doc["kind"] in {"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"}:
        for hook in doc.get("webhooks", []):
            service = hook["clientConfig"].get("service")
            found = service and k8s.find(docs, "Service", service["name"])
            if service and not (found and found["metadata"].get("namespace") == service.get("namespace")):
                problems.append(f"{k8s.name_of(doc)} {hook['name']}: no Service {service}")
    inject = doc.get("metadata", {}).get("annotations", {}).get("cert-manager.io/inject-ca-from")
    if inject:
        namespace, _, name = inject.partition("/")
        certificate = k8s.find(docs, "Certificate", name)
        if certificate is None or certificate["metadata"].get("namespace") != namespace:
            problems.append(f"{k8s.name_of(doc)}: inject-ca-from {inject}: no such Certificate")
    if doc["kind"] == "Certificate":
        issuer = doc["spec"]["issuerRef"]
        if issuer.get("kind", "Issuer") == "Issuer" and not k8s.find(docs, "Issuer", issuer["name"]):
            problems.append(f"{k8s.name_of(doc)}: Issuer {issuer['name']} is not in this kustomization")
    return problems


def test_service_accounts_carry_a_workload_identity_binding() -> None:
    accounts = [d for d in rendered(k8s.K8S / "base") if d["kind"] == "ServiceAccount"]
    assert accounts
    for account in accounts:
        email = account["metadata"].get("annotations", {}).get("iam.gke.io/gcp-service-account", "")
        assert re.fullmatch(
            r"[a-z][-a-z0-9]{4,28}[a-z0-9]@[a-z][-a-z0-9]{4,28}[a-z0-9]\.iam\.gserviceaccount\.com", email
        )


# --------------------------------------------------------------------------------------------------
# The agent's containers, through the agent's own CLI
# --------------------------------------------------------------------------------------------------


def agent_cases() -> Iterator[tuple[str, PodTemplate, Container]]:
    for directory, docs in renderable():
        for pod, container in k8s.agent_containers(docs):
            yield k8s.relative(directory), pod, container


def parsed(where: str, pod: PodTemplate, container: Container, tmp_path: Path, capsys: Any) -> Any:
    directory = k8s.REPO / where
    line = k8s.agent_command_line(rendered(directory), pod.spec, container.spec, tmp_path)
    try:
        return parse(line.argv, line.env)
    except SystemExit:  # argparse: an unknown flag or a missing value
        pytest.fail(f"{where} {pod.name} {container.name}: {capsys.readouterr().err.strip()}")
    except ConfigError as error:
        pytest.fail(f"{where} {pod.name} {container.name}: " + "; ".join(map(str, error.problems)))


AGENT_CASES = list(agent_cases())


@pytest.mark.parametrize(
    ("where", "pod", "container"),
    AGENT_CASES,
    ids=[f"{w}:{p.name}:{c.name}" for w, p, c in AGENT_CASES],
)
def test_agent_containers_use_real_flags_and_settings(
    where: str, pod: PodTemplate, container: Container, tmp_path: Path, capsys: Any
) -> None:
    invocation = parsed(where, pod, container, tmp_path, capsys)
    expected = {"init": {"init"}, "sidecar": {"run"}, "app": {"run", "webhook", "rotate"}}[container.role]
    assert invocation.command in expected, f"{container.name} ({container.role}) runs {invocation.command}"
    assert k8s.image_tag(container.image) == __version__
    if invocation.command == "rotate":
        # The rotation config the container mounts is one the rotator accepts (raises ConfigError if not).
        assert invocation.args.config is not None, f"{container.name}: rotate without --config"
        rotation = load_rotation_config(invocation.args.config)
        assert rotation.project, f"{container.name}: the rotation config names no project"
        return
    if invocation.config is None:
        return
    config: Config = invocation.config
    # The secrets go to a memory-backed emptyDir, bounded in size.
    mount = k8s.mount_for(container.spec, str(config.output_dir))
    assert mount is not None, f"{config.output_dir} is not mounted"
    assert mount["mountPath"] == str(config.output_dir)
    volume = k8s.volume(pod.spec, mount["name"])
    assert volume is not None
    assert volume.get("emptyDir", {}).get("medium") == "Memory"
    assert volume["emptyDir"].get("sizeLimit")
    assert not mount.get("readOnly")
    # Reloading by signal needs to see the app's processes.
    if config.notify.process is not None:
        assert pod.spec.get("shareProcessNamespace") is True, (
            "notify.process needs shareProcessNamespace: true"
        )
        # ...and a pattern that finds the app: matched, as the agent does, against the space-joined argv.
        apps = [c for c in k8s.containers(pod.spec) if c.role == "app" and not c.is_agent]
        argvs = [" ".join([*c.spec.get("command", []), *c.spec.get("args", [])]) for c in apps]
        assert any(re.search(config.notify.process, argv) for argv in argvs), (
            f"--process {config.notify.process!r} matches no app container's command line"
        )
    if invocation.command == "run":
        probes_port = k8s.listen_port(config.probes.listen)
        probes = [k8s.lookup(container.spec, f"{p}.httpGet") for p in ("readinessProbe", "livenessProbe")]
        for probe in filter(None, probes):
            assert k8s.container_port(container.spec, probe["port"]) == probes_port  # type: ignore[index]
        assert k8s.lookup(container.spec, "livenessProbe.httpGet.path") == "/healthz"
        if container.role == "sidecar":
            assert k8s.lookup(container.spec, "startupProbe.httpGet.path") == "/readyz"
            assert (
                k8s.container_port(container.spec, container.spec["startupProbe"]["httpGet"]["port"])
                == probes_port
            )
        if container.role == "app":
            assert k8s.lookup(container.spec, "readinessProbe.httpGet.path") == "/readyz"


def test_the_cli_check_catches_a_flag_the_agent_does_not_have(tmp_path: Path, capsys: Any) -> None:
    where, pod, container = next(case for case in AGENT_CASES if case[0] == "k8s/examples/sidecar")
    container.spec["args"] = [*container.spec["args"], "--poll-every", "5m"]
    with pytest.raises(pytest.fail.Exception, match="--poll-every"):
        parsed(where, pod, container, tmp_path, capsys)


def test_the_cli_check_catches_a_setting_the_agent_does_not_have(tmp_path: Path, capsys: Any) -> None:
    docs = example("sidecar")
    config_map = next(d for d in docs if d["kind"] == "ConfigMap")
    config_map["data"]["agent.yaml"] += "pol_interval: 5m\n"
    pod = k8s.pod_specs(docs)[0]
    agent = next(c for c in k8s.containers(pod.spec) if c.is_agent)
    line = k8s.agent_command_line(docs, pod.spec, agent.spec, tmp_path)
    with pytest.raises(ConfigError, match="pol_interval"):
        parse(line.argv, line.env)


# --------------------------------------------------------------------------------------------------
# What each example is for
# --------------------------------------------------------------------------------------------------


def only_pod(docs: list[Doc]) -> PodTemplate:
    pods = k8s.pod_specs(docs)
    assert len(pods) == 1
    return pods[0]


def roles(pod: PodTemplate) -> list[tuple[str, str, bool]]:
    return [(c.role, c.name, c.is_agent) for c in k8s.containers(pod.spec)]


def agent_args(pod: PodTemplate) -> dict[str, list[str]]:
    return {c.name: c.spec["args"] for c in k8s.containers(pod.spec) if c.is_agent}


def test_sidecar_example_bootstraps_then_keeps_fresh_and_reloads() -> None:
    pod = only_pod(example("sidecar"))
    assert roles(pod) == [
        ("init", "secrets-agent-init", True),
        ("app", "app", False),
        ("app", "secrets-agent", True),
    ]
    args = agent_args(pod)
    assert args["secrets-agent-init"][0] == "init"
    assert args["secrets-agent"][0] == "run"
    assert pod.spec["shareProcessNamespace"] is True
    agent = next(c for c in k8s.containers(pod.spec) if c.name == "secrets-agent").spec
    assert agent["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert agent["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_app_containers_read_the_secrets_volume_read_only() -> None:
    for name in ("sidecar", "native-sidecar", "native-sidecar-job", "init-only"):
        pod = only_pod(example(name))
        for container in k8s.containers(pod.spec):
            if not container.is_agent:
                mount = k8s.mount_for(container.spec, "/secrets")
                assert mount is not None, f"{name} {container.name}"
                assert mount.get("readOnly") is True, f"{name} {container.name}"


@pytest.mark.parametrize("name", ["native-sidecar", "native-sidecar-job"])
def test_native_sidecar_is_a_restartable_init_container_with_a_startup_probe(name: str) -> None:
    pod = only_pod(example(name))
    sidecars = [c for c in k8s.containers(pod.spec) if c.role == "sidecar"]
    assert [c.name for c in sidecars] == ["secrets-agent"]
    agent = sidecars[0].spec
    assert agent["restartPolicy"] == "Always"
    assert agent["args"][0] == "run"
    assert agent["startupProbe"]["httpGet"]["path"] == "/readyz"
    # The app containers are the only regular ones: the kubelet starts them after the startup probe.
    assert all(not c.is_agent for c in k8s.containers(pod.spec) if c.role == "app")


def test_native_sidecar_job_can_complete() -> None:
    job = next(d for d in example("native-sidecar-job") if d["kind"] == "Job")
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] in {"Never", "OnFailure"}
    # Only the job's own container decides completion; the agent is not a regular container.
    assert [c["name"] for c in pod["containers"]] == ["job"]
    assert "while" not in pod["containers"][0]["args"][0]


def test_init_only_example_has_no_long_running_agent() -> None:
    pod = only_pod(example("init-only"))
    assert roles(pod) == [("init", "secrets-agent-init", True), ("app", "app", False)]
    assert agent_args(pod)["secrets-agent-init"][0] == "init"
    assert not pod.spec.get("shareProcessNamespace")


def test_external_secrets_example() -> None:
    docs = example("external-secrets")
    store = k8s.find(docs, "SecretStore", "gcp-secret-manager")
    assert store is not None
    identity = store["spec"]["provider"]["gcpsm"]["auth"]["workloadIdentity"]
    assert {"clusterLocation", "clusterName", "serviceAccountRef"} <= identity.keys()
    secret = k8s.find(docs, "ExternalSecret", "app-secrets")
    assert secret is not None
    assert secret["spec"]["refreshInterval"] == "1h"
    keys = {item["secretKey"] for item in secret["spec"]["data"]}
    pod = only_pod(docs)
    env = {e["name"]: e for c in k8s.containers(pod.spec) for e in c.spec.get("env", [])}
    ref = env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == secret["spec"]["target"]["name"] == "app-secrets"
    assert ref["key"] in keys
    assert not any(c.is_agent for c in k8s.containers(pod.spec))


def test_images_are_pinned(kustomization: Path) -> None:
    for pod in k8s.pod_specs(rendered(kustomization)):
        for container in k8s.containers(pod.spec):
            tag = k8s.image_tag(container.image)
            assert tag not in (None, "latest") or "@sha256:" in container.image, (
                f"{pod.name} {container.image}"
            )


def test_every_container_has_small_requests_and_limits(kustomization: Path) -> None:
    def mebibytes(quantity: str) -> float:
        number, unit = re.fullmatch(r"(\d+)(Mi|Gi)", quantity).groups()  # type: ignore[union-attr]
        return int(number) * (1024 if unit == "Gi" else 1)

    for pod in k8s.pod_specs(rendered(kustomization)):
        for container in k8s.containers(pod.spec):
            resources = container.spec.get("resources", {})
            where = f"{pod.name} {container.name}"
            assert {"cpu", "memory"} <= resources.get("requests", {}).keys(), where
            assert "memory" in resources.get("limits", {}), where
            assert mebibytes(resources["limits"]["memory"]) <= 256, where

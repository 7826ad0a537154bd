"""Rendering and checking the Kubernetes manifests under ``k8s/``: helpers for every test that looks at them.

* ``kustomizations()`` / ``render(dir)``: every kustomization, rendered by the real ``kubectl kustomize``.
* ``validate_core(doc)``: Kubernetes' own schemas (``kubernetes-validate``, strict: unknown fields are errors)
  for every version in ``KUBERNETES_VERSIONS``.
* ``validate_custom(doc)``: the other kinds (External Secrets, cert-manager) against the schemas we know.
* ``pod_specs(docs)``, ``containers(pod)``, ``security_problems(pod)``: the restricted pod security checks.
* ``agent_invocation(...)``: an agent container's args, env and mounted configuration parsed by the real CLI,
  so that manifests cannot drift from the flags and settings the agent accepts.

kubectl ships with the Google Cloud SDK on the development and CI machines; when it is missing the tests fail
with a message saying so, they never skip.
"""

from __future__ import annotations

import copy
import functools
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"

# The oldest version the examples support (native sidecars are on by default from 1.29) and the newest whose
# schemas kubernetes-validate ships: a manifest must be valid on both.
KUBERNETES_VERSIONS = ("1.29", kubernetes_validate.utils.latest_version())

AGENT_IMAGE_REPOSITORY = "ghcr.io/secrets-agent/secrets-agent"

Doc = dict[str, Any]

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")


class RenderError(AssertionError):
    """``kubectl kustomize`` refused a kustomization; the message carries its stderr."""


def kubectl() -> str:
    """The kubectl binary; a test failure (not a skip) when it is missing."""
    found = shutil.which("kubectl")
    if found is None:
        pytest.fail(
            "kubectl not found on PATH: the manifest tests render k8s/ with `kubectl kustomize`. Install it "
            "(Debian: apt-get install kubectl from the Google Cloud SDK repository, or google-cloud-cli's "
            "`gcloud components install kubectl`) and run the tests again.",
            pytrace=False,
        )
    return found


def _kustomization_file(directory: Path) -> Path | None:
    for name in KUSTOMIZATION_FILES:
        if (directory / name).is_file():
            return directory / name
    return None


def _all_kustomization_dirs(root: Path) -> list[Path]:
    found = {path.parent for name in KUSTOMIZATION_FILES for path in root.rglob(name)}
    return sorted(found)


def _kind(directory: Path) -> str:
    file = _kustomization_file(directory)
    assert file is not None
    data = yaml.safe_load(file.read_text()) or {}
    return str(data.get("kind", "Kustomization"))


def kustomizations(root: Path = K8S) -> list[Path]:
    """Every kustomization under ``root`` that builds on its own (Components are built by their users)."""
    return [d for d in _all_kustomization_dirs(root) if _kind(d) != "Component"]


def components(root: Path = K8S) -> list[Path]:
    """Every kustomize Component under ``root``."""
    return [d for d in _all_kustomization_dirs(root) if _kind(d) == "Component"]


def relative(directory: Path) -> str:
    """``k8s/examples/sidecar``: a short name for test ids and messages."""
    return directory.resolve().relative_to(REPO).as_posix()


@functools.cache
def _render(directory: Path) -> tuple[Doc, ...]:
    result = subprocess.run(
        [kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        raise RenderError(f"kubectl kustomize {relative(directory)} failed:\n{result.stderr.strip()}")
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def render(directory: Path) -> list[Doc]:
    """The documents ``kubectl kustomize DIR`` prints (rendered once per directory; each call gets its own
    copy, so a test may change what it gets)."""
    return copy.deepcopy(list(_render(directory.resolve())))


def name_of(doc: Mapping[str, Any]) -> str:
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


# --------------------------------------------------------------------------------------------------
# Schemas
# --------------------------------------------------------------------------------------------------


def is_core(doc: Mapping[str, Any]) -> bool:
    """Whether kubernetes-validate knows this kind (the built-in API groups)."""
    try:
        kubernetes_validate.validate(dict(doc), KUBERNETES_VERSIONS[-1], strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        return False
    except kubernetes_validate.ValidationError:
        return True
    return True


def validate_core(doc: Mapping[str, Any]) -> list[str]:
    """Problems found by kubernetes-validate ``--strict`` for each of KUBERNETES_VERSIONS (empty: valid)."""
    problems = []
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(dict(doc), version, strict=True)
        except kubernetes_validate.ValidationError as error:
            where = "/".join(str(p) for p in error.path) or "(top)"
            problems.append(f"{name_of(doc)} on Kubernetes {version}: {where}: {error.message}")
    return problems


SCHEMAS = Path(__file__).resolve().parent / "schemas"


@functools.cache
def _custom_schema(api_version: str, kind: str) -> dict[str, Any] | None:
    group, _, version = api_version.rpartition("/")
    path = SCHEMAS / group / f"{kind.lower()}_{version}.yaml"
    if not path.is_file():
        return None
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded


def custom_schema_known(doc: Mapping[str, Any]) -> bool:
    """Whether tests/k8s/schemas holds a schema for this kind and apiVersion."""
    return _custom_schema(str(doc.get("apiVersion")), str(doc.get("kind"))) is not None


def validate_custom(doc: Mapping[str, Any]) -> list[str]:
    """Problems of a non-core document against its schema in tests/k8s/schemas (see the README there).

    Like ``kubectl apply`` with strict field validation, a field the schema does not define is an error."""
    schema = _custom_schema(str(doc.get("apiVersion")), str(doc.get("kind")))
    if schema is None:
        return [f"{name_of(doc)}: no schema for {doc.get('apiVersion')} {doc.get('kind')} in {SCHEMAS}"]
    validator = jsonschema.Draft202012Validator(schema)
    return [
        f"{name_of(doc)}: {'/'.join(str(p) for p in e.path) or '(top)'}: {e.message}"
        for e in sorted(validator.iter_errors(dict(doc)), key=lambda e: list(map(str, e.path)))
    ]


# --------------------------------------------------------------------------------------------------
# Pods and containers
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PodTemplate:
    """A pod spec found in a rendered document (a workload's template, or a bare Pod)."""

    owner: Doc
    spec: Doc
    labels: Mapping[str, str]

    @property
    def name(self) -> str:
        return name_of(self.owner)


def pod_specs(docs: list[Doc]) -> list[PodTemplate]:
    """The pod specs of every workload: Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob, Pod."""
    found = []
    for doc in docs:
        kind = doc.get("kind")
        template: Doc | None = None
        if kind in {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}:
            template = doc["spec"]["template"]
        elif kind == "CronJob":
            template = doc["spec"]["jobTemplate"]["spec"]["template"]
        elif kind == "Pod":
            template = doc
        if template is not None:
            labels = template.get("metadata", {}).get("labels", {})
            found.append(PodTemplate(doc, template["spec"], labels))
    return found


@dataclass(frozen=True)
class Container:
    """A container with where it sits: ``init`` (an init container that exits), ``sidecar`` (an init
    container with restartPolicy: Always) or ``app`` (a regular container)."""

    role: str
    spec: Doc

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    @property
    def image(self) -> str:
        return str(self.spec.get("image", ""))

    @property
    def is_agent(self) -> bool:
        return image_repository(self.image) == AGENT_IMAGE_REPOSITORY


def containers(pod: Doc) -> list[Container]:
    """Every container of a pod spec, init containers first."""
    found = []
    for spec in pod.get("initContainers", []):
        found.append(Container("sidecar" if spec.get("restartPolicy") == "Always" else "init", spec))
    found.extend(Container("app", spec) for spec in pod.get("containers", []))
    return found


def image_repository(image: str) -> str:
    """``ghcr.io/a/b:1.0`` -> ``ghcr.io/a/b`` (a registry port is not a tag)."""
    without_digest = image.split("@", 1)[0]
    repository, _, tag = without_digest.rpartition(":")
    return repository if repository and "/" not in tag else without_digest


def image_tag(image: str) -> str | None:
    without_digest = image.split("@", 1)[0]
    repository, _, tag = without_digest.rpartition(":")
    return tag if repository and "/" not in tag else None


# The restricted profile, as we hold every pod to it. Each row: the setting, and what it must be.
POD_SECURITY: tuple[tuple[str, object], ...] = (
    ("securityContext.runAsNonRoot", True),
    ("securityContext.seccompProfile.type", "RuntimeDefault"),
)
CONTAINER_SECURITY: tuple[tuple[str, object], ...] = (
    ("securityContext.runAsNonRoot", True),
    ("securityContext.readOnlyRootFilesystem", True),
    ("securityContext.allowPrivilegeEscalation", False),
    ("securityContext.capabilities.drop", ["ALL"]),
    ("securityContext.seccompProfile.type", "RuntimeDefault"),
)
AGENT_SECURITY: tuple[tuple[str, object], ...] = (
    ("securityContext.runAsUser", 65532),
    ("securityContext.runAsGroup", 65532),
)
FORBIDDEN_POD_FIELDS = ("hostNetwork", "hostPID", "hostIPC")


def lookup(data: Mapping[str, Any], dotted: str) -> object:
    """``lookup(spec, "securityContext.capabilities.drop")``; None when any part is missing."""
    value: object = data
    for part in dotted.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def container_security_problems(container: Container) -> list[str]:
    """What keeps one container from the restricted profile (each field set on the container itself)."""
    rows = CONTAINER_SECURITY + (AGENT_SECURITY if container.is_agent else ())
    problems = [
        f"container {container.name}: {path} is {lookup(container.spec, path)!r}, must be {expected!r}"
        for path, expected in rows
        if lookup(container.spec, path) != expected
    ]
    if lookup(container.spec, "securityContext.privileged"):
        problems.append(f"container {container.name}: securityContext.privileged must not be set")
    if lookup(container.spec, "securityContext.capabilities.add"):
        problems.append(f"container {container.name}: securityContext.capabilities.add must be empty")
    user = lookup(container.spec, "securityContext.runAsUser")
    if user == 0:
        problems.append(f"container {container.name}: securityContext.runAsUser must not be 0 (root)")
    return problems


def security_problems(pod: PodTemplate) -> list[str]:
    """Every way a pod spec (and each of its containers) falls short of the restricted profile."""
    problems = [
        f"{pod.name}: pod {path} is {lookup(pod.spec, path)!r}, must be {expected!r}"
        for path, expected in POD_SECURITY
        if lookup(pod.spec, path) != expected
    ]
    problems += [
        f"{pod.name}: pod {field} must not be true" for field in FORBIDDEN_POD_FIELDS if pod.spec.get(field)
    ]
    problems += [
        f"{pod.name}: volume {v['name']} is a hostPath"
        for v in pod.spec.get("volumes", [])
        if "hostPath" in v
    ]
    for container in containers(pod.spec):
        problems += [f"{pod.name}: {p}" for p in container_security_problems(container)]
    return problems


def find(docs: list[Doc], kind: str, name: str) -> Doc | None:
    """The rendered document of this kind and name, if any."""
    for doc in docs:
        if doc.get("kind") == kind and doc.get("metadata", {}).get("name") == name:
            return doc
    return None


def volume(pod: Doc, name: str) -> Doc | None:
    for v in pod.get("volumes", []):
        if v.get("name") == name:
            found: Doc = v
            return found
    return None


def mount_for(container: Doc, path: str) -> Doc | None:
    """The volume mount of ``container`` that holds ``path`` (the longest matching mountPath)."""
    target = PurePosixPath(path)
    best: Doc | None = None
    for mount in container.get("volumeMounts", []):
        mount_path = PurePosixPath(mount["mountPath"])
        if (target == mount_path or mount_path in target.parents) and (
            best is None or len(mount_path.parts) > len(PurePosixPath(best["mountPath"]).parts)
        ):
            best = mount
    return best


def mounted_file(docs: list[Doc], pod: Doc, container: Doc, path: str) -> str | None:
    """The content a file at ``path`` inside ``container`` has when it comes from a ConfigMap in ``docs``."""
    mount = mount_for(container, path)
    if mount is None:
        return None
    source = volume(pod, mount["name"])
    if source is None or "configMap" not in source:
        return None
    config_map = find(docs, "ConfigMap", source["configMap"]["name"])
    if config_map is None:
        return None
    inside = PurePosixPath(path).relative_to(mount["mountPath"]).as_posix()
    if mount.get("subPath"):
        inside = mount["subPath"] if inside == "." else f"{mount['subPath']}/{inside}"
    items = {item["path"]: item["key"] for item in source["configMap"].get("items", [])}
    key = items.get(inside, inside) if items else inside
    data: Mapping[str, str] = config_map.get("data", {})
    return data.get(key)


# --------------------------------------------------------------------------------------------------
# The agent's command line, as the real CLI parses it
# --------------------------------------------------------------------------------------------------

# Values for variables that come from elsewhere at run time (valueFrom): realistic placeholders that pass the
# agent's own checks, so that only the manifest's shape is tested.
_PLACEHOLDER = "placeholder-value-from-the-cluster-0123456789"


@dataclass(frozen=True)
class AgentCommandLine:
    """What an agent container runs, with its configuration files copied out of the rendered ConfigMaps."""

    argv: list[str]
    env: dict[str, str]
    files: dict[str, Path]
    """Path inside the container -> the local copy the argv and env now point to."""


_CONFIG_FLAGS = ("-c", "--config")


def agent_command_line(docs: list[Doc], pod: Doc, container: Doc, workdir: Path) -> AgentCommandLine:
    """The argv (after the image's ENTRYPOINT) and environment of an agent container, with every config file
    it names through ``--config``/``-c``/``SECRETS_AGENT_CONFIG`` (or a positional check-config file)
    replaced by a local copy of the ConfigMap it is mounted from. Raises AssertionError when a named file is
    not mounted from a rendered ConfigMap."""
    command = container.get("command")
    assert command in (None, ["secrets-agent"]), (
        f"container {container['name']}: command {command!r}: leave it out (the image's ENTRYPOINT is "
        "secrets-agent) or set it to [secrets-agent]"
    )
    argv = [str(a) for a in container.get("args", [])]
    env: dict[str, str] = {}
    for item in container.get("env", []):
        env[item["name"]] = str(item["value"]) if "value" in item else _PLACEHOLDER
    files: dict[str, Path] = {}

    def local_copy(path: str) -> str:
        content = mounted_file(docs, pod, container, path)
        assert content is not None, (
            f"container {container['name']}: {path} is not mounted from a ConfigMap of this kustomization"
        )
        copy = workdir / container["name"] / path.lstrip("/")
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_text(content)
        files[path] = copy
        return str(copy)

    for index, arg in enumerate(argv):
        if index > 0 and argv[index - 1] in _CONFIG_FLAGS:
            argv[index] = local_copy(arg)
        elif arg.startswith("--config="):
            argv[index] = "--config=" + local_copy(arg.split("=", 1)[1])
    if "SECRETS_AGENT_CONFIG" in env:
        env["SECRETS_AGENT_CONFIG"] = local_copy(env["SECRETS_AGENT_CONFIG"])
    return AgentCommandLine(argv, env, files)


def agent_containers(docs: list[Doc]) -> Iterator[tuple[PodTemplate, Container]]:
    """Every container running the agent's image, with its pod."""
    for pod in pod_specs(docs):
        for container in containers(pod.spec):
            if container.is_agent:
                yield pod, container


def listen_port(address: str) -> int:
    """``0.0.0.0:8731`` / ``[::]:8731`` -> 8731."""
    match = re.fullmatch(r".*:(\d+)", address)
    assert match is not None, f"not a HOST:PORT address: {address!r}"
    return int(match.group(1))


def container_port(container: Doc, port: int | str) -> int | None:
    """A probe's ``port`` (a number, or the name of one of the container's ports) as a number."""
    if isinstance(port, int):
        return port
    for item in container.get("ports", []):
        if item.get("name") == port:
            return int(item["containerPort"])
    return None

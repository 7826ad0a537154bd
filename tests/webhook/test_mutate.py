"""The mutation as a pure function: a pod in, a JSONPatch out, checked by applying it and reading the pod.

Every patched pod must pass the API server's schema (kubernetes-validate --strict, Kubernetes 1.30), and
every invalid annotation must be refused with a message that names it.
"""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

import jsonpatch
import pytest

from agent.webhook.mutate import STARTUP_SECONDS, mutate, review_pod
from agent.webhook.problems import InvalidAnnotations
from agent.webhook.quantity import parse_quantity
from agent.webhook.settings import InjectorSettings, Resources
from tests.webhook.helpers import (
    DB_REF,
    PROJECT,
    agent_config,
    apply,
    container,
    find,
    injected_pod,
    make_pod,
    ours,
    pod_annotations,
    validate_strict,
)

RESTRICTED = {
    "runAsNonRoot": True,
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def names(containers: list[dict[str, Any]] | None) -> list[str]:
    return [c["name"] for c in containers or []]


# --- pods that are left alone ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pod",
    [
        make_pod(),
        make_pod({"team": "shop"}),
        make_pod(pod_annotations(secret_db=DB_REF)),  # secrets, but no inject
        make_pod(pod_annotations(inject="false", secret_db=DB_REF)),
        make_pod(pod_annotations(inject="False", mode="bogus")),  # opted out: the rest is not even read
        make_pod(pod_annotations(inject="true", secret_db=DB_REF, status="injected")),
        make_pod(
            pod_annotations(inject="true", secret_db=DB_REF), [container("app"), container("secrets-agent")]
        ),
        make_pod(
            pod_annotations(inject="true", secret_db=DB_REF),
            init_containers=[container("secrets-agent-init")],
        ),
    ],
    ids=[
        "none",
        "other",
        "no-inject",
        "inject-false",
        "opted-out",
        "marker",
        "sidecar-present",
        "init-present",
    ],
)
def test_pods_that_did_not_ask_or_already_have_it_get_no_patch(pod: dict[str, Any]) -> None:
    assert mutate(pod, InjectorSettings()) == []


def test_a_second_call_changes_nothing() -> None:
    # reinvocationPolicy: IfNeeded calls the webhook again after other webhooks changed the pod.
    once = apply(injected_pod())
    assert mutate(once, InjectorSettings()) == []


# --- the three modes -------------------------------------------------------------------------------------


def test_sidecar_mode_adds_the_bootstrap_init_container_and_the_sidecar() -> None:
    pod = apply(
        make_pod(
            pod_annotations(inject="true", secret_db=DB_REF),
            [container("app"), container("worker")],
            init_containers=[container("migrate")],
        )
    )
    spec = pod["spec"]
    assert names(spec["initContainers"]) == ["secrets-agent-init", "migrate"]  # ours first
    assert names(spec["containers"]) == ["app", "worker", "secrets-agent"]  # the app stays the default
    init, sidecar = find(pod, "secrets-agent-init"), find(pod, "secrets-agent")
    assert init["args"] == ["init"]
    assert sidecar["args"] == ["run"]
    assert agent_config(init) == agent_config(sidecar)
    assert sidecar["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 8731}
    assert sidecar["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": 8731}
    assert "restartPolicy" not in sidecar
    assert spec["volumes"] == [
        {"name": "secrets-agent", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}}
    ]
    for name in ("app", "worker"):
        assert find(pod, name)["volumeMounts"] == [
            {"name": "secrets-agent", "mountPath": "/secrets", "readOnly": True}
        ]
    assert "volumeMounts" not in find(pod, "migrate")  # app containers by default, not init containers
    for agent in (init, sidecar):
        assert agent["volumeMounts"] == [{"name": "secrets-agent", "mountPath": "/secrets"}]  # writable
    assert pod["metadata"]["annotations"]["secrets-agent.io/status"] == "injected"
    assert "shareProcessNamespace" not in spec
    validate_strict(pod)


def test_native_mode_is_one_restartable_init_container_gated_by_a_startup_probe() -> None:
    pod = apply(
        make_pod(pod_annotations(inject="true", secret_db=DB_REF, mode="native"), restartPolicy="Never")
    )
    spec = pod["spec"]
    assert names(spec["initContainers"]) == ["secrets-agent"]
    assert names(spec["containers"]) == ["app"]
    agent = spec["initContainers"][0]
    assert agent["restartPolicy"] == "Always"
    assert agent["args"] == ["run"]
    assert agent["startupProbe"]["httpGet"] == {"path": "/readyz", "port": 8731}
    assert (
        agent["startupProbe"]["periodSeconds"] * agent["startupProbe"]["failureThreshold"] == STARTUP_SECONDS
    )
    assert find(pod, "app")["volumeMounts"][0]["readOnly"] is True
    validate_strict(pod)


def test_init_mode_is_only_the_bootstrap() -> None:
    pod = apply(injected_pod(mode="init"))
    assert names(pod["spec"]["initContainers"]) == ["secrets-agent-init"]
    assert names(pod["spec"]["containers"]) == ["app"]
    validate_strict(pod)


@pytest.mark.parametrize("mode", ["sidecar", "native", "init"])
def test_the_default_mode_is_the_webhook_s_setting(mode: str) -> None:
    settings = InjectorSettings(default_mode=mode)  # type: ignore[arg-type]
    assert review_pod(injected_pod(), settings).mode == mode
    assert review_pod(injected_pod(mode="SIDECAR"), settings).mode == "sidecar"


# --- every injected container is restricted -------------------------------------------------------------


@pytest.mark.parametrize("mode", ["sidecar", "native", "init"])
def test_injected_containers_run_restricted_with_resources(mode: str) -> None:
    pod = apply(injected_pod(mode=mode))
    agents = [
        c for c in pod["spec"].get("initContainers", []) + pod["spec"]["containers"] if c["name"] != "app"
    ]
    assert agents
    for agent in agents:
        context = agent["securityContext"]
        assert {k: context[k] for k in RESTRICTED} == RESTRICTED
        assert context["runAsUser"] == 65532
        assert agent["resources"] == {
            "requests": {"cpu": "10m", "memory": "64Mi"},
            "limits": {"cpu": "500m", "memory": "128Mi"},
        }
        assert agent["image"] == "ghcr.io/secrets-agent/secrets-agent:0.1.0"


# --- annotations -> the agent configuration --------------------------------------------------------------


def test_each_secret_option_reaches_the_agent_configuration() -> None:
    pod = apply(
        make_pod(
            ours(
                {
                    "inject": "true",
                    "project": PROJECT,
                    "secret-db-password": "db-password@3",
                    "secret-db-password-env": "DATABASE_PASSWORD",
                    "secret-db-password-file": "db/password",
                    "secret-db-password-mode": "0400",
                    "secret-api.key": "projects/other-project/secrets/api-key",
                    "env-file": "app.env",
                    "poll-interval": "2m",
                    "events-topic": "projects/my-project/topics/secret-events",
                    "output-path": "/run/secrets",
                    "reload-url": "http://127.0.0.1:8080/-/reload",
                    "reload-command": "/bin/touch /tmp/reloaded",
                }
            ),
            securityContext={"fsGroup": 2000},
        )
    )
    config = agent_config(find(pod, "secrets-agent"))
    assert config["project"] == PROJECT
    assert config["output_dir"] == "/run/secrets"
    assert config["require_tmpfs"] is True
    assert config["env_file"] == "app.env"
    assert config["poll_interval"] == "2m"
    assert config["events"] == {"topic": "projects/my-project/topics/secret-events"}
    assert config["notify"] == {
        "url": "http://127.0.0.1:8080/-/reload",
        "command": "/bin/touch /tmp/reloaded",
    }
    assert config["secrets"] == [  # sorted by name
        {"name": "api.key", "ref": "projects/other-project/secrets/api-key", "mode": "0440"},
        {
            "name": "db-password",
            "ref": "db-password@3",
            "env": "DATABASE_PASSWORD",
            "file": "db/password",
            "mode": "0400",
        },
    ]
    assert find(pod, "app")["volumeMounts"][0]["mountPath"] == "/run/secrets"
    assert "shareProcessNamespace" not in pod["spec"]  # no signal asked for
    validate_strict(pod)


def test_a_signal_reload_shares_the_process_namespace() -> None:
    pod = apply(injected_pod(reload_process="gunicorn: master", reload_signal="USR1"))
    assert pod["spec"]["shareProcessNamespace"] is True
    assert agent_config(find(pod, "secrets-agent"))["notify"] == {
        "signal": "USR1",
        "process": "gunicorn: master",
    }
    validate_strict(pod)


def test_a_signal_reload_replaces_an_explicit_false() -> None:
    pod = make_pod(
        pod_annotations(inject="true", secret_db=DB_REF, reload_process="nginx"), shareProcessNamespace=False
    )
    assert apply(pod)["spec"]["shareProcessNamespace"] is True


def test_the_webhook_s_default_project_serves_short_references() -> None:
    pod = apply(
        make_pod(pod_annotations(inject="true", secret_db="db")), InjectorSettings(project="cluster-project")
    )
    assert agent_config(find(pod, "secrets-agent"))["project"] == "cluster-project"
    # ...and the annotation overrides it
    pod = apply(
        make_pod(pod_annotations(inject="true", secret_db="db", project="pod-project")),
        InjectorSettings(project="cluster-project"),
    )
    assert agent_config(find(pod, "secrets-agent"))["project"] == "pod-project"


def test_containers_choose_who_gets_the_mount() -> None:
    pod = apply(
        make_pod(
            pod_annotations(inject="true", secret_db=DB_REF, containers="worker, migrate"),
            [container("app"), container("worker", volumeMounts=[{"name": "data", "mountPath": "/data"}])],
            init_containers=[container("migrate")],
            volumes=[{"name": "data", "emptyDir": {}}],
        )
    )
    assert "volumeMounts" not in find(pod, "app")
    assert [m["name"] for m in find(pod, "worker")["volumeMounts"]] == ["data", "secrets-agent"]
    assert [m["name"] for m in find(pod, "migrate")["volumeMounts"]] == ["secrets-agent"]
    assert [v["name"] for v in pod["spec"]["volumes"]] == ["data", "secrets-agent"]
    validate_strict(pod)


def test_image_and_resources_are_overridable_by_pod_and_by_webhook() -> None:
    settings = InjectorSettings(
        image="registry.local/agent:9", resources=Resources("50m", "64Mi", None, "128Mi")
    )
    agent = find(apply(injected_pod(), settings), "secrets-agent")
    assert agent["image"] == "registry.local/agent:9"
    assert agent["resources"] == {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}}
    pod = apply(
        injected_pod(
            image="mirror.local/agent@sha256:" + "a" * 64,
            cpu_request="100m",
            memory_limit="1Gi",
            cpu_limit="2",
        )
    )
    agent = find(pod, "secrets-agent")
    assert agent["image"].startswith("mirror.local/agent@sha256:")
    assert agent["resources"] == {
        "requests": {"cpu": "100m", "memory": "64Mi"},
        "limits": {"cpu": "2", "memory": "1Gi"},
    }
    validate_strict(pod)


# --- who the agent runs as, and who can read the files ---------------------------------------------------


def identity(pod: dict[str, Any]) -> tuple[int, int, str, tuple[str, ...]]:
    mutation = review_pod(pod, InjectorSettings())
    patched = jsonpatch.apply_patch(pod, list(mutation.patch))
    agent = find(patched, "secrets-agent")
    modes = {s["mode"] for s in agent_config(agent)["secrets"]}
    assert len(modes) == 1
    return (
        agent["securityContext"]["runAsUser"],
        agent["securityContext"]["runAsGroup"],
        modes.pop(),
        mutation.warnings,
    )


ASKS = pod_annotations(inject="true", secret_db=DB_REF)


@pytest.mark.parametrize(
    ("pod", "user", "group", "mode"),
    [
        # The app's user, when declared: the files are its own (0440).
        (make_pod(ASKS, securityContext={"runAsUser": 1000}), 1000, 65532, "0440"),
        (
            make_pod(ASKS, [container("app", securityContext={"runAsUser": 1001, "runAsGroup": 3000})]),
            1001,
            3000,
            "0440",
        ),
        # Or the fsGroup, which every container of the pod has.
        (make_pod(ASKS, securityContext={"fsGroup": 2000}), 65532, 2000, "0440"),
        (
            make_pod(ASKS, securityContext={"runAsUser": 1000, "runAsGroup": 3000, "fsGroup": 2000}),
            1000,
            2000,
            "0440",
        ),
        # Nothing declared: readable by every user of the containers that mount them.
        (make_pod(ASKS), 65532, 65532, "0444"),
        # Root is never taken; containers that disagree get the agent's own user.
        (make_pod(ASKS, securityContext={"runAsUser": 0}), 65532, 65532, "0444"),
        (
            make_pod(
                ASKS,
                [
                    container("a", securityContext={"runAsUser": 1000}),
                    container("b", securityContext={"runAsUser": 1001}),
                ],
                securityContext={"fsGroup": 5},
            ),
            65532,
            5,
            "0440",
        ),
    ],
    ids=["pod-user", "container-user-group", "fs-group", "all", "none", "root", "disagree"],
)
def test_the_agent_runs_as_the_app_when_it_can(pod: dict[str, Any], user: int, group: int, mode: str) -> None:
    found_user, found_group, found_mode, warnings = identity(pod)
    assert (found_user, found_group, found_mode) == (user, group, mode)
    assert bool(warnings) == (mode == "0444")


def test_warnings_fit_the_api_server_s_limit_and_explain_the_signal_user() -> None:
    mutation = review_pod(injected_pod(reload_process="app"), InjectorSettings())
    assert len(mutation.warnings) == 2
    assert all(len(w) <= 256 for w in mutation.warnings)  # longer warnings may be truncated
    assert "secrets-agent.io/reload-process" in mutation.warnings[1]


# --- invalid annotations: refused, naming the annotation ------------------------------------------------


INVALID: list[tuple[str, dict[str, str], str, str]] = [
    ("inject", {"inject": "yes please"}, "inject", "expected true or false"),
    ("reference", {"secret-db": "projects/p/secrets/"}, "secret-db", "secret reference"),
    ("short-without-project", {"secret-db": "db"}, "secret-db", "default project"),
    ("empty-reference", {"secret-db": ""}, "secret-db", "must not be empty"),
    ("mode", {"mode": "sidecarr"}, "mode", "sidecar, native, init"),
    ("file-mode", {"secret-db-mode": "999"}, "secret-db-mode", "octal"),
    ("container", {"containers": "app,nope"}, "containers", "'nope'"),
    ("no-container", {"containers": " , "}, "containers", "comma-separated"),
    ("duration", {"poll-interval": "soon"}, "poll-interval", "duration"),
    ("quantity", {"cpu-request": "lots"}, "cpu-request", "quantity"),
    (
        "request-over-limit",
        {"memory-request": "2Gi", "memory-limit": "1Gi"},
        "memory-request",
        "more than the limit",
    ),
    ("request-over-default-limit", {"cpu-request": "2"}, "cpu-request", "more than the limit 500m"),
    ("env-name", {"secret-db-env": "1BAD"}, "secret-db-env", "environment variable"),
    ("file", {"secret-db-file": "../etc/passwd"}, "secret-db-file", "'..'"),
    ("env-file", {"env-file": "/etc/app.env"}, "env-file", "relative"),
    ("env-file-is-a-secret", {"env-file": "db"}, "env-file", "secrets-agent.io/secret-db"),
    ("output-path", {"output-path": "secrets"}, "output-path", "absolute"),
    ("output-path-root", {"output-path": "/"}, "output-path", "absolute"),
    ("output-path-dots", {"output-path": "/run/../secrets"}, "output-path", "normalised"),
    ("output-path-slashes", {"output-path": "//secrets"}, "output-path", "normalised"),
    ("signal-without-process", {"reload-signal": "HUP"}, "reload-signal", "reload-process"),
    ("signal", {"reload-signal": "SIGNOPE", "reload-process": "app"}, "reload-signal", "unknown signal"),
    ("regex", {"reload-process": "app("}, "reload-process", "regular expression"),
    ("url", {"reload-url": "ftp://host/x"}, "reload-url", "http://"),
    ("command", {"reload-command": "'unclosed"}, "reload-command", "quotation"),
    ("topic", {"events-topic": "secret-events"}, "events-topic", "projects/PROJECT/topics/ID"),
    ("project", {"project": "Not_A_Project"}, "project", "project id"),
    ("image", {"image": "two words"}, "image", "image"),
    ("unknown", {"poll-intervall": "5m"}, "poll-intervall", "did you mean secrets-agent.io/poll-interval"),
    (
        "orphan-option",
        {"secret-cache-env": "CACHE"},
        "secret-cache-env",
        "no secrets-agent.io/secret-cache annotation",
    ),
    ("secret-name", {"secret-": "x"}, "secret-", "unknown annotation"),
]


@pytest.mark.parametrize(("case", "extra", "key", "fragment"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_annotations_are_refused_naming_the_annotation(
    case: str, extra: dict[str, str], key: str, fragment: str
) -> None:
    values = {"inject": "true", "secret-db": DB_REF, **extra}
    with pytest.raises(InvalidAnnotations) as caught:
        mutate(make_pod(ours(values)), InjectorSettings())
    assert caught.value.annotations == ("secrets-agent.io/" + key,)
    assert str(caught.value).startswith(f"secrets-agent.io/{key}: ")
    assert fragment in str(caught.value)


PASTED = "s3cr3t-PASTED-4b1e"
"""A secret value where its reference or a credential-bearing setting belongs."""


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ({"secret-db": PASTED + "!"}, "secret-db"),
        ({"secret-db": f"postgres://app:{PASTED}@db/app"}, "secret-db"),
        ({"secret-db": f"db@{PASTED}!"}, "secret-db"),  # a version part is quoted by the reference parser
        ({"secret-db": f"projects/{PASTED}_x/secrets/db"}, "secret-db"),  # and so is a project part
        ({"reload-url": f"https://app:{PASTED}@host/reload now"}, "reload-url"),
    ],
    ids=["reference", "dsn", "version", "project", "url"],
)
def test_a_refusal_never_quotes_a_value_that_may_be_a_credential(extra: dict[str, str], key: str) -> None:
    values = {"inject": "true", "secret-db": DB_REF, **extra}
    with pytest.raises(InvalidAnnotations) as caught:
        mutate(make_pod(ours(values)), InjectorSettings())
    assert caught.value.annotations == ("secrets-agent.io/" + key,)
    assert str(caught.value).startswith(f"secrets-agent.io/{key}: ")
    assert PASTED not in str(caught.value)


def test_a_duplicate_file_names_both_secrets() -> None:
    values = {"inject": "true", "secret-a": DB_REF, "secret-b": DB_REF, "secret-b-file": "a"}
    with pytest.raises(InvalidAnnotations) as caught:
        mutate(make_pod(ours(values)), InjectorSettings())
    assert str(caught.value) == (
        "secrets-agent.io/secret-b-file: duplicate file 'a': also used by secrets-agent.io/secret-a"
    )


def test_a_duplicate_env_name_names_both_secrets() -> None:
    values = {"inject": "true", "secret-a": DB_REF, "secret-b": DB_REF, "secret-b-env": "A"}
    with pytest.raises(InvalidAnnotations) as caught:
        mutate(make_pod(ours(values)), InjectorSettings())
    assert str(caught.value).startswith("secrets-agent.io/secret-b-env: duplicate env 'A'")
    assert "also used by secrets-agent.io/secret-a" in str(caught.value)


def test_an_output_path_another_volume_uses_is_refused() -> None:
    pod = make_pod(
        pod_annotations(inject="true", secret_db=DB_REF),
        [container("app", volumeMounts=[{"name": "creds", "mountPath": "/secrets/"}])],
    )
    with pytest.raises(InvalidAnnotations) as caught:
        mutate(pod, InjectorSettings())
    assert (
        str(caught.value)
        == "secrets-agent.io/output-path: container 'app' already mounts volume 'creds' at /secrets"
    )


def test_no_secret_at_all_is_refused() -> None:
    with pytest.raises(InvalidAnnotations, match=r"^secrets-agent.io/inject: no secret to deliver"):
        mutate(make_pod(pod_annotations(inject="true")), InjectorSettings())


def test_every_problem_is_reported_at_once() -> None:
    values = {"inject": "true", "secret-db": "projects/p/secrets/", "mode": "x", "poll-interval": "soon"}
    with pytest.raises(InvalidAnnotations) as caught:
        mutate(make_pod(ours(values)), InjectorSettings())
    assert set(caught.value.annotations) == {
        "secrets-agent.io/secret-db",
        "secrets-agent.io/mode",
        "secrets-agent.io/poll-interval",
    }


def test_the_input_pod_is_not_modified() -> None:
    pod = injected_pod(mode="native", reload_process="app")
    before = copy.deepcopy(pod)
    assert mutate(pod, InjectorSettings())
    assert pod == before


# --- quantities ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("100m", "0.1"),
        ("1", "1"),
        ("1.5", "1.5"),
        ("64Mi", str(64 * 1024**2)),
        ("1G", "1000000000"),
        ("2e3", "2000"),
        ("1E3", "1000"),
        ("1E", str(10**18)),
        ("+5k", "5000"),
        (".5", "0.5"),
    ],
)
def test_quantities(text: str, value: str) -> None:
    assert parse_quantity(text) == Decimal(value)


@pytest.mark.parametrize("text", ["", "-1", "1 Gi", "1gi", "Mi", "1.2.3", "1MB", "0x10"])
def test_bad_quantities(text: str) -> None:
    with pytest.raises(ValueError, match="Kubernetes quantity"):
        parse_quantity(text)

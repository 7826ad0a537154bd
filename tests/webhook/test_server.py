"""Real AdmissionReview documents POSTed over HTTPS to the running webhook, the returned patch applied with
``jsonpatch``: the pod passes the API server's schema, and the injected agent, run for real, does what the
annotations asked."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
import yaml
from google.cloud import secretmanager_v1

from agent_emulator.server import EmulatorEndpoints
from tests.webhook.conftest import Webhook
from tests.webhook.helpers import (
    DB_REF,
    PROJECT,
    container,
    find,
    make_pod,
    ours,
    pod_annotations,
    review,
    validate_strict,
)

CANARY = "canary-webhook-5e1d-if-you-read-this-it-leaked"


async def admit(
    webhook: Webhook, pod: dict[str, Any], **options: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """POST a review of ``pod``; returns (the AdmissionReview response, the patched pod)."""
    sent = review(pod, **options)
    status, body = await webhook.post(sent)
    assert status == 200, body
    assert body["apiVersion"] == "admission.k8s.io/v1"
    assert body["kind"] == "AdmissionReview"
    response = body["response"]
    assert response["uid"] == sent["request"]["uid"]
    patched = pod
    if "patch" in response:
        assert response["patchType"] == "JSONPatch"
        patched = jsonpatch.apply_patch(pod, json.loads(base64.b64decode(response["patch"])))
    return response, patched


@pytest.mark.parametrize("mode", ["sidecar", "native", "init"])
async def test_each_mode_gives_a_pod_the_api_server_accepts(webhook: Webhook, mode: str) -> None:
    pod = make_pod(
        pod_annotations(inject="true", secret_db=DB_REF, mode=mode, reload_process="nginx"),
        [container("app", ports=[{"containerPort": 8080}])],
        init_containers=[container("migrate")],
        securityContext={"runAsUser": 101, "fsGroup": 101},
    )
    response, patched = await admit(webhook, pod)
    assert response["allowed"] is True
    assert "warnings" not in response  # the app's user is declared
    validate_strict(patched)
    agent_names = {"sidecar": ["secrets-agent-init", "secrets-agent"], "native": ["secrets-agent"]}
    found = [c["name"] for c in patched["spec"]["initContainers"] + patched["spec"]["containers"]]
    assert [n for n in found if n.startswith("secrets-agent")] == agent_names.get(
        mode, ["secrets-agent-init"]
    )
    assert patched["spec"]["shareProcessNamespace"] is True


async def test_a_pod_that_did_not_ask_is_allowed_unchanged(webhook: Webhook) -> None:
    response, _ = await admit(webhook, make_pod({"unrelated": "x"}))
    assert response == {"uid": response["uid"], "allowed": True}


async def test_an_update_is_allowed_unchanged(webhook: Webhook) -> None:
    response, _ = await admit(
        webhook, make_pod(pod_annotations(inject="true", secret_db=DB_REF)), operation="UPDATE"
    )
    assert response == {"uid": response["uid"], "allowed": True}


async def test_invalid_annotations_are_refused_with_400_naming_them(
    webhook: Webhook, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    pod = make_pod(ours({"inject": "true", "secret-db": f"projects/{CANARY}", "secret-db-mode": "888"}))
    response, _ = await admit(webhook, pod)
    assert response["allowed"] is False
    assert "patch" not in response
    assert response["status"]["code"] == 400
    message = response["status"]["message"]
    assert message.startswith("secrets-agent.io/secret-db: secret reference")
    assert "secrets-agent.io/secret-db-mode: expected an octal file mode" in message
    # A reference may be a pasted secret value: the refusal names it without quoting it, and the
    # webhook's log names the annotations only.
    assert CANARY not in message
    (line,) = [r for r in caplog.records if r.getMessage() == "admission review"]
    assert line.fields["invalid"] == ["secrets-agent.io/secret-db", "secrets-agent.io/secret-db-mode"]  # type: ignore[attr-defined]
    assert CANARY not in caplog.text
    assert all(CANARY not in json.dumps(getattr(r, "fields", {})) for r in caplog.records)


async def test_one_log_line_per_review(webhook: Webhook, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="agent.webhook")
    sent = review(make_pod(pod_annotations(inject="true", secret_db=DB_REF, mode="native")), dry_run=True)
    status, body = await webhook.post(sent)
    assert status == 200
    (line,) = [r for r in caplog.records if r.name.startswith("agent.webhook")]
    assert line.fields == {  # type: ignore[attr-defined]
        "uid": sent["request"]["uid"],
        "namespace": "shop",
        "pod": "web-7d9f-*",
        "operation": "CREATE",
        "dry_run": True,
        "mode": "native",
        "allowed": True,
        "patch_ops": len(json.loads(base64.b64decode(body["response"]["patch"]))),
    }


async def test_a_dry_run_gets_the_same_answer(webhook: Webhook) -> None:
    pod = make_pod(pod_annotations(inject="true", secret_db=DB_REF))
    real, patched = await admit(webhook, pod)
    dry, dry_patched = await admit(webhook, pod, dry_run=True)
    assert {k: v for k, v in dry.items() if k != "uid"} == {k: v for k, v in real.items() if k != "uid"}
    assert dry_patched == patched


async def test_warnings_reach_the_creator(webhook: Webhook) -> None:
    response, _ = await admit(webhook, make_pod(pod_annotations(inject="true", secret_db=DB_REF)))
    assert response["allowed"] is True
    assert response["warnings"] == [
        "secrets-agent: the pod declares no runAsUser, runAsGroup or fsGroup, so secret files are written "
        "readable by every user of the containers that mount them (0444); set securityContext.fsGroup to "
        "keep them 0440"
    ]


# --- malformed bodies: 400, never 500 -------------------------------------------------------------------


def _without(path: tuple[str, ...]) -> dict[str, Any]:
    document = review(make_pod(pod_annotations(inject="true", secret_db=DB_REF)))
    target = document
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return document


def _with(path: tuple[str, ...], value: object) -> dict[str, Any]:
    document = review(make_pod(pod_annotations(inject="true", secret_db=DB_REF)))
    target = document
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return document


MALFORMED: list[tuple[str, bytes | str | dict[str, Any], str]] = [
    ("empty", b"", "not a JSON document"),
    ("not-json", b"<AdmissionReview/>", "not a JSON document"),
    ("not-utf8", b'{"a": "\xff"}', "not a JSON document"),
    ("a-list", b"[]", "expected an AdmissionReview object"),
    ("v1beta1", _with(("apiVersion",), "admission.k8s.io/v1beta1"), "apiVersion admission.k8s.io/v1"),
    ("wrong-kind", _with(("kind",), "Pod"), "kind AdmissionReview"),
    ("no-request", _without(("request",)), "request: expected an object"),
    ("no-uid", _without(("request", "uid")), "request.uid"),
    ("empty-uid", _with(("request", "uid"), ""), "request.uid"),
    ("no-object", _without(("request", "object")), "request.object: expected a Pod"),
    (
        "a-deployment",
        _with(("request", "kind"), {"group": "apps", "version": "v1", "kind": "Deployment"}),
        "only core/v1 Pods",
    ),
    ("object-kind", _with(("request", "object", "kind"), "Secret"), "only Pods"),
    ("no-spec", _without(("request", "object", "spec")), "request.object.spec"),
    (
        "containers-not-list",
        _with(("request", "object", "spec", "containers"), {"app": {}}),
        "containers: expected a list",
    ),
    (
        "nameless-container",
        _with(("request", "object", "spec", "containers"), [{"image": "x"}]),
        "expected objects with a name",
    ),
    (
        "annotation-not-string",
        _with(("request", "object", "metadata", "annotations"), {"secrets-agent.io/inject": True}),
        "string values",
    ),
    ("dry-run-not-bool", _with(("request", "dryRun"), "yes"), "request.dryRun"),
]


@pytest.mark.parametrize(("case", "body", "fragment"), MALFORMED, ids=[m[0] for m in MALFORMED])
async def test_malformed_bodies_get_400_with_a_json_error(
    webhook: Webhook, case: str, body: bytes | str | dict[str, Any], fragment: str
) -> None:
    status, answer = await webhook.post(body)
    assert status == 400
    assert fragment in answer["error"]


async def test_other_routes_and_methods_answer_json(webhook: Webhook) -> None:
    for method, path, expected in (
        ("GET", "/mutate", 405),
        ("GET", "/nope", 404),
        ("GET", "/healthz", 200),
        ("GET", "/readyz", 200),
    ):
        async with webhook.session.request(method, webhook.url + path) as response:
            assert response.status == expected
            assert isinstance(await response.json(), dict)


async def test_a_body_over_the_api_server_limit_gets_413(webhook: Webhook) -> None:
    async with webhook.session.post(
        webhook.url + "/mutate", data=io.BytesIO(b" " * (3 * 1024 * 1024 + 1))
    ) as response:
        assert response.status == 413
        assert "error" in await response.json()


# --- the injected agent, run for real -------------------------------------------------------------------


def run_container(
    agent: dict[str, Any], *extra_args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run an injected container's command line (``secrets-agent ARGS``) as ``python -m agent`` with the
    container's environment (and ``env`` on top, e.g. where the emulator is)."""
    environment = {e["name"]: e["value"] for e in agent["env"]}
    environment.update(PATH=os.environ["PATH"], PYTHONDONTWRITEBYTECODE="1", **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "agent", *agent["args"], *extra_args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )


async def test_the_injected_configuration_is_what_the_annotations_asked(webhook: Webhook) -> None:
    pod = make_pod(
        ours(
            {
                "inject": "true",
                "project": PROJECT,
                "secret-db-password": "db-password",
                "secret-db-password-env": "DATABASE_PASSWORD",
                "secret-db-password-file": "db/password",
                "secret-db-password-mode": "0400",
                "secret-api-key": "sm://other-project/api-key@7",
                "env-file": "app.env",
                "poll-interval": "90s",
                "reload-signal": "SIGUSR1",
                "reload-process": "^gunicorn",
                "reload-url": "http://127.0.0.1:8080/-/reload",
                "events-topic": "projects/my-project/topics/secret-events",
            }
        ),
        securityContext={"fsGroup": 2000},
    )
    _, patched = await admit(webhook, pod)
    sidecar = find(patched, "secrets-agent")
    assert sidecar["args"] == ["run"]
    checked = run_container({**sidecar, "args": ["check-config"]})
    assert checked.returncode == 0, checked.stderr
    config = yaml.safe_load(checked.stdout)
    assert config["output_dir"] == "/secrets"
    assert config["env_file"] == "app.env"
    assert config["poll_interval"] == 90
    assert config["require_tmpfs"] is True
    assert config["notify"]["signal"] == "SIGUSR1"
    assert config["notify"]["process"] == "^gunicorn"
    assert config["notify"]["url"] == "http://127.0.0.1:8080/-/reload"
    assert config["events"]["topic"] == "projects/my-project/topics/secret-events"
    assert [(s["name"], s["ref"], s["env"], s["file"], s["mode"]) for s in config["secrets"]] == [
        ("api-key", "projects/other-project/secrets/api-key/versions/7", "API_KEY", "api-key", "0440"),
        (
            "db-password",
            f"projects/{PROJECT}/secrets/db-password/versions/latest",
            "DATABASE_PASSWORD",
            "db/password",
            "0400",
        ),
    ]


@pytest.fixture
def tmpfs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory on tmpfs (the injected config requires one, as the pod's volume is memory-backed)."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or not os.access(shm, os.W_OK):
        pytest.fail("/dev/shm (tmpfs) is needed to run the injected init container", pytrace=False)
    import tempfile

    return Path(tempfile.mkdtemp(dir=shm, prefix="webhook-test-"))


async def test_the_injected_init_container_writes_the_secrets(
    webhook: Webhook,
    emulator: EmulatorEndpoints,
    client: secretmanager_v1.SecretManagerServiceClient,
    tmpfs_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    for secret_id, value in (("db-password", CANARY), ("api-key", "key-1")):
        client.create_secret(
            request={
                "parent": f"projects/{PROJECT}",
                "secret_id": secret_id,
                "secret": {"replication": {"automatic": {}}},
            }
        )
        client.add_secret_version(
            request={"parent": f"projects/{PROJECT}/secrets/{secret_id}", "payload": {"data": value.encode()}}
        )
    pod = make_pod(
        ours(
            {
                "inject": "true",
                "mode": "init",
                "project": PROJECT,
                "secret-db-password": "db-password",
                "secret-db-password-file": "db/password",
                "secret-db-password-env": "DATABASE_PASSWORD",
                "secret-api-key": "api-key@1",
                "env-file": "app.env",
            }
        ),
        securityContext={"runAsUser": 1000},
    )
    _, patched = await admit(webhook, pod)
    init = find(patched, "secrets-agent-init")
    done = run_container(
        init,
        env={
            "SECRET_MANAGER_EMULATOR_HOST": emulator.grpc_target,
            "SECRETS_AGENT_OUTPUT_DIR": str(tmpfs_dir),
        },
    )
    try:
        assert done.returncode == 0, done.stderr
        assert (tmpfs_dir / "db" / "password").read_text() == CANARY
        assert (tmpfs_dir / "api-key").read_text() == "key-1"
        assert stat.S_IMODE((tmpfs_dir / "api-key").stat().st_mode) == 0o440
        env_lines = [x for x in (tmpfs_dir / "app.env").read_text().splitlines() if not x.startswith("#")]
        assert sorted(env_lines) == ["API_KEY='key-1'", f"DATABASE_PASSWORD='{CANARY}'"]
        assert CANARY not in done.stdout + done.stderr
        assert CANARY not in caplog.text
    finally:
        shutil.rmtree(tmpfs_dir)

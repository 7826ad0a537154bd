"""The Google identity from annotations: the ``gcp-*`` settings and a secret's own impersonated account, each
written into the injected configuration and checked by the agent's own loader (refused naming its
annotation), and Workload Identity Federation off GKE: the credential configuration's ConfigMap and the
projected service account token, mounted into the injected containers only.

The annotation way is checked against the hand-written one (k8s/examples/workload-identity-federation): the
example's own credential configuration names the token where the webhook mounts it, and the injected init
container, run for real against the emulator's token exchange and IAM Credentials, reads the secrets as the
pod's federated principal, one of them through a delegation chain, billed to the quota project.
"""

from __future__ import annotations

import json
import re
import shutil
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.config import CONFIG_YAML_ENV, load_config
from agent.webhook.mutate import mutate, review_pod
from agent.webhook.problems import NOT_SHOWN, InvalidAnnotations
from agent.webhook.settings import (
    CREDENTIALS_FILE,
    CREDENTIALS_VOLUME,
    PREFIX,
    TOKEN_FILE,
    TOKEN_VOLUME,
    VOLUME,
    InjectorSettings,
)
from agent_emulator.options import EmulatorOptions
from agent_emulator.server import EmulatorEndpoints, running_emulator
from tests.e2e.test_identity import (
    FEDERATED,
    HOP_A,
    HOP_B,
    PAYMENTS,
    READER,
    TOKEN_AUDIENCE,
    VALUES,
    Issuer,
    identity_config,
)
from tests.k8s import render
from tests.webhook.conftest import Webhook
from tests.webhook.helpers import (
    DB_REF,
    PROJECT,
    agent_config,
    apply,
    container,
    find,
    make_pod,
    ours,
    validate_strict,
)
from tests.webhook.test_server import admit, run_container, tmpfs_dir  # noqa: F401 - tmpfs_dir: a fixture

CANARY = "canary-identity-3c8e-if-you-read-this-it-leaked"
PRIVATE: dict[str, Any] = {"securityContext": {"runAsUser": 1000, "fsGroup": 1000}}
OTHER = f"other-team@{PROJECT}.iam.gserviceaccount.com"
EXAMPLE = Path(__file__).resolve().parents[2] / "k8s" / "examples" / "workload-identity-federation"
FEDERATION = {"gcp-credentials-configmap": "checkout-secrets-agent", "gcp-token-audience": TOKEN_AUDIENCE}
"""The annotations of a pod off GKE: the example's ConfigMap and its provider's audience."""


def injected(values: dict[str, str], **spec: Any) -> dict[str, Any]:
    """The pod with ``db`` and ``values`` after the webhook's patch (checked against the API's schema)."""
    pod = apply(make_pod(ours({"inject": "true", "secret-db": DB_REF, **values}), **(spec or PRIVATE)))
    validate_strict(pod)
    return pod


def admitted_config(values: dict[str, str], **spec: Any) -> dict[str, Any]:
    return agent_config(find(injected(values, **spec), "secrets-agent"))


def loaded(values: dict[str, str]) -> Any:
    """The injected configuration read by the agent's own loader, as the injected container reads it."""
    pod = injected(values)
    [text] = [e["value"] for e in find(pod, "secrets-agent")["env"] if e["name"] == CONFIG_YAML_ENV]
    return load_config(None, {CONFIG_YAML_ENV: text}, {})


def refusal(values: dict[str, str], **spec: Any) -> InvalidAnnotations:
    with pytest.raises(InvalidAnnotations) as caught:
        mutate(
            make_pod(ours({"inject": "true", "secret-db": DB_REF, **values}), **(spec or PRIVATE)),
            InjectorSettings(),
        )
    return caught.value


def messages(error: InvalidAnnotations, key: str) -> list[str]:
    return [p.message for p in error.problems if p.annotation == PREFIX + key]


# --- the settings, in the configuration and through the agent's loader ------------------------------------


def test_each_gcp_annotation_is_the_agent_s_setting() -> None:
    values = {
        "gcp-impersonate-service-account": READER,
        "gcp-delegates": f"{HOP_A}, {HOP_B}",
        "gcp-quota-project": "platform-billing",
        "gcp-credentials-file": "/etc/gcp/credentials.json",
        "gcp-iam-endpoint": "https://iamcredentials.example.com",
    }
    assert admitted_config(values)["gcp"] == {
        "credentials_file": "/etc/gcp/credentials.json",
        "impersonate_service_account": READER,
        "delegates": f"{HOP_A}, {HOP_B}",  # read by the agent as it reads SECRETS_AGENT_GCP_DELEGATES
        "quota_project": "platform-billing",
        "iam_endpoint": "https://iamcredentials.example.com",
    }
    gcp = loaded(values).gcp
    assert str(gcp.credentials_file) == "/etc/gcp/credentials.json"
    assert gcp.impersonate_service_account == READER
    assert gcp.delegates == (HOP_A, HOP_B)
    assert gcp.quota_project == "platform-billing"
    assert gcp.iam_endpoint == (
        "https://iamcredentials.example.com/v1/projects/-/serviceAccounts/{}:generateAccessToken"
    )


@pytest.mark.parametrize("separated", [f"{HOP_A},{HOP_B}", f"{HOP_A} {HOP_B}", f" {HOP_A} ,\t{HOP_B} "])
def test_a_delegation_chain_is_separated_by_commas_or_spaces(separated: str) -> None:
    values = {"gcp-impersonate-service-account": READER, "gcp-delegates": separated.replace("\t", " ")}
    assert loaded(values).gcp.delegates == (HOP_A, HOP_B)


def test_a_secret_s_own_account_and_chain() -> None:
    values = {
        "secret-payments": "projects/payments-prod/secrets/api-key",
        "secret-payments-impersonate-service-account": PAYMENTS,
        "secret-payments-delegates": f"{HOP_A} {HOP_B}",
    }
    config = admitted_config(values)
    db, payments = sorted(config["secrets"], key=lambda s: s["name"])
    assert "impersonate_service_account" not in db
    assert payments["impersonate_service_account"] == PAYMENTS
    specs = {spec.name: spec for spec in loaded(values).secrets}
    assert specs["payments"].impersonate_service_account == PAYMENTS
    assert specs["payments"].delegates == (HOP_A, HOP_B)
    assert specs["db"].impersonate_service_account is None


def test_the_identity_options_are_options_not_the_end_of_a_name() -> None:
    error = refusal({"secret-team-delegates": HOP_A})
    [message] = messages(error, "secret-team-delegates")
    assert message.startswith(f"no {PREFIX}secret-team annotation for this option")
    # The longest name that fits beside the longest option: 63 characters after the prefix.
    name = "n" * 28
    config = admitted_config({f"secret-{name}": DB_REF, f"secret-{name}-impersonate-service-account": OTHER})
    assert [s.get("impersonate_service_account") for s in config["secrets"]] == [None, OTHER]
    error = refusal({f"secret-{name}x": DB_REF, f"secret-{name}x-impersonate-service-account": OTHER})
    assert "the name after the prefix is longer than 63 characters" in str(error)


# --- refusals, each naming its annotation -----------------------------------------------------------------

REFUSED: list[tuple[str, dict[str, str], str, str]] = [
    # (case, annotations besides secret-db, the annotation refused, a fragment of the message)
    (
        "not an email",
        {"gcp-impersonate-service-account": "reader@"},
        "gcp-impersonate-service-account",
        "expected a service account email such as reader@my-project.iam.gserviceaccount.com, got 'reader@'",
    ),
    (
        "a bad email in the chain",
        {"gcp-impersonate-service-account": READER, "gcp-delegates": f"{HOP_A}, hop-b"},
        "gcp-delegates",
        "item 1: expected a service account email",
    ),
    (
        "an account twice in the chain",
        {"gcp-impersonate-service-account": READER, "gcp-delegates": f"{HOP_A} {HOP_A}"},
        "gcp-delegates",
        "is already in the chain",
    ),
    (
        "a chain too long",
        {
            "gcp-impersonate-service-account": READER,
            "gcp-delegates": ",".join(f"hop-{i}@{PROJECT}.iam.gserviceaccount.com" for i in range(17)),
        },
        "gcp-delegates",
        "at most 16 accounts in a delegation chain, got 17",
    ),
    (
        "a chain alone",
        {"gcp-delegates": HOP_A},
        "gcp-delegates",
        f"needs {PREFIX}gcp-impersonate-service-account",
    ),
    (
        "a bad quota project",
        {"gcp-quota-project": "Billing_1"},
        "gcp-quota-project",
        "project id 'Billing_1'",
    ),
    ("an empty quota project", {"gcp-quota-project": ""}, "gcp-quota-project", "must not be empty"),
    (
        "a relative credentials file",
        {"gcp-credentials-file": "credentials.json"},
        "gcp-credentials-file",
        "expected an absolute, normalised path",
    ),
    (
        "a credentials file in the output path",
        {"gcp-credentials-file": "/secrets/credentials.json"},
        "gcp-credentials-file",
        "inside the output path /secrets",
    ),
    (
        "a credentials file and a ConfigMap",
        {"gcp-credentials-file": "/etc/gcp/credentials.json", "gcp-credentials-configmap": "creds"},
        "gcp-credentials-file",
        f"set either this or {PREFIX}gcp-credentials-configmap",
    ),
    (
        "a ConfigMap name that is none",
        {"gcp-credentials-configmap": "Checkout_Credentials"},
        "gcp-credentials-configmap",
        "expected the name of a ConfigMap in the pod's namespace",
    ),
    (
        "an audience with a space",
        {"gcp-credentials-configmap": "creds", "gcp-token-audience": "https://iam.googleapis.com/ x"},
        "gcp-token-audience",
        "without spaces",
    ),
    (
        "a token nobody reads",
        {"gcp-token-audience": TOKEN_AUDIENCE},
        "gcp-token-audience",
        f"needs {PREFIX}gcp-credentials-configmap (or {PREFIX}gcp-credentials-file)",
    ),
    (
        "an IAM endpoint without impersonation",
        {"gcp-iam-endpoint": "https://iamcredentials.example.com"},
        "gcp-iam-endpoint",
        "only used to impersonate a service account",
    ),
    (
        "plaintext IAM to another host",
        {"gcp-impersonate-service-account": READER, "gcp-iam-endpoint": "http://iam.example.com"},
        "gcp-iam-endpoint",
        "http:// only to a loopback address",
    ),
    (
        "a secret's account that is no email",
        {"secret-db-impersonate-service-account": "payments"},
        "secret-db-impersonate-service-account",
        "expected a service account email such as reader@my-project.iam.gserviceaccount.com, got 'payments'",
    ),
    (
        "a secret's chain alone",
        {"secret-db-delegates": HOP_A},
        "secret-db-delegates",
        f"needs {PREFIX}secret-db-impersonate-service-account",
    ),
    (
        "a bad email in a secret's chain",
        {"secret-db-impersonate-service-account": PAYMENTS, "secret-db-delegates": "hop-a"},
        "secret-db-delegates",
        "item 0: expected a service account email",
    ),
]


@pytest.mark.parametrize(("case", "values", "key", "fragment"), REFUSED, ids=[c[0] for c in REFUSED])
def test_invalid_identity_annotations_are_refused_naming_them(
    case: str, values: dict[str, str], key: str, fragment: str
) -> None:
    error = refusal(values)
    assert error.annotations == (PREFIX + key,)
    assert any(fragment in message for message in messages(error, key)), error.problems
    # Annotations, never the configuration's paths.
    assert "gcp." not in str(error)
    assert "secrets[" not in str(error)


def test_an_iam_endpoint_is_never_quoted() -> None:
    # A URL may carry user:password: refused like reload-url, without its value.
    url = f"ftp://{CANARY}:pw@iam.example.com"
    error = refusal({"gcp-impersonate-service-account": READER, "gcp-iam-endpoint": url})
    assert error.annotations == (PREFIX + "gcp-iam-endpoint",)
    assert CANARY not in str(error)
    assert NOT_SHOWN in str(error)


async def test_a_refusal_over_https_names_the_annotation(webhook: Webhook) -> None:
    pod = make_pod(
        ours({"inject": "true", "secret-db": DB_REF, "gcp-impersonate-service-account": "reader"}), **PRIVATE
    )
    response, _ = await admit(webhook, pod)
    assert response["allowed"] is False
    assert response["status"]["message"].startswith(
        f"{PREFIX}gcp-impersonate-service-account: expected a service account email"
    )


# --- Workload Identity Federation: the ConfigMap and the projected token -----------------------------------


def volumes(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in pod["spec"]["volumes"]}


def mounts(container: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    return {
        m["name"]: (m["mountPath"], m.get("readOnly", False)) for m in container.get("volumeMounts") or []
    }


AGENT_CONTAINERS = {
    "sidecar": ["secrets-agent-init", "secrets-agent"],
    "native": ["secrets-agent"],
    "init": ["secrets-agent-init"],
}


@pytest.mark.parametrize("mode", list(AGENT_CONTAINERS))
def test_the_federation_volumes_go_into_the_agent_s_containers_only(mode: str) -> None:
    pod = injected(
        {**FEDERATION, "mode": mode, "containers": "app,migrate"},
        containers=[container("app", volumeMounts=[{"name": "data", "mountPath": "/data"}])],
        init_containers=[container("migrate")],
        volumes=[{"name": "data", "emptyDir": {}}],
        **PRIVATE,
    )
    found = volumes(pod)
    assert list(found) == ["data", VOLUME, CREDENTIALS_VOLUME, TOKEN_VOLUME]
    assert found[CREDENTIALS_VOLUME] == {
        "name": CREDENTIALS_VOLUME,
        "configMap": {
            "name": "checkout-secrets-agent",
            "items": [{"key": "credentials.json", "path": "credentials.json"}],
        },
    }
    assert found[TOKEN_VOLUME] == {
        "name": TOKEN_VOLUME,
        "projected": {
            "sources": [
                {
                    "serviceAccountToken": {
                        "audience": TOKEN_AUDIENCE,
                        "expirationSeconds": 3600,
                        "path": "token",
                    }
                }
            ]
        },
    }
    for name in AGENT_CONTAINERS[mode]:
        assert mounts(find(pod, name)) == {
            VOLUME: ("/secrets", False),
            CREDENTIALS_VOLUME: ("/etc/secrets-agent", True),
            TOKEN_VOLUME: ("/var/run/secrets/tokens/gcp", True),
        }
        assert agent_config(find(pod, name))["gcp"] == {"credentials_file": CREDENTIALS_FILE}
    # The app's containers get the secrets, never the identity.
    assert mounts(find(pod, "app")) == {"data": ("/data", False), VOLUME: ("/secrets", True)}
    assert mounts(find(pod, "migrate")) == {VOLUME: ("/secrets", True)}


def test_the_credential_configuration_alone_is_mounted_without_a_token() -> None:
    # Credential sources other than a file (AWS, a URL, an executable) need the configuration only.
    pod = injected({"gcp-credentials-configmap": "creds"})
    assert list(volumes(pod)) == [VOLUME, CREDENTIALS_VOLUME]
    assert list(mounts(find(pod, "secrets-agent"))) == [VOLUME, CREDENTIALS_VOLUME]


def test_a_credentials_file_in_the_image_with_a_token() -> None:
    pod = injected(
        {"gcp-credentials-file": "/etc/gcp/credentials.json", "gcp-token-audience": TOKEN_AUDIENCE}
    )
    assert list(volumes(pod)) == [VOLUME, TOKEN_VOLUME]
    assert agent_config(find(pod, "secrets-agent-init"))["gcp"] == {
        "credentials_file": "/etc/gcp/credentials.json"
    }


def test_a_pod_without_volumes_gets_them_in_one_operation() -> None:
    patch = mutate(make_pod(ours({"inject": "true", "secret-db": DB_REF, **FEDERATION})), InjectorSettings())
    [add] = [op for op in patch if op["path"].startswith("/spec/volumes")]
    assert add["path"] == "/spec/volumes"
    assert [v["name"] for v in add["value"]] == [VOLUME, CREDENTIALS_VOLUME, TOKEN_VOLUME]


def test_the_credential_configuration_s_audience_as_the_token_s_is_a_warning() -> None:
    mistaken = "//iam.googleapis.com/" + TOKEN_AUDIENCE.removeprefix("https://iam.googleapis.com/")
    pod = make_pod(
        ours({"inject": "true", "secret-db": DB_REF, **FEDERATION, "gcp-token-audience": mistaken}), **PRIVATE
    )
    mutation = review_pod(pod, InjectorSettings())
    assert mutation.patch
    [warning] = mutation.warnings
    assert warning.startswith(f"secrets-agent: {PREFIX}gcp-token-audience starts with //iam.googleapis.com/")
    correct = make_pod(ours({"inject": "true", "secret-db": DB_REF, **FEDERATION}), **PRIVATE)
    assert not review_pod(correct, InjectorSettings()).warnings


COLLISIONS = [
    (TOKEN_VOLUME, "gcp-token-audience", "its volume for the projected service account token"),
    (CREDENTIALS_VOLUME, "gcp-credentials-configmap", "its volume for the credential configuration"),
    (VOLUME, "inject", "its volume for the secrets"),
]


@pytest.mark.parametrize(("volume", "key", "use"), COLLISIONS, ids=[c[0] for c in COLLISIONS])
def test_a_pod_volume_named_like_ours_is_refused_naming_the_annotation(
    volume: str, key: str, use: str
) -> None:
    error = refusal(FEDERATION, volumes=[{"name": volume, "emptyDir": {}}], **PRIVATE)
    assert error.annotations == (PREFIX + key,)
    assert messages(error, key) == [
        f"the pod already has a volume named {volume!r}, which the webhook gives {use}: rename the pod's "
        "volume"
    ]


def test_a_pod_volume_named_like_one_we_do_not_add_is_no_collision() -> None:
    pod = injected({}, volumes=[{"name": TOKEN_VOLUME, "emptyDir": {}}], **PRIVATE)
    assert list(volumes(pod)) == [TOKEN_VOLUME, VOLUME]


# --- the annotation way against the hand-written manifests, run for real -----------------------------------


@pytest.fixture(scope="module")
def issuer() -> Issuer:
    from cryptography.hazmat.primitives.asymmetric import rsa

    return Issuer(rsa.generate_private_key(public_exponent=65537, key_size=2048))


@pytest.fixture
def federation(issuer: Issuer, tmp_path: Path) -> Iterator[EmulatorEndpoints]:
    """The emulator as Google off GKE: STS trusting the cluster's issuer, IAM Credentials, require_auth."""
    identity = tmp_path / "identity.yaml"
    identity.write_text(yaml.safe_dump(identity_config(issuer)))
    seed = tmp_path / "seed.yaml"
    seed.write_text(
        yaml.safe_dump(
            {"project": PROJECT, "secrets": {name: {"versions": [v]} for name, v in VALUES.items()}}
        )
    )
    with running_emulator(
        EmulatorOptions(grpc_port=0, http_port=0, identity=identity, seed=seed)
    ) as endpoints:
        yield endpoints


def emulator_calls(endpoints: EmulatorEndpoints) -> list[dict[str, Any]]:
    """The emulator's log of calls: who called, billed to which project, with what result."""
    with urllib.request.urlopen(f"{endpoints.admin_url}/calls?limit=100", timeout=10) as answer:
        calls: list[dict[str, Any]] = json.loads(answer.read())["calls"]
        return calls


def example_manifests() -> tuple[dict[str, Any], str]:
    """The example's credential configuration (its ConfigMap's credentials.json) and the audience of its
    projected token volume."""
    docs = render.render(EXAMPLE)
    [config_map] = [d for d in docs if d["kind"] == "ConfigMap"]
    [pod] = render.pod_specs(docs)
    [volume] = [v for v in pod.spec["volumes"] if "projected" in v]
    [source] = volume["projected"]["sources"]
    return json.loads(config_map["data"]["credentials.json"]), source["serviceAccountToken"]["audience"]


async def test_the_annotation_way_runs_with_the_example_s_credential_configuration(
    webhook: Webhook,
    federation: EmulatorEndpoints,
    issuer: Issuer,
    tmp_path: Path,
    tmpfs_dir: Path,  # noqa: F811 - the fixture, imported
) -> None:
    credentials, audience = example_manifests()
    pod = make_pod(
        ours(
            {
                "inject": "true",
                "mode": "init",
                "project": PROJECT,
                "secret-database-url": "database-url",
                "secret-payments-key": "payments-key",
                "secret-payments-key-impersonate-service-account": PAYMENTS,
                "secret-payments-key-delegates": f"{HOP_A}, {HOP_B}",
                "gcp-credentials-configmap": "checkout-secrets-agent",
                "gcp-token-audience": audience,
                "gcp-quota-project": "platform-billing",
                "gcp-iam-endpoint": federation.rest_url,  # Google's IAM Credentials, but offline
            }
        ),
        serviceAccountName="checkout",
        automountServiceAccountToken=False,
        **PRIVATE,
    )
    response, patched = await admit(webhook, pod)
    assert response["allowed"] is True, response
    validate_strict(patched)
    init = find(patched, "secrets-agent-init")
    # The example's credential configuration reads the token where the webhook mounts it, and the agent
    # reads that configuration where the webhook mounts the ConfigMap: the same file serves both ways.
    assert credentials["credential_source"]["file"] == TOKEN_FILE
    assert agent_config(init)["gcp"]["credentials_file"] == CREDENTIALS_FILE
    token = volumes(patched)[TOKEN_VOLUME]["projected"]["sources"][0]["serviceAccountToken"]
    assert token["audience"] == audience == TOKEN_AUDIENCE

    # What the kubelet provides, as local files: the token (for that audience), the ConfigMap's file; only
    # Google's STS becomes the emulator's, as in tests/e2e/test_identity.py.
    token_file = tmp_path / "token"
    token_file.write_text(issuer.token(issued=time.time(), lifetime=3600, audience=audience))
    credentials.update(token_url=federation.token_url)
    credentials["credential_source"]["file"] = str(token_file)
    local_credentials = tmp_path / "credentials.json"
    local_credentials.write_text(json.dumps(credentials))
    try:
        done = run_container(
            init,
            env={
                "SECRET_MANAGER_EMULATOR_HOST": federation.grpc_target,
                "SECRETS_AGENT_OUTPUT_DIR": str(tmpfs_dir),
                "SECRETS_AGENT_GCP_CREDENTIALS_FILE": str(local_credentials),
            },
        )
        assert done.returncode == 0, done.stderr
        assert (tmpfs_dir / "database-url").read_text() == VALUES["database-url"]
        assert (tmpfs_dir / "payments-key").read_text() == VALUES["payments-key"]
        printed = done.stdout + done.stderr
        assert not [name for name, value in VALUES.items() if value in printed]
    finally:
        shutil.rmtree(tmpfs_dir)
    reads = [c for c in emulator_calls(federation) if c["service"] == "secretmanager.googleapis.com"]
    assert {(c["principal"], c["quota_project"], c["result"]) for c in reads} == {
        (FEDERATED, "platform-billing", "OK"),
        (PAYMENTS, "platform-billing", "OK"),
    }


# --- the documentation's annotations --------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]
PAGES = ["k8s/webhook/README.md", "docs/identity.md", "docs/kubernetes.md"]


def yaml_blocks(page: str) -> list[Any]:
    return [
        yaml.safe_load(b)
        for b in re.findall(r"```yaml\n(.*?)```", (REPO / page).read_text(), flags=re.DOTALL)
    ]


def as_pod(block: dict[str, Any], **annotations: str) -> dict[str, Any]:
    """A page's block as a pod: a Deployment fragment's template, or a pod's metadata alone (with
    ``annotations`` the page shows elsewhere)."""
    template = block.get("spec", {}).get("template", block)
    spec = template.get("spec") or {"serviceAccountName": "checkout", **PRIVATE}
    annotations = {**ours(annotations), **template["metadata"]["annotations"]}
    return make_pod(annotations, spec.pop("containers", ()), **spec)


@pytest.mark.parametrize("page", PAGES)
def test_the_documented_federation_annotations_give_a_valid_pod_as_the_example_s(page: str) -> None:
    [block] = [b for b in yaml_blocks(page) if "secrets-agent.io/gcp-token-audience" in str(b)]
    pod = apply(as_pod(block))
    validate_strict(pod)
    credentials, audience = example_manifests()
    token = volumes(pod)[TOKEN_VOLUME]["projected"]["sources"][0]["serviceAccountToken"]
    assert token["audience"] == audience
    assert credentials["credential_source"]["file"] == TOKEN_FILE
    assert volumes(pod)[CREDENTIALS_VOLUME]["configMap"]["name"] == "checkout-secrets-agent"
    assert agent_config(find(pod, "secrets-agent"))["gcp"]["credentials_file"] == CREDENTIALS_FILE


@pytest.mark.parametrize("page", ["k8s/webhook/README.md", "docs/identity.md"])
def test_the_documented_secret_of_another_team_is_admitted(page: str) -> None:
    [block] = [b for b in yaml_blocks(page) if "secret-payments-key-impersonate-service-account" in str(b)]
    pod = apply(as_pod(block, inject="true"))
    validate_strict(pod)
    [payments] = [
        s for s in agent_config(find(pod, "secrets-agent"))["secrets"] if s["name"] == "payments-key"
    ]
    assert payments["impersonate_service_account"] == "payments-reader@payments-prod.iam.gserviceaccount.com"


@pytest.mark.parametrize(
    ("output_path", "key", "directory"),
    [
        ("/etc/secrets-agent", "gcp-credentials-configmap", "/etc/secrets-agent"),
        ("/etc", "gcp-credentials-configmap", "/etc/secrets-agent"),
        ("/var/run/secrets/tokens/gcp/out", "gcp-token-audience", "/var/run/secrets/tokens/gcp"),
    ],
)
def test_an_output_path_around_the_identity_s_mounts_is_refused(
    output_path: str, key: str, directory: str
) -> None:
    error = refusal({**FEDERATION, "output-path": output_path})
    assert error.annotations == (PREFIX + "output-path",)
    [message] = messages(error, "output-path")
    assert message.startswith(f"{output_path} and {directory}, where {PREFIX}{key} mounts")
    assert message.endswith("would be one inside the other")

"""An emulator that requires a token on every Secret Manager call, and a pod's credentials for it: what the
identity tests of the Python API and of ``secrets-agent rotate`` run against.

The emulator is started in-process (``--identity`` and ``--seed`` files, free ports); the pod's identity is
a Workload Identity Federation credential configuration (``external_account``) whose subject token is a JWT
signed by the test's issuer (``tests.emulator.conftest.Idp``), exchanged at the emulator's STS. google-auth
runs unpatched and reaches the emulator through its own overrides only: the file's ``token_url``, and
``iam_endpoint`` (``iam_endpoint_override``) for impersonation.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import yaml

from agent_emulator.options import EmulatorOptions
from agent_emulator.server import EmulatorEndpoints, running_emulator
from tests.emulator.conftest import FEDERATED, POOL_SET, PROVIDER, Idp, credential_config, write_json

PROJECT = "demo-project"
ROTATOR = f"rotator@{PROJECT}.iam.gserviceaccount.com"
"""May impersonate (the pod's pool holds the Token Creator role on it), administers every secret."""
READER = f"reader@{PROJECT}.iam.gserviceaccount.com"
"""May be impersonated by the pod; reads ``db-password`` only."""
HOP = f"hop@{PROJECT}.iam.gserviceaccount.com"
"""The first account of a delegation chain: the pod may impersonate it, it may impersonate TEAM."""
TEAM = f"team@{PROJECT}.iam.gserviceaccount.com"
"""Reachable only through HOP; reads ``other-team``."""
LONELY = f"lonely@{PROJECT}.iam.gserviceaccount.com"
"""Exists, but nobody holds the Token Creator role on it."""
BILLING = "rotation-billing"
"""The quota project ROTATOR, READER, TEAM and the pod may bill."""

VALUES = {
    "db-password": "db-value-71c4-if-you-read-this-it-leaked",
    "other-team": "team-value-2b9e-if-you-read-this-it-leaked",
    "session-key": "session-value-a03f-if-you-read-this-it-leaked-padding-to-be-long-enough",
}
"""Seeded values: none may appear in any message or log line."""


def identity_document(idp: Idp) -> dict[str, Any]:
    """Who the emulator trusts, who may impersonate whom, who may read what, who may bill what."""
    return {
        "require_auth": True,
        "providers": {PROVIDER: {"issuer": idp.issuer, "jwks": idp.jwks()}},
        "service_accounts": {
            ROTATOR: {"token_creators": [POOL_SET]},
            READER: {"token_creators": [POOL_SET]},
            HOP: {"token_creators": [POOL_SET]},
            TEAM: {"token_creators": [HOP]},
            LONELY: {},
        },
        "access": [
            {"principal": ROTATOR, "secrets": [f"projects/{PROJECT}/secrets/*"], "role": "admin"},
            {"principal": READER, "secrets": [f"projects/{PROJECT}/secrets/db-password"], "role": "accessor"},
            {"principal": TEAM, "secrets": [f"projects/{PROJECT}/secrets/other-team"], "role": "accessor"},
            {
                "principal": FEDERATED,
                "secrets": [f"projects/{PROJECT}/secrets/db-password"],
                "role": "accessor",
            },
        ],
        "quota_projects": {BILLING: [ROTATOR, READER, TEAM, POOL_SET]},
    }


SEED = {
    "project": PROJECT,
    "secrets": {
        "db-password": {"versions": [VALUES["db-password"]]},
        "other-team": {"versions": [VALUES["other-team"]]},
        "session-key": {"versions": [VALUES["session-key"]], "labels": {"secret-type": "session-secret"}},
    },
}


@dataclass(frozen=True)
class World:
    """The running emulator and the pod's files."""

    endpoints: EmulatorEndpoints
    credentials: Path
    """The pod's credential configuration (``external_account``, no impersonation of its own)."""
    subject_token: str
    """The projected service account token in the file the configuration names (never to be printed)."""

    def calls(self, service: str | None = None) -> list[dict[str, Any]]:
        """The emulator's recent calls (``GET /emulator/v1/calls``), of one service or all."""
        response = requests.get(f"{self.endpoints.admin_url}/calls", params={"limit": 1000}, timeout=10)
        assert response.status_code == 200, response.text
        found: list[dict[str, Any]] = response.json()["calls"]
        return [c for c in found if service is None or c["service"] == service]

    def secret_manager_calls(self) -> list[dict[str, Any]]:
        return self.calls("secretmanager.googleapis.com")

    def leaks(self, text: str) -> list[str]:
        """What of a secret value or a token appears in ``text`` (named, never quoted)."""
        found = [name for name, value in VALUES.items() if value in text]
        if self.subject_token in text or ".eyJ" in text or "eyJhbGci" in text:
            found.append("the subject token")
        if "ya29." in text:
            found.append("an access token")
        return found


@contextmanager
def identity_world(tmp_path: Path, idp: Idp) -> Iterator[World]:
    """An emulator with :func:`identity_document` and :data:`SEED`, and the pod's credential files."""
    identity = tmp_path / "identity.yaml"
    identity.write_text(yaml.safe_dump(identity_document(idp)))
    seed = tmp_path / "seed.yaml"
    seed.write_text(yaml.safe_dump(SEED))
    token_file = tmp_path / "projected-token"
    subject_token = idp.token()
    token_file.write_text(subject_token)
    with running_emulator(EmulatorOptions(grpc_port=0, http_port=0, identity=identity, seed=seed)) as ep:
        credentials = write_json(
            tmp_path / "credentials.json", credential_config(ep, token_file, impersonate=None)
        )
        yield World(ep, credentials, subject_token)

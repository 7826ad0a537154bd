"""What the injector is configured with (its command-line flags), and the names it injects."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from agent import __version__

PREFIX = "secrets-agent.io/"
"""Every annotation the injector reads or writes starts with this."""
STATUS_ANNOTATION = PREFIX + "status"
"""Set to ``injected`` on every pod the injector changed: a second call (reinvocation) changes nothing."""
INJECTED = "injected"

AGENT_CONTAINER = "secrets-agent"
"""The sidecar (``sidecar`` mode) or the restartable init container (``native`` mode)."""
INIT_CONTAINER = "secrets-agent-init"
"""The one-shot bootstrap init container (``sidecar`` and ``init`` modes)."""
VOLUME = "secrets-agent"
"""The memory-backed emptyDir the secrets are written to."""

# Workload Identity Federation off GKE (``gcp-credentials-configmap``, ``gcp-token-audience``): the volumes
# go into the injected containers only, at the paths of the hand-written manifests
# (k8s/examples/workload-identity-federation), so that one credential configuration serves both ways.
CREDENTIALS_VOLUME = "secrets-agent-gcp-credentials"
"""The ConfigMap volume holding the credential configuration (``gcp-credentials-configmap``)."""
CREDENTIALS_KEY = "credentials.json"
"""The ConfigMap's key that holds the credential configuration (the only one mounted)."""
CREDENTIALS_DIR = "/etc/secrets-agent"
"""Where the ConfigMap volume is mounted, read-only, in the injected containers."""
CREDENTIALS_FILE = f"{CREDENTIALS_DIR}/{CREDENTIALS_KEY}"
"""``gcp.credentials_file`` of a pod with ``gcp-credentials-configmap``."""
TOKEN_VOLUME = "secrets-agent-gcp-token"  # noqa: S105 - a name, not a token
"""The projected service account token volume (``gcp-token-audience``)."""
TOKEN_DIR = "/var/run/secrets/tokens/gcp"  # noqa: S105 - a name, not a token
"""Where the token volume is mounted, read-only, in the injected containers."""
TOKEN_PATH = "token"  # noqa: S105 - a name, not a token
"""The token's file name in its volume."""
TOKEN_FILE = f"{TOKEN_DIR}/{TOKEN_PATH}"
"""The projected token: the ``credential_source.file`` the credential configuration must name
(``gcloud iam workload-identity-pools create-cred-config --credential-source-file=...``)."""
TOKEN_EXPIRATION = 3600
"""``expirationSeconds`` of the projected token; the kubelet rewrites it at 80 % of that, and google-auth
reads the file again at every refresh."""

AGENT_USER = 65532
"""The image's non-root user and group, used unless the app's own user or group is known."""
PROBES_PORT = 8731
"""The agent's ``/healthz`` and ``/readyz`` listener (``probes.listen``, 0.0.0.0:8731)."""
DEFAULT_IMAGE = f"ghcr.io/secrets-agent/secrets-agent:{__version__}"

InjectionMode = Literal["sidecar", "native", "init"]
INJECTION_MODES: tuple[InjectionMode, ...] = ("sidecar", "native", "init")


@dataclass(frozen=True)
class Resources:
    """Requests and limits of each injected container (Kubernetes quantities; None: not set)."""

    cpu_request: str | None = "10m"
    memory_request: str | None = "64Mi"
    cpu_limit: str | None = "500m"
    """Enough for a quick start-up (imports); the agent is idle between polls."""
    memory_limit: str | None = "128Mi"
    """``run`` with 100 secrets peaks near 75 MiB (README, make bench); the limit also covers the tmpfs
    pages of the secrets the agent writes (at most the volume's sizeLimit)."""

    def to_k8s(self) -> dict[str, dict[str, str]]:
        """The container's ``resources`` object."""
        out: dict[str, dict[str, str]] = {}
        for kind, cpu, memory in (
            ("requests", self.cpu_request, self.memory_request),
            ("limits", self.cpu_limit, self.memory_limit),
        ):
            values = {name: value for name, value in (("cpu", cpu), ("memory", memory)) if value is not None}
            if values:
                out[kind] = values
        return out


@dataclass(frozen=True)
class InjectorSettings:
    """The webhook's defaults; annotations override them pod by pod."""

    image: str = DEFAULT_IMAGE
    """Image of the injected containers (annotation ``image`` overrides it)."""
    default_mode: InjectionMode = "sidecar"
    """Injection mode when the pod has no ``mode`` annotation."""
    project: str | None = None
    """Default project for short secret references (annotation ``project`` overrides it)."""
    resources: Resources = field(default_factory=Resources)
    """Default requests and limits (annotations ``cpu-request`` etc. override them)."""
    volume_size: str = "16Mi"
    """``sizeLimit`` of the memory-backed volume: secrets are small (64 KiB at most each)."""
    fleet_size: int | None = None
    """``fleet.size`` written into the configuration of every pod with a selection (``--fleet-size``), so
    that the agents' ``relist_interval: auto`` and start jitter know the fleet; None: not written."""


MAX_LISTING_TIMEOUT = 3.0
"""Longest ``--listing-timeout``: a review is answered within 4 s (``server.REVIEW_DEADLINE``, under the API
server's 5), and the rest of it needs some of that."""


@dataclass(frozen=True)
class ResolverSettings:
    """How the webhook resolves selections at admission (``--resolve-selections`` and the flags after it;
    ``agent.webhook.selections``)."""

    endpoint: str | None = None
    """``HOST:PORT`` of Secret Manager (``--secret-manager-endpoint``): a loopback address is the plaintext
    emulator, any other is spoken to over TLS with the webhook's credentials; None: Google."""
    cache_ttl: float = 60.0
    """Seconds a listing is served without being refreshed (``--selection-cache-ttl``)."""
    listings_per_minute: int = 30
    """Most listings this replica makes in any 60 seconds, all selections together
    (``--listings-per-minute``)."""
    listing_timeout: float = 2.0
    """Seconds a review waits for a listing it has no entry for (``--listing-timeout``)."""
    max_entries: int = 256
    """Listings kept (least recently used evicted)."""


@dataclass(frozen=True)
class WebhookOptions:
    """Everything ``secrets-agent webhook`` runs with."""

    listen: str
    cert_file: Path
    key_file: Path
    injector: InjectorSettings
    reload_interval: float = 10.0
    """Seconds between checks of the certificate files."""
    shutdown_delay: float = 5.0
    """Seconds the webhook keeps answering after SIGTERM, while the Service stops sending it requests
    (endpoints are removed asynchronously; a request refused meanwhile would fail a pod creation)."""
    resolver: ResolverSettings | None = None
    """Resolve selections at admission (``--resolve-selections``); None: off, the agents list."""

"""How the emulator is started: built by the CLI from flags, or by tests directly."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_GRPC_PORT = 8780
DEFAULT_HTTP_PORT = 8781


@dataclass(frozen=True)
class EmulatorOptions:
    host: str = "127.0.0.1"
    """Address both listeners bind to. Loopback by default: the admin API has no authentication (and the
    Secret Manager API none unless the identity config says ``require_auth``)."""
    grpc_port: int = DEFAULT_GRPC_PORT
    """Plaintext gRPC port (0 = pick a free one)."""
    http_port: int = DEFAULT_HTTP_PORT
    """REST/JSON API (``/v1/...``) and admin API (``/emulator/v1/...``) port (0 = pick a free one)."""
    seed: Path | None = None
    """YAML or JSON file of secrets and versions loaded at start (ignored for data already persisted)."""
    data: Path | None = None
    """Persistence file: loaded at start if present, rewritten atomically after every change."""
    faults: Path | None = None
    """YAML file of faults and quotas applied from the start (see ``agent_emulator.fault_config``)."""
    fault_specs: tuple[str, ...] = field(default=())
    """Faults from ``--fault`` flags, e.g. ``AccessSecretVersion:unavailable=0.2``."""
    identity: Path | None = None
    """YAML/JSON identity config (``--identity``): trusted providers, service accounts, bindings,
    ``require_auth`` (see ``agent_emulator.identity_config``). None: no identity, nothing required."""
    quotas: bool = False
    """Switch on the service's per-project per-minute quotas (access 90,000, read 600, write 600)."""
    rotation_check_seconds: float = 1.0
    """How often due rotations (SECRET_ROTATE events) are looked for, in seconds."""

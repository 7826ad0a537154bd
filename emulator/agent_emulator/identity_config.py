"""The identity configuration: who the emulator trusts, who may impersonate whom, who may read what.

Loaded strictly from ``--identity FILE`` (YAML or JSON) or replaced at run time with
``POST /emulator/v1/identity`` (the same document, as JSON). Unknown keys are errors; every problem is
reported at once with its path (``providers.<name>.issuer``), never quoting key material. Without it the
emulator serves everyone unauthenticated, as before::

    require_auth: true              # every Secret Manager call needs a token (default false)
    token_lifetime_seconds: 3600    # STS tokens live at most this long, and never past the subject
                                    # token's exp (default 3600)
    max_token_lifetime_seconds: 3600   # longest generateAccessToken lifetime (default 3600; up to 43200,
                                       # as Google's lifetime-extension org policy allows)
    providers:                      # workload identity pool providers the STS exchange accepts
      projects/123456/locations/global/workloadIdentityPools/dev-pool/providers/kind:
        issuer: https://kubernetes.default.svc.cluster.local    # the subject token's iss (https only)
        allowed_audiences: [sts.googleapis.com]    # default: the provider's own name, as
                                    # https://iam.googleapis.com/projects/... or //iam.googleapis.com/...
        jwks_file: cluster-jwks.json   # or jwks: {keys: [...]}, public_key_pem: ..., public_key_file: ...
        allowed_subjects: ["system:serviceaccount:prod:*"]   # optional: an attribute condition's stand-in
    service_accounts:               # the accounts generateAccessToken mints tokens for
      reader@demo-project.iam.gserviceaccount.com:
        token_creators:             # who holds iam.serviceAccounts.getAccessToken on it
          - principalSet://iam.googleapis.com/projects/123456/locations/global/workloadIdentityPools/dev-pool/*
      deployer@demo-project.iam.gserviceaccount.com: {}
    access:                         # Secret Manager IAM bindings
      - principal: reader@demo-project.iam.gserviceaccount.com    # or principals: [...]
        secrets: ["projects/demo-project/secrets/*"]               # or "*"; * matches any characters
        role: accessor              # accessor (access + get), viewer (get + list), admin (everything)
    quota_projects:                 # who may bill calls to a project with x-goog-user-project
      billing-project: [reader@demo-project.iam.gserviceaccount.com]

Principals: a service account email (``serviceAccount:`` and ``user:`` prefixes are dropped), a federated
identity ``principal://iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/P/subject/S``, a
whole pool ``principalSet://iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/P/*``, any
of these ending in ``*`` (a prefix), or ``*`` (any caller with a valid token). Relative key files are read
from the config file's directory (the emulator's working directory for the admin API).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import yaml

from agent.errors import ConfigError, Problem
from agent_emulator import bounded, jwt_verify
from agent_emulator.bounded import shown
from agent_emulator.jwt_verify import VerificationKey

MAX_FILE_BYTES = 1024 * 1024
"""Largest identity config file, and largest key file it names."""
MAX_PROVIDERS = 100
MAX_SERVICE_ACCOUNTS = 1000
MAX_BINDINGS = 1000
MAX_LIST = 1000
"""Most members, secrets, audiences or subjects in any one list."""
MAX_TEXT = 1024
"""Longest string anywhere in the config (names, issuers, audiences, patterns)."""
DEFAULT_LIFETIME_SECONDS = 3600
MAX_EXTENDED_LIFETIME_SECONDS = 43200

IAM_HOST = "iam.googleapis.com"
PROVIDER_NAME = re.compile(
    r"projects/(?P<number>[0-9]{1,20})/locations/global/workloadIdentityPools/(?P<pool>[a-z0-9-]{4,32})"
    r"/providers/(?P<provider>[a-z0-9-]{4,32})"
)
_EMAIL = re.compile(r"[^@\s/:*]+@[^@\s/:*]+")
_POOL_PREFIX = r"principal://iam\.googleapis\.com/projects/[0-9]{1,20}/locations/global/workloadIdentityPools/[a-z0-9-]{4,32}"
_PRINCIPAL = re.compile(_POOL_PREFIX + r"/subject/\S+")
_PRINCIPAL_SET = re.compile(
    r"principalSet://iam\.googleapis\.com/(?P<pool>projects/[0-9]{1,20}/locations/global/"
    r"workloadIdentityPools/[a-z0-9-]{4,32})/\*"
)
_SECRET_PATTERN = re.compile(r"\*|projects/[A-Za-z0-9_.*/-]+")
_PROJECT = re.compile(r"[^/\s*]{1,255}")

Role = Literal["accessor", "viewer", "admin"]
ROLE_NAMES: dict[str, Role] = {
    "accessor": "accessor",
    "viewer": "viewer",
    "admin": "admin",
    "roles/secretmanager.secretAccessor": "accessor",
    "roles/secretmanager.viewer": "viewer",
    "roles/secretmanager.admin": "admin",
}
"""Role names a binding may use (short, or Google's role id)."""

ROLE_PERMISSIONS: dict[Role, frozenset[str]] = {
    "accessor": frozenset(
        {"secretmanager.versions.access", "secretmanager.versions.get", "secretmanager.secrets.get"}
    ),
    "viewer": frozenset(
        {
            "secretmanager.secrets.get",
            "secretmanager.secrets.list",
            "secretmanager.versions.get",
            "secretmanager.versions.list",
        }
    ),
    "admin": frozenset(
        {
            "secretmanager.secrets.create",
            "secretmanager.secrets.delete",
            "secretmanager.secrets.get",
            "secretmanager.secrets.list",
            "secretmanager.secrets.update",
            "secretmanager.versions.access",
            "secretmanager.versions.add",
            "secretmanager.versions.destroy",
            "secretmanager.versions.disable",
            "secretmanager.versions.enable",
            "secretmanager.versions.get",
            "secretmanager.versions.list",
        }
    ),
}
"""What each role grants (accessor also reads metadata, so an agent can resolve ``latest`` and labels)."""

_TOP_KEYS = (
    "require_auth",
    "token_lifetime_seconds",
    "max_token_lifetime_seconds",
    "providers",
    "service_accounts",
    "access",
    "quota_projects",
)
_PROVIDER_KEYS = (
    "issuer",
    "allowed_audiences",
    "jwks",
    "jwks_file",
    "public_key_pem",
    "public_key_file",
    "allowed_subjects",
)
_KEY_SOURCES = ("jwks", "jwks_file", "public_key_pem", "public_key_file")
_ACCOUNT_KEYS = ("token_creators",)
_BINDING_KEYS = ("principal", "principals", "secrets", "role")


# ---- matching ---------------------------------------------------------------------------------------------


def matches(pattern: str, value: str) -> bool:
    """A principal (or subject) pattern: ``*`` matches anything, a trailing ``*`` a prefix, else equality."""
    if pattern == "*":
        return True
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    return value == pattern


def secret_pattern_regex(pattern: str) -> re.Pattern[str]:
    """A secret-name pattern as a regex: ``*`` stands for any run of characters (``/`` included)."""
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")))


@dataclass(frozen=True)
class ProviderConfig:
    """One workload identity pool provider: which issuer, audiences and keys its subject tokens have."""

    name: str
    """``projects/N/locations/global/workloadIdentityPools/P/providers/X``."""
    issuer: str
    audiences: tuple[str, ...]
    keys: tuple[VerificationKey, ...]
    allowed_subjects: tuple[str, ...] | None = None

    @property
    def pool(self) -> str:
        """``projects/N/locations/global/workloadIdentityPools/P``."""
        return self.name.rsplit("/providers/", 1)[0]

    def principal(self, subject: str) -> str:
        """The federated principal a subject of this provider becomes."""
        return f"principal://{IAM_HOST}/{self.pool}/subject/{subject}"


@dataclass(frozen=True)
class ServiceAccountConfig:
    email: str
    token_creators: tuple[str, ...] = ()
    """Principal patterns allowed ``iam.serviceAccounts.getAccessToken`` on this account."""


@dataclass(frozen=True)
class AccessBinding:
    principals: tuple[str, ...]
    secrets: tuple[str, ...]
    role: Role
    _regexes: tuple[re.Pattern[str], ...] = field(default=(), compare=False, repr=False)

    def covers_secret(self, secret_name: str) -> bool:
        """True when one of the patterns names this secret (``projects/P/[locations/L/]secrets/S``)."""
        return any(regex.fullmatch(secret_name) for regex in self._regexes)

    def covers_parent(self, parent: str) -> bool:
        """True when the patterns cover *every* secret under ``parent`` (list and create are granted on
        the parent only by a binding that spans all of its secrets, e.g. ``projects/P/secrets/*``)."""
        everything = f"{parent}/secrets/*"
        return any(regex.fullmatch(everything) for regex in self._regexes)


@dataclass(frozen=True)
class IdentityConfig:
    """The validated identity config (see the module docstring); the default trusts nobody and requires
    nothing."""

    require_auth: bool = False
    token_lifetime_seconds: int = DEFAULT_LIFETIME_SECONDS
    max_token_lifetime_seconds: int = DEFAULT_LIFETIME_SECONDS
    providers: Mapping[str, ProviderConfig] = field(default_factory=dict)
    service_accounts: Mapping[str, ServiceAccountConfig] = field(default_factory=dict)
    access: tuple[AccessBinding, ...] = ()
    quota_projects: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    document: Mapping[str, Any] = field(default_factory=dict, compare=False)
    """The document as given (what ``GET /emulator/v1/identity`` shows)."""

    def permissions(self, principal: str, secret_name: str | None, parent: str | None) -> frozenset[str]:
        """Every permission ``principal`` holds on a secret (by name) or on a parent (list/create)."""
        granted: set[str] = set()
        for binding in self.access:
            if not any(matches(p, principal) for p in binding.principals):
                continue
            if (secret_name is not None and binding.covers_secret(secret_name)) or (
                parent is not None and binding.covers_parent(parent)
            ):
                granted |= ROLE_PERMISSIONS[binding.role]
        return frozenset(granted)

    def may_use_quota_project(self, principal: str, project: str) -> bool:
        return any(matches(p, principal) for p in self.quota_projects.get(project, ()))

    def may_create_tokens(self, creator: str, account: str) -> bool:
        spec = self.service_accounts.get(account)
        return spec is not None and any(matches(p, creator) for p in spec.token_creators)


# ---- parsing ---------------------------------------------------------------------------------------------


def normalize_principal(value: str) -> str:
    """A principal as the emulator compares it: emails lower-cased, ``serviceAccount:``/``user:`` dropped."""
    for prefix in ("serviceAccount:", "user:"):
        if value.startswith(prefix):
            value = value[len(prefix) :]
    return value.lower() if _EMAIL.fullmatch(value) else value


def check_principal(value: object) -> str:
    """A principal (no pattern) for an admin-minted token; ValueError saying what is accepted."""
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT or not value.isprintable():
        raise ValueError("expected a service account email or a principal:// identity")
    principal = normalize_principal(value.strip())
    if _EMAIL.fullmatch(principal) or _PRINCIPAL.fullmatch(principal):
        return principal
    raise ValueError(
        f"expected a service account email or principal://{IAM_HOST}/projects/N/locations/global/"
        f"workloadIdentityPools/P/subject/S, got {shown(value)}"
    )


def check_principal_pattern(value: object) -> str:
    """A principal pattern (see the module docstring), normalised; ValueError otherwise."""
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT or not value.isprintable():
        raise ValueError("expected a principal: an email, principal://..., principalSet://.../* or '*'")
    text = normalize_principal(value.strip())
    if text == "*":
        return text
    pool = _PRINCIPAL_SET.fullmatch(text)
    if pool:
        return f"principal://{IAM_HOST}/{pool['pool']}/subject/*"
    if text.startswith("principalSet://"):
        raise ValueError(
            "only whole pools are supported as principal sets: "
            f"principalSet://{IAM_HOST}/projects/N/locations/global/workloadIdentityPools/P/*"
        )
    body = text[:-1] if text.endswith("*") else text
    if "*" in body:
        raise ValueError("'*' may only end a principal pattern (a prefix) or stand alone")
    if text.startswith("principal://"):
        if _PRINCIPAL.fullmatch(text) or (text.endswith("*") and text.startswith("principal://" + IAM_HOST)):
            return text
        raise ValueError(
            f"expected principal://{IAM_HOST}/projects/N/locations/global/workloadIdentityPools/P/subject/S"
        )
    if _EMAIL.fullmatch(text) or (text.endswith("*") and " " not in text):
        return text
    raise ValueError(
        f"not a principal: {shown(value)} (expected an email, principal://... or principalSet://...)"
    )


class _Collector:
    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))


def _key(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _unknown_keys(data: Mapping[Any, Any], allowed: Sequence[str], path: str, out: _Collector) -> None:
    for key in data:
        if key not in allowed:
            out.add(_key(path, key), f"unknown key; expected one of: {', '.join(allowed)}")


def _text(value: object, path: str, out: _Collector) -> str | None:
    if not isinstance(value, str) or not value.strip():
        out.add(path, f"expected a non-empty string, got {shown(value)}")
        return None
    if len(value) > MAX_TEXT or not value.isprintable():
        out.add(path, f"expected printable text of at most {MAX_TEXT} characters")
        return None
    return value.strip()


def _list(
    value: object, path: str, out: _Collector, check: Callable[[object], str], *, allow_scalar: bool = False
) -> tuple[str, ...] | None:
    if allow_scalar and isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        out.add(path, f"expected a list, got {type(value).__name__}")
        return None
    if len(value) > MAX_LIST:
        out.add(path, f"at most {MAX_LIST} entries, got {len(value)}")
        return None
    found: list[str] = []
    for index, item in enumerate(value):
        try:
            found.append(check(item))
        except ValueError as error:
            out.add(f"{path}[{index}]", str(error))
    return tuple(found)


def _bool(data: Mapping[str, Any], key: str, out: _Collector) -> bool:
    value = data.get(key, False)
    if not isinstance(value, bool):
        out.add(key, f"expected true or false, got {shown(value)}")
        return False
    return value


def _seconds(data: Mapping[str, Any], key: str, maximum: int, out: _Collector) -> int:
    value = data.get(key, DEFAULT_LIFETIME_SECONDS)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= maximum:
        out.add(key, f"expected a whole number of seconds from 1 to {maximum}, got {shown(value)}")
        return DEFAULT_LIFETIME_SECONDS
    return value


def _issuer(value: object) -> str:
    if not isinstance(value, str) or len(value) > MAX_TEXT or not value.isprintable() or not value:
        raise ValueError("expected the issuer URI (the subject token's iss claim)")
    if not value.startswith("https://") or len(value) <= len("https://"):
        # What Google answers for an http:// issuer; keeping it makes configs portable to the real thing.
        raise ValueError("Invalid OIDC issuer URI. The scheme must be https.")
    return value


def _plain(value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT or not value.isprintable():
        raise ValueError(f"expected a non-empty string of at most {MAX_TEXT} characters")
    return value


def _subject_pattern(value: object) -> str:
    text = _plain(value)
    if "*" in text[:-1]:
        raise ValueError("'*' may only end a subject pattern (a prefix)")
    return text


def _secret_pattern(value: object) -> str:
    text = _plain(value).strip()
    if not _SECRET_PATTERN.fullmatch(text):
        raise ValueError(
            "expected '*', a secret name (projects/P/secrets/S or projects/P/locations/L/secrets/S) "
            "or a pattern with '*' (projects/P/secrets/*)"
        )
    return text


def _read_key_file(path: Path) -> str:
    try:
        return bounded.read_text(path, MAX_FILE_BYTES)
    except OSError as error:
        raise jwt_verify.KeyProblem(f"cannot read {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise jwt_verify.KeyProblem(f"cannot read {path}: it is not UTF-8") from None
    except bounded.InputError as error:
        raise jwt_verify.KeyProblem(f"{path} refused: {error.reason}") from None


def _jwks_document(value: object) -> object:
    if isinstance(value, str):
        try:
            return bounded.loads_json(value)
        except (json.JSONDecodeError, bounded.InputError):
            raise jwt_verify.KeyProblem("the JWKS is not valid JSON") from None
    return value


def _provider_keys(
    spec: Mapping[str, Any], path: str, base_dir: Path, out: _Collector
) -> tuple[VerificationKey, ...]:
    given = [key for key in _KEY_SOURCES if key in spec]
    if len(given) != 1:
        out.add(path, f"needs exactly one of {', '.join(_KEY_SOURCES)} (the keys that sign its tokens)")
        return ()
    source = given[0]
    value = spec[source]
    where = _key(path, source)
    try:
        if source in ("jwks_file", "public_key_file"):
            if not isinstance(value, str) or not value or len(value) > MAX_TEXT:
                raise jwt_verify.KeyProblem("expected a file path")
            text = _read_key_file(base_dir / Path(value).expanduser())
            document: object = _jwks_document(text) if source == "jwks_file" else text
        else:
            document = _jwks_document(value) if source == "jwks" else value
        if source.startswith("jwks"):
            return tuple(jwt_verify.keys_from_jwks(document))
        if not isinstance(document, str):
            raise jwt_verify.KeyProblem("expected PEM text")
        return tuple(jwt_verify.keys_from_pem(document))
    except jwt_verify.KeyProblem as error:
        out.add(where, str(error))
        return ()


def provider_name(value: str) -> str | None:
    """``projects/N/.../providers/X`` from that or its ``//iam.googleapis.com/`` form; None if neither."""
    text = value.removeprefix(f"//{IAM_HOST}/")
    return text if PROVIDER_NAME.fullmatch(text) else None


def _provider(key: object, spec: object, base_dir: Path, out: _Collector) -> ProviderConfig | None:
    path = f"providers.{key}"
    name = provider_name(key) if isinstance(key, str) else None
    if name is None:
        out.add(
            path,
            "expected a provider resource name: projects/PROJECT_NUMBER/locations/global/"
            "workloadIdentityPools/POOL/providers/PROVIDER (pool and provider ids: 4-32 of a-z, 0-9, -)",
        )
    if not isinstance(spec, Mapping):
        out.add(path, f"expected a mapping (issuer, keys, ...), got {type(spec).__name__}")
        return None
    _unknown_keys(spec, _PROVIDER_KEYS, path, out)
    issuer = None
    if "issuer" not in spec:
        out.add(_key(path, "issuer"), "required: the subject token's iss claim")
    else:
        try:
            issuer = _issuer(spec["issuer"])
        except ValueError as error:
            out.add(_key(path, "issuer"), str(error))
    keys = _provider_keys(spec, path, base_dir, out)
    audiences: tuple[str, ...] | None = None
    if name is not None:
        audiences = (f"https://{IAM_HOST}/{name}", f"//{IAM_HOST}/{name}")
    if "allowed_audiences" in spec:
        audiences = _list(spec["allowed_audiences"], _key(path, "allowed_audiences"), out, _plain)
        if audiences == ():
            out.add(
                _key(path, "allowed_audiences"),
                "an empty list accepts no token; leave it out for the default",
            )
    subjects = None
    if "allowed_subjects" in spec:
        subjects = _list(spec["allowed_subjects"], _key(path, "allowed_subjects"), out, _subject_pattern)
    if name is None or issuer is None or not keys or not audiences:
        return None
    return ProviderConfig(name, issuer, audiences, keys, subjects)


def _service_account(key: object, spec: object, out: _Collector) -> ServiceAccountConfig | None:
    path = f"service_accounts.{key}"
    email = normalize_principal(key) if isinstance(key, str) else ""
    if not _EMAIL.fullmatch(email) or len(email) > MAX_TEXT:
        out.add(path, "expected a service account email, e.g. reader@my-project.iam.gserviceaccount.com")
        email = ""
    if spec is None:
        spec = {}
    if not isinstance(spec, Mapping):
        out.add(path, f"expected a mapping (token_creators), got {type(spec).__name__}")
        return None
    _unknown_keys(spec, _ACCOUNT_KEYS, path, out)
    creators: tuple[str, ...] | None = ()
    if "token_creators" in spec:
        creators = _list(spec["token_creators"], _key(path, "token_creators"), out, check_principal_pattern)
    if not email or creators is None:
        return None
    return ServiceAccountConfig(email, creators)


def _binding(index: int, spec: object, out: _Collector) -> AccessBinding | None:
    path = f"access[{index}]"
    if not isinstance(spec, Mapping):
        out.add(path, f"expected a mapping (principal(s), secrets, role), got {type(spec).__name__}")
        return None
    _unknown_keys(spec, _BINDING_KEYS, path, out)
    principals: tuple[str, ...] | None = None
    if ("principal" in spec) == ("principals" in spec):
        out.add(path, "needs exactly one of principal or principals")
    elif "principal" in spec:
        try:
            principals = (check_principal_pattern(spec["principal"]),)
        except ValueError as error:
            out.add(_key(path, "principal"), str(error))
    else:
        principals = _list(spec["principals"], _key(path, "principals"), out, check_principal_pattern)
    secrets = None
    if "secrets" not in spec:
        out.add(_key(path, "secrets"), "required: secret names or patterns ('*' for every secret)")
    else:
        secrets = _list(spec["secrets"], _key(path, "secrets"), out, _secret_pattern, allow_scalar=True)
    role_name = spec.get("role", "accessor")
    role = ROLE_NAMES.get(role_name) if isinstance(role_name, str) else None
    if role is None:
        out.add(_key(path, "role"), f"expected one of: {', '.join(ROLE_NAMES)}, got {shown(role_name)}")
    if not principals or not secrets or role is None:
        return None
    regexes = tuple(secret_pattern_regex(pattern) for pattern in secrets)
    return AccessBinding(principals, secrets, role, regexes)


def _mapping(data: Mapping[str, Any], key: str, limit: int, out: _Collector) -> Mapping[Any, Any]:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        out.add(key, f"expected a mapping, got {type(value).__name__}")
        return {}
    if len(value) > limit:
        out.add(key, f"at most {limit} entries, got {len(value)}")
        return {}
    return value


def parse_identity_config(data: object, base_dir: Path | None = None) -> IdentityConfig:
    """Validate a decoded YAML/JSON document; ConfigError lists *every* problem with its path."""
    if data is None:
        return IdentityConfig()
    if not isinstance(data, Mapping):
        raise ConfigError(Problem("", f"an identity config is a mapping, got {type(data).__name__}"))
    base = base_dir or Path.cwd()
    out = _Collector()
    _unknown_keys(data, _TOP_KEYS, "", out)
    require_auth = _bool(data, "require_auth", out)
    lifetime = _seconds(data, "token_lifetime_seconds", MAX_EXTENDED_LIFETIME_SECONDS, out)
    max_lifetime = _seconds(data, "max_token_lifetime_seconds", MAX_EXTENDED_LIFETIME_SECONDS, out)
    providers: dict[str, ProviderConfig] = {}
    for key, spec in _mapping(data, "providers", MAX_PROVIDERS, out).items():
        provider = _provider(key, spec, base, out)
        if provider is not None:
            if provider.name in providers:
                out.add(f"providers.{key}", "the same provider is listed twice")
            providers[provider.name] = provider
    accounts: dict[str, ServiceAccountConfig] = {}
    for key, spec in _mapping(data, "service_accounts", MAX_SERVICE_ACCOUNTS, out).items():
        account = _service_account(key, spec, out)
        if account is not None:
            if account.email in accounts:
                out.add(f"service_accounts.{key}", "the same account is listed twice")
            accounts[account.email] = account
    bindings: list[AccessBinding] = []
    raw_access = data.get("access") or []
    if not isinstance(raw_access, list):
        out.add("access", f"expected a list of bindings, got {type(raw_access).__name__}")
    elif len(raw_access) > MAX_BINDINGS:
        out.add("access", f"at most {MAX_BINDINGS} bindings, got {len(raw_access)}")
    else:
        bindings = [b for i, spec in enumerate(raw_access) if (b := _binding(i, spec, out)) is not None]
    quota: dict[str, tuple[str, ...]] = {}
    for project, members in _mapping(data, "quota_projects", MAX_LIST, out).items():
        path = f"quota_projects.{project}"
        if not isinstance(project, str) or not _PROJECT.fullmatch(project):
            out.add(path, "expected a project id or number")
            continue
        checked = _list(members, path, out, check_principal_pattern)
        if checked is not None:
            quota[project] = checked
    if out.problems:
        raise ConfigError(out.problems)
    return IdentityConfig(
        require_auth=require_auth,
        token_lifetime_seconds=lifetime,
        max_token_lifetime_seconds=max_lifetime,
        providers=providers,
        service_accounts=accounts,
        access=tuple(bindings),
        quota_projects=quota,
        document=cast(Mapping[str, Any], json.loads(json.dumps(data, default=str))),
    )


def load_identity_config(path: Path) -> IdentityConfig:
    """The ``--identity`` file; ConfigError (exit code 2) naming the file and every problem in it."""
    try:
        text = bounded.read_text(path, MAX_FILE_BYTES)
    except OSError as error:
        raise ConfigError(Problem(str(path), f"cannot read the identity file: {error.strerror}")) from None
    except UnicodeDecodeError:
        raise ConfigError(Problem(str(path), "cannot read the identity file: it is not UTF-8")) from None
    except bounded.InputError as error:
        raise ConfigError(Problem(str(path), f"refused: {error.reason}")) from None
    try:
        data = bounded.load_yaml(text)  # JSON is YAML too
    except bounded.InputError as error:
        raise ConfigError(Problem(str(path), f"refused: {error.reason}")) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(Problem(str(path), f"not valid YAML{at}")) from None
    try:
        return parse_identity_config(data, path.parent)
    except ConfigError as error:
        raise ConfigError(
            [Problem(f"{path}: {p.path}" if p.path else str(path), p.message) for p in error.problems]
        ) from None

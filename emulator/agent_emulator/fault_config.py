"""The fault and quota configuration: the emulator misbehaving on purpose, reproducibly.

Faults are configured per method (the gRPC name, e.g. ``AccessSecretVersion``, or ``*`` for every method)
from a YAML file (``--faults``), ``--fault METHOD:KIND=VALUE`` flags, or at run time over the admin API
(``PUT /emulator/v1/faults``, same shape as the file, as JSON)::

    seed: 42                      # seeds the random draws, so a run can be replayed
    faults:
      AccessSecretVersion: {unavailable: 0.2, latency_ms: 50, jitter_ms: 100, corrupt_crc: 0.05}
      GetSecret: {fail_next: 3, fail_code: INTERNAL}
      "*": {resource_exhausted: 0.01}
    quotas: {access_per_minute: 90000, read_per_minute: 600, write_per_minute: 600}  # or: service / true

Kinds: ``unavailable``, ``resource_exhausted``, ``deadline_exceeded``, ``internal`` (probabilities 0..1 of
failing a call with that status; together at most 1), ``latency_ms`` + ``jitter_ms`` (added delay: fixed
plus uniform random, milliseconds, each at most MAX_DELAY_MS), ``corrupt_crc`` (probability that an
AccessSecretVersion response carries a wrong ``data_crc32c``), ``fail_next`` (the next N calls fail with
``fail_code``, default UNAVAILABLE, then calls pass: deterministic tests need no luck; N at most
MAX_FAIL_NEXT).

Every number is bounded (delays, counts, quotas, the seed), so that a config cannot make the emulator
hang or stop answering: an injected delay longer than a minute is a mistake, not a test.

A method's own entry overrides ``*`` kind by kind. Flags override the file kind by kind.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import grpc
import yaml

from agent.errors import ConfigError, Problem
from agent_emulator import bounded
from agent_emulator.bounded import shown
from agent_emulator.methods import METHODS
from agent_emulator.options import EmulatorOptions
from agent_emulator.quotas import SERVICE_LIMITS, QuotaLimits

ALL_METHODS = "*"
"""The method key that applies a fault to every method."""

FailCode = Literal["UNAVAILABLE", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", "INTERNAL", "PERMISSION_DENIED"]

FAIL_CODES: dict[str, grpc.StatusCode] = {
    "UNAVAILABLE": grpc.StatusCode.UNAVAILABLE,
    "RESOURCE_EXHAUSTED": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "DEADLINE_EXCEEDED": grpc.StatusCode.DEADLINE_EXCEEDED,
    "INTERNAL": grpc.StatusCode.INTERNAL,
    # The emulator has no IAM: this is how tests get a "forbidden" secret.
    "PERMISSION_DENIED": grpc.StatusCode.PERMISSION_DENIED,
}
"""The status codes a fault can inject, by name."""

ERROR_KINDS: tuple[str, ...] = ("unavailable", "resource_exhausted", "deadline_exceeded", "internal")
"""Probability kinds that fail a call; the order is the order of the cumulative draw in :func:`decide`."""

PROBABILITY_KINDS: tuple[str, ...] = (*ERROR_KINDS, "corrupt_crc")
DURATION_KINDS: tuple[str, ...] = ("latency_ms", "jitter_ms")
KINDS: tuple[str, ...] = (*PROBABILITY_KINDS, *DURATION_KINDS, "fail_next", "fail_code")
"""Every fault kind, in the order they are listed in configs and messages."""

MAX_DELAY_MS = 60_000.0
"""Longest ``latency_ms`` and longest ``jitter_ms`` (one minute each)."""
MAX_FAIL_NEXT = 1_000_000
"""Most forced failures one ``fail_next`` can ask for."""
MAX_QUOTA = 1_000_000_000
"""Largest per-minute quota limit."""
MAX_SEED = 2**64 - 1
"""The seed is a whole number from 0 to 2**64 - 1."""
MAX_FILE_BYTES = 1024 * 1024
"""Largest ``--faults`` file."""

_PAYLOAD_METHOD = "AccessSecretVersion"
_TOP_LEVEL_KEYS = ("seed", "faults", "quotas")
_QUOTA_KEYS = ("access_per_minute", "read_per_minute", "write_per_minute")


# What the service says for each injected status (RESOURCE_EXHAUSTED is worded per quota, see quotas.py).
@dataclass(frozen=True)
class FaultRule:
    """The faults of one config entry. ``None`` means "not set here" (so ``*`` or nothing applies)."""

    unavailable: float | None = None
    resource_exhausted: float | None = None
    deadline_exceeded: float | None = None
    internal: float | None = None
    corrupt_crc: float | None = None
    latency_ms: float | None = None
    jitter_ms: float | None = None
    fail_next: int | None = None
    fail_code: FailCode | None = None

    def over(self, base: FaultRule) -> FaultRule:
        """This rule with ``base`` filling every kind it does not set."""
        return dataclasses.replace(base, **self.to_json())

    def to_json(self) -> dict[str, Any]:
        """The kinds that are set, in config order (the shape of one entry in the YAML file)."""
        return {kind: getattr(self, kind) for kind in KINDS if getattr(self, kind) is not None}

    def probability(self, kind: str) -> float:
        value = getattr(self, kind)
        return float(value) if value is not None else 0.0


@dataclass(frozen=True)
class FaultConfig:
    """Everything injected: the RNG seed, fault rules by method key, and quota limits (``None`` = off)."""

    seed: int | None = None
    """Seed for the random draws; ``None`` draws a fresh seed from the OS."""
    rules: Mapping[str, FaultRule] = field(default_factory=dict)
    """Fault rules keyed by gRPC method name or ``*``."""
    quotas: QuotaLimits | None = None
    """Per-project per-minute limits, or ``None`` when quotas are not enforced (the default)."""

    def rule_for(self, method_name: str) -> FaultRule:
        """The effective rule of one method: its own entry over the ``*`` entry."""
        own = self.rules.get(method_name, FaultRule())
        return own.over(self.rules.get(ALL_METHODS, FaultRule()))

    def to_json(self) -> dict[str, Any]:
        """The config in the shape of the YAML file (``parse_fault_config(c.to_json()) == c``)."""
        return {
            "seed": self.seed,
            "faults": {key: rule.to_json() for key, rule in self.rules.items()},
            "quotas": self.quotas.to_json() if self.quotas is not None else False,
        }


# ---- parsing and validation (pure) -------------------------------------------------------------------


def _is_number(value: object) -> bool:
    # bool is an int subclass; `unavailable: true` is a mistake, not a probability of 1.
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_kind_value(method_key: str, kind: str, value: object) -> float | int | str:
    """Validate one ``kind: value`` of the entry for ``method_key``; returns it normalised.

    Raises ``ValueError`` with a message fit to follow the entry's path.
    """
    if kind not in KINDS:
        suggestion = _did_you_mean(kind, KINDS)
        raise ValueError(f"unknown fault kind {shown(kind)}{suggestion}; expected one of: {', '.join(KINDS)}")
    if kind == "fail_code":
        if not isinstance(value, str) or value.upper() not in FAIL_CODES:
            raise ValueError(f"expected one of {', '.join(FAIL_CODES)}, got {shown(value)}")
        return value.upper()
    if kind == "fail_next":
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_FAIL_NEXT:
            raise ValueError(
                f"expected a whole number of calls from 0 to {MAX_FAIL_NEXT}, got {shown(value)}"
            )
        return value
    if not _is_number(value) or not math.isfinite(cast(float, value)):
        raise ValueError(f"expected a number, got {shown(value)}")
    number = float(cast(float, value))
    if kind in DURATION_KINDS:
        if not 0 <= number <= MAX_DELAY_MS:
            raise ValueError(f"expected milliseconds from 0 to {MAX_DELAY_MS:.0f}, got {shown(value)}")
        return number
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"expected a probability between 0 and 1, got {shown(value)}")
    if kind == "corrupt_crc" and method_key not in (_PAYLOAD_METHOD, ALL_METHODS):
        raise ValueError(f"only {_PAYLOAD_METHOD} returns a payload; set corrupt_crc on it or on '*'")
    return number


def check_method_key(key: object) -> str | None:
    """A problem message if ``key`` is not ``*`` or an implemented gRPC method name, else ``None``."""
    if key == ALL_METHODS or key in METHODS:
        return None
    return (
        f"unknown method {shown(key)}{_did_you_mean(str(key), METHODS)}; "
        f"expected '*' or one of: {', '.join(sorted(METHODS))}"
    )


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    # The names are short: a long word is no typo of one, and difflib's cost grows with its length.
    if len(word) > 64:
        return ""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _parse_rule(method_key: str, entry: object, path: str, problems: list[Problem]) -> FaultRule:
    if entry is None:
        return FaultRule()
    if not isinstance(entry, Mapping):
        problems.append(Problem(path, f"expected a mapping of fault kinds, got {type(entry).__name__}"))
        return FaultRule()
    values: dict[str, Any] = {}
    for kind, value in entry.items():
        try:
            values[str(kind)] = check_kind_value(method_key, str(kind), value)
        except ValueError as error:
            problems.append(Problem(f"{path}.{kind}", str(error)))
    return FaultRule(**values)


def _parse_quotas(value: object, problems: list[Problem]) -> QuotaLimits | None:
    if value is None or value is False:
        return None
    if value is True or value == "service":
        return SERVICE_LIMITS
    if not isinstance(value, Mapping):
        problems.append(
            Problem("quotas", f"expected 'service', true, false or a mapping of limits, got {shown(value)}")
        )
        return None
    limits: dict[str, int] = {}
    for key, limit in value.items():
        if key not in _QUOTA_KEYS:
            problems.append(
                Problem(f"quotas.{key}", f"unknown quota; expected one of: {', '.join(_QUOTA_KEYS)}")
            )
        elif not isinstance(limit, int) or isinstance(limit, bool) or not 0 <= limit <= MAX_QUOTA:
            problems.append(
                Problem(
                    f"quotas.{key}",
                    f"expected a whole number of requests from 0 to {MAX_QUOTA}, got {shown(limit)}",
                )
            )
        else:
            limits[key] = limit
    return QuotaLimits(**limits)


def _sum_problems(rules: Mapping[str, FaultRule]) -> list[tuple[str, str]]:
    """(method key, message) for every entry whose error probabilities, with ``*``, add up to more than 1."""
    config = FaultConfig(rules=rules)
    found = []
    for key in rules:
        rule = config.rule_for(key) if key != ALL_METHODS else rules[key]
        total = sum(rule.probability(kind) for kind in ERROR_KINDS)
        if total > 1.0 + 1e-9:
            scope = "" if key == ALL_METHODS else " (including '*')"
            found.append((key, f"error probabilities add up to {total:g}{scope}; at most 1 is possible"))
    return found


def parse_fault_config(data: object) -> FaultConfig:
    """Validate a decoded YAML/JSON document into a FaultConfig; ConfigError lists *every* problem."""
    if data is None:
        return FaultConfig()
    if not isinstance(data, Mapping):
        raise ConfigError(Problem("", f"a fault config must be a mapping, got {type(data).__name__}"))
    problems: list[Problem] = []
    for key in data:
        if key not in _TOP_LEVEL_KEYS:
            problems.append(Problem(str(key), f"unknown key; expected one of: {', '.join(_TOP_LEVEL_KEYS)}"))
    seed = data.get("seed")
    if seed is not None and (
        not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED
    ):
        problems.append(Problem("seed", f"expected a whole number from 0 to 2**64 - 1, got {shown(seed)}"))
        seed = None
    rules: dict[str, FaultRule] = {}
    entries = data.get("faults")
    if entries is not None and not isinstance(entries, Mapping):
        problems.append(
            Problem("faults", f"expected a mapping of method names, got {type(entries).__name__}")
        )
    elif entries is not None:
        for method_key, entry in entries.items():
            path = f"faults.{method_key}"
            method_problem = check_method_key(method_key)
            if method_problem is not None:
                problems.append(Problem(path, method_problem))
                continue
            rules[method_key] = _parse_rule(method_key, entry, path, problems)
    problems += [Problem(f"faults.{key}", message) for key, message in _sum_problems(rules)]
    quotas = _parse_quotas(data.get("quotas"), problems)
    if problems:
        raise ConfigError(problems)
    return FaultConfig(seed=seed, rules=rules, quotas=quotas)


def parse_fault_spec(spec: str) -> tuple[str, str, str]:
    """Split ``METHOD:KIND=VALUE`` (a ``--fault`` flag); ``ValueError`` if it has not that shape."""
    method, colon, rest = spec.partition(":")
    kind, equals, value = rest.partition("=")
    if not (colon and equals and method.strip() and kind.strip() and value.strip()):
        raise ValueError("expected METHOD:KIND=VALUE, e.g. AccessSecretVersion:unavailable=0.2")
    return method.strip(), kind.strip(), value.strip()


def parse_flag_value(kind: str, text: str) -> object:
    """Convert a flag's text to the type its kind expects (validation is :func:`check_kind_value`'s job)."""
    try:
        if kind == "fail_next":
            return int(text)
        if kind in PROBABILITY_KINDS or kind in DURATION_KINDS:
            return float(text)
    except ValueError:
        return text  # check_kind_value then reports "expected a number, got 'abc'"
    return text


def apply_fault_specs(config: FaultConfig, specs: Iterable[str]) -> FaultConfig:
    """``config`` with ``--fault METHOD:KIND=VALUE`` flags applied; ConfigError lists every bad flag."""
    problems: list[Problem] = []
    rules = dict(config.rules)
    flag_of: dict[str, str] = {}
    for spec in specs:
        path = f"--fault {spec}"
        try:
            method_key, kind, text = parse_fault_spec(spec)
            method_problem = check_method_key(method_key)
            if method_problem is not None:
                raise ValueError(method_problem)
            value = check_kind_value(method_key, kind, parse_flag_value(kind, text))
        except ValueError as error:
            problems.append(Problem(path, str(error)))
            continue
        change: dict[str, Any] = {kind: value}
        rules[method_key] = dataclasses.replace(rules.get(method_key, FaultRule()), **change)
        flag_of[method_key] = path
    # The config passed in was valid on its own, so any sum over 1 now is the flags' doing.
    problems += [Problem(flag_of.get(key, f"faults.{key}"), message) for key, message in _sum_problems(rules)]
    if problems:
        raise ConfigError(problems)
    return dataclasses.replace(config, rules=rules)


def load_fault_config(options: EmulatorOptions) -> FaultConfig:
    """The start-up config: the ``--faults`` file, then ``--fault`` flags, then ``--quotas``.

    ``--quotas`` switches quotas on; limits a file sets are kept (the flag says "on", the file says how much).
    Problems in the file and in the flags are reported together.
    """
    problems: list[Problem] = []
    config = FaultConfig()
    if options.faults is not None:
        try:
            config = parse_fault_config(_read_yaml(options.faults))
        except ConfigError as error:
            problems += error.problems
    try:
        config = apply_fault_specs(config, options.fault_specs)
    except ConfigError as error:
        problems += error.problems
    if problems:
        raise ConfigError(problems)
    if options.quotas and config.quotas is None:
        config = dataclasses.replace(config, quotas=SERVICE_LIMITS)
    return config


def _read_yaml(path: Path) -> object:
    try:
        return bounded.load_yaml(bounded.read_text(path, MAX_FILE_BYTES))
    except OSError as error:
        raise ConfigError(Problem(str(path), f"cannot read the faults file: {error.strerror}")) from None
    except UnicodeDecodeError:
        raise ConfigError(Problem(str(path), "cannot read the faults file: it is not UTF-8")) from None
    except bounded.InputError as error:
        raise ConfigError(Problem(str(path), f"refused: {error.reason}")) from None
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        raise ConfigError(Problem(str(path), f"not valid YAML{at}")) from error


# ---- decisions (pure given the RNG) -------------------------------------------------------------------

"""Fault injection: config parsing and validation (tables), seeded decisions, the controller, counters,
and - against a running emulator with the official client - retries, corrupted CRCs and latency."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import google_crc32c
import grpc
import pytest
import requests
import yaml
from google.api_core import exceptions as gexc
from google.cloud import secretmanager_v1

from agent.errors import ConfigError, Problem
from agent_emulator.errors import EmulatorError
from agent_emulator.fault_config import (
    FaultConfig,
    FaultRule,
    apply_fault_specs,
    load_fault_config,
    parse_fault_config,
)
from agent_emulator.faults import CallCounters, Decision, FaultController, decide, injected_error
from agent_emulator.methods import METHODS
from agent_emulator.options import EmulatorOptions
from agent_emulator.quotas import SERVICE_LIMITS, QuotaLimits

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "emulator-faults.yaml"
ACCESS = METHODS["AccessSecretVersion"]
GET = METHODS["GetSecret"]

# ---- parsing: every kind -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"unavailable": 0.2}, FaultRule(unavailable=0.2)),
        ({"resource_exhausted": 1}, FaultRule(resource_exhausted=1.0)),
        ({"deadline_exceeded": 0}, FaultRule(deadline_exceeded=0.0)),
        ({"internal": 0.5}, FaultRule(internal=0.5)),
        ({"corrupt_crc": 0.05}, FaultRule(corrupt_crc=0.05)),
        ({"latency_ms": 50}, FaultRule(latency_ms=50.0)),
        ({"jitter_ms": 12.5}, FaultRule(jitter_ms=12.5)),
        ({"fail_next": 3}, FaultRule(fail_next=3)),
        ({"fail_next": 2, "fail_code": "internal"}, FaultRule(fail_next=2, fail_code="INTERNAL")),
        ({"fail_code": "RESOURCE_EXHAUSTED"}, FaultRule(fail_code="RESOURCE_EXHAUSTED")),
        (None, FaultRule()),
    ],
)
def test_every_fault_kind_parses(entry: Any, expected: FaultRule) -> None:
    config = parse_fault_config({"faults": {"AccessSecretVersion": entry}})
    assert config.rules == {"AccessSecretVersion": expected}


def test_the_example_file_parses_to_what_it_says() -> None:
    config = load_fault_config(EmulatorOptions(faults=EXAMPLE))
    assert config.seed == 42
    assert config.rules["AccessSecretVersion"] == FaultRule(
        unavailable=0.2, latency_ms=50.0, jitter_ms=100.0, corrupt_crc=0.05
    )
    assert config.rules["GetSecret"] == FaultRule(fail_next=3, fail_code="INTERNAL")
    assert config.rule_for("ListSecrets") == FaultRule(resource_exhausted=0.01)
    assert config.quotas == SERVICE_LIMITS


@pytest.mark.parametrize(
    ("quotas", "expected"),
    [
        (None, None),
        (False, None),
        (True, SERVICE_LIMITS),
        ("service", SERVICE_LIMITS),
        ({"read_per_minute": 5}, QuotaLimits(read_per_minute=5)),
        (
            {"access_per_minute": 0, "write_per_minute": 7},
            QuotaLimits(access_per_minute=0, write_per_minute=7),
        ),
    ],
)
def test_quota_settings_parse(quotas: Any, expected: QuotaLimits | None) -> None:
    assert parse_fault_config({"quotas": quotas}).quotas == expected


def test_a_method_entry_overrides_star_kind_by_kind() -> None:
    config = parse_fault_config(
        {"faults": {"*": {"unavailable": 0.1, "latency_ms": 5}, "GetSecret": {"unavailable": 0.3}}}
    )
    assert config.rule_for("GetSecret") == FaultRule(unavailable=0.3, latency_ms=5.0)
    assert config.rule_for("ListSecrets") == FaultRule(unavailable=0.1, latency_ms=5.0)


def test_config_round_trips_through_its_json_shape() -> None:
    config = load_fault_config(EmulatorOptions(faults=EXAMPLE))
    assert parse_fault_config(config.to_json()) == config
    assert parse_fault_config(FaultConfig().to_json()) == FaultConfig()


# ---- validation: every error, each with its exact path -------------------------------------------------


@pytest.mark.parametrize(
    ("document", "path", "fragment"),
    [
        (
            {"faults": {"AccessSecretVersoin": {}}},
            "faults.AccessSecretVersoin",
            "did you mean 'AccessSecretVersion'",
        ),
        ({"faults": {"RotateSecret": {}}}, "faults.RotateSecret", "unknown method 'RotateSecret'"),
        ({"faults": {"GetSecret": {"unavailabel": 0.1}}}, "faults.GetSecret.unavailabel", "did you mean"),
        ({"faults": {"GetSecret": {"unavailable": 1.5}}}, "faults.GetSecret.unavailable", "between 0 and 1"),
        ({"faults": {"GetSecret": {"internal": -0.1}}}, "faults.GetSecret.internal", "between 0 and 1"),
        ({"faults": {"GetSecret": {"internal": True}}}, "faults.GetSecret.internal", "expected a number"),
        ({"faults": {"GetSecret": {"internal": "0.5"}}}, "faults.GetSecret.internal", "expected a number"),
        (
            {"faults": {"GetSecret": {"internal": float("nan")}}},
            "faults.GetSecret.internal",
            "expected a number",
        ),
        ({"faults": {"*": {"latency_ms": -1}}}, "faults.*.latency_ms", "milliseconds from 0 to 60000"),
        ({"faults": {"*": {"jitter_ms": float("inf")}}}, "faults.*.jitter_ms", "expected a number"),
        (
            {"faults": {"GetSecret": {"corrupt_crc": 0.5}}},
            "faults.GetSecret.corrupt_crc",
            "only AccessSecretVersion",
        ),
        ({"faults": {"GetSecret": {"fail_next": -1}}}, "faults.GetSecret.fail_next", "whole number"),
        ({"faults": {"GetSecret": {"fail_next": 1.5}}}, "faults.GetSecret.fail_next", "whole number"),
        ({"faults": {"GetSecret": {"fail_code": "NOT_FOUND"}}}, "faults.GetSecret.fail_code", "UNAVAILABLE"),
        ({"faults": {"GetSecret": [0.1]}}, "faults.GetSecret", "expected a mapping"),
        ({"faults": ["GetSecret"]}, "faults", "expected a mapping"),
        (
            {"faults": {"GetSecret": {"unavailable": 0.6, "internal": 0.6}}},
            "faults.GetSecret",
            "add up to 1.2",
        ),
        (
            {"faults": {"*": {"unavailable": 0.5}, "GetSecret": {"internal": 0.6}}},
            "faults.GetSecret",
            "(including '*')",
        ),
        ({"seed": "42"}, "seed", "whole number"),
        ({"seed": True}, "seed", "whole number"),
        ({"quotas": "lots"}, "quotas", "'service', true, false or a mapping"),
        ({"quotas": {"reads_per_minute": 5}}, "quotas.reads_per_minute", "unknown quota"),
        ({"quotas": {"read_per_minute": -5}}, "quotas.read_per_minute", "whole number"),
        ({"quotas": {"read_per_minute": 2.5}}, "quotas.read_per_minute", "whole number"),
        ({"fault": {}}, "fault", "unknown key"),
        (["faults"], "", "must be a mapping"),
    ],
)
def test_every_invalid_entry_is_named_by_its_path(document: Any, path: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_fault_config(document)
    assert [p.path for p in caught.value.problems] == [path]
    assert fragment in caught.value.problems[0].message


def test_all_problems_are_reported_together() -> None:
    document = {
        "seed": "x",
        "faults": {"Nope": {}, "GetSecret": {"unavailable": 2, "latency_ms": -5}},
        "quotas": {"read_per_minute": -1},
    }
    with pytest.raises(ConfigError) as caught:
        parse_fault_config(document)
    assert {p.path for p in caught.value.problems} == {
        "seed",
        "faults.Nope",
        "faults.GetSecret.unavailable",
        "faults.GetSecret.latency_ms",
        "quotas.read_per_minute",
    }


# ---- --fault flags -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "method", "expected"),
    [
        ("AccessSecretVersion:unavailable=0.2", "AccessSecretVersion", FaultRule(unavailable=0.2)),
        ("*:latency_ms=50", "*", FaultRule(latency_ms=50.0)),
        ("*:jitter_ms=7.5", "*", FaultRule(jitter_ms=7.5)),
        ("GetSecret:fail_next=3", "GetSecret", FaultRule(fail_next=3)),
        ("GetSecret:fail_code=deadline_exceeded", "GetSecret", FaultRule(fail_code="DEADLINE_EXCEEDED")),
        ("AccessSecretVersion:corrupt_crc=1", "AccessSecretVersion", FaultRule(corrupt_crc=1.0)),
        (" ListSecrets : internal = 0.5 ", "ListSecrets", FaultRule(internal=0.5)),
        ("DeleteSecret:resource_exhausted=0.01", "DeleteSecret", FaultRule(resource_exhausted=0.01)),
        ("GetSecretVersion:deadline_exceeded=0", "GetSecretVersion", FaultRule(deadline_exceeded=0.0)),
    ],
)
def test_every_flag_kind_parses(spec: str, method: str, expected: FaultRule) -> None:
    assert apply_fault_specs(FaultConfig(), [spec]).rules == {method: expected}


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("AccessSecretVersion=0.2", "expected METHOD:KIND=VALUE"),
        ("AccessSecretVersion:unavailable", "expected METHOD:KIND=VALUE"),
        (":unavailable=0.2", "expected METHOD:KIND=VALUE"),
        ("AccessSecretVersion:unavailable=", "expected METHOD:KIND=VALUE"),
        ("Access:unavailable=0.2", "unknown method 'Access'"),
        ("GetSecret:flaky=0.2", "unknown fault kind 'flaky'"),
        ("GetSecret:unavailable=lots", "expected a number, got 'lots'"),
        ("GetSecret:unavailable=1.01", "between 0 and 1"),
        ("*:latency_ms=-3", "milliseconds from 0 to 60000"),
        ("GetSecret:fail_next=2.5", "whole number"),
        ("GetSecret:fail_code=OOPS", "expected one of UNAVAILABLE"),
        ("ListSecrets:corrupt_crc=0.1", "only AccessSecretVersion"),
    ],
)
def test_every_bad_flag_is_named(spec: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        apply_fault_specs(FaultConfig(), [spec])
    assert [p.path for p in caught.value.problems] == [f"--fault {spec}"]
    assert fragment in caught.value.problems[0].message


def test_flags_override_the_file_kind_by_kind(tmp_path: Path) -> None:
    path = tmp_path / "faults.yaml"
    path.write_text(yaml.safe_dump({"faults": {"GetSecret": {"unavailable": 0.5, "latency_ms": 10}}}))
    config = load_fault_config(
        EmulatorOptions(faults=path, fault_specs=("GetSecret:unavailable=0.1", "*:internal=0.2"))
    )
    assert config.rules["GetSecret"] == FaultRule(unavailable=0.1, latency_ms=10.0)
    assert config.rule_for("GetSecret").internal == 0.2


def test_a_flag_pushing_a_file_entry_over_one_is_reported_at_the_flag(tmp_path: Path) -> None:
    path = tmp_path / "faults.yaml"
    path.write_text("faults: {GetSecret: {unavailable: 0.7}}\n")
    with pytest.raises(ConfigError) as caught:
        load_fault_config(EmulatorOptions(faults=path, fault_specs=("*:internal=0.5",)))
    assert [str(p) for p in caught.value.problems] == [
        "faults.GetSecret: error probabilities add up to 1.2 (including '*'); at most 1 is possible"
    ]


def test_file_and_flag_problems_are_reported_together(tmp_path: Path) -> None:
    path = tmp_path / "faults.yaml"
    path.write_text("faults:\n  GetSecret: {unavailable: 3}\n")
    with pytest.raises(ConfigError) as caught:
        load_fault_config(EmulatorOptions(faults=path, fault_specs=("Nope:internal=0.1",)))
    assert [p.path for p in caught.value.problems] == [
        "faults.GetSecret.unavailable",
        "--fault Nope:internal=0.1",
    ]


def test_unreadable_and_malformed_files_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError) as caught:
        load_fault_config(EmulatorOptions(faults=missing))
    assert caught.value.problems == (
        Problem(str(missing), "cannot read the faults file: No such file or directory"),
    )
    broken = tmp_path / "broken.yaml"
    broken.write_text("faults: {GetSecret: [\n")
    with pytest.raises(ConfigError) as caught:
        load_fault_config(EmulatorOptions(faults=broken))
    assert caught.value.problems[0].path == str(broken)
    assert "not valid YAML at line" in caught.value.problems[0].message


@pytest.mark.parametrize(
    ("file_quotas", "flag", "expected"),
    [
        (None, False, None),
        (None, True, SERVICE_LIMITS),
        ({"read_per_minute": 5}, True, QuotaLimits(read_per_minute=5)),
        ({"read_per_minute": 5}, False, QuotaLimits(read_per_minute=5)),
    ],
)
def test_quotas_flag_switches_on_and_keeps_file_limits(
    tmp_path: Path, file_quotas: Any, flag: bool, expected: QuotaLimits | None
) -> None:
    path = tmp_path / "faults.yaml"
    path.write_text(yaml.safe_dump({"quotas": file_quotas}))
    assert load_fault_config(EmulatorOptions(faults=path, quotas=flag)).quotas == expected


# ---- decisions with a seeded RNG ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "forced", "expected_errors"),
    [
        (FaultRule(), None, {None}),
        (FaultRule(unavailable=1.0), None, {grpc.StatusCode.UNAVAILABLE}),
        (FaultRule(resource_exhausted=1.0), None, {grpc.StatusCode.RESOURCE_EXHAUSTED}),
        (FaultRule(deadline_exceeded=1.0), None, {grpc.StatusCode.DEADLINE_EXCEEDED}),
        (FaultRule(internal=1.0), None, {grpc.StatusCode.INTERNAL}),
        (FaultRule(unavailable=0.0, internal=0.0), None, {None}),
        (
            FaultRule(unavailable=0.4, internal=0.6),
            None,
            {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL},
        ),
        (FaultRule(unavailable=0.5), None, {grpc.StatusCode.UNAVAILABLE, None}),
        (FaultRule(), grpc.StatusCode.INTERNAL, {grpc.StatusCode.INTERNAL}),
        (FaultRule(unavailable=1.0), grpc.StatusCode.INTERNAL, {grpc.StatusCode.INTERNAL}),
    ],
)
def test_decide_picks_only_configured_errors(
    rule: FaultRule, forced: grpc.StatusCode | None, expected_errors: set[grpc.StatusCode | None]
) -> None:
    rng = random.Random(42)
    seen = {decide(rule, rng, forced).error for _ in range(200)}
    assert seen == expected_errors


def test_decide_hits_each_probability_about_right() -> None:
    rng = random.Random(7)
    rule = FaultRule(unavailable=0.2, resource_exhausted=0.3)
    errors = [decide(rule, rng).error for _ in range(10_000)]
    assert 0.18 < errors.count(grpc.StatusCode.UNAVAILABLE) / len(errors) < 0.22
    assert 0.28 < errors.count(grpc.StatusCode.RESOURCE_EXHAUSTED) / len(errors) < 0.32


def test_the_same_seed_replays_the_same_faults() -> None:
    rule = FaultRule(unavailable=0.3, internal=0.2, latency_ms=5, jitter_ms=20)
    first, second, other = random.Random(1), random.Random(1), random.Random(2)
    run = [decide(rule, first) for _ in range(50)]
    assert run == [decide(rule, second) for _ in range(50)]
    assert run != [decide(rule, other) for _ in range(50)]


@pytest.mark.parametrize(
    ("rule", "low", "high"),
    [
        (FaultRule(), 0.0, 0.0),
        (FaultRule(latency_ms=50), 0.05, 0.05),
        (FaultRule(jitter_ms=100), 0.0, 0.1),
        (FaultRule(latency_ms=50, jitter_ms=100), 0.05, 0.15),
    ],
)
def test_delay_is_latency_plus_bounded_jitter(rule: FaultRule, low: float, high: float) -> None:
    rng = random.Random(3)
    delays = [decide(rule, rng).delay_seconds for _ in range(200)]
    assert all(low <= d <= high for d in delays)
    assert (max(delays) > min(delays)) == (rule.jitter_ms is not None)


def test_no_draw_is_spent_when_nothing_is_configured() -> None:
    rng = random.Random(5)
    assert decide(FaultRule(latency_ms=1), rng) == Decision(delay_seconds=0.001)
    assert rng.random() == random.Random(5).random()


@pytest.mark.parametrize(
    ("code", "method", "message"),
    [
        (grpc.StatusCode.UNAVAILABLE, GET, "The service is currently unavailable."),
        (grpc.StatusCode.INTERNAL, GET, "Internal error encountered."),
        (grpc.StatusCode.DEADLINE_EXCEEDED, GET, "Deadline expired before operation could complete."),
        (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            ACCESS,
            "Quota exceeded for quota metric 'Access requests' and limit 'Access requests per minute per "
            "project' of service 'secretmanager.googleapis.com' for consumer 'project_number:p1'.",
        ),
        (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            GET,
            "Quota exceeded for quota metric 'Read requests' and limit 'Read requests per minute per "
            "project' of service 'secretmanager.googleapis.com' for consumer 'project_number:p1'.",
        ),
    ],
)
def test_injected_errors_are_worded_like_the_service(
    code: grpc.StatusCode, method: Any, message: str
) -> None:
    error = injected_error(code, method, "p1")
    assert (error.code, error.message) == (code, message)


# ---- the controller -------------------------------------------------------------------------------------


async def _outcomes(controller: FaultController, method: Any, calls: int, project: str = "p") -> list[str]:
    results = []
    for _ in range(calls):
        try:
            await controller.before_call(method, project)
            results.append("OK")
        except EmulatorError as error:
            results.append(error.code.name)
    return results


async def test_fail_next_fails_exactly_n_calls_then_passes() -> None:
    controller = FaultController(apply_fault_specs(FaultConfig(), ["GetSecret:fail_next=2"]))
    assert await _outcomes(controller, GET, 4) == ["UNAVAILABLE", "UNAVAILABLE", "OK", "OK"]
    assert await _outcomes(controller, ACCESS, 1) == ["OK"]
    assert controller.config.rules["GetSecret"].fail_next == 0


async def test_fail_next_on_star_counts_calls_of_any_method() -> None:
    config = parse_fault_config({"faults": {"*": {"fail_next": 2, "fail_code": "DEADLINE_EXCEEDED"}}})
    controller = FaultController(config)
    assert await _outcomes(controller, GET, 1) == ["DEADLINE_EXCEEDED"]
    assert controller.config.rules["*"].fail_next == 1
    assert await _outcomes(controller, ACCESS, 2) == ["DEADLINE_EXCEEDED", "OK"]


async def test_latency_is_awaited_not_blocking() -> None:
    slept: list[float] = []

    async def record_sleep(seconds: float) -> None:
        slept.append(seconds)

    controller = FaultController(apply_fault_specs(FaultConfig(), ["*:latency_ms=250"]), sleep=record_sleep)
    await controller.before_call(GET, "p")
    await controller.before_call(ACCESS, "p")
    assert slept == [0.25, 0.25]


async def test_replace_reseeds_so_a_config_replays() -> None:
    config = parse_fault_config({"seed": 9, "faults": {"GetSecret": {"unavailable": 0.5}}})
    controller = FaultController(config)
    first = await _outcomes(controller, GET, 30)
    controller.replace(config)
    assert await _outcomes(controller, GET, 30) == first
    assert set(first) == {"OK", "UNAVAILABLE"}


def test_corrupt_crc_follows_its_probability() -> None:
    always = FaultController(apply_fault_specs(FaultConfig(), ["AccessSecretVersion:corrupt_crc=1"]))
    never = FaultController(apply_fault_specs(FaultConfig(), ["AccessSecretVersion:unavailable=1"]))
    assert all(always.corrupt_crc(ACCESS) for _ in range(20))
    assert not any(never.corrupt_crc(ACCESS) for _ in range(20))


async def test_clear_drops_faults_but_keeps_quotas_and_seed() -> None:
    config = parse_fault_config(
        {"seed": 3, "faults": {"*": {"unavailable": 1}}, "quotas": {"read_per_minute": 1}}
    )
    controller = FaultController(config)
    controller.clear()
    assert controller.config == FaultConfig(seed=3, quotas=QuotaLimits(read_per_minute=1))
    assert await _outcomes(controller, GET, 2) == ["OK", "RESOURCE_EXHAUSTED"]


async def test_a_call_refused_by_quota_does_not_use_up_fail_next() -> None:
    config = parse_fault_config(
        {"faults": {"GetSecret": {"fail_next": 1, "fail_code": "INTERNAL"}}, "quotas": {"read_per_minute": 0}}
    )
    controller = FaultController(config)
    assert await _outcomes(controller, GET, 2) == ["RESOURCE_EXHAUSTED", "RESOURCE_EXHAUSTED"]
    assert controller.config.rules["GetSecret"].fail_next == 1


# ---- call counters -------------------------------------------------------------------------------------


def test_counters_count_per_method_and_code_and_reset() -> None:
    counters = CallCounters()
    for method, code in [
        (ACCESS, grpc.StatusCode.OK),
        (ACCESS, grpc.StatusCode.UNAVAILABLE),
        (ACCESS, grpc.StatusCode.OK),
        (GET, grpc.StatusCode.NOT_FOUND),
    ]:
        counters.record(method, code)
    assert counters.snapshot() == {
        "methods": {"AccessSecretVersion": {"OK": 2, "UNAVAILABLE": 1}, "GetSecret": {"NOT_FOUND": 1}},
        "total": 4,
    }
    assert counters.count("AccessSecretVersion", "OK") == 2
    assert counters.count("AccessSecretVersion") == 3
    counters.reset()
    assert counters.snapshot() == {"methods": {}, "total": 0}


# ---- against a running emulator, with the official client -----------------------------------------------

PROJECT = "fault-project"


def put_faults(admin_url: str, document: dict[str, Any]) -> None:
    response = requests.put(f"{admin_url}/faults", json=document, timeout=10)
    assert response.status_code == 200, response.text


def counters_of(admin_url: str) -> dict[str, dict[str, int]]:
    response = requests.get(f"{admin_url}/counters", timeout=10)
    assert response.status_code == 200, response.text
    methods: dict[str, dict[str, int]] = response.json()["methods"]
    return methods


def reset_counters(admin_url: str) -> None:
    assert requests.post(f"{admin_url}/counters:reset", json={}, timeout=10).status_code == 200


@pytest.fixture
def secret(client: secretmanager_v1.SecretManagerServiceClient) -> str:
    """A secret with one version holding b"s3cret"; yields the secret's name."""
    created = client.create_secret(
        parent=f"projects/{PROJECT}",
        secret_id="db-password",
        secret={"replication": {"automatic": {}}},
    )
    client.add_secret_version(parent=created.name, payload={"data": b"s3cret"})
    return str(created.name)


def test_client_retries_unavailable_on_access_and_the_retries_are_counted(
    emulator: Any, client: secretmanager_v1.SecretManagerServiceClient, secret: str
) -> None:
    # The client's default policy for AccessSecretVersion retries UNAVAILABLE and RESOURCE_EXHAUSTED
    # (transports/base.py: initial 2 s, multiplier 2, deadline 60 s).
    reset_counters(emulator.admin_url)
    put_faults(emulator.admin_url, {"faults": {"AccessSecretVersion": {"fail_next": 2}}})
    response = client.access_secret_version(name=f"{secret}/versions/latest")
    assert response.payload.data == b"s3cret"
    assert counters_of(emulator.admin_url) == {"AccessSecretVersion": {"OK": 1, "UNAVAILABLE": 2}}


def test_client_retries_resource_exhausted_on_access(
    emulator: Any, client: secretmanager_v1.SecretManagerServiceClient, secret: str
) -> None:
    reset_counters(emulator.admin_url)
    put_faults(
        emulator.admin_url,
        {"faults": {"AccessSecretVersion": {"fail_next": 1, "fail_code": "RESOURCE_EXHAUSTED"}}},
    )
    response = client.access_secret_version(name=f"{secret}/versions/1")
    assert response.payload.data == b"s3cret"
    assert counters_of(emulator.admin_url) == {"AccessSecretVersion": {"OK": 1, "RESOURCE_EXHAUSTED": 1}}


@pytest.mark.parametrize(
    ("fail_code", "exception"),
    [
        ("UNAVAILABLE", gexc.ServiceUnavailable),
        ("RESOURCE_EXHAUSTED", gexc.ResourceExhausted),
        ("INTERNAL", gexc.InternalServerError),
        ("DEADLINE_EXCEEDED", gexc.DeadlineExceeded),
    ],
)
def test_methods_without_a_retry_policy_fail_at_once(
    emulator: Any,
    client: secretmanager_v1.SecretManagerServiceClient,
    secret: str,
    fail_code: str,
    exception: type[Exception],
) -> None:
    reset_counters(emulator.admin_url)
    put_faults(emulator.admin_url, {"faults": {"GetSecret": {"fail_next": 1, "fail_code": fail_code}}})
    with pytest.raises(exception):
        client.get_secret(name=secret)
    assert counters_of(emulator.admin_url) == {"GetSecret": {fail_code: 1}}
    assert client.get_secret(name=secret).name == secret


def test_an_injected_resource_exhausted_carries_the_quota_message(
    emulator: Any, client: secretmanager_v1.SecretManagerServiceClient, secret: str
) -> None:
    put_faults(emulator.admin_url, {"faults": {"AddSecretVersion": {"resource_exhausted": 1}}})
    with pytest.raises(gexc.ResourceExhausted) as caught:
        client.add_secret_version(parent=secret, payload={"data": b"next"})
    assert caught.value.message == (
        "Quota exceeded for quota metric 'Write requests' and limit 'Write requests per minute per project' "
        f"of service 'secretmanager.googleapis.com' for consumer 'project_number:{PROJECT}'."
    )


def test_faults_apply_over_rest_too(emulator: Any, rest: secretmanager_v1.SecretManagerServiceClient) -> None:
    put_faults(emulator.admin_url, {"faults": {"ListSecrets": {"fail_next": 1}}})
    with pytest.raises(gexc.ServiceUnavailable) as caught:
        rest.list_secrets(parent=f"projects/{PROJECT}")
    assert "The service is currently unavailable." in str(caught.value)
    assert list(rest.list_secrets(parent=f"projects/{PROJECT}")) == []
    assert counters_of(emulator.admin_url)["ListSecrets"] == {"OK": 1, "UNAVAILABLE": 1}


def test_corrupted_crc_does_not_match_the_data(
    emulator: Any, client: secretmanager_v1.SecretManagerServiceClient, secret: str
) -> None:
    honest = client.access_secret_version(name=f"{secret}/versions/1").payload
    assert honest.data_crc32c == google_crc32c.value(honest.data)
    put_faults(emulator.admin_url, {"faults": {"AccessSecretVersion": {"corrupt_crc": 1}}})
    payload = client.access_secret_version(name=f"{secret}/versions/1").payload
    assert payload.data == b"s3cret"
    assert payload.data_crc32c != google_crc32c.value(payload.data)


def test_latency_longer_than_the_client_timeout_gives_deadline_exceeded(
    emulator: Any, client: secretmanager_v1.SecretManagerServiceClient, secret: str
) -> None:
    put_faults(emulator.admin_url, {"faults": {"GetSecret": {"latency_ms": 1500}}})
    with pytest.raises(gexc.DeadlineExceeded):
        client.get_secret(name=secret, timeout=0.2)
    # Other methods are not delayed: the same short timeout is plenty for them.
    assert client.get_secret_version(name=f"{secret}/versions/1", timeout=0.5).name.endswith("/versions/1")


def test_faults_from_flags_apply_from_the_start() -> None:
    from agent_emulator.server import running_emulator
    from tests.conftest import grpc_client

    options = EmulatorOptions(grpc_port=0, http_port=0, fault_specs=("ListSecrets:internal=1",))
    with running_emulator(options) as endpoints:
        client = grpc_client(endpoints.grpc_target)
        try:
            with pytest.raises(gexc.InternalServerError):
                client.list_secrets(parent=f"projects/{PROJECT}")
            assert client.create_secret(
                parent=f"projects/{PROJECT}", secret_id="ok", secret={"replication": {"automatic": {}}}
            ).name.endswith("/secrets/ok")
        finally:
            client.transport.close()


def test_a_seeded_config_replays_the_same_failures_end_to_end(
    emulator: Any, client: secretmanager_v1.SecretManagerServiceClient, secret: str
) -> None:
    def outcomes() -> list[str]:
        put_faults(emulator.admin_url, {"seed": 11, "faults": {"GetSecret": {"unavailable": 0.5}}})
        results = []
        for _ in range(16):
            try:
                client.get_secret(name=secret)
                results.append("OK")
            except gexc.ServiceUnavailable:
                results.append("UNAVAILABLE")
        return results

    first = outcomes()
    assert set(first) == {"OK", "UNAVAILABLE"}
    assert outcomes() == first

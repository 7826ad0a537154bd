"""``select-<name>`` annotations (pure: tables of pods), the listing cache's bounds (with listings that
are real futures the test completes, and a clock it moves), and the flags of resolution."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

import pytest

from agent.cli import parse
from agent.errors import ConfigError, TransientSourceError
from agent.sources.selection import SecretListing
from agent.webhook import limits
from agent.webhook.annotations import GLOBAL_KEYS
from agent.webhook.cli import options_from
from agent.webhook.listings import Listed, ListingCache, ListingKey, Unresolved
from agent.webhook.mutate import review_pod
from agent.webhook.problems import InvalidAnnotations
from agent.webhook.settings import InjectorSettings, ResolverSettings
from agent.webhook.shaping import SELECT_OPTIONS
from tests.webhook.conftest import Tls
from tests.webhook.helpers import DB_REF, PROJECT, agent_config, apply, find, make_pod, ours, validate_strict

SETTINGS = InjectorSettings(project=PROJECT)


def pod(**annotations: str) -> dict[str, Any]:
    return make_pod(ours({"inject": "true", **annotations}))


def problems(annotations: dict[str, str]) -> dict[str, str]:
    with pytest.raises(InvalidAnnotations) as caught:
        review_pod(pod(**annotations), SETTINGS)
    return {p.annotation.removeprefix("secrets-agent.io/"): p.message for p in caught.value.problems}


def selections(annotations: dict[str, str], settings: InjectorSettings = SETTINGS) -> list[dict[str, Any]]:
    patched = apply(pod(**annotations), settings)
    validate_strict(patched)
    items: list[dict[str, Any]] = agent_config(find(patched, "secrets-agent-init"))["select"]
    return items


# -- annotations ---------------------------------------------------------------------------------------


def test_a_pod_with_only_a_selection_is_valid_and_every_option_is_a_setting() -> None:
    (item,) = selections(
        {
            "select-pay": "team=payments,env=*",
            "select-pay-name-prefix": "pay-",
            "select-pay-name-regex": "^pay-.*-db$",
            "select-pay-project": "other-project",
            "select-pay-location": "europe-west1",
            "select-pay-env-prefix": "PAY_",
            "select-pay-file-prefix": "pay/",
            "select-pay-required": "true",
            "select-pay-version": "3",
            "select-pay-mode": "0400",
            "select-pay-format": "json",
            "select-pay-key-path": "password",
            "select-pay-decode": "base64",
            "select-pay-deliver": "true",
        }
    )
    assert item == {
        "name": "pay",
        "labels": "team=payments,env=*",
        "name_prefix": "pay-",
        "name_regex": "^pay-.*-db$",
        "project": "other-project",
        "location": "europe-west1",
        "env_prefix": "PAY_",
        "file_prefix": "pay/",
        "required": "true",
        "version": "3",
        "mode": "0400",
        "format": "json",
        "key": "password",
        "decode": "base64",
        "deliver": "true",
    }


def test_an_empty_selector_goes_with_a_prefix_and_fleet_size_is_written() -> None:
    settings = InjectorSettings(project=PROJECT, fleet_size=500)
    patched = apply(pod(**{"select-pay": "", "select-pay-name-prefix": "pay-"}), settings)
    config = agent_config(find(patched, "secrets-agent-init"))
    assert config["select"] == [{"name": "pay", "name_prefix": "pay-", "mode": "0444"}]
    assert config["fleet"] == {"size": 500}
    # Without a selection, no fleet section.
    plain = apply(pod(**{"secret-db": DB_REF}), settings)
    assert "fleet" not in agent_config(find(plain, "secrets-agent-init"))


def test_the_webhook_without_resolution_warns_and_leaves_known_out() -> None:
    mutation = review_pod(pod(**{"select-pay": "team=payments"}), SETTINGS)
    assert mutation.unresolved == ("pay",)
    (warning,) = [w for w in mutation.warnings if "select-pay" in w]
    assert "without --resolve-selections" in warning


@pytest.mark.parametrize(
    ("annotations", "key", "fragment"),
    [
        ({"select-pay": ""}, "select-pay", "give labels, name_prefix or name_regex"),
        ({"select-pay": "team"}, "select-pay", "expected KEY=VALUE"),
        ({"select-pay": "a=1", "select-pay-mode": "999"}, "select-pay-mode", "octal"),
        ({"select-pay": "a=1", "select-pay-required": "maybe"}, "select-pay-required", "true or false"),
        ({"select-pay": "a=1", "select-pay-name-regex": "((a*)*)"}, "select-pay-name-regex", "exponential"),
        ({"select-pay": "a=1", "select-pay-env-prefix": "1X"}, "select-pay-env-prefix", "cannot start"),
        ({"select-pay": "a=1", "select-pay-file-prefix": "../x"}, "select-pay-file-prefix", ".."),
        ({"select-pay": "a=1", "select-pay-project": "Bad Project"}, "select-pay-project", "invalid"),
        ({"select-pay-project": "my-project"}, "select-pay-project", "no secrets-agent.io/select-pay "),
        ({"selct-pay": "a=1"}, "selct-pay", "did you mean secrets-agent.io/select-pay?"),
        ({"secret-db": DB_REF, "selections-pay": "a=1"}, "selections-pay", "select-pay"),
    ],
)
def test_bad_selections_are_refused_naming_the_annotation(
    annotations: dict[str, str], key: str, fragment: str
) -> None:
    found = problems(annotations)
    assert key in found, found
    assert fragment in found[key]


def test_a_pasted_value_in_a_selector_is_never_quoted() -> None:
    found = problems({"select-pay": "s3cr3t-p@ssw0rd-value"})
    assert "s3cr3t" not in found["select-pay"]


def test_no_secret_and_no_selection_is_refused_naming_both() -> None:
    found = problems({})
    assert "select-<name>" in found["inject"]


def test_more_selections_than_the_cap_are_refused() -> None:
    many = {f"select-s{index}": "team=payments" for index in range(limits.MAX_SELECTIONS + 1)}
    found = problems(many)
    assert f"at most {limits.MAX_SELECTIONS}" in found["select-*"]


def test_the_annotation_cap_counts_the_selections_and_their_options() -> None:
    assert len(SELECT_OPTIONS) == limits.OPTIONS_PER_SELECTION
    cap = limits.max_annotations(len(GLOBAL_KEYS))
    assert cap == (
        len(GLOBAL_KEYS)
        + limits.MAX_SECRETS * (1 + limits.OPTIONS_PER_SECRET)
        + limits.MAX_TEMPLATES * (1 + limits.OPTIONS_PER_TEMPLATE)
        + limits.MAX_SELECTIONS * (1 + limits.OPTIONS_PER_SELECTION)
    )


# -- the cache -----------------------------------------------------------------------------------------

KEY: ListingKey = (PROJECT, None, "labels.team=payments")


class Starts:
    """The cache's ``start``: each call a real future the test completes (or leaves pending)."""

    def __init__(self) -> None:
        self.futures: list[tuple[ListingKey, Future[tuple[SecretListing, ...]]]] = []
        self.immediate: tuple[SecretListing, ...] | BaseException | None = None

    def __call__(self, key: ListingKey) -> Future[tuple[SecretListing, ...]]:
        future: Future[tuple[SecretListing, ...]] = Future()
        if isinstance(self.immediate, BaseException):
            future.set_exception(self.immediate)
        elif self.immediate is not None:
            future.set_result(self.immediate)
        self.futures.append((key, future))
        return future


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


LISTED = (SecretListing(PROJECT, None, "pay-db", {"team": "payments"}),)


def cache(starts: Starts, clock: Clock, **options: Any) -> ListingCache:
    return ListingCache(starts, monotonic=clock, clock=lambda: 1_700_000_000.0, **options)


def test_a_miss_waits_at_most_the_timeout_and_the_listing_fills_the_entry_later() -> None:
    starts, clock = Starts(), Clock()
    listings = cache(starts, clock, timeout=0.05)
    assert listings.lookup(KEY) == Unresolved("no listing within 0.05 s (--listing-timeout)")
    starts.futures[0][1].set_result(LISTED)
    assert listings.lookup(KEY) == Listed(LISTED, 1_700_000_000.0)
    assert len(starts.futures) == 1


def test_a_pod_s_keys_are_listed_together_within_one_timeout() -> None:
    starts, clock = Starts(), Clock()
    listings = cache(starts, clock, timeout=0.1)
    keys: list[ListingKey] = [(PROJECT, None, f"labels.n{index}:*") for index in range(limits.MAX_SELECTIONS)]
    answers = listings.resolve(keys)
    assert len(starts.futures) == limits.MAX_SELECTIONS
    assert all(isinstance(answer, Unresolved) for answer in answers)


def test_the_window_allows_per_minute_listings_in_any_sixty_seconds() -> None:
    starts, clock = Starts(), Clock()
    starts.immediate = LISTED
    listings = cache(starts, clock, per_minute=3, ttl=1000)
    answers = [listings.lookup((PROJECT, None, f"f{index}")) for index in range(5)]
    assert [isinstance(a, Listed) for a in answers] == [True, True, True, False, False]
    clock.now = 59.9
    assert isinstance(listings.lookup((PROJECT, None, "late")), Unresolved)
    clock.now = 60.0
    assert isinstance(listings.lookup((PROJECT, None, "late")), Listed)
    assert listings.listings == 4


def test_a_failure_is_held_then_listed_again_and_a_stale_entry_outlives_it() -> None:
    starts, clock = Starts(), Clock()
    listings = cache(starts, clock, ttl=10, failure_hold=5)
    starts.immediate = LISTED
    assert isinstance(listings.lookup(KEY), Listed)
    clock.now = 11
    starts.immediate = TransientSourceError("projects/my-project: RESOURCE_EXHAUSTED: quota", code="X")
    assert listings.lookup(KEY) == Listed(LISTED, 1_700_000_000.0)  # stale, the refresh failed
    assert listings.lookup(KEY) == Listed(LISTED, 1_700_000_000.0)
    assert len(starts.futures) == 2  # held: not listed again
    clock.now = 17
    listings.lookup(KEY)
    assert len(starts.futures) == 3


def test_a_failure_without_an_entry_is_its_reason_in_one_line() -> None:
    starts, clock = Starts(), Clock()
    message = "projects/my-project:\nPERMISSION_DENIED: no"
    starts.immediate = TransientSourceError(message, code="PERMISSION_DENIED")
    answer = cache(starts, clock).lookup(KEY)
    assert answer == Unresolved("projects/my-project: PERMISSION_DENIED: no")
    starts.immediate = RuntimeError("boom with details")
    answer = cache(starts, clock).lookup(KEY)
    assert answer == Unresolved("the listing failed (RuntimeError)")


def test_entries_are_bounded_least_recently_used_first() -> None:
    starts, clock = Starts(), Clock()
    starts.immediate = LISTED
    listings = cache(starts, clock, max_entries=4, per_minute=100, ttl=1000)
    for index in range(10):
        listings.lookup((PROJECT, None, f"f{index}"))
        listings.lookup((PROJECT, None, "f0"))  # kept: used again and again
    assert len(listings) == 4
    before = listings.listings
    listings.lookup((PROJECT, None, "f0"))
    assert listings.listings == before


# -- flags ---------------------------------------------------------------------------------------------


def tls_flags(tls: Tls) -> list[str]:
    return ["--tls-cert-file", str(tls.cert_file), "--tls-key-file", str(tls.key_file)]


def test_resolution_is_off_by_default_and_the_flags_set_it(tls: Tls) -> None:
    assert options_from(parse(["webhook", *tls_flags(tls)], {}).args, {}).resolver is None
    args = parse(
        [
            "webhook",
            *tls_flags(tls),
            "--resolve-selections",
            "--selection-cache-ttl=5m",
            "--listings-per-minute=12",
            "--listing-timeout=1500ms",
            "--fleet-size=10000",
        ],
        {},
    ).args
    options = options_from(args, {"SECRET_MANAGER_EMULATOR_HOST": "127.0.0.1:8780"})
    assert options.resolver == ResolverSettings(
        endpoint="127.0.0.1:8780", cache_ttl=300.0, listings_per_minute=12, listing_timeout=1.5
    )
    assert options.injector.fleet_size == 10000
    endpoint = "--secret-manager-endpoint=[::1]:1"
    flagged = parse(["webhook", *tls_flags(tls), "--resolve-selections", endpoint], {})
    assert options_from(flagged.args, {"SECRET_MANAGER_EMULATOR_HOST": "x:1"}).resolver == ResolverSettings(
        endpoint="[::1]:1"
    )


def test_bad_resolution_flags_are_named(tls: Tls) -> None:
    args = parse(
        [
            "webhook",
            *tls_flags(tls),
            "--listing-timeout=5s",
            "--listings-per-minute=0",
            "--fleet-size=0",
            "--selection-cache-ttl=soon",
            "--secret-manager-endpoint=nowhere",
        ],
        {},
    ).args
    with pytest.raises(ConfigError) as caught:
        options_from(args, {})
    assert {p.path for p in caught.value.problems} == {
        "--listing-timeout",
        "--listings-per-minute",
        "--fleet-size",
        "--selection-cache-ttl",
        "--secret-manager-endpoint",
    }

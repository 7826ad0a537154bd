"""The pure selection logic: which listed secrets a selection takes, the ListSecrets filter, naming (rewrite,
UPPER_SNAKE env, file), and resolution against explicit secrets and other selections."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Callable
from pathlib import PurePosixPath

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config import KeySpec, RewriteRule, SecretSpec, SelectKeySpec, SelectSpec, TemplateSpec
from agent.config.refs import SecretRef, parse_ref
from agent.sources.selection import (
    Collision,
    SecretListing,
    Skipped,
    known_listings,
    local_name,
    matches,
    resolve,
    server_filter,
    spec_for,
)

P = "my-project"


def select(**values: object) -> SelectSpec:
    values.setdefault("name", "sel")
    values.setdefault("project", P)
    return SelectSpec(**values)  # type: ignore[arg-type]


def listing(secret_id: str, labels: dict[str, str] | None = None, **where: str | None) -> SecretListing:
    return SecretListing(
        where.get("project") or P, where.get("location"), secret_id, labels if labels is not None else {}
    )


def explicit(name: str, ref: str, **values: object) -> SecretSpec:
    return SecretSpec(name=name, ref=parse_ref(ref, P), **values)  # type: ignore[arg-type]


# --- matching -----------------------------------------------------------------------------------------------

PAYMENTS = {"app": "payments", "env": "prod"}

MATCHING: list[tuple[dict[str, object], SecretListing, bool]] = [
    # (selection settings, listing, matches?)
    ({"labels": (("app", "payments"),)}, listing("a", PAYMENTS), True),
    ({"labels": (("app", "payments"),)}, listing("a", {"app": "billing"}), False),
    ({"labels": (("app", "payments"),)}, listing("a", {}), False),
    ({"labels": (("app", "payments"), ("env", "prod"))}, listing("a", PAYMENTS), True),
    ({"labels": (("app", "payments"), ("env", "dev"))}, listing("a", PAYMENTS), False),
    ({"labels": (("team", "*"),)}, listing("a", {"team": ""}), True),  # presence, even of an empty value
    ({"labels": (("team", "*"),)}, listing("a", PAYMENTS), False),
    ({"labels": (("team", ""),)}, listing("a", {"team": ""}), True),
    ({"labels": (("team", ""),)}, listing("a", {"team": "x"}), False),
    ({"name_prefix": "payments-"}, listing("payments-db"), True),
    ({"name_prefix": "payments-"}, listing("old-payments-db"), False),
    ({"name_regex": "^payments-.*-db$"}, listing("payments-eu-db"), True),
    ({"name_regex": "^payments-.*-db$"}, listing("payments-eu-cache"), False),
    ({"name_regex": "db"}, listing("my-db-main"), True),  # searched, not matched from the start
    ({"name_prefix": "p", "name_regex": "db$", "labels": (("app", "*"),)}, listing("p-db", PAYMENTS), True),
    ({"name_prefix": "p", "name_regex": "db$", "labels": (("app", "*"),)}, listing("q-db", PAYMENTS), False),
    ({"name_prefix": "a"}, listing("a", project="other-project"), False),
    ({"name_prefix": "a", "project": None}, listing("a", project="other-project"), True),
    ({"name_prefix": "a"}, listing("a", location="us-central1"), False),
    ({"name_prefix": "a", "location": "us-central1"}, listing("a", location="us-central1"), True),
    ({"name_prefix": "a", "location": "us-central1"}, listing("a"), False),
    ({"name_prefix": "a"}, listing("a", location=""), True),  # "" is global too
    ({"name_prefix": "a"}, listing("a/b"), False),  # never a valid id
    ({"name_prefix": "a"}, listing("a" * 256), False),  # nor a pattern on more than 255 characters
    # Unknown labels (an id from `known`) match labels only through the selection's own known list.
    ({"labels": (("app", "payments"),), "known": ("k",)}, SecretListing(P, None, "k", None), True),
    ({"labels": (("app", "payments"),)}, SecretListing(P, None, "k", None), False),
    ({"name_prefix": "k"}, SecretListing(P, None, "k", None), True),
    # A pattern the loader would refuse matches nothing instead of running.
    ({"name_regex": "(a+)+$"}, listing("aaaa"), False),
    ({"name_regex": "("}, listing("a"), False),
]


@pytest.mark.parametrize(("values", "seen", "expected"), MATCHING)
def test_matching(values: dict[str, object], seen: SecretListing, expected: bool) -> None:
    assert matches(select(**values), seen) is expected


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"labels": (("app", "payments"), ("env", "*"))}, "labels.app=payments AND labels.env:*"),
        ({"labels": (("team", ""),)}, "labels.team:*"),  # asked as presence, the value checked locally
        ({"name_prefix": "payments-"}, "name:payments-"),
        ({"name_prefix": "-odd"}, 'name:"-odd"'),  # a leading '-' would read as NOT
        ({"labels": (("app", "x"),), "name_prefix": "p"}, "labels.app=x AND name:p"),
        ({"name_regex": "^a"}, ""),  # the API has no regular expressions: list all, match here
    ],
)
def test_the_server_filter(values: dict[str, object], expected: str) -> None:
    assert server_filter(select(**values)) == expected


def test_the_server_filter_is_accepted_by_the_emulator_and_never_narrower_than_matching() -> None:
    # The emulator implements the list-filter language Secret Manager documents.
    from agent_emulator.listing import compile_filter

    def lookup(seen: SecretListing) -> Callable[[str], object]:
        fields = {"name": f"projects/{seen.project}/secrets/{seen.secret_id}", "labels": seen.labels}
        return lambda field: (
            fields.get(field) if "." not in field else (seen.labels or {}).get(field.split(".", 1)[1])
        )

    for values, seen, _ in MATCHING:
        selection = select(**values)
        if seen.labels is None or not matches(selection, seen):
            continue
        predicate = compile_filter(
            server_filter(selection), lambda f: f in ("name", "labels") or f.startswith("labels.")
        )
        assert predicate(lookup(seen)), (values, seen)


def test_a_listing_from_a_resource_name() -> None:
    assert SecretListing.from_name("projects/123/secrets/db", {"a": "b"}) == SecretListing(
        "123", None, "db", {"a": "b"}
    )
    assert SecretListing.from_name("projects/p-roject/locations/eu-west1/secrets/db") == SecretListing(
        "p-roject", "eu-west1", "db", None
    )
    for bad in (
        "projects/P/secrets/db",
        "projects/123/secrets/db/versions/1",
        "db",
        "projects/123/secrets/a.b",
    ):
        assert SecretListing.from_name(bad) is None


def test_known_ids_become_listings_of_their_selection() -> None:
    selections = [
        select(name="a", labels=(("app", "x"),), known=("k1", "k2")),
        select(name="b", labels=(("app", "y"),), known=("k3",), location="us-central1"),
        select(name="c", name_prefix="q", project=None, known=("q1",)),  # no project: cannot be placed
    ]
    found = known_listings(selections)
    assert [(s.secret_id, s.location, s.labels) for s in found] == [
        ("k1", None, None),
        ("k2", None, None),
        ("k3", "us-central1", None),
    ]
    result = resolve(selections, [], found)
    assert {name: [spec.name for spec in specs] for name, specs in result.specs.items()} == {
        "a": ["k1", "k2"],
        "b": ["k3"],
        "c": [],
    }


# --- naming -------------------------------------------------------------------------------------------------


def test_the_default_name_is_the_id_env_its_upper_snake_and_file_the_name() -> None:
    spec = spec_for(select(name_prefix="p"), listing("payments-db_main"))
    assert isinstance(spec, SecretSpec)
    assert (spec.name, spec.env, spec.file) == ("payments-db_main", "PAYMENTS_DB_MAIN", "payments-db_main")
    assert spec.ref == SecretRef(P, "payments-db_main", "latest")
    assert spec.env == SecretSpec(name=spec.name, ref=spec.ref).env  # what a configured secret defaults to


def test_prefixes_version_and_shaping_are_copied() -> None:
    account = "reader@my-project.iam.gserviceaccount.com"
    selection = select(
        name_prefix="p",
        env_prefix="PAY_",
        file_prefix="pay/",
        version="3",
        location="eu-west1",
        mode=0o400,
        uid=7,
        gid=8,
        key="password",
        format="json",
        decode="base64",
        required=True,
        impersonate_service_account=account,
    )
    spec = spec_for(selection, listing("p-db", location="eu-west1"))
    assert spec == SecretSpec(
        name="p-db",
        ref=SecretRef(P, "p-db", "3", "eu-west1"),
        env="PAY_P_DB",
        file="pay/p-db",
        mode=0o400,
        uid=7,
        gid=8,
        required=True,
        key="password",
        format="json",
        decode="base64",
        impersonate_service_account=account,
    )


@pytest.mark.parametrize(
    ("rules", "secret_id", "expected"),
    [
        ((), "payments-db", "payments-db"),
        ((RewriteRule("^payments-"),), "payments-db", "db"),
        ((RewriteRule("^payments-"),), "billing-db", "billing-db"),  # no match: unchanged
        ((RewriteRule("^(?P<app>[a-z]+)-(?P<what>.*)$", r"\g<what>.\g<app>"),), "pay-db", "db.pay"),
        ((RewriteRule("_", "-"), RewriteRule("^x-")), "x_a_b", "a-b"),  # in order, each on the last result
        ((RewriteRule("^.*$", "bad name"),), "a", None),
        ((RewriteRule("^.*$", ".."),), "a", None),
        ((RewriteRule("^.*$", ""),), "a", None),
        ((RewriteRule("a", "a" * 300),), "a", None),  # longer than a file name
    ],
)
def test_rewrite(rules: tuple[RewriteRule, ...], secret_id: str, expected: str | None) -> None:
    assert local_name(select(name_prefix="", name_regex=".", rewrite=rules), secret_id) == expected


def test_a_name_that_cannot_be_delivered_is_skipped_with_its_reason() -> None:
    cases = [
        (
            select(name_regex=".", rewrite=(RewriteRule("^.*$", "bad name"),)),
            "a",
            "rewritten to 'bad name', not a valid",
        ),
        (select(name_regex="."), "1db", "the env name '1DB' (from name '1db') is not a valid"),
        (select(name_regex=".", keys=(SelectKeySpec(key="k", env="{name}_X"),)), "a-b", "keys[0]:"),
        (
            select(name_regex=".", keys=(SelectKeySpec(key="k", file="{name}"),)),
            "a",
            "two of its own outputs",
        ),
        (
            select(name_regex=".", file_prefix="/abs/"),
            "x",
            "its file is invalid: file '/abs/x' must be relative",
        ),
    ]
    for selection, secret_id, reason in cases:
        made = spec_for(selection, listing(secret_id))
        assert isinstance(made, Skipped), (secret_id, made)
        assert reason in made.reason, made.reason
        assert made.message.startswith(f"select 'sel' skips secret {secret_id!r}: ")
    # With a prefix that makes it valid, or not delivered (no env is needed), the same id is fine.
    assert isinstance(spec_for(select(name_regex=".", env_prefix="S_"), listing("1db")), SecretSpec)
    kept = spec_for(select(name_regex=".", deliver=False), listing("1db"))
    assert isinstance(kept, SecretSpec)
    assert not kept.deliver


def test_keys_get_the_secrets_name_and_env() -> None:
    selection = select(
        name_regex=".",
        env_prefix="APP_",
        deliver=False,
        keys=(SelectKeySpec(key="password", file="{name}/password", env="{env}_PASSWORD", mode=0o400),),
    )
    spec = spec_for(selection, listing("db-main"))
    assert isinstance(spec, SecretSpec)
    assert spec.keys == (
        KeySpec(key="password", file="db-main/password", env="APP_DB_MAIN_PASSWORD", mode=0o400),
    )


# --- resolution ---------------------------------------------------------------------------------------------


def names(result_specs: list[SecretSpec]) -> list[str]:
    return [spec.name for spec in result_specs]


def test_explicit_secrets_win_and_the_collision_names_both_sides() -> None:
    secrets = [explicit("api", "api-key"), explicit("db", "other-db", env="DATABASE")]
    payments = select(name="payments", labels=(("app", "payments"),), rewrite=(RewriteRule("^payments-"),))
    seen = [
        listing("payments-db", PAYMENTS),
        listing("payments-api", PAYMENTS),
        listing("payments-x", PAYMENTS),
    ]
    result = resolve([payments], secrets, seen)
    assert names(result.specs["payments"]) == ["x"]
    assert [c.message for c in result.collisions] == [
        "select 'payments' maps secret 'payments-api' to name 'api', which secrets[0] 'api' already uses",
        "select 'payments' maps secret 'payments-db' to name 'db', which secrets[1] 'db' already uses",
    ]


def test_a_secret_configured_explicitly_is_not_selected_again() -> None:
    result = resolve(
        [select(name="all", name_prefix="")], [explicit("database", "db")], [listing("db"), listing("cache")]
    )
    assert names(result.specs["all"]) == ["cache"]
    assert result.collisions == [Collision("all", "db", "secret", "db", "secrets[0] 'database'")]
    assert (
        result.collisions[0].message
        == "select 'all' matches secret 'db', which secrets[0] 'database' already delivers"
    )


def test_env_and_file_collisions_name_both_sides() -> None:
    secrets = [explicit("one", "one", env="DB_X"), explicit("two", "two", file="pay/y")]
    selection = select(name="s", name_prefix="", rewrite=(RewriteRule("^s-"),), file_prefix="pay/")
    result = resolve([selection], secrets, [listing("s-db-x"), listing("s-y")])
    assert result.specs == {"s": []}
    assert sorted(c.message for c in result.collisions) == [
        "select 's' maps secret 's-db-x' to env 'DB_X', which secrets[0] 'one' already uses",
        "select 's' maps secret 's-y' to file 'pay/y', which secrets[1] 'two' already uses",
    ]


def test_a_file_inside_another_file_collides_both_ways() -> None:
    result = resolve(
        [select(name="s", name_prefix="", file_prefix="db/")], [explicit("db", "db-secret")], [listing("pw")]
    )
    assert result.collisions[0].message == (
        "select 's' maps secret 'pw' to file 'db/pw', which would be inside file 'db' of secrets[0] 'db'"
    )
    key = KeySpec(key="k", file="cfg/db/k")
    result = resolve([select(name="s", name_prefix="c")], [explicit("x", "x", keys=(key,))], [listing("cfg")])
    assert result.collisions[0].message == (
        "select 's' maps secret 'cfg' to file 'cfg', which would contain file 'cfg/db/k' "
        "of key 'k' of secrets[0] 'x'"
    )


def test_between_two_selections_the_earlier_wins() -> None:
    first = select(name="first", labels=(("app", "payments"),))
    second = select(name="second", name_prefix="payments-", env_prefix="P_")
    third = select(
        name="third",
        name_prefix="payments-",
        file_prefix="other/",
        env_prefix="O_",
        rewrite=(RewriteRule("^payments-"),),
    )
    seen = [listing("payments-db", PAYMENTS), listing("payments-cache", {}), listing("db", {})]
    result = resolve([first, second, third], [], seen)
    assert names(result.specs["first"]) == ["payments-db"]
    assert names(result.specs["second"]) == ["payments-cache"]
    assert result.specs["third"] == []
    first_db = "select 'first' (secret 'payments-db')"
    assert [c.message for c in result.collisions] == [
        f"select 'second' matches secret 'payments-db', which {first_db} already delivers",
        "select 'third' matches secret 'payments-cache', which select 'second' (secret 'payments-cache') "
        "already delivers",
        f"select 'third' matches secret 'payments-db', which {first_db} already delivers",
    ]


def test_two_selections_mapping_two_secrets_to_one_name() -> None:
    a = select(name="a", name_prefix="eu-", rewrite=(RewriteRule("^eu-"),))
    b = select(
        name="b", name_prefix="us-", rewrite=(RewriteRule("^us-"),), env_prefix="US_", file_prefix="us/"
    )
    result = resolve([a, b], [], [listing("us-db"), listing("eu-db")])
    assert names(result.specs["a"]) == ["db"]
    assert result.collisions[0].message == (
        "select 'b' maps secret 'us-db' to name 'db', which select 'a' (secret 'eu-db') already uses"
    )


def test_templates_and_reserved_files_are_claimed_first() -> None:
    template = TemplateSpec(name="all", file="all.json", env="ALL", format="json")
    result = resolve(
        [select(name="s", name_prefix="")],
        [],
        [listing("all"), listing("app-env")],
        templates=[template],
        reserved_files={"app-env": "the env file"},
    )
    assert {c.message for c in result.collisions} == {
        "select 's' maps secret 'all' to env 'ALL', which template 'all' already uses",
        "select 's' maps secret 'app-env' to file 'app-env', which the env file already uses",
    }


def test_a_secret_listed_twice_counts_once_and_the_order_is_stable() -> None:
    seen = [listing("b"), listing("a"), listing("b"), listing("c", project="other-project")]
    selection = select(name="s", name_prefix="", project=None, env_prefix="X_")
    result = resolve([selection], [], seen)
    assert [(s.ref.project, s.name) for s in result.specs["s"]] == [
        (P, "a"),
        (P, "b"),
        ("other-project", "c"),
    ]
    assert result.collisions == []
    assert result.skipped == []
    assert resolve([selection], [], list(reversed(seen))) == result


def test_unmatched_selections_are_present_with_nothing() -> None:
    result = resolve(
        [select(name="a", name_prefix="zzz"), select(name="b", labels=(("x", "*"),))], [], [listing("q")]
    )
    assert result.specs == {"a": [], "b": []}
    assert result.all_specs() == []


def test_the_module_needs_no_google_library() -> None:
    code = (
        "import sys; import agent.sources.selection; "
        "bad = [m for m in sys.modules if m.startswith(('google.', 'grpc'))]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- properties ---------------------------------------------------------------------------------------------

# Small pools, so that selections match, names, envs and files meet, and every kind of collision happens.
_ids = st.sampled_from(["a", "b", "a-b", "a_b", "b-a", "ab", "a1", "1", "d", "-"])
_rules = st.lists(
    st.builds(
        RewriteRule,
        # Two a loader would refuse, built directly: an invalid pattern and a costly one.
        st.sampled_from(["^a", "-", "_", "b$", "[0-9]+", "^(.)(.*)$", "x*", "(", "(a+)+"]),
        # And a replacement naming a group the pattern lacks.
        st.sampled_from(["", "-", "x", ".", r"\1", "..", "A B", "/", "d", r"\2"]),
    ),
    max_size=2,
)
_keys = st.lists(
    st.builds(
        SelectKeySpec,
        key=st.just("k"),
        file=st.sampled_from([None, "{name}/k", "{name}", "k-{env}", "{env}", "d/{name}"]),
        env=st.sampled_from([None, "{env}_K", "{env}", "K_{env}"]),
    ),
    max_size=2,
)
_selections = st.lists(
    st.builds(
        SelectSpec,
        name=st.sampled_from(["s1", "s2", "s3"]),
        labels=st.sampled_from([(), (), (), (), (("app", "x"),), (("app", "*"),), (("app", ""),)]),
        name_prefix=st.sampled_from(["", "", "", "", "a", "b-"]),
        name_regex=st.sampled_from(["", "", "", "", "", "^a", "[0-9]", "(a+)+"]),
        project=st.sampled_from([P, P, None, "other-project"]),
        location=st.sampled_from([None, None, None, None, "eu-west1"]),
        rewrite=_rules.map(tuple),
        env_prefix=st.sampled_from(["", "", "X_"]),
        file_prefix=st.sampled_from(["", "", "d/", "a", "./"]),
        deliver=st.booleans(),
        keys=_keys.map(tuple),
        known=st.lists(_ids, max_size=2).map(tuple),
    ),
    min_size=1,
    max_size=4,
)
_listings = st.lists(
    st.builds(
        SecretListing,
        st.sampled_from([P, P, P, "other-project"]),
        st.sampled_from([None, None, None, "", "eu-west1"]),
        st.one_of(_ids, st.sampled_from(["a/b", "", "x" * 300])),
        st.sampled_from([None, {}, {"app": "x"}, {"app": ""}, {"app": "y"}]),
    ),
    min_size=1,
    max_size=12,
)
_explicit = st.lists(
    st.tuples(_ids, st.booleans(), st.booleans(), st.sampled_from([None, "k", "d"])),
    max_size=4,
    unique_by=lambda t: t[0],
)


def _explicit_specs(drawn: list[tuple[str, bool, bool, str | None]]) -> list[SecretSpec]:
    """Explicit secrets as the loader would accept them: unique names, envs and files among themselves."""
    specs: list[SecretSpec] = []
    for index, (name, same_ref, deliver, key_file) in enumerate(drawn):
        keys = (KeySpec(key="k", file=f"{key_file}{index}/k"),) if key_file else ()
        ref = SecretRef(P, name if same_ref else f"x{index}")
        specs.append(
            SecretSpec(
                name=name, ref=ref, env=f"E{index}_{name}".replace("-", "_"), deliver=deliver, keys=keys
            )
        )
    return specs


@settings(max_examples=300, deadline=None)
@given(_selections, _explicit, _listings)
def test_resolve_never_raises_and_never_delivers_a_name_env_or_file_twice(
    selections: list[SelectSpec], drawn: list[tuple[str, bool, bool, str | None]], seen: list[SecretListing]
) -> None:
    secrets = _explicit_specs(drawn)
    result = resolve(selections, secrets, seen)
    everything = secrets + result.all_specs()
    taken: dict[str, list[str]] = {"name": [], "env": [], "file": [], "secret": []}
    for spec in everything:
        taken["name"].append(spec.name)
        taken["secret"].append(spec.ref.secret_name)
        if spec.deliver:
            taken["env"].append(spec.env)
            taken["file"].append(spec.file)
        for key in spec.keys:
            if key.env is not None:
                taken["env"].append(key.env)
            if key.file is not None:
                taken["file"].append(key.file)
    for kind, values in taken.items():
        assert len(values) == len(set(values)), (kind, values)
    files = set(taken["file"])
    for file in files:
        assert not any(str(parent) in files for parent in PurePosixPath(file).parents), file
    for spec in result.all_specs():
        # Every delivered spec is as valid as a configured one: re-creating it changes nothing.
        assert dataclasses.replace(spec) == spec
        assert len(spec.ref.secret) <= 255
    for collision in result.collisions:
        assert collision.selection in collision.message
        assert collision.other in collision.message

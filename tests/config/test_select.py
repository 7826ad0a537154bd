"""Selections (``select``), ``discovery`` and ``fleet``: what loads, every bad case as a problem with its
path (all reported together), the label text form, defaults and the ``auto`` arithmetic."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path

import pytest
import yaml

from agent.config import (
    SELECT_NEEDS_GCP,
    Config,
    DiscoveryConfig,
    EventsConfig,
    FleetConfig,
    RewriteRule,
    SelectKeySpec,
    SelectSpec,
    load_config,
    regex_cost_problem,
)
from agent.config.values import _labels
from agent.errors import ConfigError

BASE = {"project": "my-project"}


def load_doc(document: Mapping[str, object], env: Mapping[str, str] | None = None) -> Config:
    return load_config(None, env or {}, {}, document=document)


def problems(document: Mapping[str, object], env: Mapping[str, str] | None = None) -> dict[str, str]:
    """path -> message of every problem (paths unique, so a test can compare them exactly)."""
    with pytest.raises(ConfigError) as caught:
        load_doc(document, env)
    found = {p.path: p.message for p in caught.value.problems}
    assert len(found) == len(caught.value.problems), caught.value.problems
    return found


def selecting(*items: object, **top: object) -> dict[str, object]:
    return {**BASE, **top, "select": list(items)}


# --- what loads ---------------------------------------------------------------------------------------------


def test_a_file_with_selections_loads(tmp_path: Path) -> None:
    file = tmp_path / "agent.yaml"
    file.write_text(
        textwrap.dedent(
            """\
            project: my-project
            secrets:
              - name: db
                ref: payments-db
            select:
              - name: payments
                labels: {app: payments, team: "*"}
                name_prefix: payments-
                rewrite:
                  - regex: ^payments-
                  - regex: _
                    replace: "-"
                env_prefix: PAY_
                file_prefix: payments/
                mode: "0400"
                key: password
                format: json
                required: true
                keys:
                  - key: user
                    file: "{name}/user"
                    env: "{env}_USER"
              - labels: env=prod,tier=*
                name_regex: ^svc-[a-z]+$
                project: other-project
                location: us-central1
                version: 3
                deliver: false
                known: [svc-a, svc-b]
                known_at: 1700000000
            templates:
              - name: all
                format: json
                file: all.json
                select: [payments, select-1]
            """
        )
    )
    config = load_config(file, {}, {})
    payments, second = config.select
    assert payments == SelectSpec(
        name="payments",
        labels=(("app", "payments"), ("team", "*")),
        name_prefix="payments-",
        project="my-project",  # the top-level project
        rewrite=(RewriteRule("^payments-"), RewriteRule("_", "-")),
        env_prefix="PAY_",
        file_prefix="payments/",
        mode=0o400,
        key="password",
        format="json",
        required=True,
        keys=(SelectKeySpec(key="user", file="{name}/user", env="{env}_USER"),),
    )
    assert second.name == "select-1"  # after its position
    assert second.labels == (("env", "prod"), ("tier", "*"))
    assert (second.project, second.location, second.version) == ("other-project", "us-central1", "3")
    assert second.known == ("svc-a", "svc-b")
    assert second.known_at == 1700000000.0
    assert not second.deliver
    assert payments.presence_labels == ("team",)
    assert payments.label_selector == {"app": "payments", "team": "*"}
    assert config.templates[0].select == ("payments", "select-1")
    assert [spec.name for spec in config.secrets] == ["db"]  # explicit secrets unchanged


def test_the_printed_configuration_loads_back_to_the_same_one() -> None:
    config = load_doc(
        selecting(
            {
                "labels": "app=payments,team=*",
                "rewrite": [{"regex": "^p-(?P<rest>.*)$", "replace": r"\g<rest>"}],
            },
            {"name": "named", "name_prefix": "svc-", "known": "a,b", "known_at": 5},
            templates=[{"name": "t", "env": "ALL", "format": "dotenv", "select": ["named"]}],
        )
    )
    printed = config.to_dict()
    assert printed["select"][0]["labels"] == {"app": "payments", "team": "*"}  # type: ignore[index]
    assert "known" not in printed["select"][0]  # type: ignore[index]  # left out while unset
    assert printed["select"][1]["known"] == ["a", "b"]  # type: ignore[index]
    assert printed["discovery"] == {"grace_period": 300, "relist_interval": "auto", "start_jitter": "auto"}
    assert load_doc(yaml.safe_load(yaml.safe_dump(printed))) == config


def test_templates_without_select_print_as_before() -> None:
    config = load_doc({**BASE, "templates": [{"name": "t", "file": "t.json", "format": "json"}]})
    assert "select" not in config.to_dict()["templates"][0]  # type: ignore[index]


def test_the_project_comes_from_the_selection_else_the_top_level_else_google_cloud_project() -> None:
    own = load_doc(selecting({"name_prefix": "a", "project": "their-project"}))
    assert own.select[0].project == "their-project"
    from_env = load_config(
        None, {"GOOGLE_CLOUD_PROJECT": "ambient-project"}, {}, document={"select": [{"name_prefix": "a"}]}
    )
    assert from_env.select[0].project == "ambient-project"
    assert load_doc(selecting({"name_prefix": "a", "project": None})).select[0].project == "my-project"


def test_labels_from_text_and_from_a_mapping_are_the_same() -> None:
    text = _labels(" app=payments, env=prod ,team=*,empty=")
    assert text == _labels({"team": "*", "env": "prod", "app": "payments", "empty": ""})
    assert text == (("app", "payments"), ("empty", ""), ("env", "prod"), ("team", "*"))
    assert _labels({"tier": 1}) == (("tier", "1"),)  # `tier: 1` in YAML


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ("app", "item 0: expected KEY=VALUE"),
        ("App=x", "label key 'App' is invalid"),
        ("1app=x", "label key '1app' is invalid"),
        ("app=Payments", "value 'Payments' is invalid"),
        ("app=a*", "value 'a*' is invalid"),
        ("app=x,app=y", "label 'app' is given twice"),
        ({"app": None}, "label 'app' has no value"),
        ({"app": True}, "expected a string value"),
        (["app=x"], "expected a mapping of labels"),
        ({f"k{i}": "v" for i in range(65)}, "at most 64 labels"),
        ("app=x\x00", "NUL byte"),
    ],
)
def test_a_bad_label_selector_is_a_problem_of_select_labels(labels: object, message: str) -> None:
    found = problems(selecting({"labels": labels}))
    assert list(found) == ["select[0].labels"]
    assert message in found["select[0].labels"]


# --- every bad case is a problem with its path --------------------------------------------------------------


BAD = [
    ({}, "select[0]", "give labels, name_prefix or name_regex"),
    ({"labels": {}}, "select[0]", "give labels, name_prefix or name_regex"),
    ({"name_regex": "("}, "select[0].name_regex", "not a valid regular expression"),
    ({"name_regex": "a" * 1001}, "select[0].name_regex", "at most 1000 characters"),
    ({"name_regex": "^(a+)+$"}, "select[0].name_regex", "repetition inside a repetition"),
    ({"name_regex": "^(?:a|ab)+$"}, "select[0].name_regex", "alternation inside a repetition"),
    ({"name_regex": r"^(a)\1"}, "select[0].name_regex", "back-references"),
    ({"name_regex": "a*b*c*"}, "select[0].name_regex", "at most 3 repetitions"),
    ({"name_prefix": "pay/"}, "select[0].name_prefix", "cannot start a secret id"),
    ({"name_prefix": "a", "location": "US"}, "select[0].location", "location 'US' is invalid"),
    ({"name_prefix": "a", "version": "0"}, "select[0].version", "version 0 does not exist"),
    ({"name_prefix": "a", "project": "X"}, "select[0].project", "project id 'X' is invalid"),
    ({"name_prefix": "a", "name": "a b"}, "select[0].name", "may only contain"),
    (
        {"name_prefix": "a", "env_prefix": "1X"},
        "select[0].env_prefix",
        "cannot start an environment variable",
    ),
    ({"name_prefix": "a", "file_prefix": "/abs/"}, "select[0].file_prefix", "'/abs/' must be relative"),
    ({"name_prefix": "a", "file_prefix": "../up/"}, "select[0].file_prefix", "must not contain '..'"),
    ({"name_prefix": "a", "rewrite": [{"replace": "x"}]}, "select[0].rewrite[0].regex", "required"),
    ({"name_prefix": "a", "rewrite": [{"regex": "(a"}]}, "select[0].rewrite[0].regex", "not a valid regular"),
    (
        {"name_prefix": "a", "rewrite": [{"regex": "a", "replace": r"\2"}]},
        "select[0].rewrite[0].replace",
        "group",
    ),
    (
        {"name_prefix": "a", "rewrite": [{"regex": "a", "replace": r"\g<x>"}]},
        "select[0].rewrite[0].replace",
        "x",
    ),
    ({"name_prefix": "a", "rewrite": "^a"}, "select[0].rewrite", "expected a list of rules"),
    ({"name_prefix": "a", "rewrite": [{"regex": "a"}] * 17}, "select[0].rewrite", "at most 16 rules"),
    ({"name_prefix": "a", "rewrite": ["^a"]}, "select[0].rewrite[0]", "expected a mapping"),
    (
        {"name_prefix": "a", "keys": [{"key": "k", "file": "k"}]},
        "select[0].keys[0].file",
        "must contain {name}",
    ),
    (
        {"name_prefix": "a", "keys": [{"key": "k", "file": "{id}/k"}]},
        "select[0].keys[0].file",
        "unknown placeholder",
    ),
    (
        {"name_prefix": "a", "keys": [{"key": "k", "file": "/{name}"}]},
        "select[0].keys[0].file",
        "must be relative",
    ),
    (
        {"name_prefix": "a", "keys": [{"key": "k", "env": "{env}-X"}]},
        "select[0].keys[0].env",
        "not make a valid",
    ),
    ({"name_prefix": "a", "keys": [{"key": "k", "env": "{env}}"}]}, "select[0].keys[0].env", "a brace"),
    ({"name_prefix": "a", "keys": [{"key": "k"}]}, "select[0].keys[0]", "set file, env or both"),
    ({"name_prefix": "a", "keys": [{"file": "{name}"}]}, "select[0].keys[0].key", "required"),
    (
        {"name_prefix": "a", "delegates": ["a@b.iam.gserviceaccount.com"]},
        "select[0].delegates",
        "only used with",
    ),
    ({"name_prefix": "a", "known": ["ok", "not/ok"]}, "select[0].known", "item 1: expected a secret id"),
    ({"name_prefix": "a", "known_at": -1}, "select[0].known_at", "seconds since the epoch"),
    (
        {"name_prefix": "a", "labels_typo": {}},
        "select[0].labels_typo",
        "unknown key (did you mean 'labels'?)",
    ),
    ({"name_prefix": "a", "mode": "999"}, "select[0].mode", "octal file mode"),
    ("labels: app=x", "select[0]", "expected a mapping"),
]


@pytest.mark.parametrize(
    ("item", "path", "message"), BAD, ids=[f"{path}-{i}" for i, (_, path, _) in enumerate(BAD)]
)
def test_every_bad_selection_is_a_problem_with_its_path(item: object, path: str, message: str) -> None:
    found = problems(selecting(item))
    assert list(found) == [path], found
    assert message in found[path]


def test_select_must_be_a_list() -> None:
    assert problems({**BASE, "select": {"labels": "a=b"}}) == {
        "select": "expected a list of selections, got a mapping"
    }


def test_a_selection_needs_a_project() -> None:
    found = problems({"select": [{"name_prefix": "a"}, {"name_prefix": "b", "project": "my-project"}]})
    assert list(found) == ["select[0].project"]
    assert "set it here or the top-level project" in found["select[0].project"]


def test_an_invalid_top_level_project_is_reported_once_not_per_selection() -> None:
    found = problems({"project": "X", "select": [{"name_prefix": "a"}, {"name_prefix": "b"}]})
    assert list(found) == ["project"]


def test_selection_names_are_unique_and_a_default_name_counts() -> None:
    found = problems(
        selecting(
            {"name": "pay", "name_prefix": "a"},
            {"name": "pay", "name_prefix": "b"},
            {"name": "select-3", "name_prefix": "c"},
            {"name_prefix": "d"},
        )
    )
    assert found == {
        "select[1].name": "duplicate selection name 'pay': also used by select[0]",
        "select[3].name": (
            "duplicate selection name 'select-3' (the default after its position): also used by select[2]"
        ),
    }


def test_a_template_names_existing_selections() -> None:
    found = problems(
        selecting(
            {"name": "pay", "name_prefix": "a"},
            {"name": "broken", "name_regex": "("},
            templates=[{"name": "t", "file": "t", "format": "json", "select": ["pay", "broken", "nope"]}],
        )
    )
    # A selection that has a problem of its own is not reported again through the template.
    assert set(found) == {"select[1].name_regex", "templates[0].select[2]"}
    assert found["templates[0].select[2]"] == "no selection is named 'nope'"


def test_a_template_select_is_a_list_of_names() -> None:
    found = problems(
        selecting(
            {"name_prefix": "a"}, templates=[{"name": "t", "file": "t", "format": "json", "select": "a"}]
        )
    )
    assert found == {"templates[0].select": "expected a list of selection names, got 'a'"}


def test_select_is_refused_with_the_dotenv_source() -> None:
    found = problems(selecting({"name_prefix": "a"}, source="dotenv"))
    assert found == {"select": SELECT_NEEDS_GCP}
    assert "select needs the Secret Manager source" in SELECT_NEEDS_GCP


def test_dev_with_the_automatic_source_says_why_it_cannot_select() -> None:
    config = load_doc(selecting({"name_prefix": "a"}))
    assert config.select_problem("dev") == SELECT_NEEDS_GCP
    assert config.select_problem("run") is None
    assert config.select_problem("init") is None
    assert load_doc(selecting({"name_prefix": "a"}, source="gcp")).select_problem("dev") is None
    assert load_doc(BASE).select_problem("dev") is None


def test_a_selections_identity_counts_for_the_iam_endpoint() -> None:
    account = "reader@my-project.iam.gserviceaccount.com"
    config = load_doc(
        selecting(
            {"name_prefix": "a", "impersonate_service_account": account},
            gcp={"iam_endpoint": "http://127.0.0.1:8781"},
        )
    )
    assert config.gcp.explicit_identity([*config.secrets, *config.select])
    assert "gcp.iam_endpoint" in problems({**BASE, "gcp": {"iam_endpoint": "http://127.0.0.1:8781"}})


def test_every_problem_is_reported_together() -> None:
    found = problems(
        {
            "select": [
                {"name_regex": "(a+)+"},
                {},
                {"name": "x", "labels": "App=1", "rewrite": [{"regex": "a", "replace": r"\3"}]},
                {"name": "x", "name_prefix": "p", "keys": [{"key": "k", "env": "K"}]},
            ],
            "templates": [{"name": "t", "file": "t", "format": "json", "select": ["missing"]}],
        }
    )
    assert set(found) == {
        "select[0].name_regex",
        "select[0].project",
        "select[1]",
        "select[1].project",
        "select[2].project",
        "select[2].labels",
        "select[2].rewrite[0].replace",
        "select[3].name",
        "select[3].project",
        "select[3].keys[0].env",
        "templates[0].select[0]",
    }


def test_the_loader_exits_2_on_a_bad_selection(tmp_path: Path) -> None:
    # The CLI's rule for every ConfigError; here only that a bad selection is one.
    with pytest.raises(ConfigError):
        load_doc(selecting({"name_regex": "("}))


# --- the regular expressions' cost --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pattern",
    ["^payments-.*-db$", "^(app|svc)-[a-z]+-(db|cache)$", "(a|b)+", "^x*x*x*y", "db", "^a(?=b+)c*$"],
)
def test_ordinary_patterns_are_accepted(pattern: str) -> None:
    assert regex_cost_problem(pattern) is None


@pytest.mark.parametrize("pattern", ["(a+)+", "(?:x|xx)+y", "x*x*x*y", r"(\w)\1", "(?>a+)+", "(?:(?=a*)b)+"])
def test_patterns_that_could_backtrack_for_long_are_refused(pattern: str) -> None:
    assert regex_cost_problem(pattern) is not None


# --- discovery and fleet: defaults, layers, the auto arithmetic ---------------------------------------------


def test_the_defaults_of_discovery_and_fleet() -> None:
    config = load_doc({})
    assert config.discovery == DiscoveryConfig(grace_period=300.0, relist_interval=None, start_jitter=None)
    assert config.fleet == FleetConfig(size=1, reads_per_minute=300, access_per_minute=45000)
    assert config.select == ()


def test_discovery_and_fleet_are_set_by_the_environment_like_other_sections() -> None:
    config = load_doc(
        {"discovery": {"relist_interval": "2h", "start_jitter": 0}, "fleet": {"size": 10}},
        env={
            "SECRETS_AGENT_FLEET_SIZE": "10000",
            "SECRETS_AGENT_FLEET_READS_PER_MINUTE": "600",
            "SECRETS_AGENT_DISCOVERY_GRACE_PERIOD": "0",
            "SECRETS_AGENT_DISCOVERY_START_JITTER": "auto",
        },
    )
    assert config.fleet.size == 10000
    assert config.fleet.reads_per_minute == 600
    assert config.discovery == DiscoveryConfig(grace_period=0.0, relist_interval=7200.0, start_jitter=None)
    found = problems({"fleet": {"size": 0}, "discovery": {"relist_interval": "0"}})
    assert set(found) == {"fleet.size", "discovery.relist_interval"}


def test_auto_relist_is_the_floor_unless_the_fleet_needs_longer() -> None:
    auto = DiscoveryConfig()
    small = FleetConfig()
    assert auto.relist_seconds(small, events_on=True) == 3600.0
    assert auto.relist_seconds(small, events_on=False) == 600.0
    # 10,000 pods at 100 listings a minute: each pod lists once every 10000/100 minutes.
    fleet = FleetConfig(size=10000, reads_per_minute=100)
    assert auto.relist_seconds(fleet, events_on=True) == pytest.approx(60 * 10000 / 100)
    assert auto.relist_seconds(fleet, events_on=True, listings=3) == pytest.approx(3 * 60 * 10000 / 100)
    assert auto.relist_seconds(FleetConfig(size=10000), events_on=True) == 3600.0  # 2000 s < the floor
    assert auto.relist_seconds(FleetConfig(size=3000), events_on=False) == pytest.approx(600.0)
    assert auto.relist_seconds(FleetConfig(size=3001), events_on=False) > 600.0
    assert DiscoveryConfig(relist_interval=42.0).relist_seconds(fleet, events_on=True) == 42.0


def test_auto_start_jitter_spreads_the_fleets_first_listings_up_to_ten_minutes() -> None:
    auto = DiscoveryConfig()
    assert auto.start_jitter_seconds(FleetConfig()) == pytest.approx(0.2)  # one pod: 60 / 300
    assert auto.start_jitter_seconds(FleetConfig(size=1000, reads_per_minute=300)) == pytest.approx(200.0)
    assert auto.start_jitter_seconds(FleetConfig(size=10000)) == 600.0
    assert DiscoveryConfig(start_jitter=0.0).start_jitter_seconds(FleetConfig(size=10000)) == 0.0


def test_event_spread_is_the_fleets_fetches_within_its_access_share() -> None:
    assert FleetConfig().event_spread_seconds() == pytest.approx(60 / 45000)
    fleet = FleetConfig(size=10000, access_per_minute=45000)
    assert fleet.event_spread_seconds() == pytest.approx(60 * 10000 / 45000)
    assert EventsConfig(max_delay=0.5).spread_seconds(FleetConfig()) == 0.5
    assert EventsConfig(max_delay=0.5).spread_seconds(fleet) == pytest.approx(13.333, rel=1e-3)

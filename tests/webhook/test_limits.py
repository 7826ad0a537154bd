"""What one pod may cost the webhook, decided as pure functions: caps on our annotations (how many, how
long, which characters), suggestions computed against our fixed keys only (counted, not timed), refusals
that list a bounded number of problems and never quote a value, and the names the agent keeps for itself."""

from __future__ import annotations

import difflib
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.webhook import limits
from agent.webhook.annotations import GLOBAL_KEYS
from agent.webhook.mutate import mutate
from agent.webhook.problems import InvalidAnnotations
from agent.webhook.review import answer_review
from agent.webhook.settings import PREFIX, InjectorSettings
from tests.webhook.helpers import DB_REF, PROJECT, container, make_pod, ours, review

CANARY = "canary-limits-7f3a-if-you-read-this-it-leaked"


def refusal(values: dict[str, str], **pod: Any) -> InvalidAnnotations:
    with pytest.raises(InvalidAnnotations) as caught:
        mutate(make_pod(ours(values), **pod), InjectorSettings())
    return caught.value


def admitted(values: dict[str, str]) -> list[dict[str, Any]]:
    return mutate(make_pod(ours(values)), InjectorSettings())


# --- the issue's pod, and the caps ----------------------------------------------------------------------


def issue_pod(pairs: int) -> dict[str, str]:
    """Issue 13's pod: ``pairs`` secrets and as many near-miss keys."""
    values = {"inject": "true", "project": PROJECT}
    for index in range(pairs):
        values[f"secret-s{index:04d}"] = f"db{index}"
        values[f"secre-s{index:04d}"] = "x"
    return values


def test_a_flood_past_the_count_cap_is_refused_with_one_problem_naming_the_cap() -> None:
    # The issue's own pod (250 pairs) is under the cap since secrets, templates and selections have more
    # options; it is refused with every problem, in linear time
    # (test_suggestions_cost_does_not_grow_with_the_pod_s_keys).
    error = refusal(issue_pod(600))
    assert error.annotations == (PREFIX + "*",)
    assert "1202 annotations under secrets-agent.io/; at most 1145 are allowed" in str(error)


def test_more_secrets_than_the_cap_are_refused() -> None:
    values = {"inject": "true", "project": PROJECT}
    values.update({f"secret-s{i}": f"db{i}" for i in range(limits.MAX_SECRETS + 1)})
    error = refusal(values)
    assert error.annotations == (PREFIX + "secret-*",)
    assert f"{limits.MAX_SECRETS + 1} secrets; at most {limits.MAX_SECRETS}" in str(error)


def test_the_most_secrets_with_every_option_are_admitted() -> None:
    values = {"inject": "true", "project": PROJECT, "env-file": "app.env"}
    for i in range(limits.MAX_SECRETS):
        values.update(
            {
                f"secret-s{i}": f"projects/{PROJECT}/secrets/database-password-{i}/versions/latest",
                f"secret-s{i}-env": f"DATABASE_PASSWORD_{i}",
                f"secret-s{i}-file": f"db/password-{i}",
                f"secret-s{i}-mode": "0400",
            }
        )
    assert len(values) <= limits.max_annotations(len(GLOBAL_KEYS))
    assert admitted(values)


def test_our_annotations_past_the_total_size_are_refused() -> None:
    values = {"inject": "true", "project": PROJECT}
    values.update(
        {f"secret-s{i}": f"projects/{PROJECT}/secrets/{'r' * 250}" for i in range(limits.MAX_SECRETS)}
    )
    error = refusal(values)
    assert error.annotations == (PREFIX + "*",)
    assert f"at most {limits.MAX_TOTAL} are allowed" in str(error)


def test_other_tools_annotations_do_not_count() -> None:
    pod = make_pod(
        {
            **ours({"inject": "true", "secret-db": DB_REF}),
            **{f"example.com/a{i}": "x" * 900 for i in range(290)},
        }
    )
    assert mutate(pod, InjectorSettings())


# --- suggestions: against our fixed keys, for the problems a refusal lists --------------------------------


def count_comparisons(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts every string difflib compares (SequenceMatcher.set_seq1: one per candidate)."""
    calls = [0]
    real = difflib.SequenceMatcher.set_seq1

    def counted(self: difflib.SequenceMatcher[str], a: str) -> None:
        calls[0] += 1
        real(self, a)

    monkeypatch.setattr(difflib.SequenceMatcher, "set_seq1", counted)
    return calls


def test_suggestions_cost_does_not_grow_with_the_pod_s_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = count_comparisons(monkeypatch)
    error = refusal(issue_pod(60))  # 122 annotations: under the caps, 60 unknown keys
    assert len(error.problems) == 60
    # Before: each unknown key was compared with every global key and every secret key of the pod.
    assert calls[0] <= limits.MAX_SHOWN * (len(GLOBAL_KEYS) + 3)  # two calls: the constructor's
    assert "(did you mean secrets-agent.io/secret-s0000?)" in str(error)


@pytest.mark.parametrize(
    ("key", "meant"),
    [
        ("poll-intervall", "poll-interval"),
        ("secert-db", "secret-db"),
        ("secrets-db", "secret-db"),
        ("zzz", None),
    ],
)
def test_suggestions_come_from_our_keys(key: str, meant: str | None) -> None:
    error = refusal({"inject": "true", "secret-db": DB_REF, key: "x"})
    assert error.annotations == (PREFIX + key,)
    if meant is None:
        assert str(error) == f"{PREFIX}{key}: unknown annotation"
    else:
        assert str(error) == f"{PREFIX}{key}: unknown annotation (did you mean {PREFIX}{meant}?)"


def test_a_refusal_lists_a_bounded_number_of_problems_and_counts_the_rest() -> None:
    values = {"inject": "true", "secret-db": DB_REF, **{f"nope-{i:03d}": "x" for i in range(100)}}
    error = refusal(values)
    assert len(error.problems) == 100
    assert str(error).count("unknown annotation") == limits.MAX_SHOWN
    assert str(error).endswith(f"; and {100 - limits.MAX_SHOWN} more problems")
    answer = answer_review(json.dumps(review(make_pod(ours(values)))).encode(), InjectorSettings())
    assert len(answer.log_fields["invalid"]) == limits.MAX_SHOWN  # type: ignore[arg-type]
    assert answer.log_fields["invalid_count"] == 100


def test_many_missing_containers_are_one_bounded_problem() -> None:
    names = ",".join(f"c{i}" for i in range(300))
    error = refusal(
        {"inject": "true", "secret-db": DB_REF, "containers": names},
        containers=[container(f"app{i}") for i in range(50)],
    )
    assert error.annotations == (PREFIX + "containers",)
    assert len(error.problems) == 1
    assert len(str(error)) < 600
    assert "(300 in all)" in str(error)
    assert "(50 in all)" in str(error)


# --- every value: bounded length, no control character, never quoted -------------------------------------

SECRET_KEYS = ("secret-db", "secret-db-env", "secret-db-file", "secret-db-mode")
ALL_KEYS = tuple(k for k in GLOBAL_KEYS if k not in ("inject", "status")) + SECRET_KEYS
CONTROLS = ["\x00", "\n", "\r", "\t", "\x1b", "\x7f", "\x85", "\u2028", "\u2029"]


@pytest.mark.parametrize("key", ALL_KEYS)
@pytest.mark.parametrize("char", CONTROLS, ids=[f"U+{ord(c):04X}" for c in CONTROLS])
def test_a_control_character_in_any_value_is_refused_unquoted(key: str, char: str) -> None:
    values = {"inject": "true", "secret-db": DB_REF, "reload-process": "app", key: f"{CANARY}{char}x"}
    error = refusal(values)
    assert error.annotations == (PREFIX + key,)
    assert "must not contain" in str(error)
    assert CANARY not in str(error)


@pytest.mark.parametrize("value", ["/secrets\x00", "/sec\nrets", "/secrets\n"])
def test_the_issue_s_output_paths_are_refused(value: str) -> None:
    error = refusal({"inject": "true", "secret-db": DB_REF, "output-path": value})
    assert error.annotations == (PREFIX + "output-path",)


@pytest.mark.parametrize("key", ALL_KEYS)
def test_a_value_past_its_length_is_refused_unquoted(key: str) -> None:
    limit = limits.max_value(key, key == "secret-db")
    values = {
        "inject": "true",
        "secret-db": DB_REF,
        "reload-process": "app",
        key: CANARY * (limit // len(CANARY) + 1),
    }
    error = refusal(values)
    assert error.annotations == (PREFIX + key,)
    assert f"longer than {limit} characters" in str(error)
    assert CANARY not in str(error)


@pytest.mark.parametrize("key", ["env-file", "secret-db-file"])
def test_a_file_path_past_its_depth_is_refused(key: str) -> None:
    error = refusal(
        {"inject": "true", "secret-db": DB_REF, key: "/".join(["d"] * (limits.MAX_PATH_PARTS + 1))}
    )
    assert error.annotations == (PREFIX + key,)
    assert f"more than {limits.MAX_PATH_PARTS} components" in str(error)


@pytest.mark.parametrize("key", ["x" * 200, "secret-" + "x" * 60, "bad\nkey", "bad\x00key"])
def test_a_bad_key_is_shown_escaped_and_short(key: str) -> None:
    error = refusal({"inject": "true", "secret-db": DB_REF, key: "x"})
    (problem,) = error.problems
    assert "\n" not in str(error)
    assert "\x00" not in str(error)
    assert len(problem.annotation) <= len(PREFIX) + limits.MAX_KEY_LENGTH * 4 + 3


def test_an_invalid_inject_value_is_quoted_short() -> None:
    with pytest.raises(InvalidAnnotations) as caught:
        mutate(make_pod(ours({"inject": "y" * 100_000, "secret-db": DB_REF})), InjectorSettings())
    assert len(str(caught.value)) < 300


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    key=st.sampled_from(["secret-db", "reload-url", "reload-command"]),
    before=st.text(max_size=30),
    after=st.text(max_size=30),
)
def test_a_credential_shaped_value_is_never_quoted(key: str, before: str, after: str) -> None:
    values = {"inject": "true", "secret-db": DB_REF, key: before + CANARY + after}
    message = ""
    try:
        mutate(make_pod(ours(values)), InjectorSettings())
    except InvalidAnnotations as error:
        message = str(error)
    assert CANARY[:20] not in message


# --- names the agent keeps for itself --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "key", "fragment"),
    [
        ({"env-file": ".token"}, "env-file", "token"),
        ({"env-file": ".notified"}, "env-file", "record of what the app was told"),
        ({"env-file": "..data"}, "env-file", "'..'"),
        ({"env-file": "..2026_01_01"}, "env-file", "'..'"),
        ({"env-file": "a/..b"}, "env-file", "'..'"),
        ({"env-file": ".token/app.env"}, "env-file", "inside '.token'"),
        ({"secret-.token": DB_REF}, "secret-.token", "secret-.token-file"),
        ({"secret-.notified": DB_REF}, "secret-.notified", "record of what the app was told"),
        ({"secret-db-file": ".notified/x"}, "secret-db-file", "inside '.notified'"),
        ({"secret-db-file": ".token"}, "secret-db-file", "token"),
        ({"env-file": "db/app.env"}, "env-file", "one inside the other"),
        ({"env-file": "app", "secret-db-file": "app/password"}, "env-file", "one inside the other"),
    ],
    ids=lambda v: str(v) if isinstance(v, str) else None,
)
def test_reserved_and_colliding_files_are_refused(extra: dict[str, str], key: str, fragment: str) -> None:
    error = refusal({"inject": "true", "secret-db": DB_REF, **extra})
    assert error.annotations == (PREFIX + key,), str(error)
    assert fragment in str(error)


# --- parsers that recurse, and names that reach the log ---------------------------------------------------


@pytest.mark.parametrize("depth", [255, 1000])
def test_a_deeply_nested_reload_pattern_is_refused_not_crashed_on(depth: int) -> None:
    # 1,000 '(' exhausted the regular expression parser's stack in the agent's loader: a 500, not a refusal.
    values = {"inject": "true", "secret-db": DB_REF, "reload-process": "(" * depth}
    answer = answer_review(json.dumps(review(make_pod(ours(values)))).encode(), InjectorSettings())
    response = answer.body["response"]
    assert response["allowed"] is False
    assert response["status"]["message"].startswith(PREFIX + "reload-process: ")
    assert len(response["status"]["message"]) <= limits.MAX_PROBLEM_TEXT


def test_names_from_the_request_are_logged_short() -> None:
    pod = make_pod(ours({"inject": "true", "secret-db": DB_REF}))
    pod["metadata"]["name"] = "web-" + "x" * 100_000
    sent = review(pod)
    sent["request"]["namespace"] = "n" * 100_000
    answer = answer_review(json.dumps(sent).encode(), InjectorSettings())
    assert answer.status == 200
    for name in ("pod", "namespace", "uid"):
        assert len(str(answer.log_fields[name])) <= limits.MAX_LOGGED

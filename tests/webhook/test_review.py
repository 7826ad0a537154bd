"""The AdmissionReview decoder never fails with anything but a 400, whatever the body (hypothesis fuzz over
arbitrary bytes, arbitrary JSON, and real reviews with one part replaced by arbitrary JSON)."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.webhook.review import answer_review
from agent.webhook.settings import InjectorSettings
from tests.webhook.helpers import DB_REF, container, make_pod, pod_annotations, review

SETTINGS = InjectorSettings()

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)

BASE = review(
    make_pod(
        pod_annotations(inject="true", secret_db=DB_REF, containers="app", reload_process="x"),
        [container("app", volumeMounts=[{"name": "v", "mountPath": "/v"}], securityContext={"runAsUser": 5})],
        init_containers=[container("init")],
        volumes=[{"name": "v", "emptyDir": {}}],
        securityContext={"fsGroup": 5},
    )
)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside ``value`` (dict keys and list indexes)."""
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, child in value.items():
            found += paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += paths(child, (*prefix, index))
    return found


BASE_PATHS = paths(BASE)


def check(raw: bytes) -> None:
    answer = answer_review(raw, SETTINGS)
    assert answer.status in (200, 400)
    json.dumps(answer.body)  # the answer always serialises
    if answer.status == 400:
        assert set(answer.body) == {"error"}
        return
    response = answer.body["response"]
    assert response["uid"] == json.loads(raw)["request"]["uid"]
    assert isinstance(response["allowed"], bool)
    if "patch" in response:
        assert isinstance(json.loads(base64.b64decode(response["patch"])), list)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_arbitrary_bytes(raw: bytes) -> None:
    check(raw)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_arbitrary_json(value: Any) -> None:
    check(json.dumps(value).encode())


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(BASE_PATHS), json_values)
def test_a_real_review_with_one_part_replaced(path: tuple[Any, ...], value: Any) -> None:
    document = copy.deepcopy(BASE)
    target: Any = document
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    check(json.dumps(document).encode())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(
        st.text(max_size=30).map(lambda k: "secrets-agent.io/" + k), st.text(max_size=30), max_size=6
    )
)
def test_arbitrary_annotations_are_answered_not_crashed_on(extra: dict[str, str]) -> None:
    document = copy.deepcopy(BASE)
    document["request"]["object"]["metadata"]["annotations"].update(extra)
    answer = answer_review(json.dumps(document).encode(), SETTINGS)
    assert answer.status == 200
    response = answer.body["response"]
    if not response["allowed"]:
        assert response["status"]["code"] == 400
        assert response["status"]["message"].startswith("secrets-agent.io/")


def test_deeply_nested_json_is_a_400() -> None:
    assert answer_review(b"[" * 100_000 + b"]" * 100_000, SETTINGS).status == 400


def test_a_huge_number_is_a_400() -> None:
    assert answer_review(b'{"apiVersion": ' + b"9" * 10_000 + b"}", SETTINGS).status == 400


def test_the_base_review_is_valid_and_patched() -> None:
    # Guards the fuzz tests above: their starting point must be a review that gets a patch.
    answer = answer_review(json.dumps(BASE).encode(), SETTINGS)
    assert answer.status == 200
    assert answer.body["response"]["allowed"] is True
    assert answer.body["response"]["patchType"] == "JSONPatch"

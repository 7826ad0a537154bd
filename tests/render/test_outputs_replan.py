"""``Renderer.replan``: the set of secrets changes while running (selections). Outputs planned as before are
not made again; templates that see every secret (or a selection's) see the new set; until a new secret a
template needs is fetched, the template keeps serving what it served; refusals change nothing; ``undo``
puts everything back."""

from __future__ import annotations

import io
import json

import pytest
from dotenv import dotenv_values

from agent.config import KeySpec, SecretSpec, TemplateSpec
from agent.config.refs import parse_ref
from agent.core.model import Fetched, Snapshot, crc32c
from agent.errors import ConfigError
from agent.render.outputs import Renderer


def spec(name: str, **options: object) -> SecretSpec:
    return SecretSpec(name=name, ref=parse_ref(name, "my-project"), **options)  # type: ignore[arg-type]


def fetched(name: str, value: str, version: str = "1") -> Fetched:
    return Fetched(name, version, value.encode(), crc32c(value.encode()))


def snapshot(*items: Fetched) -> Snapshot:
    return Snapshot({item.name: item for item in items})


def by_label(rendered: Snapshot) -> dict[str, bytes]:
    return {output.label: output.data for output in rendered.outputs or ()}


EVERY = TemplateSpec(name="every", file="every.json", format="json")
USES_A = TemplateSpec(name="uses-a", file="a.txt", text="{{ secrets.a.value }}")
LISTING = TemplateSpec(name="listing", file="list.txt", text="{% for n in secrets %}{{ n }};{% endfor %}")


def test_outputs_planned_as_before_are_not_made_again_and_every_secret_templates_see_the_new_one() -> None:
    rendered: list[str] = []
    renderer = Renderer([spec("a")], [EVERY, USES_A, LISTING], observe=lambda n, ok, s: rendered.append(n))
    first = renderer.render(snapshot(fetched("a", "A")))
    rendered.clear()

    renderer.replan([spec("a"), spec("b")])
    second = renderer.render(first.with_updates([fetched("b", "B")]))

    assert sorted(rendered) == ["every", "listing"]  # uses-a reads only a: its output is kept as it was
    outputs = by_label(second)
    assert json.loads(outputs["template every"]) == {"a": "A", "b": "B"}
    assert outputs["template listing"] == b"a;b;"
    assert outputs["b"] == b"B"
    assert set(second.file_outputs()) == {"a", "b", "every.json", "a.txt", "list.txt"}


def test_until_a_new_required_secret_is_fetched_a_template_keeps_what_it_served() -> None:
    renderer = Renderer([spec("a")], [LISTING])
    first = renderer.render(snapshot(fetched("a", "A")))

    renderer.replan([spec("a"), spec("b")])  # b is required (the default) and not fetched yet
    waiting = renderer.render(first.without([]))
    assert by_label(waiting) == {"a": b"A", "template listing": b"a;"}  # the file stays, last-known-good

    done = renderer.render(first.with_updates([fetched("b", "B")]))
    assert by_label(done)["template listing"] == b"a;b;"


def test_the_outputs_of_removed_secrets_go_and_templates_follow() -> None:
    b = spec("b", format="json", keys=(KeySpec(key="k", file="b/k", env="B_K"),))
    renderer = Renderer([spec("a"), b], [EVERY])
    values = snapshot(fetched("a", "A"), fetched("b", '{"k": "v"}'))
    assert set(renderer.render(values).file_outputs()) == {"a", "b", "b/k", "every.json"}

    renderer.replan([spec("a")])
    rendered = renderer.render(values.without(["b"]))

    assert set(rendered.file_outputs()) == {"a", "every.json"}
    assert json.loads(by_label(rendered)["template every"]) == {"a": "A"}
    assert set(renderer.specs) == {"a"}


def test_a_template_with_select_sees_the_secrets_of_its_selections_only() -> None:
    payments = TemplateSpec(name="pay", file="pay.env", format="dotenv", select=("payments",))
    mixed = TemplateSpec(name="mixed", file="mixed.json", format="json", secrets=("a",), select=("payments",))
    renderer = Renderer([spec("a")], [payments, mixed])
    values = snapshot(fetched("a", "A"), fetched("p", "P"), fetched("q", "Q"))

    renderer.replan([spec("a"), spec("p"), spec("q")], {"p": "payments", "q": "billing"})
    outputs = by_label(renderer.render(values))

    assert dotenv_values(stream=io.StringIO(outputs["template pay"].decode())) == {"P": "P"}
    assert json.loads(outputs["template mixed"]) == {"a": "A", "p": "P"}
    renderer.replan([spec("a"), spec("p"), spec("q")])  # origins default to those known
    assert json.loads(by_label(renderer.render(values))["template mixed"]) == {"a": "A", "p": "P"}


def test_refused_replans_change_nothing_and_undo_puts_everything_back() -> None:
    named = TemplateSpec(name="named", file="n.txt", text="{{ secrets.a.value }}", secrets=("a",))
    renderer = Renderer([spec("a"), spec("x")], [named])
    plans = renderer.plans

    with pytest.raises(ValueError, match="secret 'b' and secret 'a' both take file 'a'"):
        renderer.replan([spec("a"), spec("x"), spec("b", file="a")])
    with pytest.raises(ValueError, match="both take env 'A'"):
        renderer.replan([spec("a"), spec("x"), spec("b", env="A")])
    with pytest.raises(ValueError, match="needs 'x' as a directory"):
        renderer.replan([spec("a"), spec("x"), spec("b", file="x/b")])
    with pytest.raises(ConfigError, match=r"templates\[0\]\.secrets\[0\]: no secret is named 'a'"):
        renderer.replan([spec("x")])
    assert renderer.plans is plans

    first = renderer.render(snapshot(fetched("a", "A"), fetched("x", "X")))
    undo = renderer.replan([spec("a"), spec("x"), spec("y")])
    assert "y" in renderer.specs
    undo()
    assert renderer.plans is plans
    assert set(renderer.specs) == {"a", "x"}
    assert by_label(renderer.render(first.without([]))) == by_label(first)

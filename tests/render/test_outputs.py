"""The Renderer: a snapshot -> every output (secret files, keys, templates, formats), re-rendering only
what a changed secret feeds, failing whole and naming outputs (never values); the sink writing them in one
swap."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import pytest

from agent.config import KeySpec, SecretSpec, TemplateSpec
from agent.config.refs import parse_ref
from agent.core.model import Fetched, Snapshot, crc32c
from agent.errors import ConfigError
from agent.render.outputs import Renderer, RenderError, check_outputs
from agent.sinks.snapshot import SnapshotSink

CANARY = "CANARY-outputs-3f9a"


def spec(name: str, **options: object) -> SecretSpec:
    return SecretSpec(name=name, ref=parse_ref(name, "my-project"), **options)  # type: ignore[arg-type]


def fetched(name: str, value: bytes | str | Mapping[str, object], version: str = "1") -> Fetched:
    data = json.dumps(dict(value)).encode() if isinstance(value, Mapping) else value
    data = data.encode() if isinstance(data, str) else data
    return Fetched(name, version, data, crc32c(data))


def snapshot(*items: Fetched) -> Snapshot:
    return Snapshot({item.name: item for item in items})


DB = {"username": "app", "password": "p@ss/1", "host": "db.internal", "port": 5432}
DB_SPEC = spec(
    "db",
    format="json",
    deliver=False,
    keys=(KeySpec(key="password", file="db/password", env="DB_PASSWORD"), KeySpec(key="port", env="DB_PORT")),
)
URL = TemplateSpec(
    name="url",
    env="DATABASE_URL",
    file="db/url",
    text="postgresql://{{ secrets.db.data.username }}:{{ secrets.db.data.password | urlquote }}@"
    "{{ secrets.db.data.host }}/app",
    secrets=("db",),
)


def by_label(rendered: Snapshot) -> dict[str, bytes]:
    return {output.label: output.data for output in rendered.outputs or ()}


def test_keys_and_a_template_come_from_one_payload_and_the_whole_payload_is_not_delivered() -> None:
    renderer = Renderer([DB_SPEC, spec("token")], [URL])
    rendered = renderer.render(snapshot(fetched("db", DB), fetched("token", "t0k3n")))
    assert by_label(rendered) == {
        "db[password]": b"p@ss/1",
        "db[port]": b"5432",
        "token": b"t0k3n",
        "template url": b"postgresql://app:p%40ss%2F1@db.internal/app",
    }
    assert rendered.secret_output("db") is None
    assert set(rendered.file_outputs()) == {"db/password", "token", "db/url"}


def test_a_secret_key_and_base64_decode_shape_its_own_file() -> None:
    import base64

    encoded = base64.b64encode(json.dumps({"a": {"b.c": "deep"}}).encode()).decode()
    renderer = Renderer([spec("x", key='a["b.c"]', decode="base64")])
    output = renderer.render(snapshot(fetched("x", encoded))).secret_output("x")
    assert output is not None
    assert output.data == b"deep"
    assert output.file == "x"
    assert output.env == "X"


def test_only_templates_whose_secrets_changed_are_rendered_again() -> None:
    rendered: list[str] = []
    templates = [
        TemplateSpec(name="uses-a", file="a.txt", text="{{ secrets.a.value }}"),
        TemplateSpec(name="uses-b", file="b.txt", text="{{ secrets.b.value }}"),
        TemplateSpec(name="uses-both", file="ab.txt", text="{{ secrets.a.value }}{{ secrets.b.value }}"),
    ]
    renderer = Renderer([spec("a"), spec("b")], templates, observe=lambda name, ok, s: rendered.append(name))
    first = renderer.render(snapshot(fetched("a", "A1"), fetched("b", "B1")))
    assert sorted(rendered) == ["uses-a", "uses-b", "uses-both"]
    rendered.clear()
    second = renderer.render(first.with_updates([fetched("a", "A2", "2")]))
    assert sorted(rendered) == ["uses-a", "uses-both"]
    assert by_label(second)["template uses-b"] == b"B1"
    assert by_label(second)["template uses-both"] == b"A2B1"
    rendered.clear()
    renderer.render(second.with_updates([]))
    assert rendered == []


def test_a_failing_output_fails_the_whole_render_naming_it_without_the_value() -> None:
    renderer = Renderer([DB_SPEC], [URL])
    renderer.render(snapshot(fetched("db", DB)))
    broken = {"username": CANARY, "host": CANARY}  # no password
    with pytest.raises(RenderError) as caught:
        renderer.render(snapshot(fetched("db", broken, "2")))
    message = str(caught.value)
    assert "secret 'db' key 'password'" in message
    assert "template 'url'" in message
    assert CANARY not in message
    labels = [label for label, _ in caught.value.failures]
    assert labels == ["secret 'db' key 'password'", "secret 'db' key 'port'", "template 'url'"]


def test_outputs_of_a_required_secret_not_fetched_yet_are_left_out_and_optional_ones_default() -> None:
    templates = [
        TemplateSpec(name="needs-db", file="u", text="{{ secrets.db.data.password }}"),
        TemplateSpec(name="cache", file="c", text="{{ secrets.cache.value | default('none') }}"),
    ]
    renderer = Renderer([DB_SPEC, spec("cache", required=False)], templates)
    rendered = renderer.render(Snapshot())
    assert by_label(rendered) == {"template cache": b"none"}


@pytest.mark.parametrize(
    ("format_name", "expected"),
    [
        ("json", {"api": "k3y", "token": "t0k"}),
        ("dotenv", None),
        ("properties", None),
        ("yaml", None),
    ],
)
def test_a_set_of_secrets_as_one_file_without_a_template(format_name: str, expected: object) -> None:
    template = TemplateSpec(name="all", file=f"all.{format_name}", format=format_name)  # type: ignore[arg-type]
    renderer = Renderer([spec("api"), spec("token"), DB_SPEC], [template])
    rendered = renderer.render(snapshot(fetched("api", "k3y"), fetched("token", "t0k"), fetched("db", DB)))
    data = by_label(rendered)["template all"]
    if expected is not None:
        assert json.loads(data) == expected  # deliver: false secrets are not in the default set
    else:
        text = data.decode()
        assert "k3y" in text
        assert "t0k" in text
        assert "p@ss" not in text


@pytest.mark.parametrize(
    ("secrets", "templates", "path", "text"),
    [
        ([spec("a", key="b..c")], [], "secrets[0].key", "empty"),
        ([spec("a", keys=(KeySpec(key="x[", env="X"),))], [], "secrets[0].keys[0].key", ""),
        ([spec("a")], [TemplateSpec(name="t", env="T", text="{% if %}")], "templates[0].text", "line 1"),
        (
            [spec("a")],
            [TemplateSpec(name="t", env="T", text="{{ secrets.b.value }}")],
            "templates[0].text",
            "'b'",
        ),
    ],
)
def test_check_outputs_reports_key_and_template_problems_with_their_paths(
    secrets: list[SecretSpec], templates: list[TemplateSpec], path: str, text: str
) -> None:
    [problem] = check_outputs(secrets, templates)
    assert problem.path == path
    assert text in problem.message
    with pytest.raises(ConfigError):
        Renderer(secrets, templates)


def test_the_sink_writes_secrets_keys_and_templates_in_one_swap_and_keeps_the_old_one_on_failure(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    renderer = Renderer([DB_SPEC], [URL])
    sink = SnapshotSink(out, [DB_SPEC], Path("app.env"), renderer=renderer)
    assert sink.write(snapshot(fetched("db", DB)))
    first = os.readlink(out / "..data")
    assert (out / "db" / "password").read_bytes() == b"p@ss/1"
    assert (out / "db" / "url").read_bytes() == b"postgresql://app:p%40ss%2F1@db.internal/app"
    assert not (out / "db" / "..").joinpath("db.json").exists()
    env = (out / "app.env").read_text()
    assert "DB_PASSWORD='p@ss/1'" in env
    assert "DATABASE_URL=" in env
    assert "DB_PORT='5432'" in env
    # Both outputs change together (one new ..data), or not at all.
    assert sink.write(snapshot(fetched("db", {**DB, "password": "second"}, "2")))
    second = os.readlink(out / "..data")
    assert second != first
    assert (out / "db" / "password").read_bytes() == b"second"
    assert b"second" in (out / "db" / "url").read_bytes()
    with pytest.raises(RenderError):
        sink.write(snapshot(fetched("db", {"username": CANARY}, "3")))
    assert os.readlink(out / "..data") == second
    assert (out / "db" / "password").read_bytes() == b"second"


def test_a_restarted_sink_adopts_whole_secrets_but_not_keys_it_cannot_turn_back_into_payloads(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    specs = [DB_SPEC, spec("token"), spec("b64", decode="base64")]
    SnapshotSink(out, specs, None).write(
        snapshot(fetched("db", DB), fetched("token", "t0k3n"), fetched("b64", "aGk="))
    )
    adopted = SnapshotSink(out, specs, None).adopt()
    assert set(adopted.items) == {"token"}
    assert adopted.items["token"].data == b"t0k3n"


def test_a_restarted_agent_keeps_serving_keys_and_templates_until_their_secret_is_fetched_again(
    tmp_path: Path,
) -> None:
    """Last-known-good across a restart: a key or a template cannot be turned back into its payload, so the
    files the previous agent wrote are kept (checked against the manifest) while the backend is down."""
    out = tmp_path / "out"
    SnapshotSink(out, [DB_SPEC], None, renderer=Renderer([DB_SPEC], [URL])).write(snapshot(fetched("db", DB)))

    renderer = Renderer([DB_SPEC], [URL])
    sink = SnapshotSink(out, [DB_SPEC], None, renderer=renderer)
    adopted = sink.adopt()
    assert len(adopted) == 0  # the JSON payload itself is not on disk
    kept = renderer.render(adopted)
    assert by_label(kept) == {
        "db[password]": b"p@ss/1",
        "template url": b"postgresql://app:p%40ss%2F1@db.internal/app",
    }
    sink.write(kept)  # the first write while the backend is still down rewrites them, unchanged
    assert (out / "db" / "url").read_bytes() == b"postgresql://app:p%40ss%2F1@db.internal/app"
    # Once the secret is fetched, the outputs are its own again.
    fresh = renderer.render(snapshot(fetched("db", {**DB, "password": "new"}, "2")))
    assert by_label(fresh)["db[password]"] == b"new"


def test_files_a_different_configuration_wrote_are_not_kept(tmp_path: Path) -> None:
    out = tmp_path / "out"
    SnapshotSink(out, [DB_SPEC], None, renderer=Renderer([DB_SPEC], [URL])).write(snapshot(fetched("db", DB)))
    changed = TemplateSpec(name="url", env="DATABASE_URL", file="db/url", text="other {{ secrets.db.value }}")
    renderer = Renderer([DB_SPEC], [changed])
    sink = SnapshotSink(out, [DB_SPEC], None, renderer=renderer)
    assert by_label(renderer.render(sink.adopt())) == {"db[password]": b"p@ss/1"}
    # A planted file whose checksum does not match the manifest is not kept either.
    data_dir = out / os.readlink(out / "..data")
    (data_dir / "db" / "password").chmod(0o600)
    (data_dir / "db" / "password").write_bytes(b"planted")
    renderer = Renderer([DB_SPEC], [URL])
    assert by_label(renderer.render(SnapshotSink(out, [DB_SPEC], None, renderer=renderer).adopt())) == {
        "template url": b"postgresql://app:p%40ss%2F1@db.internal/app"
    }


def test_a_template_is_versioned_by_its_inputs_versions_never_by_its_bytes() -> None:
    renderer = Renderer(
        [spec("a"), spec("b")], [TemplateSpec(name="t", file="t", text="{{ secrets.a.value }}")]
    )
    first = renderer.render(snapshot(fetched("a", "A1"), fetched("b", "B1")))
    [template] = [o for o in first.outputs or () if o.kind == "template"]
    assert template.version.startswith("t")
    assert len(template.version) == 17
    assert f"{template.crc32c:08x}" not in template.version  # a checksum of a short value is an oracle
    again = renderer.render(first.with_updates([fetched("b", "B2", "2")]))
    assert [o.version for o in again.outputs or () if o.kind == "template"] == [template.version]
    moved = renderer.render(first.with_updates([fetched("a", "A1", "2")]))
    assert [o.version for o in moved.outputs or () if o.kind == "template"] != [template.version]


def test_an_env_only_key_is_kept_from_the_env_file_across_a_restart(tmp_path: Path) -> None:
    out = tmp_path / "out"
    db = spec("db", format="json", deliver=False, keys=(KeySpec(key="password", env="DB_PASSWORD"),))
    url = TemplateSpec(name="url", env="DATABASE_URL", text="x://{{ secrets.db.data.password }}")
    SnapshotSink(out, [db], Path("app.env"), renderer=Renderer([db], [url])).write(
        snapshot(fetched("db", {"password": "p@ss word"}))
    )
    renderer = Renderer([db], [url])
    kept = renderer.render(SnapshotSink(out, [db], Path("app.env"), renderer=renderer).adopt())
    assert by_label(kept) == {"db[password]": b"p@ss word", "template url": b"x://p@ss word"}

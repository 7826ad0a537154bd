"""Templates' cost on a rotation: one secret changes version, its snapshot is rendered and swapped in.

The agent's real path, in process: ``Renderer(secrets, templates).render(snapshot)`` and
``SnapshotSink(...).write(rendered)`` (one atomic ``..data`` swap of every output), on ``/dev/shm`` when
there is a tmpfs there (a pod's ``emptyDir: {medium: Memory}``), else in the temporary directory; the table
says which. No source, no network: what is timed is render + write, from the new snapshot to the swap done.

The configuration: 100 secrets, 30 of them JSON documents ``{"username", "password", "host", "port"}``
(``db00`` ... ``db29``) and 70 plain tokens of 32-64 bytes (``tok00`` ... ``tok69``), and 20 templates:

* 13 DSNs ``postgresql://user:password@host:port/app?sslpassword=...`` (``db00`` ... ``db12``, with
  ``urlquote``);
* 3 YAML config pages with a ``{% for %}`` over 3 database secrets and 3 tokens each, 2 Java properties
  pages with a ``{% for %}`` over 2 database secrets and 3 tokens each;
* ``format: json`` of 10 tokens and ``format: dotenv`` of 10 tokens.

``tok00`` (the client key passphrase, ``sslpassword``) is in all 20 templates.

Four cases, each with its own renderer, sink and directory, interleaved round by round (``ROUNDS`` rounds
after ``WARMUP``, the order within a round turning), so that noise from elsewhere on the machine hits them
alike:

* (a) the 100 secrets without templates, ``db12`` rotates: the baseline;
* (b) the same 100 secrets with the 20 templates, ``db12`` rotates: it feeds 2 templates (its DSN and the
  first YAML page), the only ones the renderer's cache makes again. The target: median (b) <= 1.2x (a);
* (c) the worst case: with the templates, ``tok00`` rotates and all 20 are rendered again;
* (d) for reference, no templates but 20 more tokens: as many files as (b), so that (d) / (a) is what the
  extra files alone cost and (b) / (d) what rendering adds.

Each swap is also split into its render and its write. Every swap must change the files on disk, (b) and
(c) must render exactly 2 and 20 templates (counted by the renderer's observer), and the DSN on disk must
be the newest: a benchmark that timed a cache hit or a no-op write would fail instead of printing.

Then the cold start, also interleaved: building a Renderer (the templates compiled) and its first render
of the whole snapshot, with the 20 templates and without.
"""

from __future__ import annotations

import gc
import json
import random
import statistics
import string
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from agent.config import SecretSpec, TemplateSpec
from agent.config.refs import parse_ref
from agent.core.model import Fetched, Snapshot, crc32c
from agent.render.outputs import Renderer
from agent.sinks.snapshot import SnapshotSink
from agent.sinks.tmpfs import filesystem_type
from bench.common import shm_tmpdir

PROJECT = "bench-project"
JSON_SECRETS = 30
TOKENS = 70
SECRETS = JSON_SECRETS + TOKENS
DSN_TEMPLATES = 13
YAML_PAGES: tuple[tuple[str, ...], ...] = (
    ("db12", "db13", "db14"),
    ("db15", "db16", "db17"),
    ("db18", "db19", "db20"),
)
PROPERTIES_PAGES: tuple[tuple[str, ...], ...] = (("db21", "db22"), ("db23", "db24"))
TEMPLATES = DSN_TEMPLATES + len(YAML_PAGES) + len(PROPERTIES_PAGES) + 2
SHARED = "tok00"
"""In every template: rotating it is the worst case."""
ROTATED = "db12"
"""The realistic case: it feeds its DSN template and the first YAML page."""
ROTATED_FEEDS = 2
ROUNDS = 150
WARMUP = 5
COLD_REPEATS = 15
TARGET_RATIO = 1.2
SEED = 20240611
PASSWORD_ALPHABET = string.ascii_letters + string.digits + "!#%&*+-/:=?@^_~"
"""Passwords with the characters a DSN must percent-encode (``/ : ? @ # %``)."""
TOKEN_ALPHABET = string.ascii_letters + string.digits + "-_"


def db_name(index: int) -> str:
    return f"db{index:02d}"


def token_name(index: int) -> str:
    return f"tok{index:02d}"


# --------------------------------------------------------------------------------------------------
# The configuration and its values
# --------------------------------------------------------------------------------------------------


def secret_names(extra: int = 0) -> list[str]:
    """The 100 secrets, and ``extra`` more tokens (the reference case with as many files as templates)."""
    return [db_name(i) for i in range(JSON_SECRETS)] + [token_name(i) for i in range(TOKENS + extra)]


def secret_specs(extra: int = 0) -> list[SecretSpec]:
    def spec(name: str) -> SecretSpec:
        ref = parse_ref(f"projects/{PROJECT}/secrets/{name}/versions/latest")
        return SecretSpec(name=name, ref=ref, format="json" if name.startswith("db") else "auto")

    return [spec(name) for name in secret_names(extra)]


def dsn_text(db: str) -> str:
    s = f"secrets.{db}.data"
    return (
        f"postgresql://{{{{ {s}.username | urlquote }}}}:{{{{ {s}.password | urlquote }}}}"
        f"@{{{{ {s}.host }}}}:{{{{ {s}.port }}}}/app"
        f"?sslmode=verify-full&sslpassword={{{{ secrets.{SHARED}.value | urlquote }}}}\n"
    )


def yaml_page_text(page: int, dbs: Sequence[str], tokens: Sequence[str]) -> str:
    loop = ", ".join(f"secrets.{db}" for db in dbs)
    return (
        f"# service-{page} configuration, rendered by secrets-agent\n"
        "server:\n"
        "  port: 8080\n"
        f'  session_key: "{{{{ secrets.{tokens[0]}.value }}}}"\n'
        "databases:\n"
        f"{{% for db in [{loop}] %}}\n"
        "  - name: replica-{{ loop.index }}\n"
        "    host: {{ db.data.host }}\n"
        "    port: {{ db.data.port }}\n"
        "    user: {{ db.data.username }}\n"
        '    password: "{{ db.data.password }}"\n'
        f'    sslpassword: "{{{{ secrets.{SHARED}.value }}}}"\n'
        "{% endfor %}\n"
        "upstreams:\n"
        f'  billing: {{token: "{{{{ secrets.{tokens[1]}.value }}}}", timeout: 5s}}\n'
        f'  search: {{token: "{{{{ secrets.{tokens[2]}.value }}}}", timeout: 2s}}\n'
    )


def properties_page_text(page: int, dbs: Sequence[str], tokens: Sequence[str]) -> str:
    loop = ", ".join(f"secrets.{db}" for db in dbs)
    return (
        f"# worker-{page}.properties, rendered by secrets-agent\n"
        f"{{% for db in [{loop}] -%}}\n"
        "datasource.{{ loop.index }}.url=jdbc:postgresql://{{ db.data.host }}:{{ db.data.port }}/app\n"
        "datasource.{{ loop.index }}.username={{ db.data.username }}\n"
        "datasource.{{ loop.index }}.password={{ db.data.password }}\n"
        f"datasource.{{{{ loop.index }}}}.sslpassword={{{{ secrets.{SHARED}.value }}}}\n"
        "{% endfor -%}\n"
        f"queue.token={{{{ secrets.{tokens[0]}.value }}}}\n"
        f"metrics.token={{{{ secrets.{tokens[1]}.value }}}}\n"
        f"mail.password={{{{ secrets.{tokens[2]}.value }}}}\n"
    )


def template_specs() -> list[TemplateSpec]:
    templates = [
        TemplateSpec(name=f"dsn-{db_name(i)}", file=f"dsn/{db_name(i)}.url", text=dsn_text(db_name(i)))
        for i in range(DSN_TEMPLATES)
    ]
    token = iter(token_name(i) for i in range(20, TOKENS))
    for page, dbs in enumerate(YAML_PAGES):
        tokens = [next(token) for _ in range(3)]
        templates.append(
            TemplateSpec(
                name=f"service-{page}",
                file=f"config/service-{page}.yaml",
                text=yaml_page_text(page, dbs, tokens),
                secrets=(*dbs, *tokens, SHARED),
            )
        )
    for page, dbs in enumerate(PROPERTIES_PAGES):
        tokens = [next(token) for _ in range(3)]
        templates.append(
            TemplateSpec(
                name=f"worker-{page}",
                file=f"config/worker-{page}.properties",
                text=properties_page_text(page, dbs, tokens),
                secrets=(*dbs, *tokens, SHARED),
            )
        )
    templates.append(
        TemplateSpec(
            name="tokens-json",
            file="tokens.json",
            format="json",
            secrets=tuple(token_name(i) for i in range(10)),
        )
    )
    templates.append(
        TemplateSpec(
            name="app-env",
            file="app.env",
            format="dotenv",
            secrets=(SHARED, *(token_name(i) for i in range(10, 19))),
        )
    )
    assert len(templates) == TEMPLATES
    return templates


class Values:
    """Deterministic realistic values, a new one for each version."""

    def __init__(self, seed: int = SEED) -> None:
        self.random = random.Random(seed)

    def text(self, alphabet: str, low: int, high: int) -> str:
        return "".join(self.random.choices(alphabet, k=self.random.randint(low, high)))

    def db(self, index: int) -> bytes:
        document = {
            "username": f"app_user_{index:02d}",
            "password": self.text(PASSWORD_ALPHABET, 24, 32),
            "host": f"pg-{index:02d}.db.internal.example.com",
            "port": 5432,
        }
        return json.dumps(document).encode()

    def token(self) -> bytes:
        return self.text(TOKEN_ALPHABET, 32, 64).encode()

    def of(self, name: str) -> bytes:
        return self.db(int(name[2:])) if name.startswith("db") else self.token()


def fetched(name: str, data: bytes, version: int) -> Fetched:
    return Fetched(name, str(version), data, crc32c(data))


def first_snapshot(values: Values, extra: int = 0) -> Snapshot:
    return Snapshot({name: fetched(name, values.of(name), 1) for name in secret_names(extra)})


# --------------------------------------------------------------------------------------------------
# The measurement
# --------------------------------------------------------------------------------------------------


class Made:
    """The renderer's observer: counts the templates it renders (and fails the benchmark on an error)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, name: str, ok: bool, seconds: float) -> None:
        if not ok:
            raise RuntimeError(f"template {name!r} failed to render")
        self.count += 1


@dataclass
class Case:
    """One renderer and sink with their own directory, rotating ``rotated`` one version at a time."""

    title: str
    renderer: Renderer
    made: Made
    sink: SnapshotSink
    snapshot: Snapshot
    rotated: str
    values: Values
    times: list[float] = field(default_factory=list)
    render_times: list[float] = field(default_factory=list)
    write_times: list[float] = field(default_factory=list)
    rendered: list[int] = field(default_factory=list)
    """Templates rendered again in each swap."""
    files: int = 0

    def rotate(self, record: bool) -> None:
        """The next version of ``rotated``, rendered and written; timed from render to swap done."""
        current = self.snapshot.get(self.rotated)
        assert current is not None
        update = fetched(self.rotated, self.values.of(self.rotated), int(current.version) + 1)
        snapshot = self.snapshot.with_updates([update])  # what the syncer hands over: not timed
        self.made.count = 0
        started = time.perf_counter()
        rendered = self.renderer.render(snapshot)
        rendered_at = time.perf_counter()
        changed = self.sink.write(rendered)
        done = time.perf_counter()
        if not changed:
            raise RuntimeError(f"{self.title}: the rotation changed nothing on disk")
        self.snapshot = snapshot
        self.files = len(rendered.file_outputs()) + 1  # and the manifest
        if record:
            self.times.append(done - started)
            self.render_times.append(rendered_at - started)
            self.write_times.append(done - rendered_at)
            self.rendered.append(self.made.count)


def make_case(
    title: str, directory: Path, templates: Sequence[TemplateSpec], rotated: str, seed: int, extra: int = 0
) -> Case:
    specs, values, made = secret_specs(extra), Values(seed), Made()
    renderer = Renderer(specs, templates, observe=made)
    sink = SnapshotSink(directory, specs, None, renderer=renderer)
    snapshot = first_snapshot(values, extra)
    sink.write(renderer.render(snapshot))  # the first, whole snapshot: not timed
    return Case(title, renderer, made, sink, snapshot, rotated, values)


@dataclass(frozen=True)
class Series:
    """Seconds of one case's recorded swaps, and of their two halves."""

    title: str
    times: tuple[float, ...]
    render_times: tuple[float, ...]
    write_times: tuple[float, ...]
    rendered: int
    """Templates rendered again per swap (the same in every swap)."""
    files: int

    @classmethod
    def of(cls, case: Case) -> Series:
        if len(set(case.rendered)) != 1:
            raise RuntimeError(
                f"{case.title}: templates rendered per swap varied: {sorted(set(case.rendered))}"
            )
        return cls(
            case.title,
            tuple(case.times),
            tuple(case.render_times),
            tuple(case.write_times),
            case.rendered[0],
            case.files,
        )

    @property
    def median(self) -> float:
        return statistics.median(self.times)


@dataclass(frozen=True)
class Cold:
    """A Renderer built (templates compiled) and its first render of the whole snapshot, seconds."""

    title: str
    build: tuple[float, ...]
    render: tuple[float, ...]


@dataclass(frozen=True)
class Result:
    filesystem: str
    directory: str
    plain: Series
    """(a) the baseline."""
    templated: Series
    """(b) what the target is about."""
    worst: Series
    """(c) the rotated secret is in every template."""
    same_files: Series
    """(d) no templates but as many files as (b): what the extra files alone cost."""
    cold_plain: Cold
    cold_templated: Cold

    @property
    def ratio(self) -> float:
        """Median swap with the 20 templates (the rotated secret feeds 2) over the median without."""
        return self.templated.median / self.plain.median

    @property
    def worst_ratio(self) -> float:
        return self.worst.median / self.plain.median

    def paired(self, series: Series) -> list[float]:
        """``series`` over (a) round by round (the two ran next to each other in every round)."""
        return [t / base for t, base in zip(series.times, self.plain.times, strict=True)]

    @property
    def met(self) -> bool:
        return self.ratio <= TARGET_RATIO


def measure_cold(snapshot: Snapshot) -> tuple[Cold, Cold]:
    specs, templates = secret_specs(), template_specs()
    runs: dict[bool, tuple[list[float], list[float]]] = {False: ([], []), True: ([], [])}
    for _ in range(COLD_REPEATS):
        for with_templates in (False, True):
            started = time.perf_counter()
            renderer = Renderer(specs, templates if with_templates else ())
            built = time.perf_counter()
            rendered = renderer.render(snapshot)
            done = time.perf_counter()
            expected = SECRETS + (TEMPLATES if with_templates else 0)
            if len(rendered.outputs or ()) != expected:
                raise RuntimeError(f"cold render: {len(rendered.outputs or ())} outputs, not {expected}")
            runs[with_templates][0].append(built - started)
            runs[with_templates][1].append(done - built)
    plain, templated = (
        Cold(title, tuple(runs[flag][0]), tuple(runs[flag][1]))
        for flag, title in (
            (False, f"{SECRETS} secrets"),
            (True, f"{SECRETS} secrets + {TEMPLATES} templates"),
        )
    )
    return plain, templated


def check_output(case: Case, directory: Path) -> None:
    """The DSN on disk carries the newest password: the swaps really rendered and wrote."""
    item = case.snapshot.get(ROTATED)
    shared = case.snapshot.get(SHARED)
    assert item is not None
    assert shared is not None
    document = json.loads(item.data)
    expected = (
        f"postgresql://{quote(document['username'], safe='')}:{quote(document['password'], safe='')}"
        f"@{document['host']}:{document['port']}/app"
        f"?sslmode=verify-full&sslpassword={quote(shared.data.decode(), safe='')}\n"
    )
    found = (directory / "dsn" / f"{ROTATED}.url").read_text()
    if found.rstrip("\n") != expected.rstrip("\n"):  # whether the final newline is kept is Jinja's option
        raise RuntimeError(f"the DSN on disk is not the newest one: {found!r} != {expected!r}")


def measure() -> Result:
    with shm_tmpdir("bench-render-") as root:
        templates = template_specs()
        cases = [
            make_case(
                f"(a) {SECRETS} secrets, no templates, {ROTATED} rotates", root / "a", (), ROTATED, SEED
            ),
            make_case(
                f"(b) + {TEMPLATES} templates, {ROTATED} rotates (feeds {ROTATED_FEEDS})",
                root / "b",
                templates,
                ROTATED,
                SEED,
            ),
            make_case(
                f"(c) + {TEMPLATES} templates, {SHARED} rotates (feeds all {TEMPLATES}), worst case",
                root / "c",
                templates,
                SHARED,
                SEED + 1,
            ),
            make_case(
                f"(d) {SECRETS + TEMPLATES} secrets, no templates (as many files as (b)), {ROTATED} rotates",
                root / "d",
                (),
                ROTATED,
                SEED,
                extra=TEMPLATES,
            ),
        ]
        gc.collect()
        for round_ in range(WARMUP + ROUNDS):
            # The order within a round turns too, so that no case always follows the same one.
            for offset in range(len(cases)):
                cases[(round_ + offset) % len(cases)].rotate(record=round_ >= WARMUP)
        check_output(cases[1], root / "b")
        plain, templated, worst, same_files = (Series.of(case) for case in cases)
        rendered = (plain.rendered, templated.rendered, worst.rendered, same_files.rendered)
        if rendered != (0, ROTATED_FEEDS, TEMPLATES, 0):
            raise RuntimeError(
                f"templates rendered per swap: {rendered}, expected {(0, ROTATED_FEEDS, TEMPLATES, 0)}"
            )
        cold_plain, cold_templated = measure_cold(cases[1].snapshot)
        return Result(
            filesystem_type(root),
            str(root.parent),
            plain,
            templated,
            worst,
            same_files,
            cold_plain,
            cold_templated,
        )


# --------------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


def spread(times: Sequence[float]) -> str:
    """Median and range, in ms."""
    return f"{ms(statistics.median(times))} ({ms(min(times))}-{ms(max(times))})"


def print_table(result: Result) -> None:
    base = result.plain.median
    print(
        f"\nRotation swap (render + write of one snapshot, one secret a new version), {result.directory} "
        f"({result.filesystem}); {ROUNDS} swaps per case, interleaved round by round after {WARMUP} of "
        "warm-up; ms, median (min-max); ratio of the medians to (a) and (min-max) of the ratio per round"
    )
    print("| case | templates rendered | files written | swap | render | write | ratio to (a) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for series in (result.plain, result.templated, result.worst, result.same_files):
        paired = result.paired(series)
        print(
            f"| {series.title} | {series.rendered} | {series.files} | {spread(series.times)} "
            f"| {spread(series.render_times)} | {spread(series.write_times)} "
            f"| {series.median / base:.3f}x ({min(paired):.2f}-{max(paired):.2f}) |"
        )
    verdict = "met" if result.met else "MISSED"
    print(f"Target: (b) <= {TARGET_RATIO}x (a): {result.ratio:.3f}x, {verdict}")

    cold_base = statistics.median(result.cold_plain.render)
    print(
        f"\nCold start: a Renderer built and its first render of the whole snapshot, {COLD_REPEATS} runs "
        "each, interleaved; ms, median (min-max)"
    )
    print(
        "| configuration | build (templates compiled) | first render | first render, ratio to no templates |"
    )
    print("| --- | ---: | ---: | ---: |")
    for cold in (result.cold_plain, result.cold_templated):
        print(
            f"| {cold.title} | {spread(cold.build)} | {spread(cold.render)} "
            f"| {statistics.median(cold.render) / cold_base:.2f}x |"
        )


def main() -> Result:
    result = measure()
    print_table(result)
    return result


if __name__ == "__main__":
    main()

"""A Snapshot becomes what the app reads: every secret's file and env variable, the keys taken out of JSON
and YAML secrets, and the templates' outputs — all from the one snapshot, so that one swap carries them.

``Renderer.render(snapshot)`` is pure apart from its caches: each output remembers the versions and
checksums of the secrets it was made from, and is made again only when one of them moved (a rotation of
one secret re-renders only the templates that use it; the sink then rewrites nothing else). A failure is
remembered the same way, so a hostile template is not run again on every poll.

When any output fails (a missing key, a payload that is not JSON, a template error) the whole render fails
with a RenderError naming every failing output — never a value — and the sink keeps the last good snapshot
whole. An output whose *required* secret is absent (not fetched yet) is left out, like that secret's own
file; an absent optional secret is simply not in the template's ``secrets``.

The set of secrets may change while the agent runs (selections): ``Renderer.replan`` plans for the new set,
keeping what was rendered where it still applies (see there). A template sees the secrets it names, those
of the selections it names (``select``, told by ``origins``), or with neither every secret there is now.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from agent.config import SecretSpec, TemplateSpec
from agent.core.model import Fetched, Output, OutputKind, Snapshot, crc32c
from agent.errors import ConfigError, Problem, SinkError
from agent.render.keys import ExtractError, KeyPath, extract, parse_key_path

if TYPE_CHECKING:
    from agent.render.templates import CompiledTemplate, TemplateInput

# Jinja2 and the output formats are imported by the configurations that use them, on first use: an agent
# that only delivers whole secrets (and every `init` of one) does not pay for loading them.

log = logging.getLogger(__name__)

RenderObserver = Callable[[str, bool, float], None]
"""Told after each template render: (template name, succeeded, seconds)."""


class RenderError(SinkError):
    """Some outputs could not be rendered; the snapshot was not written. Names outputs, never values."""

    def __init__(self, failures: Sequence[tuple[str, str]]) -> None:
        self.failures = tuple(failures)
        """(output label, reason) of every failing output."""
        shown = "; ".join(f"{label}: {reason}" for label, reason in self.failures)
        super().__init__(
            f"cannot render {len(self.failures)} output(s), keeping the last good snapshot: {shown}"
        )


@dataclass(frozen=True)
class _Plan:
    """How to make one output: from which secrets, by what means, to where."""

    kind: OutputKind
    owner: str
    inputs: tuple[str, ...]
    """The secrets it is made from; required ones must all be present."""
    file: str | None
    env: str | None
    mode: int
    uid: int | None
    gid: int | None
    key: str | None = None
    key_path: KeyPath | None = None
    template: CompiledTemplate | None = None
    format_entries: tuple[tuple[str, str], ...] = ()
    """For an output format: (entry key, secret name) in order."""
    format_name: str | None = None
    fingerprint: str = ""
    """A hash of everything that decides the output's bytes apart from the values (its inputs' references
    and payload settings, its key or template text, where it goes): a file left by a previous agent with
    the same fingerprint is what this configuration would make of the same values."""

    def output(self, data: bytes, version: str, fetched_at: float, checksum: int | None = None) -> Output:
        """This output holding ``data``."""
        return Output(
            self.kind,
            self.owner,
            data,
            version,
            crc32c(data) if checksum is None else checksum,
            self.file,
            self.env,
            self.mode,
            self.uid,
            self.gid,
            self.key,
            fetched_at,
        )

    @property
    def place(self) -> str:
        """Where the output lands, as the manifest names it: its file, else ``..env:NAME``."""
        # No configured file can start with "..": the names are reserved for the atomic writer.
        return self.file if self.file is not None else f"..env:{self.env}"

    @property
    def derived(self) -> bool:
        """Whether the file holds something other than one secret's payload unchanged."""
        return self.kind != "secret" or self.key is not None

    @property
    def label(self) -> str:
        """How messages name it: ``secret 'db'``, ``secret 'db' key 'password'``, ``template 'url'``."""
        if self.kind == "template":
            return f"template {self.owner!r}"
        if self.kind == "key":
            return f"secret {self.owner!r} key {self.key!r}"
        return f"secret {self.owner!r}"


def plan_outputs(
    secrets: Sequence[SecretSpec],
    templates: Sequence[TemplateSpec],
    origins: Mapping[str, str] | None = None,
) -> list[_Plan]:
    """Every output of the configuration, in order (secrets, their keys, templates). Raises ConfigError
    with every problem the configuration alone shows: key syntax, template syntax, unknown secrets.

    ``origins``: the selection (``select[].name``) that delivers each selected secret, by local name: a
    template with ``select`` sees the secrets of those selections (besides its ``secrets``); one with
    neither sees every secret."""
    problems: list[Problem] = []
    plans: list[_Plan] = []
    known = [spec.name for spec in secrets]
    by_name = {spec.name: spec for spec in secrets}
    origins = origins or {}
    for index, spec in enumerate(secrets):
        where = f"secrets[{index}]"
        if spec.deliver:
            path = _key_path(spec.key, f"{where}.key", problems)
            plans.append(
                _Plan(
                    "secret",
                    spec.name,
                    (spec.name,),
                    spec.file,
                    spec.env,
                    spec.mode,
                    spec.uid,
                    spec.gid,
                    key=spec.key,
                    key_path=path,
                )
            )
        for position, key in enumerate(spec.keys):
            path = _key_path(key.key, f"{where}.keys[{position}].key", problems)
            plans.append(
                _Plan(
                    "key",
                    spec.name,
                    (spec.name,),
                    key.file,
                    key.env,
                    spec.mode if key.mode is None else key.mode,
                    spec.uid if key.uid is None else key.uid,
                    spec.gid if key.gid is None else key.gid,
                    key=key.key,
                    key_path=path,
                )
            )
    for index, template in enumerate(templates):
        where = f"templates[{index}]"
        unknown = [(i, name) for i, name in enumerate(template.secrets) if name not in by_name]
        for position, name in unknown:
            # The loader checks the configured names; a secret removed while running lands here.
            problems.append(Problem(f"{where}.secrets[{position}]", f"no secret is named {name!r}"))
        if unknown:
            continue
        selected = [name for name in known if origins.get(name) in template.select]
        chosen = [*template.secrets, *(name for name in selected if name not in template.secrets)]
        everything = not template.secrets and not template.select
        visible = known if everything else chosen
        common = (template.file, template.env, template.mode, template.uid, template.gid)
        if template.format is not None:
            if everything:
                names = [spec.name for spec in secrets if spec.deliver]
            else:  # the selected secrets as the default would take them: those delivered
                extra = chosen[len(template.secrets) :]
                names = [*template.secrets, *(name for name in extra if by_name[name].deliver)]
            keyed = [(by_name[name].env if template.format == "dotenv" else name, name) for name in names]
            plans.append(
                _Plan(
                    "template",
                    template.name,
                    tuple(names),
                    *common,
                    format_entries=tuple(keyed),
                    format_name=template.format,
                )
            )
            continue
        from agent.render.templates import TemplateError, compile_template

        try:
            compiled = compile_template(template.name, template.text or "", known=visible)
        except TemplateError as error:
            problems.append(Problem(f"{where}.{'source' if template.source else 'text'}", str(error)))
            continue
        uses = tuple(visible) if compiled.uses is None else tuple(n for n in visible if n in compiled.uses)
        plans.append(_Plan("template", template.name, uses, *common, template=compiled))
    if problems:
        raise ConfigError(problems)
    texts = {template.name: template.text for template in templates}
    return [dataclasses.replace(plan, fingerprint=_fingerprint(plan, by_name, texts)) for plan in plans]


def _fingerprint(plan: _Plan, specs: Mapping[str, SecretSpec], texts: Mapping[str, str | None]) -> str:
    inputs = [[str(specs[n].ref), specs[n].format, specs[n].decode, specs[n].key] for n in plan.inputs]
    text = texts.get(plan.owner) if plan.kind == "template" else None
    described = [plan.kind, plan.owner, plan.key, plan.file, plan.mode, plan.uid, plan.gid, inputs, text]
    described += [plan.format_name, [list(entry) for entry in plan.format_entries]]
    return hashlib.sha256(json.dumps(described).encode("utf-8")).hexdigest()[:32]


def check_outputs(secrets: Sequence[SecretSpec], templates: Sequence[TemplateSpec]) -> list[Problem]:
    """The problems ``plan_outputs`` would raise (for ``check-config``), as a list."""
    try:
        plan_outputs(secrets, templates)
    except ConfigError as error:
        return list(error.problems)
    return []


def _key_path(text: str | None, where: str, problems: list[Problem]) -> KeyPath | None:
    if text is None:
        return None
    try:
        return parse_key_path(text)
    except ValueError as error:
        problems.append(Problem(where, str(error)))
        return None


_CacheKey = tuple[tuple[str, str, int] | None, ...]


class Renderer:
    """Renders snapshots for one configuration (see the module docstring). Not thread-safe: one caller."""

    def __init__(
        self,
        secrets: Sequence[SecretSpec],
        templates: Sequence[TemplateSpec] = (),
        *,
        origins: Mapping[str, str] | None = None,
        observe: RenderObserver | None = None,
        max_output: int = 1024 * 1024,
        max_seconds: float = 1.0,
    ) -> None:
        """Raises ConfigError for problems the configuration alone shows (see ``plan_outputs``, which says
        what ``origins`` is)."""
        self.specs = {spec.name: spec for spec in secrets}
        self.template_specs = tuple(templates)
        self.origins = dict(origins or {})
        self.plans = plan_outputs(secrets, templates, self.origins)
        self.observe = observe
        self.max_output = max_output
        self.max_seconds = max_seconds
        self._cache: dict[int, tuple[_CacheKey, Output | str]] = {}
        self._carried: dict[int, Output] = {}
        """Files a previous agent rendered, served while the secrets they need are not fetched yet."""
        self._delivered: dict[str, tuple[tuple[str, int], bytes | str]] = {}

    @property
    def templates(self) -> list[str]:
        return [plan.owner for plan in self.plans if plan.kind == "template"]

    def check_replan(
        self, secrets: Sequence[SecretSpec], origins: Mapping[str, str] | None = None
    ) -> list[_Plan]:
        """The plans ``replan(secrets, origins)`` would take, or its ConfigError or ValueError; changes
        nothing (safe while a render runs)."""
        plans = plan_outputs(secrets, self.template_specs, self.origins if origins is None else origins)
        clashes = _conflicts(plans) - _conflicts(self.plans)
        if clashes:
            raise ValueError("; ".join(sorted(clashes)))
        return plans

    def replan(
        self, secrets: Sequence[SecretSpec], origins: Mapping[str, str] | None = None
    ) -> Callable[[], None]:
        """Render for ``secrets`` from now on (the same templates), when the set of secrets changed while
        running (selections): their own outputs and keys come and go, and a template that sees every secret
        (or a selection's) sees the new set. ``origins``: as ``plan_outputs`` says (default: those known).

        What was rendered is kept where it still applies: an output planned as before (same fingerprint) is
        not made again; one whose inputs changed (a template that sees one secret more) is made again, and
        until the secrets it needs are all fetched it keeps serving what it served (last-known-good: a newly
        selected secret that fails to fetch does not take a template's file away). The outputs of secrets no
        longer there are dropped, with their cached values.

        Raises ConfigError (a template naming a secret no longer there, a bad key) or ValueError (an output
        of a new secret takes a file or env variable another output has) and then changes nothing. Returns
        what undoes it (a commit that failed): the plans and caches as they were."""
        origins = dict(self.origins if origins is None else origins)
        plans = self.check_replan(secrets, origins)
        before = (self.specs, self.origins, self.plans, self._cache, self._carried, self._delivered)
        same = {_identity(plan): index for index, plan in enumerate(self.plans)}
        place = {(plan.kind, plan.owner, plan.place): index for index, plan in enumerate(self.plans)}
        cache: dict[int, tuple[_CacheKey, Output | str]] = {}
        carried: dict[int, Output] = {}
        for index, plan in enumerate(plans):
            old = same.get(_identity(plan))
            if old is not None:
                if (entry := self._cache.get(old)) is not None:
                    cache[index] = entry
                if (kept := self._carried.get(old)) is not None:
                    carried[index] = kept
                continue
            old = place.get((plan.kind, plan.owner, plan.place))
            if old is None:
                continue
            # Made differently now: made again once its inputs are there; until then what it was.
            entry = self._cache.get(old)
            last = entry[1] if entry is not None else None
            if isinstance(last, Output):
                carried[index] = last
            elif (kept := self._carried.get(old)) is not None:
                carried[index] = kept
        names = {spec.name for spec in secrets}
        self.specs = {spec.name: spec for spec in secrets}
        self.origins = {name: origin for name, origin in origins.items() if name in names}
        self.plans = plans
        self._cache, self._carried = cache, carried
        self._delivered = {name: value for name, value in self._delivered.items() if name in names}

        def undo() -> None:
            self.specs, self.origins, self.plans, self._cache, self._carried, self._delivered = before

        return undo

    def fingerprints(self) -> dict[str, str]:
        """Place -> fingerprint of the derived outputs (keys, templates): what the manifest records so that a
        restarted agent can tell which of the files on disk it would make the same way. The place is the
        file path, or ``..env:NAME`` for an output that is only an env variable (kept in the env file)."""
        return {place: plan.fingerprint for plan in self.plans if plan.derived and (place := plan.place)}

    def carry(self, files: Mapping[str, tuple[str, str, bytes, float]]) -> int:
        """Keep serving derived outputs a previous agent wrote — place (see ``fingerprints``) -> (fingerprint,
        version, bytes, time) — until the secrets they are made from are fetched again (last-known-good across
        a restart: a key or a template cannot be turned back into the payload it came from). Only those whose
        fingerprint is this configuration's are taken. Returns how many."""
        for index, plan in enumerate(self.plans):
            found = files.get(plan.place) if plan.place and plan.derived else None
            if found is not None and found[0] == plan.fingerprint:
                _, version, data, when = found
                self._carried[index] = plan.output(data, version, when)
        return len(self._carried)

    def render(self, snapshot: Snapshot) -> Snapshot:
        """``snapshot`` with its outputs. Raises RenderError naming every output that failed."""
        outputs: list[Output] = []
        failures: list[tuple[str, str]] = []
        for index, plan in enumerate(self.plans):
            absent = [name for name in plan.inputs if snapshot.get(name) is None]
            waiting = bool(absent) if plan.kind != "template" else any(self.specs[n].required for n in absent)
            if waiting:
                # Not fetched yet: left out like the secret's own file, or what the last agent wrote.
                if (carried := self._carried.get(index)) is not None:
                    outputs.append(carried)
                continue
            self._carried.pop(index, None)
            key = tuple(_stamp(snapshot.get(name)) for name in plan.inputs)
            cached = self._cache.get(index)
            if cached is not None and cached[0] == key:
                result = cached[1]
            else:
                result = self._make(plan, snapshot)
                self._cache[index] = (key, result)
            if isinstance(result, str):
                failures.append((plan.label, result))
            else:
                outputs.append(result)
        if failures:
            raise RenderError(failures)
        return snapshot.with_outputs(outputs)

    def _make(self, plan: _Plan, snapshot: Snapshot) -> Output | str:
        """The output, or the reason it failed (safe to log)."""
        if plan.template is not None:
            from agent.render.templates import TemplateError, render_template

            started = time.perf_counter()
            try:
                data = render_template(
                    plan.template,
                    self._template_inputs(plan, snapshot),
                    max_output=self.max_output,
                    max_seconds=self.max_seconds,
                )
            except TemplateError as error:
                self._observed(plan.owner, False, time.perf_counter() - started)
                return str(error)
            self._observed(plan.owner, True, time.perf_counter() - started)
            return self._output(plan, data, None, snapshot)
        if plan.format_name is not None:
            from agent.render.formats import FormatError, render_format

            started = time.perf_counter()
            entries: list[tuple[str, bytes]] = []
            for entry, name in plan.format_entries:
                item = snapshot.get(name)
                if item is None:
                    continue  # an optional secret not there
                value = self._delivered_value(item)
                if isinstance(value, str):
                    self._observed(plan.owner, False, time.perf_counter() - started)
                    return f"secret {name!r}: {value}"
                entries.append((entry, value))
            try:
                data = render_format(plan.format_name, entries)  # type: ignore[arg-type]
            except FormatError as error:
                self._observed(plan.owner, False, time.perf_counter() - started)
                return str(error)
            self._observed(plan.owner, True, time.perf_counter() - started)
            return self._output(plan, data, None, snapshot)
        item = snapshot.get(plan.owner)
        assert item is not None
        spec = self.specs[plan.owner]
        try:
            data = extract(item.data, plan.key_path, format=spec.format, decode=spec.decode)
        except ExtractError as error:
            return str(error)
        return self._output(plan, data, item, snapshot)

    def _delivered_value(self, item: Fetched) -> bytes | str:
        """A secret's own value as its file carries it (decoded, its ``key`` taken), or why not."""
        stamp = (item.version, item.crc32c)
        cached = self._delivered.get(item.name)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        spec = self.specs[item.name]
        path = None if spec.key is None else parse_key_path(spec.key)
        value: bytes | str
        try:
            value = extract(item.data, path, format=spec.format, decode=spec.decode)
        except ExtractError as error:
            value = str(error)
        self._delivered[item.name] = (stamp, value)
        return value

    def _template_inputs(self, plan: _Plan, snapshot: Snapshot) -> dict[str, TemplateInput]:
        from agent.render.templates import TemplateInput

        inputs: dict[str, TemplateInput] = {}
        for name in plan.inputs:
            item = snapshot.get(name)
            if item is not None:
                spec = self.specs[name]
                inputs[name] = TemplateInput(item.data, item.version, spec.format, spec.decode)
        return inputs

    def _output(self, plan: _Plan, data: bytes, item: Fetched | None, snapshot: Snapshot) -> Output:
        checksum = crc32c(data)
        present = [f for name in plan.inputs if (f := snapshot.get(name)) is not None]
        # A template's version names its inputs' versions, not its bytes: versions reach logs and headers,
        # and a checksum of a short composed value would be an offline oracle for it.
        version = item.version if item is not None else _inputs_tag(present)
        times = [f.fetched_at for f in present]
        return plan.output(data, version, max(times, default=0.0), checksum)

    def _observed(self, name: str, ok: bool, seconds: float) -> None:
        if self.observe is not None:
            self.observe(name, ok, seconds)


def _identity(plan: _Plan) -> tuple[str, str | None]:
    """What makes two plans the same output, made the same way: the fingerprint (inputs, settings, text,
    file) and the env variable (which the fingerprint leaves out)."""
    return plan.fingerprint, plan.env


def _conflicts(plans: Sequence[_Plan]) -> set[str]:
    """Outputs that take the same file or env variable, or a file where another needs a directory."""
    found: set[str] = set()
    files: dict[PurePosixPath, _Plan] = {}
    envs: dict[str, _Plan] = {}
    for plan in plans:
        if plan.env is not None and (other := envs.setdefault(plan.env, plan)) is not plan:
            found.add(f"{plan.label} and {other.label} both take env {plan.env!r}")
        if plan.file is not None and (other := files.setdefault(PurePosixPath(plan.file), plan)) is not plan:
            found.add(f"{plan.label} and {other.label} both take file {plan.file!r}")
    for path, plan in files.items():
        for parent in path.parents:
            if (owner := files.get(parent)) is not None:
                found.add(f"{plan.label} needs {str(parent)!r} as a directory: the file of {owner.label}")
    return found


def _inputs_tag(inputs: Sequence[Fetched]) -> str:
    """``t`` + 16 hex digits of a hash of the inputs' names and versions (stable across restarts)."""
    text = "\n".join(f"{f.name}@{f.version}" for f in inputs)
    return "t" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _stamp(item: Fetched | None) -> tuple[str, str, int] | None:
    return None if item is None else (item.name, item.version, item.crc32c)

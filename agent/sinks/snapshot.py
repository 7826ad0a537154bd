"""SnapshotSink: a Snapshot becomes the secret files, a manifest and the env file, in one atomic swap.

What lands in the timestamped directory of ``output_dir`` (see ``agent.sinks.atomic``):

* each secret at its ``file`` path, with its mode and owner;
* ``..manifest.json`` (hidden, mode 0400): per secret its reference, version, CRC32C and file; no values.
  It lets a restarted agent adopt what is on disk (``adopt()``) instead of starting empty;
* the env file, when ``env_file`` lies inside ``output_dir`` (a relative path is taken relative to
  ``output_dir``): then it is swapped together with the files.

An ``env_file`` outside ``output_dir`` cannot share the swap; it is written right after it, atomically on
its own (temporary file, fsync, rename). If that second step fails, the files are already new and the
SinkError says so; the next write retries it (the files are then unchanged and not rewritten).

A value the env file cannot carry (not UTF-8, NUL, CR, see ``agent.render.envfile``) does not fail the
snapshot: its file is written, the env file leaves the variable out, and a warning names the secret and
the reason (once, and again whenever the set of left-out secrets changes).
"""

from __future__ import annotations

import io
import json
import logging
import os
import stat
import time
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from agent.config import NOTIFIED_FILE_NAME, SELECTION_FILE_NAME, TOKEN_FILE_NAME, SecretSpec
from agent.core.atomicfile import (
    make_directories,
    read_regular_file_status,
    remove_leftovers,
    write_atomically,
)
from agent.core.model import Fetched, Output, Snapshot, crc32c
from agent.core.words import plural
from agent.errors import ConfigError, Problem, SinkError
from agent.render.envfile import render_env_file, value_problem
from agent.render.outputs import Renderer
from agent.sinks.atomic import AtomicDirWriter, FileEntry, errno_name, validate_path

log = logging.getLogger(__name__)

MANIFEST = "..manifest.json"
MANIFEST_FORMAT = 1
ENV_DIR_MODE = 0o755
"""Mode of the directories created for an env file outside ``output_dir`` (as the output directory's)."""
RESERVED_NAMES = frozenset({TOKEN_FILE_NAME, NOTIFIED_FILE_NAME, SELECTION_FILE_NAME})
ENV_PLACE = "..env:"
"""How the manifest names an output that is only an env variable: ``..env:NAME`` (never a file name)."""
MAX_ENV_FILE_BYTES = 16 * 1024 * 1024
"""Largest env file read back at adoption."""
"""Files the agent keeps in ``output_dir`` beside the snapshot: an env file there would be overwritten."""


class SnapshotSink:
    """The ``Sink`` that writes secret files and the env file under ``output_dir`` (synchronous)."""

    def __init__(
        self,
        output_dir: Path,
        specs: Sequence[SecretSpec],
        env_file: Path | None,
        *,
        env_file_mode: int = 0o440,
        renderer: Renderer | None = None,
    ) -> None:
        """Raises ConfigError when ``env_file`` collides with a secret's file or uses a reserved name.
        ``renderer``: how a snapshot not rendered yet becomes files (default: the secrets' own outputs)."""
        self.output_dir = Path(output_dir)
        self.specs = tuple(specs)
        self.renderer = renderer if renderer is not None else Renderer(self.specs)
        self.env_file_mode = env_file_mode
        self.writer = AtomicDirWriter(self.output_dir)
        self.env_inside: str | None = None
        """The env file's path inside the snapshot, when it shares the swap."""
        self.env_outside: Path | None = None
        """The env file's path when it lies outside ``output_dir`` (a second atomic step)."""
        if env_file is not None:
            self._place_env_file(Path(env_file))
        self._cleaned = False
        self._warned: frozenset[tuple[str, str]] = frozenset()

    def _place_env_file(self, env_file: Path) -> None:
        root = Path(os.path.abspath(self.output_dir))
        absolute = Path(os.path.abspath(root / env_file))
        if not absolute.is_relative_to(root):
            self.env_outside = absolute
            return
        relative = absolute.relative_to(root).as_posix()
        if any(part.startswith("..") for part in PurePosixPath(relative).parts):
            raise ConfigError(Problem("env_file", f"{relative!r}: names starting with '..' are reserved"))
        if relative in RESERVED_NAMES:
            raise ConfigError(Problem("env_file", f"{relative!r} is reserved for the agent's own files"))
        try:
            pure = validate_path(relative)
        except SinkError as error:
            raise ConfigError(Problem("env_file", str(error))) from None
        for plan in self.renderer.plans:
            if plan.file is None:
                continue
            spec_path = PurePosixPath(plan.file)
            if pure == spec_path or pure in spec_path.parents or spec_path in pure.parents:
                raise ConfigError(Problem("env_file", f"{relative!r} collides with the file of {plan.label}"))
        self.env_inside = relative

    # -- the Sink protocol ------------------------------------------------------------------------

    def write(self, snapshot: Snapshot) -> bool:
        """Write ``snapshot`` (secrets not in it are simply absent); True when anything on disk changed.

        Raises SinkError (no values in it); the previous snapshot is then intact.
        """
        self._cleanup_once()
        if snapshot.outputs is None:
            snapshot = self.renderer.render(snapshot)  # RenderError: nothing written, the last snapshot stays
        files: dict[str, FileEntry] = {}
        manifest: dict[str, dict[str, object]] = {}
        env_entries: list[tuple[str, str, bytes]] = []
        left_out: set[tuple[str, str]] = set()
        by_name = self.renderer.specs  # the secrets served now: select adds and removes some
        for output in snapshot.outputs or ():
            if output.file is not None:
                files[output.file] = FileEntry(output.data, output.mode, output.uid, output.gid)
            spec = by_name.get(output.owner) if output.kind == "secret" else None
            item = snapshot.get(output.owner) if spec is not None else None
            if spec is not None and item is not None and _adoptable(spec):
                manifest[spec.name] = {
                    "ref": str(spec.ref),
                    "version": item.version,
                    "crc32c": item.crc32c,
                    "file": spec.file,
                }
            if output.env is None:
                continue
            problem = value_problem(output.data)
            if problem is None:
                env_entries.append((output.label, output.env, output.data))
            else:
                where = (
                    "its file is written" if output.file is not None else "it has no file: only exec gets it"
                )
                left_out.add((f"{output.described} ({where})", problem))
        fingerprints = self.renderer.fingerprints()
        derived = {
            place: {"fingerprint": fingerprint, "version": output.version, "crc32c": output.crc32c}
            for output in snapshot.outputs or ()
            if (fingerprint := fingerprints.get(place := _place(output))) is not None
        }
        files[MANIFEST] = FileEntry(_render_manifest(manifest, derived), 0o400)
        env_bytes = render_env_file(env_entries) if self.env_inside or self.env_outside else None
        if self.env_inside is not None and env_bytes is not None:
            files[self.env_inside] = FileEntry(env_bytes, self.env_file_mode)
        changed = self.writer.write(files)
        if self.env_outside is not None and env_bytes is not None:
            changed = self._write_outside(self.env_outside, env_bytes, files_changed=changed) or changed
        self._warn_left_out(frozenset(left_out) if env_bytes is not None else frozenset())
        return changed

    def _warn_left_out(self, left_out: frozenset[tuple[str, str]]) -> None:
        if left_out == self._warned:
            return
        for name, reason in sorted(left_out):
            log.warning("%s is left out of the env file: %s", name, reason)
        self._warned = left_out

    # -- adoption after a restart -----------------------------------------------------------------

    def adopt(self) -> Snapshot:
        """What a previous agent left on disk, as a Snapshot, so a restart keeps serving last-known-good.

        First removes the leftovers of an interrupted write (``cleanup()``). Adopts a secret only when it
        is still configured with the same reference and file and its file matches the manifest's CRC32C.
        Reads only the manifest and the files of configured secrets, each a regular file of ours of
        bounded size (``AtomicDirWriter.current``): a planted snapshot is refused, never read through.
        Never raises for unreadable leftovers: it logs why and adopts less.
        """
        try:
            self._cleanup_once()
            manifest_data = self.writer.current([MANIFEST]).get(MANIFEST)
            recorded = _parse_manifest(manifest_data)
            self._carry_derived(_parse_derived(manifest_data))
            wanted = [
                spec
                for spec in self.renderer.specs.values()
                if _adoptable(spec)
                and (entry := recorded.get(spec.name)) is not None
                and entry.get("ref") == str(spec.ref)
                and entry.get("file") == spec.file
            ]
            files = self.writer.current([spec.file for spec in wanted])
        except SinkError as error:  # the first write() reports it properly
            log.warning("cannot adopt the existing snapshot: %s", error)
            return Snapshot()
        # When the previous agent swapped it in: an honest lower bound of when these values were fetched.
        fetched_at = self.writer.snapshot_time() or time.time()
        adopted: list[Fetched] = []
        for spec in wanted:
            entry = recorded[spec.name]
            data = files.get(spec.file)
            if data is None or crc32c(data) != entry.get("crc32c"):
                log.warning("not adopting %s: its file does not match the manifest", spec.name)
                continue
            adopted.append(Fetched(spec.name, str(entry["version"]), data, crc32c(data), fetched_at))
        if adopted:
            log.info("adopted %s already in %s", plural(len(adopted), "secret"), self.output_dir)
        return Snapshot({f.name: f for f in adopted})

    def _carry_derived(self, recorded: dict[str, dict[str, object]]) -> None:
        """Hand the renderer the derived outputs (keys, templates: their files, or their variables in the
        env file) a previous agent wrote with this
        configuration's fingerprints, checked against the manifest, to serve until their secrets are
        fetched again. Raises SinkError like ``adopt`` (which reports it)."""
        fingerprints = self.renderer.fingerprints()
        wanted = [
            path for path, entry in recorded.items() if entry.get("fingerprint") == fingerprints.get(path)
        ]
        if not wanted:
            return
        files = self.writer.current([path for path in wanted if not path.startswith(ENV_PLACE)])
        files.update(self._env_values([path for path in wanted if path.startswith(ENV_PLACE)]))
        when = self.writer.snapshot_time() or time.time()
        carried: dict[str, tuple[str, str, bytes, float]] = {}
        for path in wanted:
            data, entry = files.get(path), recorded[path]
            if data is None or crc32c(data) != entry.get("crc32c"):
                log.warning("not keeping %s: the file does not match the manifest", path)
                continue
            carried[path] = (str(entry["fingerprint"]), str(entry["version"]), data, when)
        if kept := self.renderer.carry(carried):
            log.info(
                "kept %d rendered file(s) already in %s until their secrets are fetched",
                kept,
                self.output_dir,
            )

    def _env_values(self, places: list[str]) -> dict[str, bytes]:
        """The values of env-only outputs (``..env:NAME``) as the env file on disk holds them (it reads back
        exactly through python-dotenv), bounded and without following a link; {} when there is none."""
        if not places:
            return {}
        try:
            if self.env_inside is not None:
                data = self.writer.current([self.env_inside]).get(self.env_inside)
            elif self.env_outside is not None:
                data = read_regular_file_status(self.env_outside, MAX_ENV_FILE_BYTES)[1]
            else:
                return {}
        except OSError:
            return {}
        if data is None:
            return {}
        # Only an agent restarted over an env file with env-only outputs reads one back: init on an empty
        # volume never needs python-dotenv.
        from dotenv import dotenv_values

        try:
            values = dotenv_values(stream=io.StringIO(data.decode("utf-8")), interpolate=False)
        except (UnicodeDecodeError, ValueError):
            return {}
        found: dict[str, bytes] = {}
        for place in places:
            value = values.get(place.removeprefix(ENV_PLACE))
            if value is not None:
                found[place] = value.encode("utf-8")
        return found

    def _cleanup_once(self) -> None:
        if self._cleaned:
            return
        self.writer.cleanup()
        if self.env_outside is not None:
            remove_leftovers(self.env_outside)
        self._cleaned = True

    # -- an env file outside output_dir -----------------------------------------------------------

    def _write_outside(self, path: Path, data: bytes, *, files_changed: bool) -> bool:
        try:
            # Compared without following a link, bounded: a link, FIFO or huge file planted there is replaced.
            info, current = read_regular_file_status(path, len(data))
            if current == data and stat.S_IMODE(info.st_mode) == self.env_file_mode:
                return False
        except OSError:
            pass  # missing, unreadable or not a file of ours: (re)write it
        try:
            make_directories(path.parent, ENV_DIR_MODE)
            write_atomically(path, data, mode=self.env_file_mode)
        except OSError as error:
            files = "the secret files were swapped but " if files_changed else ""
            raise SinkError(f"{files}the env file {path} was not written: {errno_name(error)}") from None
        return True


def _place(output: Output) -> str:
    """Where the manifest says an output is: its file, or ``..env:NAME`` (see ``Renderer.fingerprints``)."""
    return output.file if output.file is not None else f"{ENV_PLACE}{output.env}"


def _adoptable(spec: SecretSpec) -> bool:
    """Whether the secret's file holds its payload unchanged, so that a restarted agent can take it back.
    (A key or a decoded payload cannot be turned back into the payload; those are fetched again.)"""
    return spec.deliver and spec.key is None and spec.decode == "none"


def _render_manifest(manifest: dict[str, dict[str, object]], derived: dict[str, dict[str, object]]) -> bytes:
    document = {"format": MANIFEST_FORMAT, "secrets": manifest, "outputs": derived}
    return (json.dumps(document, indent=1, sort_keys=True) + "\n").encode("utf-8")


def _parse_manifest(data: bytes | None) -> dict[str, dict[str, object]]:
    if data is None:
        return {}
    try:
        document = json.loads(data)
        entries = document["secrets"] if document.get("format") == MANIFEST_FORMAT else {}
    except (ValueError, TypeError, KeyError, AttributeError):
        log.warning("ignoring an unreadable %s", MANIFEST)
        return {}
    if not isinstance(entries, dict):
        return {}
    return {
        str(name): entry
        for name, entry in entries.items()
        if isinstance(entry, dict) and {"version", "crc32c", "file"} <= entry.keys()
    }


def _parse_derived(data: bytes | None) -> dict[str, dict[str, object]]:
    """The manifest's derived files: path -> {fingerprint, version, crc32c}; {} when absent or unreadable."""
    if data is None:
        return {}
    try:
        document = json.loads(data)
        entries = document.get("outputs") if document.get("format") == MANIFEST_FORMAT else None
    except (ValueError, TypeError, AttributeError):
        return {}  # _parse_manifest already said so
    if not isinstance(entries, dict):
        return {}
    return {
        str(path): entry
        for path, entry in entries.items()
        if isinstance(entry, dict) and {"fingerprint", "version", "crc32c"} <= entry.keys()
    }

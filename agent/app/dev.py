"""``dev``: the outputs and the endpoint of ``run``, from a .env file watched for edits (or the emulator),
into ``./.secrets`` by default, with a hint when git would commit them. With no secrets configured, every
key of the .env file is served: a round of ``serve`` per set of keys."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from agent.app.build import Mode
from agent.app.serve import Session, serve, serve_round
from agent.config import Config
from agent.errors import AgentError, ConfigError, Problem, SourceError

if TYPE_CHECKING:
    from agent.sources.dotenv import DotenvKeys, DotenvSource

log = logging.getLogger("agent")


def run_dev(config: Config) -> int:
    """``dev``: the same outputs from a watched .env file, into ``./.secrets`` unless ``output_dir`` is set.

    With no secrets configured, every key of the .env file is served (``serve_every_key``)."""
    from agent.observe.logs import configure_logging
    from agent.sinks.lock import OutputDirLock

    if (problem := config.select_problem("dev")) is not None:
        # A configuration problem (exit 2), said before anything is touched.
        raise ConfigError(Problem("select", problem))
    configure_logging(config.log_level, config.log_format)
    every_key = serves_every_key(config, "dev")
    if every_key and not config.dotenv.file.is_file():
        # Said before the output directory is made: a mistyped command leaves nothing behind.
        raise AgentError(
            f"dev has nothing to serve: no secrets are configured and there is no .env file at "
            f"{config.dotenv.file}; create it with KEY=value lines, name another one with --dotenv FILE, "
            "or configure secrets (-c FILE)"
        )
    output_dir = config.output_dir_for("dev")
    with OutputDirLock(output_dir):
        suggest_gitignore(output_dir)
        return asyncio.run(serve(config, "dev", serve_every_key if every_key else None))


def suggest_gitignore(output_dir: Path) -> None:
    """One warning when ``output_dir`` lies in a git work tree that does not ignore it, with the line that
    fixes it. Asks ``git check-ignore`` (the user's own git, rules and excludes); says nothing when git is
    missing, slow, or the directory is in no work tree."""
    import shutil
    import subprocess

    git = shutil.which("git")
    if git is None:
        return
    absolute = Path(os.path.abspath(output_dir))
    try:
        # Exit 0: ignored; 1: in a work tree and not ignored; 128: no work tree (or outside it).
        done = subprocess.run(  # noqa: S603 - git from PATH, the arguments are ours and a path
            [git, "-C", str(absolute.parent), "check-ignore", "-q", "--", f"{absolute}/"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return
    if done.returncode != 1:
        return
    ignore_file = output_dir.parent / ".gitignore" if output_dir.parent != Path(".") else Path(".gitignore")
    log.warning(
        "hint: the secrets go to %s, inside a git work tree that does not ignore it; "
        "keep them out of commits: echo '%s/' >> %s",
        output_dir,
        output_dir.name,
        ignore_file,
    )


def serves_every_key(config: Config, mode: Mode) -> bool:
    """``dev`` on a .env file with no secrets configured: every key of the file is served."""
    return mode == "dev" and not config.secrets and config.source_for("dev") == "dotenv"


async def serve_every_key(config: Config, source: DotenvSource, session: Session) -> None:
    """``dev`` with no secrets configured: each key of the .env file is a secret of that name (its file and
    its env entry are the key as written; ``secrets_for_keys``).

    A pipeline serves a fixed set of secrets, so an edit that adds or removes a key ends the round and a
    new one starts with the new set: the new snapshot is written whole (a removed key's file goes, since
    here the file is the configuration, not a backend that might be failing), the app is told, and the
    endpoint binds the same address again with the same token. A file that has no key left (an editor
    halfway through a save, most likely) changes nothing until keys come back. Edits of values alone flow
    as with any watched .env file. One watcher follows the file for the whole run, so an edit made while a
    round starts is not missed.
    """
    from agent.sources.dotenv import secrets_for_keys

    try:
        keys = source.keys()
    except SourceError as error:
        hint = f" ({error.hint})" if error.hint else ""
        raise AgentError(f"dev has nothing to serve: {error.message}{hint}") from None
    watch = _KeyWatch(source)
    watcher = asyncio.create_task(watch.run(), name="watch")
    skipped = 0
    try:
        while not session.stop.is_set():
            if keys.skipped != skipped:
                skipped = keys.skipped
                if skipped:
                    log.warning(
                        "dev: %d entr%s of %s not served: only KEY=value lines are, KEY being letters, "
                        "digits and '_' (not starting with a digit)",
                        skipped,
                        "y" if skipped == 1 else "ies",
                        source.path,
                    )
            if not keys.served:
                log.warning("dev: %s has no KEY=value line: nothing to serve until one is added", source.path)
            feed = watch.feed(frozenset(keys.served))
            await serve_round(
                dataclasses.replace(config, secrets=secrets_for_keys(keys.served)),
                "dev",
                source,
                session,
                feed=feed,
            )
            if session.stop.is_set() or feed.next_keys is None:
                return
            before, keys = set(keys.served), feed.next_keys
            changes = [
                f"{label} {', '.join(sorted(names))}"
                for label, names in (
                    ("added", set(keys.served) - before),
                    ("removed", before - set(keys.served)),
                )
                if names
            ]
            log.info("dev: the keys of %s changed (%s)", source.path, "; ".join(changes))
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)


class _KeyWatch:
    """Follows the .env file for the whole of ``serve_every_key``, across rounds; each round reads its
    edits through a ``_RoundFeed``."""

    def __init__(self, source: DotenvSource) -> None:
        self.source = source
        self.edited = asyncio.Event()
        """Set by every burst of edits; cleared by the round's feed that handles it."""
        self.error: Exception | None = None
        """Why watching stopped (the directory went away, say): the round's feed raises it, so the watch
        part fails as a watched .env file's does."""

    async def run(self) -> None:
        try:
            async for _ in self.source.changes():
                self.edited.set()
        except Exception as error:  # handed to the round, which reports it (see ``error``)
            self.error = error
            self.edited.set()

    def feed(self, served: frozenset[str]) -> _RoundFeed:
        return _RoundFeed(self, served)


class _RoundFeed:
    """The ``ChangeFeed`` of one round: every edit means "check every secret", except an edit that changes
    the set of keys, which ends the round (``ended``, with ``next_keys``)."""

    def __init__(self, watch: _KeyWatch, served: frozenset[str]) -> None:
        self.watch = watch
        self.served = served
        self.ended = asyncio.Event()
        self.next_keys: DotenvKeys | None = None

    async def changes(self) -> AsyncIterator[frozenset[str] | None]:
        while True:
            await self.watch.edited.wait()
            self.watch.edited.clear()
            if self.watch.error is not None:
                raise self.watch.error
            try:
                keys = self.watch.source.keys()
            except SourceError:
                keys = None  # unreadable for now: the check below reports it and keeps what is served
            if keys is not None and keys.served and frozenset(keys.served) != self.served:
                self.next_keys = keys
                self.ended.set()
                await asyncio.get_running_loop().create_future()  # cancelled as the round ends
            yield None

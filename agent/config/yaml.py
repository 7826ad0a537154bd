"""Strict YAML reading for configuration files: a duplicate key is an error, never silently overwritten.

PyYAML keeps the last of two equal keys, so a file that sets ``poll_interval`` twice would quietly run with
the second. Two ways to be told, for two callers:

* ``read_yaml_file`` / ``read_yaml_text`` (the agent's configuration): the first duplicate is an invalid-YAML
  error at its line, like any other YAML error, and the document must be a mapping;
* ``load_yaml`` (the rotation config): every duplicate is collected with its key path
  (``secrets.db-password.provider``), so the caller reports them together with its own problems.

Hostile or broken input is a ConfigError, never a traceback: nesting deeper than ``MAX_DEPTH`` (PyYAML
composes and constructs recursively; 5,000 ``[`` would exhaust Python's stack), a file larger than
``MAX_CONFIG_BYTES`` (``/dev/zero`` named as the configuration), a number too long to convert.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Hashable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.config.values import describe
from agent.errors import ConfigError, Problem

_NON_PRINTABLE = "[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"
"""``yaml.reader.Reader.NON_PRINTABLE``'s pattern, character for character."""


class _CompiledWhenUsed:
    """Stands for ``re.compile(pattern)`` and compiles it when it is first used."""

    def __init__(self, pattern: str) -> None:
        self._pattern = pattern
        self._compiled: re.Pattern[str] | None = None

    def __getattr__(self, name: str) -> Any:
        if self._compiled is None:
            self._compiled = re.compile(self._pattern)
        return getattr(self._compiled, name)


def _import_pyyaml() -> None:
    """Import PyYAML without compiling ``Reader.NON_PRINTABLE`` until the pure-Python reader uses it.

    Importing PyYAML compiles that one class over most of Unicode, and ``re`` builds it by looping over
    63,000 code points in Python (yaml/pyyaml#301): some 60 million instructions, a sixth of what ``init``
    cost beyond the Google client, for a check that libyaml's reader (which reads our configuration, see
    ``_LibyamlStrictLoader``) makes in C. ``re.compile`` looks in its cache first: for the time of the
    import, the cache holds a stand-in under that pattern, which compiles the real one when an error is
    reported again or a secret's payload is read by the pure-Python loader. Without that cache (another
    Python), or when PyYAML is already loaded, this is a plain import."""
    cache = getattr(re, "_cache", None)
    key = (str, _NON_PRINTABLE, 0)
    if "yaml" in sys.modules or not isinstance(cache, dict) or key in cache:
        return  # the plain import below
    stand_in = _CompiledWhenUsed(_NON_PRINTABLE)
    cache[key] = stand_in
    try:
        import yaml  # noqa: F401
    finally:
        if cache.get(key) is stand_in:  # nobody else is handed the stand-in
            del cache[key]


_import_pyyaml()

import yaml  # noqa: E402

_MERGE_TAG = "tag:yaml.org,2002:merge"

MAX_DEPTH = 64
"""Deepest nesting of lists and mappings accepted; a configuration needs fewer than ten levels."""
MAX_CONFIG_BYTES = 4 * 1024 * 1024
"""Largest configuration file read (4 MiB): a configuration is a few kilobytes."""


@dataclass(frozen=True)
class DuplicateKey:
    """A key set twice in one mapping."""

    path: str
    """Key path of the repeated key: ``secrets.db-password.provider``, ``topics[1].name``."""
    line: int
    """Line (from 1) where it is set again."""
    first_line: int
    """Line (from 1) where it was set first."""


@dataclass(frozen=True)
class YamlDocument:
    """A parsed document and the duplicate keys found in it."""

    data: object
    """What PyYAML's safe loader builds (of duplicate keys, the last one wins); None for an empty text."""
    duplicates: tuple[DuplicateKey, ...]
    """In document order."""


class _Strict(yaml.composer.Composer):
    """What the configuration's loaders add to PyYAML's: duplicate keys noticed (they raise at the first one,
    or collect them all with their key paths, ``collect``) and nesting bounded."""

    def _start(self, *, collect: bool) -> None:
        self.collect = collect
        self.duplicates: list[DuplicateKey] = []
        self.where = ""
        """Key path of the value being constructed (for ``collect``)."""
        self.depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        """PyYAML's composer, refusing nesting deeper than ``MAX_DEPTH`` before the recursion gets deep
        (the constructor then recurses no deeper either)."""
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                event = self.peek_event()  # type: ignore[attr-defined]
                raise yaml.composer.ComposerError(
                    None, None, f"nested more than {MAX_DEPTH} levels deep", event.start_mark
                )
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


class StrictLoader(_Strict, yaml.SafeLoader):
    """SafeLoader (pure Python) that notices duplicate keys and bounds nesting: its errors are the ones the
    user sees."""

    def __init__(self, stream: str, *, collect: bool) -> None:
        super().__init__(stream)
        self._start(collect=collect)


def _join(path: str, key: object) -> str:
    label = key if isinstance(key, str) else describe(key)
    return f"{path}.{label}" if path else label


def _kind(node: yaml.Node) -> str:
    """``scalar``, ``sequence`` or ``mapping``, as PyYAML names nodes in its errors."""
    return str(getattr(node, "id", "node"))


def _construct_mapping(loader: StrictLoader, node: yaml.Node) -> dict[Any, Any]:
    if not isinstance(node, yaml.MappingNode):  # `!!map` on a scalar or a list: PyYAML's own error
        raise yaml.constructor.ConstructorError(
            None, None, f"expected a mapping node, but found {_kind(node)}", node.start_mark
        )
    first_lines: dict[object, int] = {}
    for key_node, _value_node in node.value:
        if key_node.tag == _MERGE_TAG:  # `<<: *base` merges on purpose; its keys may be overridden
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            first_line = first_lines.get(key)
        except TypeError:  # unhashable key; reported below as PyYAML does
            continue
        line = key_node.start_mark.line + 1
        if first_line is None:
            first_lines[key] = line
        elif loader.collect:
            loader.duplicates.append(DuplicateKey(_join(loader.where, key), line, first_line))
        else:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                f"found duplicate key {key!r}",
                key_node.start_mark,
            )
    # What SafeConstructor.construct_mapping(node, deep=True) does, keeping track of the key path.
    loader.flatten_mapping(node)
    mapping: dict[Any, Any] = {}
    outer = loader.where
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, Hashable):
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark, "found unhashable key", key_node.start_mark
            )
        loader.where = _join(outer, key)
        try:
            mapping[key] = loader.construct_object(value_node, deep=True)
        finally:
            loader.where = outer
    return mapping


def _construct_sequence(loader: StrictLoader, node: yaml.Node) -> Iterator[list[Any]]:
    # A generator like SafeConstructor.construct_yaml_seq, so that the list exists before its items (an
    # anchored list may contain an alias of itself).
    items: list[Any] = []
    yield items
    if not isinstance(node, yaml.SequenceNode):  # `!!seq` on a scalar or a mapping: PyYAML's own error
        raise yaml.constructor.ConstructorError(
            None, None, f"expected a sequence node, but found {_kind(node)}", node.start_mark
        )
    outer = loader.where
    for index, child in enumerate(node.value):
        loader.where = f"{outer}[{index}]"
        try:
            items.append(loader.construct_object(child, deep=True))
        finally:
            loader.where = outer


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)

if yaml.__with_libyaml__:
    from yaml._yaml import CParser

    class _LibyamlStrictLoader(_Strict, CParser, yaml.constructor.SafeConstructor, yaml.resolver.Resolver):
        """StrictLoader over libyaml's scanner and parser (PyYAML's C extension, when it was built with it):
        the same composer, nesting bound, constructors and resolver, six times faster than the pure-Python
        scanner on a configuration of 50 secrets. Its MRO puts PyYAML's Python composer (through _Strict)
        before CParser's own, so the bound and the constructors see the nodes StrictLoader would; CParser
        supplies the events. It reads valid documents: any problem is read again by StrictLoader, so that
        errors keep PyYAML's own wording and lines."""

        yaml_constructors = StrictLoader.yaml_constructors

        def __init__(self, stream: str, *, collect: bool) -> None:
            CParser.__init__(self, stream)
            yaml.constructor.SafeConstructor.__init__(self)
            yaml.resolver.Resolver.__init__(self)
            yaml.composer.Composer.__init__(self)
            self._start(collect=collect)


def _parse(text: str, where: str, *, collect: bool) -> YamlDocument:
    if yaml.__with_libyaml__:
        fast = _LibyamlStrictLoader(text, collect=collect)
        try:
            return YamlDocument(fast.get_single_data(), tuple(fast.duplicates))
        except Exception:  # noqa: S110 - read again below, to report it in PyYAML's words
            pass
        finally:
            fast.dispose()
    try:
        loader = StrictLoader(text, collect=collect)
    except yaml.reader.ReaderError as error:  # the reader checks every character first, in its constructor
        line = text.count("\n", 0, max(error.position, 0)) + 1
        raise ConfigError(
            Problem(f"{where}:{line}", f"invalid YAML: character #x{error.character:04x}: {error.reason}")
        ) from None
    try:
        data = loader.get_single_data()
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        located = f"{where}:{mark.line + 1}" if mark is not None else where
        raise ConfigError(Problem(located, f"invalid YAML: {error.problem or error.context}")) from None
    except yaml.YAMLError as error:
        raise ConfigError(Problem(where, f"invalid YAML: {error}")) from None
    except (ValueError, KeyError, AttributeError, OverflowError, IndexError):
        # PyYAML's scalar constructors fail with these on an explicit tag that does not fit (`!!int abc`,
        # `!!timestamp x`, `!!bool maybe`) or a number of more than 4,300 digits. Their text quotes the
        # value, which could be a token: not shown.
        raise ConfigError(
            Problem(
                where,
                "invalid YAML: a value cannot be read (a number of more than 4300 digits, or a value that "
                "does not fit its explicit tag such as !!int or !!timestamp)",
            )
        ) from None
    except RecursionError:  # a backstop: MAX_DEPTH stops nesting long before the stack ends
        raise ConfigError(Problem(where, f"invalid YAML: nested more than {MAX_DEPTH} levels deep")) from None
    finally:
        loader.dispose()
    return YamlDocument(data, tuple(loader.duplicates))


def load_yaml(text: str, where: str) -> YamlDocument:
    """Parse ``text``, collecting every duplicate key with its path (the caller decides how to report them).

    ConfigError for text that is not YAML, located at ``where`` (a file name) and its line."""
    return _parse(text, where, collect=True)


def read_text_file(file: Path) -> str:
    """The text of a configuration file (at most ``MAX_CONFIG_BYTES``); every failure is a ConfigError
    naming the file."""
    try:
        with file.open("rb") as stream:
            data = stream.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(Problem(str(file), "no such file")) from None
    except OSError as error:
        raise ConfigError(Problem(str(file), error.strerror or type(error).__name__)) from None
    except ValueError:  # a NUL byte in the name: no file can have it
        raise ConfigError(Problem(repr(str(file)), "a file name cannot contain a NUL byte")) from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(Problem(str(file), f"larger than {MAX_CONFIG_BYTES // (1024 * 1024)} MiB"))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(Problem(str(file), "not UTF-8 text")) from None


def read_yaml_file(file: Path) -> Mapping[Any, object]:
    """The file's top-level mapping; every failure is a ConfigError naming the file (and line)."""
    return read_yaml_text(read_text_file(file), str(file))


def read_yaml_text(text: str, where: str) -> Mapping[Any, object]:
    """The top-level mapping of configuration ``text``; failures are ConfigErrors located at ``where``
    (a file name, or ``env SECRETS_AGENT_CONFIG_YAML``) and its line. A duplicate key is one of them."""
    data = _parse(text, where, collect=False).data
    if data is None:  # an empty file is a valid, all-defaults configuration
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(
            Problem(f"{where}:1", f"expected a mapping of settings at the top level, got {describe(data)}")
        )
    return data

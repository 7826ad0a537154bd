"""The parser's habits: "did you mean", bounded messages, help with examples as written.

``Parser`` is the parser of every ``secrets-agent`` command, the delegated ones too (rotate's, rotation's
and the webhook's get it as their ``parser_class``).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from gettext import gettext
from typing import Any, NoReturn

from agent.core.words import plural

SHOWN_CHARS = 60
"""At most this much of one word of the command line is quoted in a message (and compared, for a hint)."""
MAX_MESSAGE_CHARS = 500
"""A usage message is cut at this length (argparse quotes values: a value may be huge)."""
_NUMBER = re.compile(r"-\.?[0-9][0-9.eE+-]*")
# argparse reports missing required arguments with this (translated) message; a parser that sees it first
# looks for an unknown option, the likelier mistake ("--tls-cert" for "--tls-cert-file").
_REQUIRED = gettext("the following arguments are required: %s").partition("%s")[0]


def shown(text: str, limit: int = SHOWN_CHARS) -> str:
    """``text`` as a message may quote it: control characters escaped, at most ``limit`` characters."""
    head = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[:limit])
    return head + "..." if len(text) > limit else head


def closest(word: str, known: Iterable[str]) -> str | None:
    """The one of ``known`` (options, commands, choices) closest to ``word``, if any is close enough.

    Leading dashes are left out of the comparison (every long option shares them), and only the first
    ``SHOWN_CHARS`` characters of ``word`` are compared: the cost is bounded by the parser's own names."""
    import difflib  # only a mistyped command line needs it

    cores: dict[str, str] = {}
    for name in sorted(known):
        cores.setdefault(name.lstrip("-"), name)
    found = difflib.get_close_matches(word[:SHOWN_CHARS].lstrip("-"), list(cores), n=1, cutoff=0.6)
    return cores[found[0]] if found else None


class _RequiredMissing(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, except that indented lines of a description or an epilog (the examples) are
    printed as written; the other lines are wrapped into paragraphs as usual."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        lines: list[str] = []
        paragraph: list[str] = []

        def flush() -> None:
            if paragraph:
                lines.append(super(HelpFormatter, self)._fill_text(" ".join(paragraph), width, indent))
                paragraph.clear()

        for line in text.splitlines():
            if line.startswith("  "):
                flush()
                lines.append(indent + line)
            elif not line.strip():
                flush()
                lines.append("")
            else:
                paragraph.append(line)
        flush()
        return "\n".join(lines)


class Parser(argparse.ArgumentParser):
    """The parser of every ``secrets-agent`` command (rotate's, rotation's and the webhook's get it as their
    ``parser_class``): exit 2 with one clear line for a mistyped command line.

    * ``unknown option --ouput-dir; did you mean --output-dir?`` (or the command that has it, from
      ``owners``), reported even when a required option is missing too;
    * ``unknown command 'initt'; did you mean init?``, and ``did you mean`` for any other choice;
    * an unexpected word is quoted cut short, an unknown ``--option=value`` without its value."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        self.owners: Mapping[str, str] = {}
        """Options of other commands (``--dotenv`` -> ``dev``), to say whose option a stray one is."""
        self._deferring_required = False

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        words = list(sys.argv[1:] if args is None else args)
        self._deferring_required = True
        try:
            parsed, extras = super().parse_known_args(words, namespace)
        except _RequiredMissing as missing:
            self._deferring_required = False
            self._reject_unknown(self._extras_ignoring_required(words))
            self.error(missing.message)
        finally:
            self._deferring_required = False
        self._reject_unknown(extras)
        return parsed, extras

    def error(self, message: str) -> NoReturn:
        if self._deferring_required and message.startswith(_REQUIRED):
            raise _RequiredMissing(message)
        if len(message) > MAX_MESSAGE_CHARS:
            message = message[:MAX_MESSAGE_CHARS] + "..."
        super().error("".join(c if c.isprintable() else repr(c)[1:-1] for c in message))

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        choices = action.choices
        if choices is None or value in choices:
            return
        names = [str(choice) for choice in choices]
        close = closest(str(value), names) if isinstance(value, str) else None
        hint = f"; did you mean {close}?" if close else f" (choose from {', '.join(names)})"
        if isinstance(action, argparse._SubParsersAction):
            raise argparse.ArgumentError(None, f"unknown command '{shown(str(value))}'{hint}")
        raise argparse.ArgumentError(action, f"invalid choice '{shown(str(value))}'{hint}")

    def unknown_option(self, name: str) -> str:
        """The message for an option this parser does not have."""
        if name in self.owners:
            command = self.prog.rsplit(" ", 1)[-1]
            return f"unknown option {name}: it is an option of {self.owners[name]}, not of {command}"
        if close := closest(name, self._option_string_actions):
            return f"unknown option {shown(name)}; did you mean {close}?"
        return f"unknown option {shown(name)} (see {self.prog} --help)"

    def _reject_unknown(self, extras: Sequence[str]) -> None:
        if not extras:
            return
        for word in extras:
            if word.startswith("-") and word not in ("-", "--") and not _NUMBER.fullmatch(word):
                self.error(self.unknown_option(word.partition("=")[0]))  # never the value after "="
        words = [word for word in extras if word != "--"] or list(extras)
        more = f" (and {plural(len(words) - 1, 'more argument')})" if len(words) > 1 else ""
        self.error(f"unexpected argument '{shown(words[0])}'{more}")

    def _extras_ignoring_required(self, words: Sequence[str]) -> list[str]:
        required = [action for action in self._actions if action.required]
        for action in required:
            action.required = False
        try:
            return super().parse_known_args(list(words), None)[1]
        finally:
            for action in required:
                action.required = True

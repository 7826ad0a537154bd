"""``secrets-agent rotate ...`` and ``secrets-agent rotation status`` (placeholder: filled in by issue 6)."""

from __future__ import annotations

import argparse


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``rotate`` and ``rotation``; each parser sets ``command`` and ``run`` (args -> exit code)."""
    p = sub.add_parser("rotate", help="rotate secrets by type or name")
    p.set_defaults(command="rotate", run=_not_yet)
    p = sub.add_parser("rotation", help="rotation status")
    p.set_defaults(command="rotation", run=_not_yet)


def _not_yet(args: argparse.Namespace) -> int:
    return 1

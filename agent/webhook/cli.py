"""``secrets-agent webhook`` (placeholder: filled in by issue 7)."""

from __future__ import annotations

import argparse


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``webhook``; the parser sets ``command`` and ``run`` (args -> exit code)."""
    p = sub.add_parser("webhook", help="serve the mutating admission webhook that injects the agent")
    p.set_defaults(command="webhook", run=_not_yet)


def _not_yet(args: argparse.Namespace) -> int:
    return 1

"""``python -m docs_gen``: regenerate the reference pages; ``--check``: exit 1 if any is stale."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from docs_gen import COMMAND, DOCS, stale, write


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m docs_gen", description="Regenerate the pages under docs/reference/ from the code."
    )
    parser.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 listing the pages that are out of date"
    )
    args = parser.parse_args(argv)
    if args.check:
        outdated = stale(DOCS)
        for path in outdated:
            print(f"docs/{path} is out of date", file=sys.stderr)
        if outdated:
            print(f"regenerate with: {COMMAND}", file=sys.stderr)
            return 1
        return 0
    for path in write(DOCS):
        print(f"wrote docs/{path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

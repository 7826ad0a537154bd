"""The generated pages of the manual (``docs/reference/``): one source each, in the code.

``python -m docs_gen`` writes them all; ``python -m docs_gen --check`` exits 1 listing the stale ones (the
tests run the same comparison). Each generator is a pure function of the code it documents: sorted or in
the code's own order, no timestamps, no absolute paths, no dependence on the terminal.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
"""The repository: the pages are written under ``ROOT / "docs"``."""
DOCS = ROOT / "docs"
COMMAND = "python -m docs_gen"
"""How to regenerate the pages (from the repository, in its virtual environment)."""


def _configuration() -> str:
    from docs_gen import configuration

    return configuration.render()


def _cli() -> str:
    from docs_gen import cli

    return cli.render()


def _endpoint() -> str:
    from docs_gen import endpoint

    return endpoint.render()


def _openapi() -> str:
    from docs_gen import endpoint

    return endpoint.document_text()


def _metrics() -> str:
    from docs_gen import metrics

    return metrics.render()


def _annotations() -> str:
    from docs_gen import pod_annotations  # not `annotations`: the __future__ import owns that name here

    return pod_annotations.render()


def _python_api() -> str:
    from docs_gen import python_api

    return python_api.render()


PAGES: dict[str, Callable[[], str]] = {
    "reference/configuration.md": _configuration,
    "reference/cli.md": _cli,
    "reference/endpoint.md": _endpoint,
    "reference/openapi.json": _openapi,
    "reference/metrics.md": _metrics,
    "reference/annotations.md": _annotations,
    "reference/python-api.md": _python_api,
}
"""Each generated file (relative to ``docs/``) and the function that writes its content."""


def generate() -> dict[str, str]:
    """Every generated file's content, by path relative to ``docs/``."""
    return {path: render() for path, render in PAGES.items()}


def stale(docs: Path = DOCS) -> list[str]:
    """The generated files under ``docs`` whose committed content differs from what the code generates."""
    return [path for path, text in generate().items() if _read(docs / path) != text]


def write(docs: Path = DOCS) -> list[str]:
    """Write every generated file that changed; returns their paths."""
    changed: list[str] = []
    for path, text in generate().items():
        target = docs / path
        if _read(target) != text:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
            changed.append(path)
    return changed


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None

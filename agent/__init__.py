"""secrets-agent: hands every pod its secrets from Google Cloud Secret Manager."""

from __future__ import annotations


def __getattr__(name: str) -> str:
    """``agent.__version__``: the installed distribution's version (pyproject.toml is the one place it is
    written), looked up when first asked for: finding it reads the installed distributions' metadata,
    which no command but ``--version`` (and the metrics' build info) needs."""
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("secrets-agent")
    except PackageNotFoundError:  # a source tree on sys.path without being installed
        found = "0+unknown"
    globals()["__version__"] = found
    return found

"""secrets-agent: hands every pod its secrets from Google Cloud Secret Manager."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("secrets-agent")
    """The installed distribution's version: pyproject.toml is the one place it is written."""
except PackageNotFoundError:  # a source tree on sys.path without being installed
    __version__ = "0+unknown"

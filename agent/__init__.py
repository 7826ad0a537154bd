"""secrets-agent: hands every pod its secrets from Google Cloud Secret Manager."""

from __future__ import annotations

__version__ = "0.1.0"

"""STUB - to be replaced by the metrics engineer: the Metrics object, bound to an injected CollectorRegistry.

Every method is safe to call from the event loop; label ``secret`` is always the LOCAL name, never a value.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()

    def fetch(self, secret: str, result: str, seconds: float) -> None:
        """One fetch or version check of ``secret``: result ``ok``/``unchanged``/``error``; its duration."""

    def backend_error(self, code: str) -> None:
        """A backend call failed with status ``code`` (``UNAVAILABLE``, ``NOT_FOUND``, ...)."""

    def served_version(self, secret: str, version: str) -> None:
        """The version of ``secret`` now on disk."""

    def rotation(self, secret: str) -> None:
        """``secret`` changed to a new value in a committed snapshot."""

    def reload(self, notifier: str, ok: bool) -> None:
        """One notification attempt of ``notifier`` (``signal``, ``http``, ``command``) and its result."""

    def request(self, route: str, code: int) -> None:
        """One local endpoint request: ``route`` is the route TEMPLATE (``/v1/secrets/{name}``), never a name."""

"""What the agent tells operators: Prometheus metrics on an injected CollectorRegistry, and liveness.

``Metrics`` owns every metric of the agent on its OWN registry (never prometheus_client's global one, so two
agents in one process or one test never mix). Label ``secret`` is always the LOCAL name from the config; no
label ever holds a value, and no label holds anything derived from one either: the version of a ``.env``
value is a checksum of the value, so versions appear only as a number (Secret Manager's version numbers).

``Liveness`` answers "are the agent's loops alive?" (``/healthz``): every loop beats its ``Heartbeat``, and
a loop whose next beat is overdue is reported.
"""

from __future__ import annotations

import contextlib
import math
import platform
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Literal

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from agent import __version__
from agent.core.store import SnapshotStore

PREFIX = "secrets_agent"

FetchResult = Literal["ok", "unchanged", "error"]
"""``ok``: a value new to the agent was fetched; ``unchanged``: the backend confirmed what is served (same
bytes, or same version with the metadata strategy); ``error``: the call failed (last-known-good kept)."""

FETCH_RESULTS: tuple[FetchResult, ...] = ("ok", "unchanged", "error")

FETCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Seconds: a loopback emulator answers in about a millisecond, Secret Manager in tens of milliseconds, and
the default call timeout is 10 s; everything slower lands in +Inf."""


RENDER_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
"""Seconds: a template renders in tens of microseconds to a few milliseconds; the sandbox stops it at 1 s."""


class Metrics:
    """Every metric of the agent, on ``registry`` (a new private one when None).

    ``store``: when given, per-secret freshness (last success, staleness) and readiness are computed from it
    at scrape time, so they are never stale; ``max_staleness`` (seconds, None = no limit) is the readiness
    bound, as in ``/readyz``. Every method is cheap and safe to call from the event loop.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        store: SnapshotStore | None = None,
        max_staleness: float | None = None,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.fetches = Counter(
            f"{PREFIX}_fetches",
            "Fetches and version checks of a secret, by local name and result (ok, unchanged, error).",
            ["secret", "result"],
            registry=r,
        )
        self.fetch_duration = Histogram(
            f"{PREFIX}_fetch_duration_seconds",
            "Duration of one fetch or version check at the backend.",
            buckets=FETCH_BUCKETS,
            registry=r,
        )
        self.backend_errors = Counter(
            f"{PREFIX}_backend_errors",
            "Failed backend calls, by status code (UNAVAILABLE, NOT_FOUND, DATA_LOSS, ...).",
            ["code"],
            registry=r,
        )
        self.secret_version = Gauge(
            f"{PREFIX}_secret_version",
            "Secret Manager version number served per secret (absent for non-numeric .env content tags).",
            ["secret"],
            registry=r,
        )
        self.rotations = Counter(
            f"{PREFIX}_rotations",
            "Times a secret changed to a new value in a committed snapshot (its first fetch is not one).",
            ["secret"],
            registry=r,
        )
        self.reloads = Counter(
            f"{PREFIX}_reload_notifications",
            "Attempts to tell the app to reload, by notifier (signal, http, command) and result (ok, error).",
            ["notifier", "result"],
            registry=r,
        )
        self.requests = Counter(
            f"{PREFIX}_endpoint_requests",
            "Requests to the local endpoint, by route template and HTTP status code.",
            ["route", "code"],
            registry=r,
        )
        # The endpoint counts every request: look its labelled children up in a plain dict (labels()
        # validates and locks on every call; the (route, code) pairs are few: route templates x statuses).
        self._request_children: dict[tuple[str, int], Counter] = {}
        self.events = Counter(
            f"{PREFIX}_events",
            "Secret Manager Pub/Sub events received, by event type and what they led to "
            "(fetch, ignored, warned).",
            ["type", "action"],
            registry=r,
        )
        self.events_connected = Gauge(
            f"{PREFIX}_events_connected",
            "1 while the Pub/Sub event subscription delivers (polling at events.poll_interval), else 0.",
            registry=r,
        )
        self.template_renders = Counter(
            f"{PREFIX}_template_renders",
            "Renders of a template (or output format), by template name and result (ok, error). A template "
            "is rendered again only when a secret it uses changed.",
            ["template", "result"],
            registry=r,
        )
        self.template_render_duration = Histogram(
            f"{PREFIX}_template_render_duration_seconds",
            "Duration of one template render.",
            ["template"],
            buckets=RENDER_BUCKETS,
            registry=r,
        )
        self.template_ok = Gauge(
            f"{PREFIX}_template_ok",
            "1 when the template's last render succeeded, 0 when it failed (the last good snapshot is kept).",
            ["template"],
            registry=r,
        )
        self.render_failures = Counter(
            f"{PREFIX}_render_failures",
            "Snapshots not written because an output (a key, a template) could not be rendered.",
            registry=r,
        )
        self.selection_matched = Gauge(
            f"{PREFIX}_selection_matched",
            "Secrets a selection (select[].name) delivers now (collisions and skipped secrets left out).",
            ["selection"],
            registry=r,
        )
        self.selection_last_listing = Gauge(
            f"{PREFIX}_selection_last_listing_timestamp_seconds",
            "Unix time of a selection's last successful listing (absent until one is made or adopted).",
            ["selection"],
            registry=r,
        )
        self.selection_listing_errors = Counter(
            f"{PREFIX}_selection_listing_errors",
            "Failed listings of a selection, by status code (RESOURCE_EXHAUSTED, UNAVAILABLE, ...).",
            ["selection", "code"],
            registry=r,
        )
        self.selection_collisions = Counter(
            f"{PREFIX}_selection_collisions",
            "Secrets a selection matched but left out because an earlier claim has their name, env or file.",
            ["selection"],
            registry=r,
        )
        build = Gauge(
            f"{PREFIX}_build_info",
            "Always 1; the labels say which agent and Python run.",
            ["version", "python"],
            registry=r,
        )
        build.labels(version=__version__, python=platform.python_version()).set(1)
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        if store is not None:
            r.register(StoreCollector(store, max_staleness))
            self.known_secrets(store.specs)

    def known_secrets(self, names: Iterable[str]) -> None:
        """Start each secret's series at 0 (so that rate() and increase() see its first fetch and rotation):
        the configured secrets at start, and those a selection adds later."""
        for name in names:
            self.rotations.labels(secret=name)
            for result in FETCH_RESULTS:
                self.fetches.labels(secret=name, result=result)

    def forget_secret(self, name: str) -> None:
        """``name`` is no longer served (it left a selection): its series go, so that a scrape shows only
        the secrets the agent serves (a secret's freshness series follow the store by themselves)."""
        with contextlib.suppress(KeyError):
            self.secret_version.remove(name)
        with contextlib.suppress(KeyError):
            self.rotations.remove(name)
        for result in FETCH_RESULTS:
            with contextlib.suppress(KeyError):
                self.fetches.remove(name, result)

    def fetch(self, secret: str, result: FetchResult | str, seconds: float) -> None:
        """One fetch or version check of ``secret``: result ``ok``/``unchanged``/``error``; its duration."""
        self.fetches.labels(secret=secret, result=result).inc()
        self.fetch_duration.observe(seconds)

    def backend_error(self, code: str) -> None:
        """A backend call failed with status ``code`` (``UNAVAILABLE``, ``NOT_FOUND``, ...)."""
        self.backend_errors.labels(code=code).inc()

    def served_version(self, secret: str, version: str) -> None:
        """The version of ``secret`` now on disk. Only numbers are exported: a ``.env`` content tag is a
        checksum of the value, and the metrics listener is unauthenticated."""
        if version.isdigit():
            self.secret_version.labels(secret=secret).set(int(version))
        else:
            with contextlib.suppress(KeyError):  # never was numeric: nothing to remove
                self.secret_version.remove(secret)

    def rotation(self, secret: str) -> None:
        """``secret`` changed to a new value in a committed snapshot."""
        self.rotations.labels(secret=secret).inc()

    def reload(self, notifier: str, ok: bool) -> None:
        """One notification attempt of ``notifier`` (``signal``, ``http``, ``command``) and its result.

        Fits ``ReloadCoordinator(on_result=metrics.reload)``."""
        self.reloads.labels(notifier=notifier, result="ok" if ok else "error").inc()

    def event(self, event_type: str, action: str) -> None:
        """One Pub/Sub event: ``event_type`` (one of the documented types, else ``OTHER``: publishers choose
        attributes, so the label set stays bounded) and ``action`` (``fetch``, ``ignored``, ``warned``)."""
        self.events.labels(type=event_type, action=action).inc()

    def events_health(self, connected: bool) -> None:
        """Whether the event subscription currently delivers."""
        self.events_connected.set(1 if connected else 0)

    def known_templates(self, names: Iterable[str]) -> None:
        """Start each template's series at 0 (so that the first failure shows in ``increase()``)."""
        for name in names:
            for result in ("ok", "error"):
                self.template_renders.labels(template=name, result=result)

    def template_rendered(self, template: str, ok: bool, seconds: float) -> None:
        """One render of ``template`` (called from the rendering thread; prometheus_client locks)."""
        self.template_renders.labels(template=template, result="ok" if ok else "error").inc()
        self.template_render_duration.labels(template=template).observe(seconds)
        self.template_ok.labels(template=template).set(1 if ok else 0)

    def render_failed(self) -> None:
        """A snapshot was refused because one of its outputs failed to render."""
        self.render_failures.inc()

    def known_selections(self, names: Iterable[str]) -> None:
        """Start each selection's series (matched 0, no collision yet)."""
        for name in names:
            self.selection_matched.labels(selection=name).set(0)
            self.selection_collisions.labels(selection=name)

    def selection(self, name: str, matched: int) -> None:
        """Selection ``name`` delivers ``matched`` secrets now."""
        self.selection_matched.labels(selection=name).set(matched)

    def selection_listed(self, name: str, when: float) -> None:
        """Selection ``name`` was listed successfully at Unix time ``when``."""
        self.selection_last_listing.labels(selection=name).set(when)

    def selection_listing_failed(self, name: str, code: str) -> None:
        """A listing of selection ``name`` failed with status ``code``."""
        self.selection_listing_errors.labels(selection=name, code=code).inc()

    def selection_collision(self, name: str) -> None:
        """Selection ``name`` lost a secret to an earlier claim."""
        self.selection_collisions.labels(selection=name).inc()

    def request(self, route: str, code: int) -> None:
        """One local endpoint request: ``route`` is the route TEMPLATE (``/v1/secrets/{name}``), never a
        name; ``code`` the HTTP status."""
        child = self._request_children.get((route, code))
        if child is None:
            child = self._request_children[(route, code)] = self.requests.labels(route=route, code=str(code))
        child.inc()


class StoreCollector(Collector):
    """Freshness and readiness read from the SnapshotStore at scrape time (a value pushed when it changed
    would be wrong a minute later: staleness grows by itself).

    Scrapes run in the event loop's thread (see ``agent.observe.probes``), the only thread that touches the
    store.
    """

    def __init__(self, store: SnapshotStore, max_staleness: float | None) -> None:
        self.store = store
        self.max_staleness = math.inf if max_staleness is None else max_staleness

    def describe(self) -> Iterable[Metric]:
        # Lets the registry reject a second collector with the same names at registration time.
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        last, stale, ready = self._families()
        for name, health in self.store.health.items():
            if health.last_success is not None:
                last.add_metric([name], health.last_success)
            age = self.store.staleness(name)
            # Never fetched counts as infinitely stale, so "staleness > bound" alerts cover it too.
            stale.add_metric([name], math.inf if age is None else age)
        ready.add_metric([], 0.0 if self.store.not_ready_reasons(self.max_staleness) else 1.0)
        return [last, stale, ready]

    def _families(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            f"{PREFIX}_last_success_timestamp_seconds",
            "Unix time of the last successful fetch or check per secret (absent until the first).",
            labels=["secret"],
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_staleness_seconds",
            "Seconds since the last successful fetch or check per secret (+Inf before the first).",
            labels=["secret"],
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_ready",
            "1 when every required secret was fetched and none is older than max_staleness, else 0.",
        )


# --------------------------------------------------------------------------------------------------
# Liveness
# --------------------------------------------------------------------------------------------------


class Heartbeat:
    """One loop's proof of life. The loop calls ``beat(then_wait)`` each iteration, saying how long it is
    about to wait on purpose; the next beat is then due within ``then_wait + budget`` seconds, where
    ``budget`` (given at registration) bounds the work of one iteration (e.g. one poll round's calls); it
    may be a function, asked at every beat, for work that grows while the agent runs (a selection adding
    secrets to the round).

    ``then_wait=None`` means the loop now waits for an outside event (a refresh request, a file edit) with
    no deadline: an idle loop is alive. A loop is judged from its first beat on, so a slow start (the
    bootstrap, bounded by its own deadline) never makes the agent look dead.
    """

    def __init__(
        self, name: str, budget: float | Callable[[], float], *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._budget = budget if callable(budget) else (lambda: budget)
        if self.budget <= 0:
            raise ValueError(f"budget must be positive, got {self.budget}")
        self.name = name
        self._clock = clock
        self.last_beat: float | None = None
        """``clock()`` time of the last beat; None before the first."""
        self.due: float | None = None
        """``clock()`` time by which the next beat must come; None before the first beat and while idle."""

    @property
    def budget(self) -> float:
        """Seconds one iteration may take, now."""
        return self._budget()

    def beat(self, then_wait: float | None = 0.0) -> None:
        """Alive now; the loop waits ``then_wait`` seconds (None: for an outside event) before working."""
        self.last_beat = self._clock()
        self.due = None if then_wait is None else self.last_beat + then_wait + self.budget

    def problem(self) -> str | None:
        """Why this loop looks dead, or None."""
        now = self._clock()
        if self.due is None or self.last_beat is None or now <= self.due:
            return None
        return (
            f"{self.name}: no heartbeat for {now - self.last_beat:.1f}s "
            f"(was due {now - self.due:.1f}s ago; the loop is stuck)"
        )


class Liveness:
    """The agent's loops, each with a ``Heartbeat``; ``problems()`` is what ``/healthz`` reports."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._hearts: dict[str, Heartbeat] = {}

    def heartbeat(self, name: str, budget: float | Callable[[], float]) -> Heartbeat:
        """Register loop ``name`` (one per name); ``budget`` as in ``Heartbeat``."""
        if name in self._hearts:
            raise ValueError(f"a heartbeat named {name!r} is already registered")
        heart = Heartbeat(name, budget, clock=self._clock)
        self._hearts[name] = heart
        return heart

    def problems(self) -> list[str]:
        """One line per loop whose beat is overdue (empty: all alive)."""
        return [p for heart in self._hearts.values() if (p := heart.problem()) is not None]

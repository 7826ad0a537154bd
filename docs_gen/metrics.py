"""reference/metrics.md, from the Prometheus registry the agent builds (``agent.observe.metrics.Metrics``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client.metrics import MetricWrapperBase

from agent.core.store import SnapshotStore
from agent.observe.metrics import PREFIX, Metrics
from docs_gen.markdown import code, docstring, page, table

SOURCE = "the registry of `agent/observe/metrics.py`"

_SERIES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
    "info": ("_info",),
}
"""The series a family's samples are exposed as (prometheus_client also exposes a ``_created`` series per
counter and histogram, unless ``PROMETHEUS_DISABLE_CREATED_SERIES`` is set)."""


@dataclass(frozen=True)
class MetricDoc:
    """One metric family as the reference shows it."""

    name: str
    """The family's name, without the ``_total`` a counter's samples add."""
    type: str
    help: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] = ()

    @property
    def series(self) -> tuple[str, ...]:
        """The names its samples are exposed under on ``/metrics``."""
        return tuple(self.name + suffix for suffix in _SERIES.get(self.type, ("",)))

    @property
    def anchor(self) -> str:
        """The id of its row: the name queries use (``secrets_agent_fetches_total``)."""
        return self.name + "_total" if self.type == "counter" else self.name


def families() -> list[MetricDoc]:
    """Every metric family of an agent's registry, in registration order (the agent's own, then the
    process and platform collectors)."""
    metrics = Metrics(store=SnapshotStore([]), max_staleness=None)
    found: list[MetricDoc] = []
    for collector in metrics.registry._collector_to_names:
        if isinstance(collector, MetricWrapperBase):
            bounds: Sequence[float] = getattr(collector, "_upper_bounds", ())
            found.append(
                MetricDoc(
                    collector._name,
                    str(collector._type),
                    collector._documentation,
                    tuple(collector._labelnames),
                    tuple(bound for bound in bounds if bound != float("inf")),
                )
            )
            continue
        for family in collector.collect():
            labels: Sequence[str] = getattr(family, "_labelnames", ())
            if not labels:
                labels = list(dict.fromkeys(key for sample in family.samples for key in sample.labels))
            found.append(MetricDoc(family.name, family.type, family.documentation, tuple(labels)))
    return found


def _row(metric: MetricDoc) -> list[str]:
    help_text = docstring(metric.help)
    if metric.buckets:
        bounds = ", ".join(f"{bound:g}" for bound in metric.buckets)
        help_text += f" Buckets (seconds): {bounds}, +Inf."
    return [
        f'<a id="{metric.anchor}"></a>' + "<br>".join(code(series) for series in metric.series),
        metric.type,
        ", ".join(code(label) for label in metric.labels) or "—",
        help_text,
    ]


_INTRO = f"""\
The metrics the agent serves at `/metrics` on its probes listener (`probes.listen`, default
`0.0.0.0:8731`), in the Prometheus text format, generated from the registry the agent builds. Every
metric of the agent starts with `{PREFIX}_`; the label `secret` is always the secret's local name from the
configuration (`secrets[].name`) and `template` a template's name: no label ever holds a value, or
anything derived from one. Counters of known secrets and templates start at 0, so `rate()` and `increase()`
see their first event.

Each agent has its own registry (never the client library's global one). `/healthz` and `/readyz` on the same
listener answer the kubelet's probes; `{PREFIX}_ready` is the readiness `/readyz` reports."""


def render() -> str:
    """The whole page."""
    ours = [metric for metric in families() if metric.name.startswith(PREFIX + "_")]
    others = [metric for metric in families() if not metric.name.startswith(PREFIX + "_")]
    headers = ["Series", "Type", "Labels", "Description"]
    return page(
        "Metrics reference",
        SOURCE,
        _INTRO,
        "## The agent's metrics {#agent}",
        table(headers, [_row(metric) for metric in ours]),
        "## Process and Python {#process}",
        "From the client library's process and platform collectors, registered on the agent's registry.",
        table(headers, [_row(metric) for metric in others]),
    )

"""What the fleet costs: calls per month, dollars (Secret Manager and Pub/Sub) and quota headroom at 1,000
and 10,000 pods, from the access rates measured; and its table.

A model on top of the measurement, kept apart from it: the prices and the rotation rate below are
assumptions (cited), the per-pod-hour rates and calls per rotation are the run's.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.fleet.report import duration
from bench.fleet.scenarios import Result
from bench.fleet.world import SECRETS, SERVICE_ACCESS_PER_MINUTE

HOURS_PER_MONTH = 730
COST_PODS = (1_000, 10_000)
ACCESS_PRICE_PER_10K = 0.03
"""Secret Manager: $0.03 per 10,000 access operations (cloud.google.com/secret-manager/pricing)."""
PUBSUB_PRICE_PER_TIB = 40.0
PUBSUB_FREE_BYTES = 10 * 2**30
PUBSUB_MIN_BILLED_BYTES = 1000
"""Pub/Sub (cloud.google.com/pubsub/pricing): throughput $40 per TiB after 10 GiB free per month, at least
1,000 bytes per publish or delivery request; what a subscription's filter drops is billed as delivered."""
ROTATIONS_PER_SECRET_MONTH = 30
"""Assumption: every secret rotated once a day."""
EVENTS_PER_ROTATION = 2
"""Assumption: SECRET_VERSION_ADD of the new version and SECRET_VERSION_DISABLE of the old one."""


def event_message_bytes() -> int:
    """Bytes Pub/Sub counts for one SECRET_VERSION_ADD message as the emulator builds it (the service's
    format): data, attribute keys and values, 20 for the timestamp, about 16 for the message id."""
    import datetime as dt

    from google.cloud.secretmanager_v1 import types

    from agent_emulator.events import build_event_message

    name = "projects/123456789012/secrets/payments-db-password"
    secret = types.Secret(name=name)
    version = types.SecretVersion(
        name=f"{name}/versions/42",
        state=types.SecretVersion.State.ENABLED,
        create_time=dt.datetime.now(dt.UTC),
        etag='"1700000000000000"',
        replication_status={"automatic": {}},
    )
    message = build_event_message("SECRET_VERSION_ADD", secret, version)
    return len(message.data) + sum(len(k) + len(v) for k, v in message.attributes.items()) + 20 + 16


@dataclass(frozen=True)
class CostRow:
    mode: str
    pods: int
    calls_per_month: float
    access_dollars: float
    pubsub_bytes: float
    pubsub_dollars: float
    """Beyond the free tier when this is the billing account's only Pub/Sub use."""
    pubsub_dollars_no_free_tier: float
    average_per_minute: float
    rotation_burst: float | None
    """Access calls one rotation of one secret causes across the fleet (within max_delay)."""
    restart_burst: float
    """Access calls when every pod restarts within one minute (a rollout): bootstrap (+ catch-up)."""
    reaches_every_pod: float
    """Measured (modelled) seconds until a rotation reached the last agent."""


def cost_rows(result: Result) -> list[CostRow]:
    rows: list[CostRow] = []
    message = max(PUBSUB_MIN_BILLED_BYTES, event_message_bytes())
    for scenario in result.scenarios:
        events = scenario.title.startswith("events")
        per_rotation = (scenario.calls_per_rotation or 0.0) if events else 0.0
        startup = scenario.startup_calls_per_secret or 1.0
        for pods in COST_PODS:
            polls = pods * SECRETS * scenario.per_secret_pod_hour * HOURS_PER_MONTH
            rotation_calls = pods * SECRETS * ROTATIONS_PER_SECRET_MONTH * per_rotation
            calls = polls + rotation_calls
            published = SECRETS * ROTATIONS_PER_SECRET_MONTH * EVENTS_PER_ROTATION if events else 0
            billed = (published + published * pods) * message  # each subscription gets every message
            rows.append(
                CostRow(
                    mode=scenario.title,
                    pods=pods,
                    calls_per_month=calls,
                    access_dollars=calls / 10_000 * ACCESS_PRICE_PER_10K,
                    pubsub_bytes=billed,
                    pubsub_dollars=max(0.0, billed - PUBSUB_FREE_BYTES) / 2**40 * PUBSUB_PRICE_PER_TIB,
                    pubsub_dollars_no_free_tier=billed / 2**40 * PUBSUB_PRICE_PER_TIB,
                    average_per_minute=pods * SECRETS * scenario.per_secret_pod_hour / 60,
                    rotation_burst=pods * per_rotation if events else None,
                    restart_burst=pods * SECRETS * startup,
                    reaches_every_pod=max(scenario.convergence),
                )
            )
    return rows


def _calls(value: float) -> str:
    flag = " **over quota**" if value > SERVICE_ACCESS_PER_MINUTE else ""
    return f"{value:,.0f} ({value / SERVICE_ACCESS_PER_MINUTE:.0%}){flag}"


def print_cost_table(result: Result) -> None:
    rows = cost_rows(result)
    message = event_message_bytes()
    print(
        f"\nPer month ({HOURS_PER_MONTH} h) with {SECRETS} secrets per pod, from the access rates measured "
        f"above; Secret Manager ${ACCESS_PRICE_PER_10K} per 10,000 accesses; Pub/Sub $40/TiB after 10 GiB "
        f"free, each message (~{message} bytes) billed as {PUBSUB_MIN_BILLED_BYTES:,} bytes per delivery; "
        f"every secret rotated {ROTATIONS_PER_SECRET_MONTH}x a month, {EVENTS_PER_ROTATION} events per "
        f"rotation; access quota {SERVICE_ACCESS_PER_MINUTE:,}/min per project"
    )
    print(
        "| mode | pods | a rotation reaches every pod in | access calls / month | Secret Manager / month "
        "| Pub/Sub / month | access calls / min, average (of quota) | one rotation, within max_delay "
        "| every pod restarted within a minute |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        if row.pubsub_bytes:
            pubsub = (
                f"{row.pubsub_bytes / 1e9:,.2f} GB: ${row.pubsub_dollars:,.2f} "
                f"(${row.pubsub_dollars_no_free_tier:,.2f} without the free tier)"
            )
        else:
            pubsub = "-"
        burst = (
            _calls(row.rotation_burst) if row.rotation_burst is not None else "- (polls read latest anyway)"
        )
        print(
            f"| {row.mode} | {row.pods:,} | {duration(row.reaches_every_pod)} | {row.calls_per_month:,.0f} "
            f"| ${row.access_dollars:,.2f} | {pubsub} | {_calls(row.average_per_minute)} | {burst} "
            f"| {_calls(row.restart_burst)} |"
        )
    for scenario in result.scenarios:
        pods = SERVICE_ACCESS_PER_MINUTE * 60 / (SECRETS * scenario.per_secret_pod_hour)
        print(
            f"{scenario.title}: the average alone reaches the access quota at {pods:,.0f} pods "
            f"of {SECRETS} secrets"
        )

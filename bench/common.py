"""What several benchmarks set up the same way: a scratch directory on tmpfs, the Pub/Sub emulator with the
topic the Secret Manager emulator publishes to, and an official Secret Manager client for the emulator.

One copy here so that the benchmarks (``endpoint``, ``fleet``, ``propagation``) set up alike and a fix
lands in all of them. The emulators' own start and stop live in ``testing/`` (shared with the tests).
Imports of the agent and of the Google clients are made inside the functions: ``bench.endpoint``'s bare
server process imports this module, and it must not pay for anything of the agent's.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from testing.emulator_process import patched_environ

if TYPE_CHECKING:
    from google.cloud import secretmanager_v1

SHM = Path("/dev/shm")


@contextmanager
def shm_tmpdir(prefix: str) -> Iterator[Path]:
    """A temporary directory on tmpfs (``/dev/shm``) when there is one, as a pod's output volume would be;
    removed afterwards."""
    with tempfile.TemporaryDirectory(prefix=prefix, dir=SHM if SHM.is_dir() else None) as tmp:
        yield Path(tmp)


def events_supported() -> bool:
    """Whether this agent has the ``events`` configuration section (Pub/Sub subscription)."""
    from agent.config import Config

    return any(f.name == "events" for f in dataclasses.fields(Config))


@contextmanager
def pubsub_topic(topic: str) -> Iterator[tuple[str | None, str]]:
    """The Pub/Sub emulator with ``topic`` created: (host:port, "") or (None, why not)."""
    from testing.pubsub_emulator import PubSubEmulatorUnavailable, start_pubsub_emulator

    if not events_supported():
        yield None, "this agent has no `events` configuration yet"
        return
    try:
        from google.cloud import pubsub_v1  # type: ignore[attr-defined]
    except ImportError:
        yield None, "google-cloud-pubsub is not installed (the pubsub extra)"
        return
    try:
        emulator = start_pubsub_emulator()
    except PubSubEmulatorUnavailable as error:
        yield None, f"no Pub/Sub emulator: {error}"
        return
    try:
        with patched_environ({"PUBSUB_EMULATOR_HOST": emulator.host_port}):
            publisher = pubsub_v1.PublisherClient()
            publisher.create_topic(request={"name": topic})
            publisher.transport.close()
        yield emulator.host_port, ""
    finally:
        emulator.stop()


@dataclass
class EventsWorld:
    """A benchmark's scratch directory and, when it could start, the Pub/Sub emulator with the topic."""

    work: Path
    stack: ExitStack
    """Closed first on the way out (before the Pub/Sub emulator stops and the directory goes)."""
    env: dict[str, str]
    """The agents' environment: this process's, with PUBSUB_EMULATOR_HOST when there are events."""
    pubsub_host: str | None
    """None when events cannot be measured; ``events_note`` says why."""
    events_note: str


@contextmanager
def events_world(prefix: str, topic: str) -> Iterator[EventsWorld]:
    """A tmpfs directory, the Pub/Sub emulator with ``topic`` (PUBSUB_EMULATOR_HOST set here too, for the
    Secret Manager emulator started inside: it publishes) and an ExitStack for everything else."""
    with shm_tmpdir(prefix) as work, pubsub_topic(topic) as (pubsub_host, why_not), ExitStack() as stack:
        env = dict(os.environ)
        if pubsub_host is not None:
            env["PUBSUB_EMULATOR_HOST"] = pubsub_host
            stack.enter_context(patched_environ({"PUBSUB_EMULATOR_HOST": pubsub_host}))
        yield EventsWorld(work, stack, env, pubsub_host, why_not)


def secret_manager_client(grpc_target: str) -> secretmanager_v1.SecretManagerServiceClient:
    """The official synchronous Secret Manager client on an insecure channel to the emulator at
    ``grpc_target`` (``transport.close()`` when done)."""
    import grpc
    from google.cloud import secretmanager_v1
    from google.cloud.secretmanager_v1.services.secret_manager_service.transports import (
        SecretManagerServiceGrpcTransport,
    )

    return secretmanager_v1.SecretManagerServiceClient(
        transport=SecretManagerServiceGrpcTransport(channel=grpc.insecure_channel(grpc_target))
    )

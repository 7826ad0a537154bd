"""The soak's operator and its disruptions: rotations on time, fault phases, SIGKILLs, Pub/Sub outages, a full
disk, and the kubelet that restarts an agent which exits on its own. Each runs the plan (``plan.py``) on the
soak's clock."""

from __future__ import annotations

import heapq
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
from google.cloud import secretmanager_v1
from google.cloud.secretmanager_v1.services.secret_manager_service.transports import (
    SecretManagerServiceGrpcTransport,
)

from bench.soak.plan import FAULT_KINDS, Plan
from bench.soak.world import PROJECT, AgentRunner, PubSub, Volume, log
from testing.emulator_process import EmulatorProcess
from testing.soak_values import render

KUBELET_RESTART_DELAY = 1.0
"""Seconds before an agent that exited on its own is started again."""

# The operator: rotations
# --------------------------------------------------------------------------------------------------


class Rotator(threading.Thread):
    """Adds the plan's versions through the official client, tick by tick."""

    def __init__(
        self, ep: EmulatorProcess, plan: Plan, seed: int, names: tuple[str, ...], clock: Callable[[], float]
    ):
        super().__init__(name="soak-rotator", daemon=True)
        self.plan = plan
        self.seed = seed
        self.clock = clock
        self.latest = dict.fromkeys(names, 1)
        self.made = 0
        self.errors: list[str] = []
        self._stop_event = threading.Event()
        self._channel = grpc.insecure_channel(ep.grpc_target)
        self.client = secretmanager_v1.SecretManagerServiceClient(
            transport=SecretManagerServiceGrpcTransport(channel=self._channel)
        )

    def run(self) -> None:
        for tick in self.plan.ticks:
            if self._stop_event.wait(max(0.0, tick.at - self.clock())):
                return
            for name in tick.secrets:
                generation = self.latest[name]  # version v holds generation v - 1
                try:
                    version = self.client.add_secret_version(
                        parent=f"projects/{PROJECT}/secrets/{name}",
                        payload=secretmanager_v1.SecretPayload(
                            data=render(name, generation, self.seed).encode()
                        ),
                        timeout=30,
                    )
                except Exception as error:  # counted; the operator's call is not under test
                    self.errors.append(f"{name}: {type(error).__name__}")
                    continue
                number = int(version.name.rsplit("/", 1)[-1])
                if number != generation + 1:
                    self.errors.append(f"{name}: got version {number}, expected {generation + 1}")
                self.latest[name] = number
                self.made += 1

    def stop(self) -> None:
        self._stop_event.set()
        self.join(60)
        self.client.transport.close()  # type: ignore[no-untyped-call]


# --------------------------------------------------------------------------------------------------
# Chaos: faults, kills, Pub/Sub outages, disk fills
# --------------------------------------------------------------------------------------------------


@dataclass
class Chaos:
    """Runs the plan's disruptions on time (one thread; Pub/Sub restarts in threads of their own)."""

    plan: Plan
    ep: EmulatorProcess
    agent: AgentRunner
    pubsub: PubSub | None
    volume: Volume
    clock: Callable[[], float]
    kills: int = 0
    restarts: int = 0
    fills: int = 0
    fill_bytes: int = 0
    phases: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    _stop_event: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def actions(self) -> list[tuple[float, int, str, Callable[[], None]]]:
        timeline: list[tuple[float, int, str, Callable[[], None]]] = []

        def add(at: float, what: str, action: Callable[[], None]) -> None:
            timeline.append((at, len(timeline), what, action))

        for index, phase in enumerate(self.plan.phases):
            add(phase.start, f"faults: {phase.kind}", self._faults_setter(phase.kind, index))
        for kill in self.plan.kills:
            add(kill.at, "kill the agent", self._kill)
            add(kill.at + kill.restart_after, "restart the agent", self._restart)
        if self.pubsub is not None:
            for window in self.plan.pubsub_outages:
                add(window.start, "stop Pub/Sub", self.pubsub.stop)
                add(window.end, "restart Pub/Sub", self._restart_pubsub)
        for window in self.plan.disk_fills:
            add(window.start, "fill the volume", self._fill)
            add(window.end, "free the volume", self.volume.free)
        heapq.heapify(timeline)
        return timeline

    def run(self) -> None:
        timeline = self.actions()
        while timeline:
            at, _, what, action = heapq.heappop(timeline)
            if self._stop_event.wait(max(0.0, at - self.clock())):
                return
            log(f"t={self.clock():6.1f}s {what}")
            try:
                action()
            except Exception as error:  # a failed disruption is reported, the run goes on
                self.errors.append(f"{what}: {type(error).__name__}: {error}")

    def _faults_setter(self, kind: str, index: int) -> Callable[[], None]:
        def set_faults() -> None:
            self.phases[kind] = self.phases.get(kind, 0) + 1
            # A seed per phase: the emulator's draws replay with the same --seed.
            config = {"seed": self.plan.seed * 1000 + index, **FAULT_KINDS.get(kind, {})}
            self.ep.admin("PUT", "/faults", config)

        return set_faults

    def _kill(self) -> None:
        if self.agent.kill():
            self.kills += 1

    def _restart(self) -> None:
        if not self.agent.alive():
            self.agent.start()
            self.restarts += 1

    def _restart_pubsub(self) -> None:
        """In a thread of its own: the JVM takes seconds to start, the schedule goes on meanwhile."""
        assert self.pubsub is not None
        pubsub = self.pubsub

        def restart() -> None:
            try:
                pubsub.restart()
            except Exception as error:  # reported with the results; finish() tries once more
                self.errors.append(f"restart Pub/Sub: {type(error).__name__}: {error}")

        thread = threading.Thread(target=restart, name="soak-pubsub-restart", daemon=True)
        thread.start()
        self._threads.append(thread)

    def _fill(self) -> None:
        self.fill_bytes += self.volume.fill()
        self.fills += 1

    def finish(self) -> None:
        """Stop disrupting and leave everything healthy: faults off, disk free, Pub/Sub and the agent up."""
        self._stop_event.set()
        self.ep.admin("PUT", "/faults", {"seed": self.plan.seed})  # also switches quotas off
        self.volume.free()
        for thread in self._threads:
            thread.join(120)
        if self.pubsub is not None and not self.pubsub.up:
            self.pubsub.restart()
        if not self.agent.alive():
            self.agent.start()
            self.restarts += 1


class Kubelet(threading.Thread):
    """Restarts the agent when it exits on its own (recorded as an unexpected exit)."""

    def __init__(self, agent: AgentRunner) -> None:
        super().__init__(name="soak-kubelet", daemon=True)
        self.agent = agent
        self.restarts = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(0.2):
            if self.agent.reap_unexpected():
                log(f"the agent exited on its own: {self.agent.unexpected_exits[-1]}")
                if self._stop_event.wait(KUBELET_RESTART_DELAY):
                    return
                self.agent.start()
                self.restarts += 1

    def stop(self) -> None:
        self._stop_event.set()
        self.join(10)

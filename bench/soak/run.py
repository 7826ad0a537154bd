"""One soak run composed of its parts: the volume, Pub/Sub, the emulator, the app and the agent started; the
readers, the rotator, the chaos and the kubelet running for the plan; convergence timed; the result judged."""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.soak.chaos import Chaos, Kubelet, Rotator
from bench.soak.convergence import await_convergence, scrape, wait_ready
from bench.soak.observers import (
    AppLogReader,
    EndpointClient,
    EndpointReader,
    FileReader,
    LongPollWatcher,
    Observer,
    Requests,
    RssSampler,
)
from bench.soak.plan import make_plan
from bench.soak.report import assemble, memory_trend
from bench.soak.world import (
    PROJECT,
    TOPIC,
    AgentRunner,
    App,
    PubSub,
    Volume,
    agent_config,
    agent_environment,
    log,
)
from testing.emulator_process import emulator_process, patched_environ
from testing.emulator_process import write_seed as emulator_seed
from testing.soak_values import ENV_FILE, MANIFEST, SecretSet, render, secret_set

DEFAULT_CONVERGE_WITHIN = 60.0
"""Seconds the agent gets, after faults and rotations stop, to serve every latest version and be ready.
Generous for a loaded 2-core machine: with the faults gone one check round (at most the 2 s backoff cap,
or the 10 s safety poll while events flow) is all it takes."""


@dataclass
class Options:
    duration: float
    seed: int = 1
    secrets: int = 20
    converge_within: float = DEFAULT_CONVERGE_WITHIN
    keep: bool = False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write_seed(path: Path, secrets: SecretSet, seed: int, with_topic: bool) -> Path:
    entries: dict[str, Any] = {}
    for name in secrets.names:
        entry: dict[str, Any] = {"value": render(name, 0, seed)}
        if with_topic:
            entry["topics"] = [TOPIC]
        entries[name] = entry
    return emulator_seed(path, PROJECT, entries)


def run_soak(options: Options) -> dict[str, Any]:
    """Run the soak; returns the result document (``ok`` says whether every invariant held)."""
    secrets = secret_set(options.secrets)
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    notes: list[str] = []
    with ExitStack() as stack:
        volume = Volume(work)
        stack.callback(volume.close)
        if not volume.mounted:
            notes.append(volume.note)
        plan = make_plan(options.duration, options.seed, secrets, disk=volume.mounted)
        pubsub: PubSub | None = None
        try:
            pubsub = PubSub(TOPIC)
            stack.callback(pubsub.close)
        except Exception as error:  # the soak runs without events and says why
            notes.append(f"no Pub/Sub emulator ({error}): events off, no Pub/Sub outages")
        pubsub_env = {"PUBSUB_EMULATOR_HOST": pubsub.host_port} if pubsub is not None else {}
        with patched_environ(pubsub_env):  # our emulator publishes its events there
            ep = stack.enter_context(
                emulator_process(write_seed(work / "seed.yaml", secrets, options.seed, True))
            )
        files = [*secrets.names, MANIFEST, ENV_FILE]
        app = App(work, volume.output_dir, files)
        stack.callback(app.close)
        endpoint_port, probes_port = free_port(), free_port()
        probes = f"http://127.0.0.1:{probes_port}"
        config = agent_config(
            work / "agent.yaml",
            names=list(secrets.names),
            project=PROJECT,
            output_dir=volume.output_dir,
            env_file=ENV_FILE,
            pid_file=app.pid_file,
            endpoint_port=endpoint_port,
            probes_port=probes_port,
            topic=TOPIC if pubsub is not None else None,
        )
        t0 = time.monotonic()

        def clock() -> float:
            return time.monotonic() - t0

        logs = work / "logs"
        logs.mkdir()
        env = agent_environment(ep.grpc_target, pubsub.host_port if pubsub is not None else None)
        agent = AgentRunner(config, env, logs, clock)
        stack.callback(agent.stop)
        agent.start()
        log(f"work directory {work}; output on {volume.describe}; waiting for the agent to be ready")
        wait_ready(probes, agent)
        t0 = time.monotonic()  # the schedule starts with the agent serving
        start_incarnation = agent.current
        assert start_incarnation is not None
        start_incarnation.started = clock()

        requests = Requests()
        client = EndpointClient(endpoint_port, volume.output_dir, agent, requests)
        file_reader = FileReader(volume.output_dir, secrets)
        app_reader = AppLogReader(app.log, secrets)
        readers = [
            EndpointReader(client, secrets, 0),
            EndpointReader(client, secrets, len(secrets.names) // 2),
        ]
        long_poll = LongPollWatcher(client, plan.most_rotated(secrets.names))
        rss = RssSampler(agent, clock)
        observers: list[Observer] = [file_reader, app_reader, *readers, long_poll, rss]
        rotator = Rotator(ep, plan, options.seed, secrets.names, clock)
        chaos = Chaos(plan, ep, agent, pubsub, volume, clock)
        kubelet = Kubelet(agent)
        chaos_thread = threading.Thread(target=chaos.run, name="soak-chaos", daemon=True)
        for thread in (*observers, rotator, kubelet, chaos_thread):
            thread.start()
        log(f"running for {options.duration:.0f} s (seed {options.seed}, {len(secrets.names)} secrets)")

        while clock() < plan.faults_stop:
            time.sleep(min(1.0, plan.faults_stop - clock()))
        rotator.stop()
        chaos_thread.join(5)
        chaos.finish()
        faults_stopped = clock()
        log(f"t={faults_stopped:6.1f}s faults and rotations stopped; waiting for convergence")
        convergence = await_convergence(
            dict(rotator.latest),
            volume.output_dir,
            secrets,
            client,
            probes,
            app_reader,
            options.converge_within,
        )
        log(f"converged: {convergence}")
        # The readers go on until the duration is up (at least one more second): the converged, quiet state
        # is read too, and --duration is the length of the run.
        time.sleep(max(1.0, options.duration - clock()))
        metrics = scrape(probes)
        kubelet.stop()
        for observer in observers:
            observer.stop()
        final_exit = agent.stop()
        counters = ep.admin("GET", "/counters")
        result = assemble(
            converge_within=options.converge_within,
            plan=plan,
            secrets=secrets,
            notes=notes,
            volume=volume,
            pubsub=pubsub,
            agent=agent,
            chaos=chaos,
            kubelet=kubelet,
            rotator=rotator,
            file_reader=file_reader,
            app_reader=app_reader,
            readers=readers,
            long_poll=long_poll,
            observers=observers,
            requests=requests,
            convergence=convergence,
            memory=memory_trend(rss.samples, (plan.chaos_end, faults_stopped)),
            rss_samples=[(round(t, 2), k, kib) for t, k, kib in rss.samples],
            metrics=metrics,
            counters=counters,
            final_exit=final_exit,
            work=work,
        )
    if result["ok"] and not options.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        result["work_dir"] = str(work)
        (work / "result.json").write_text(json.dumps(result, indent=2))
    return result

"""``secrets-agent webhook``: flags, their errors (exit 2, one line each), a certificate that does not load
(exit 1), and the real program answering a review over HTTPS and stopping on SIGTERM."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from agent.cli import main, parse
from agent.webhook.cli import options_from
from agent.webhook.settings import InjectorSettings, Resources
from tests.webhook.conftest import Tls
from tests.webhook.helpers import DB_REF, make_pod, pod_annotations, review

ROOT = Path(__file__).resolve().parents[2]


def tls_flags(tls: Tls) -> list[str]:
    return ["--tls-cert-file", str(tls.cert_file), "--tls-key-file", str(tls.key_file)]


def test_the_defaults(tls: Tls) -> None:
    invocation = parse(["webhook", *tls_flags(tls)], {})
    assert invocation.command == "webhook"
    options = options_from(invocation.args)
    assert options.listen == "0.0.0.0:8443"
    assert (options.cert_file, options.key_file) == (tls.cert_file, tls.key_file)
    assert options.injector == InjectorSettings()
    assert options.injector.image == "ghcr.io/secrets-agent/secrets-agent:0.1.0"
    assert (options.reload_interval, options.shutdown_delay) == (10.0, 5.0)


def test_every_flag(tls: Tls) -> None:
    args = parse(
        [
            "webhook",
            *tls_flags(tls),
            "--listen=127.0.0.1:9443",
            "--image=registry.local/agent:2",
            "--default-mode=native",
            "--project=cluster-project",
            "--cpu-request=10m",
            "--memory-request=64Mi",
            "--cpu-limit=none",
            "--memory-limit=128Mi",
            "--volume-size=4Mi",
            "--tls-reload-interval=1m",
            "--shutdown-delay=0",
        ],
        {},
    ).args
    options = options_from(args)
    assert options.listen == "127.0.0.1:9443"
    assert options.injector == InjectorSettings(
        image="registry.local/agent:2",
        default_mode="native",
        project="cluster-project",
        resources=Resources("10m", "64Mi", None, "128Mi"),
        volume_size="4Mi",
    )
    assert (options.reload_interval, options.shutdown_delay) == (60.0, 0.0)


def test_bad_flags_are_each_one_line_and_exit_2(tls: Tls, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "webhook",
            *tls_flags(tls),
            "--listen=nowhere",
            "--memory-limit=lots",
            "--tls-reload-interval=often",
            "--project=Bad_Project",
            "--image=a b",
        ]
    )
    assert code == 2
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(":")[1].strip() for line in lines] == [
        "--listen",
        "--tls-reload-interval",
        "--memory-limit",
        "--image",
        "--project",
    ]
    assert all(line.startswith("secrets-agent: --") for line in lines)


def test_an_unknown_mode_is_a_usage_error(tls: Tls, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse(["webhook", *tls_flags(tls), "--default-mode", "daemonset"], {})
    assert exited.value.code == 2
    assert "--default-mode" in capsys.readouterr().err


def test_a_certificate_that_does_not_load_exits_1(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "agent",
            "webhook",
            "--listen=127.0.0.1:0",
            "--tls-cert-file",
            str(tmp_path / "none.crt"),
            "--tls-key-file",
            str(tmp_path / "none.key"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"secrets-agent: cannot load the TLS certificate {tmp_path / 'none.crt'} and key "
        f"{tmp_path / 'none.key'}: No such file or directory"
    )


def test_the_program_answers_over_https_and_stops_on_sigterm(tls: Tls, tmp_path: Path) -> None:
    log = tmp_path / "webhook.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agent",
                "webhook",
                "--listen=127.0.0.1:0",
                "--shutdown-delay=0.1",
                *tls_flags(tls),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    try:
        deadline = time.monotonic() + 30
        while not (match := re.search(r"webhook listening on https://127\.0\.0\.1:(\d+)", log.read_text())):
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        url = f"https://127.0.0.1:{match[1]}"
        ca = tmp_path / "ca.pem"
        tls.ca.cert_pem.write_to_path(str(ca))
        sent = review(make_pod(pod_annotations(inject="true", secret_db=DB_REF)))
        answer = requests.post(url + "/mutate", json=sent, verify=str(ca), timeout=10)
        assert answer.status_code == 200
        assert answer.json()["response"]["uid"] == sent["request"]["uid"]
        assert answer.json()["response"]["patchType"] == "JSONPatch"
        assert requests.get(url + "/readyz", verify=str(ca), timeout=10).json() == {"status": "ok"}
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    reviews = [line for line in lines if line["message"] == "admission review"]
    assert len(reviews) == 1
    assert reviews[0]["uid"] == sent["request"]["uid"]
    assert reviews[0]["patch_ops"] > 0

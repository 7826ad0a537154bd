"""``select`` end to end without events: the real program against the emulator, secrets chosen by labels
and by id prefix, listed by ``init`` (which records what it found in ``.selection``), adopted by ``run``
without listing, found again and let go by ``run``'s safety re-list, collisions, a used-up read quota, a
planted link, the metrics and ``check-config``.

The events side (a new secret in under a second, a relabelling by event) is tests/e2e/test_select_events.py.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import requests
from dotenv import dotenv_values
from prometheus_client.parser import text_string_to_metric_families

from agent.config import SELECTION_FILE_NAME
from tests.e2e.conftest import (
    CANARY,
    PROJECT,
    AgentProcess,
    Agents,
    Upstream,
    read_file,
    write_config,
)
from tests.e2e.test_endpoint_e2e import TOKEN_HEADER, bound_port

PAYMENTS = {"name": "payments", "labels": {"app": "payments"}, "env_prefix": "PAY_"}


def create(
    upstream: Upstream,
    secret_id: str,
    value: str | None,
    labels: Mapping[str, str] | None = None,
    topic: str | None = None,
) -> None:
    """A secret with ``labels`` (and events to ``topic``), with ``value`` as its version 1."""
    secret: dict[str, object] = {"replication": {"automatic": {}}, "labels": dict(labels or {})}
    if topic is not None:
        secret["topics"] = [{"name": topic}]
    upstream.client.create_secret(
        request={"parent": f"projects/{PROJECT}", "secret_id": secret_id, "secret": secret}
    )
    if value is not None:
        upstream.add(secret_id, value)


def relabel(upstream: Upstream, secret_id: str, labels: Mapping[str, str]) -> None:
    """UpdateSecret of the labels, through the official client (SECRET_UPDATE when it has topics)."""
    upstream.client.update_secret(
        request={
            "secret": {"name": Upstream.ref(secret_id), "labels": dict(labels)},
            "update_mask": {"paths": ["labels"]},
        }
    )


def seed(upstream: Upstream) -> None:
    create(upstream, "db", "db-value", {"app": "payments", "env": "prod"})
    create(upstream, "api-key", "api-value", {"app": "payments"})
    create(upstream, "billing-db", "billing-value", {"app": "billing"})
    create(upstream, "payments-legacy", "legacy-value")
    upstream.reset_counters()


def config_file(
    tmp_path: Path, output_dir: Path, select: Sequence[Mapping[str, object]], **settings: object
) -> Path:
    return write_config(
        tmp_path / "agent.yaml",
        settings.pop("secrets", []),  # type: ignore[arg-type]
        project=PROJECT,
        output_dir=str(output_dir),
        env_file="app.env",
        select=list(select),
        **settings,
    )


def env_of(output_dir: Path) -> dict[str, str | None]:
    return dotenv_values(output_dir / "app.env")


def record_of(output_dir: Path) -> dict[str, object]:
    document = json.loads((output_dir / SELECTION_FILE_NAME).read_text())
    assert isinstance(document, dict)
    return document


def start_run(agents: Agents, config: Path, env: Mapping[str, str] | None = None) -> AgentProcess:
    agent = agents.start("run", "-c", config, env={"SECRETS_AGENT_NOTIFY_DEBOUNCE": "0", **(env or {})})
    agent.wait_for_log("run: serving", within=20)
    return agent


def endpoint_value(agent: AgentProcess, output_dir: Path, name: str) -> bytes | None:
    port = bound_port(agent, r"local endpoint listening on http://127\.0\.0\.1:(\d+)")
    token = (output_dir / ".token").read_text().strip()
    answer = requests.get(
        f"http://127.0.0.1:{port}/v1/secrets/{name}", headers={TOKEN_HEADER: token}, timeout=5
    )
    return answer.content if answer.status_code == 200 else None


def endpoint_status(agent: AgentProcess, output_dir: Path, path: str) -> int:
    port = bound_port(agent, r"local endpoint listening on http://127\.0\.0\.1:(\d+)")
    token = (output_dir / ".token").read_text().strip()
    return requests.get(
        f"http://127.0.0.1:{port}{path}", headers={TOKEN_HEADER: token}, timeout=5
    ).status_code


def scrape(agent: AgentProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    port = bound_port(agent, r"probes listening on 127\.0\.0\.1:(\d+)")
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


# --------------------------------------------------------------------------------------------------
# init
# --------------------------------------------------------------------------------------------------


def test_init_selects_by_labels_into_files_and_the_env_file_and_records_it(
    agents: Agents, upstream: Upstream, output_dir: Path, tmp_path: Path
) -> None:
    seed(upstream)
    config = config_file(tmp_path, output_dir, [PAYMENTS])

    result = agents.run("init", "-c", config)

    assert result.returncode == 0, result.stderr
    assert read_file(output_dir, "db") == b"db-value"
    assert read_file(output_dir, "api-key") == b"api-value"
    assert read_file(output_dir, "billing-db") is None
    assert env_of(output_dir) == {"PAY_DB": "db-value", "PAY_API_KEY": "api-value", "CANARY": CANARY}
    assert upstream.calls("ListSecrets") == 1
    record = record_of(output_dir)
    entry = record["selections"]["payments"]  # type: ignore[index]
    assert entry["matched"] == ["api-key", "db"]
    assert abs(entry["listed_at"] - time.time()) < 60
    assert os.stat(output_dir / SELECTION_FILE_NAME).st_mode & 0o777 == 0o600
    assert "db-value" not in (output_dir / SELECTION_FILE_NAME).read_text()


def test_init_with_only_selections_and_no_explicit_secret_fetches_what_they_match(
    agents: Agents, upstream: Upstream, output_dir: Path, tmp_path: Path
) -> None:
    """A configuration may consist of selections alone: ``init`` does not call it "nothing to fetch"."""
    seed(upstream)
    config = tmp_path / "agent.yaml"
    config.write_text(
        json.dumps({"project": PROJECT, "output_dir": str(output_dir), "select": [PAYMENTS]}), "utf-8"
    )

    result = agents.run("init", "-c", config)

    assert result.returncode == 0, result.stderr
    assert read_file(output_dir, "db") == b"db-value"
    assert read_file(output_dir, "api-key") == b"api-value"
    assert read_file(output_dir, "billing-db") is None


def test_init_selects_by_prefix_and_rewrites_the_names(
    agents: Agents, upstream: Upstream, output_dir: Path, tmp_path: Path
) -> None:
    seed(upstream)
    create(upstream, "payments-db", "pdb-value")
    select = {
        "name": "by-prefix",
        "name_prefix": "payments-",
        "rewrite": [{"regex": "^payments-", "replace": ""}],
        "file_prefix": "payments/",
    }
    config = config_file(tmp_path, output_dir, [select])

    result = agents.run("init", "-c", config)

    assert result.returncode == 0, result.stderr
    assert read_file(output_dir / "payments", "db") == b"pdb-value"
    assert read_file(output_dir / "payments", "legacy") == b"legacy-value"
    assert env_of(output_dir) == {"DB": "pdb-value", "LEGACY": "legacy-value", "CANARY": CANARY}


def test_init_fails_on_a_collision_naming_both_sides(
    agents: Agents, upstream: Upstream, output_dir: Path, tmp_path: Path
) -> None:
    seed(upstream)
    config = config_file(
        tmp_path,
        output_dir,
        [{"name": "payments", "labels": {"app": "payments"}}],
        secrets=[{"name": "db", "ref": Upstream.ref("billing-db")}],
    )

    result = agents.run("init", "-c", config)

    assert result.returncode == 1
    [line] = [m for m in result.messages("ERROR") if m.startswith("init failed")]
    assert "select 'payments' maps secret 'db' to name 'db', which secrets[0] 'db' already uses" in line
    assert read_file(output_dir, "api-key") is None  # nothing selected is fetched after a collision


def test_init_fails_on_a_required_selection_that_matches_nothing_and_warns_for_another(
    agents: Agents, upstream: Upstream, output_dir: Path, tmp_path: Path
) -> None:
    seed(upstream)
    optional = {"name": "nobody", "labels": {"app": "nobody"}}
    config = config_file(tmp_path, output_dir, [PAYMENTS, optional])
    result = agents.run("init", "-c", config)
    assert result.returncode == 0, result.stderr
    assert "select 'nobody' matches no secret" in result.messages("WARNING")

    required = {"name": "nobody", "labels": {"app": "nobody"}, "required": True}
    config = config_file(tmp_path, output_dir, [PAYMENTS, required])
    (output_dir / SELECTION_FILE_NAME).unlink()
    result = agents.run("init", "-c", config)
    assert result.returncode == 1
    assert "init failed: select 'nobody' matches no secret (it is required)" in result.messages("ERROR")


def test_a_link_planted_at_the_record_is_not_followed(
    agents: Agents, upstream: Upstream, output_dir: Path, tmp_path: Path
) -> None:
    seed(upstream)
    victim = tmp_path / "victim.json"
    planted = {
        "format": 1,
        "selections": {"payments": {"fingerprint": "x", "listed_at": time.time(), "matched": ["billing-db"]}},
    }
    victim.write_text(json.dumps(planted))
    output_dir.mkdir(parents=True)
    (output_dir / SELECTION_FILE_NAME).symlink_to(victim)
    config = config_file(tmp_path, output_dir, [PAYMENTS])

    result = agents.run("init", "-c", config)

    assert result.returncode == 0, result.stderr
    assert upstream.calls("ListSecrets") == 1  # the planted record was not read: the agent listed
    assert read_file(output_dir, "billing-db") is None
    assert json.loads(victim.read_text()) == planted  # not written through either
    assert not (output_dir / SELECTION_FILE_NAME).is_symlink()
    assert any("symbolic link" in m for m in result.messages("WARNING"))


def test_check_config_lists_each_selection_and_says_what_it_matches(
    agents: Agents, upstream: Upstream, output_dir: Path, tmp_path: Path
) -> None:
    seed(upstream)
    config = config_file(tmp_path, output_dir, [PAYMENTS, {"name": "nobody", "labels": {"app": "nobody"}}])
    result = agents.run("check-config", "-c", config)
    assert result.returncode == 0, result.stderr
    assert "# select 'payments': 2 secrets: api-key, db" in result.stdout
    assert "# WARNING: select 'nobody' matches no secret" in result.stdout

    required = {"name": "nobody", "labels": {"app": "nobody"}, "required": True}
    config = config_file(tmp_path, output_dir, [PAYMENTS, required])
    result = agents.run("check-config", "-c", config)
    assert result.returncode == 1
    assert "# ERROR: select 'nobody' matches no secret, and it is required" in result.stdout

    upstream.set_faults({"ListSecrets": {"resource_exhausted": 1.0}})
    result = agents.run("check-config", "-c", config, within=60)
    assert result.returncode == 0, result.stdout
    assert "# select 'payments': could not list it: RESOURCE_EXHAUSTED" in result.stdout


# --------------------------------------------------------------------------------------------------
# run
# --------------------------------------------------------------------------------------------------


def test_run_adopts_the_record_init_left_and_does_not_list_at_start(
    agents: Agents, upstream: Upstream, output_dir: Path, tmp_path: Path
) -> None:
    seed(upstream)
    # The first re-list comes at a random moment of the interval (a fleet's are spread): a day away here.
    config = config_file(tmp_path, output_dir, [PAYMENTS], discovery={"relist_interval": "24h"})
    assert agents.run("init", "-c", config).returncode == 0
    upstream.reset_counters()

    agent = start_run(agents, config)

    assert endpoint_value(agent, output_dir, "db") == b"db-value"
    assert read_file(output_dir, "api-key") == b"api-value"
    assert env_of(output_dir)["PAY_DB"] == "db-value"
    assert any("starting from .selection (2 secrets), without listing" in m for m in agent.messages())
    assert upstream.calls("ListSecrets") == 0
    metrics = scrape(agent)
    assert metrics[("secrets_agent_selection_matched", (("selection", "payments"),))] == 2
    assert (
        metrics[("secrets_agent_selection_last_listing_timestamp_seconds", (("selection", "payments"),))] > 0
    )
    assert upstream.calls("ListSecrets") == 0
    assert agent.stop() == 0


def test_run_finds_a_new_secret_at_the_safety_relist_and_lets_a_relabelled_one_go_after_the_grace_period(
    agents: Agents, upstream: Upstream, output_dir: Path, tmp_path: Path
) -> None:
    seed(upstream)
    config = config_file(
        tmp_path, output_dir, [PAYMENTS], discovery={"relist_interval": "1s", "grace_period": "3s"}
    )
    agent = start_run(agents, config)
    agent.wait_until(lambda: read_file(output_dir, "db") == b"db-value", within=15, what="the first listing")

    created = time.monotonic()
    create(upstream, "token", "token-value", {"app": "payments"})
    agent.wait_until(
        lambda: read_file(output_dir, "token") == b"token-value", within=5, what="the new secret"
    )
    print(f"a new secret by the safety re-list (1s): {time.monotonic() - created:.2f}s")
    assert env_of(output_dir)["PAY_TOKEN"] == "token-value"
    assert endpoint_value(agent, output_dir, "token") == b"token-value"

    relabel(upstream, "token", {"app": "other"})
    relabelled = time.monotonic()
    agent.wait_until(lambda: read_file(output_dir, "token") is None, within=15, what="the removal")
    assert time.monotonic() - relabelled >= 2.5  # not before the grace period (3s, minus a re-list)
    assert "PAY_TOKEN" not in env_of(output_dir)
    # The files are swapped before the endpoint's store is (it never runs ahead of them): wait for it too.
    agent.wait_until(
        lambda: endpoint_value(agent, output_dir, "token") is None, within=5, what="the endpoint's removal"
    )
    assert endpoint_status(agent, output_dir, "/v1/files/token") == 404  # gone, not "not rendered yet"
    assert read_file(output_dir, "db") == b"db-value"
    messages = agent.messages()
    assert any(re.search(r"select 'payments' no longer matches secret 'token'", m) for m in messages)
    assert any("select 'payments': secret 'token' leaves the selection" in m for m in messages)
    assert record_of(output_dir)["selections"]["payments"]["matched"] == ["api-key", "db"]  # type: ignore[index]
    assert agent.alive()


def test_a_secret_known_at_start_and_relabelled_is_gone_from_the_endpoint_not_pending(
    agents: Agents, upstream: Upstream, output_dir: Path, tmp_path: Path
) -> None:
    """The endpoint's idea of which files exist follows the selection: a removed file answers 404, not the
    503 "not rendered yet" of a file that is still coming."""
    seed(upstream)
    known = {**PAYMENTS, "known": ["api-key", "db"], "known_at": time.time()}
    config = config_file(
        tmp_path, output_dir, [known], discovery={"relist_interval": "1s", "grace_period": "1s"}
    )
    agent = start_run(agents, config)
    agent.wait_until(lambda: read_file(output_dir, "api-key") == b"api-value", within=15, what="start")
    assert endpoint_status(agent, output_dir, "/v1/files/api-key") == 200

    relabel(upstream, "api-key", {"app": "other"})
    agent.wait_until(lambda: read_file(output_dir, "api-key") is None, within=15, what="the removal")

    assert endpoint_status(agent, output_dir, "/v1/files/api-key") == 404
    assert endpoint_status(agent, output_dir, "/v1/secrets/api-key") == 404
    assert endpoint_status(agent, output_dir, "/v1/files/db") == 200


def test_a_secret_selected_while_running_is_adopted_by_the_next_run_while_the_backend_is_down(
    agents: Agents, upstream: Upstream, output_dir: Path, tmp_path: Path
) -> None:
    """Last-known-good across a restart holds for secrets added at run time too: the manifest lists them."""
    seed(upstream)
    config = config_file(tmp_path, output_dir, [PAYMENTS], discovery={"relist_interval": "1s"})
    agent = start_run(agents, config)
    agent.wait_until(lambda: read_file(output_dir, "db") == b"db-value", within=15, what="the first listing")
    create(upstream, "token", "token-value", {"app": "payments"})
    agent.wait_until(
        lambda: read_file(output_dir, "token") == b"token-value", within=10, what="the new secret"
    )
    agent.stop()

    upstream.set_faults({"*": {"unavailable": 1.0}})
    again = agents.start("run", "-c", config, "--timeout", "5m")
    again.wait_for_log("adopted", within=20)
    time.sleep(1.5)  # a write of the adopted snapshot, if one came, has happened
    assert read_file(output_dir, "token") == b"token-value"
    assert read_file(output_dir, "db") == b"db-value"
    assert again.alive()


def test_a_used_up_read_quota_delays_only_the_selection_and_a_failing_listing_removes_nothing(
    agents: Agents, upstream: Upstream, output_dir: Path, tmp_path: Path
) -> None:
    seed(upstream)
    upstream.set_faults({"ListSecrets": {"resource_exhausted": 1.0}})
    config = config_file(
        tmp_path,
        output_dir,
        [PAYMENTS],
        discovery={"relist_interval": "0.5s", "grace_period": "0.5s"},
        gcp={"backoff_initial": "0.1s", "backoff_max": "0.5s"},
    )
    agent = start_run(agents, config)  # the explicit (required) canary bootstraps meanwhile
    assert read_file(output_dir, "canary") == CANARY.encode()
    agent.wait_until(lambda: upstream.calls("ListSecrets") >= 4, within=15, what="listings retried")
    failed = [m for m in agent.messages("WARNING") if "select 'payments': listing failed" in m]
    assert len(failed) == 1, failed  # one line for the burst, not one per attempt
    assert "RESOURCE_EXHAUSTED" in failed[0]
    metrics = scrape(agent)
    key = (
        "secrets_agent_selection_listing_errors_total",
        (("code", "RESOURCE_EXHAUSTED"), ("selection", "payments")),
    )
    assert metrics[key] >= 3

    upstream.clear_faults()
    agent.wait_until(
        lambda: read_file(output_dir, "db") == b"db-value", within=10, what="the listing at last"
    )
    upstream.set_faults({"ListSecrets": {"unavailable": 1.0}})
    failing = upstream.calls("ListSecrets")
    agent.wait_until(lambda: upstream.calls("ListSecrets") >= failing + 5, within=15, what="failed re-lists")
    assert read_file(output_dir, "db") == b"db-value"  # a failed listing never removes anything
    assert read_file(output_dir, "api-key") == b"api-value"
    assert agent.alive()


def test_run_logs_a_collision_and_skips_the_loser(
    agents: Agents, upstream: Upstream, output_dir: Path, tmp_path: Path
) -> None:
    seed(upstream)
    config = config_file(
        tmp_path,
        output_dir,
        [{"name": "payments", "labels": {"app": "payments"}}],
        secrets=[{"name": "db", "ref": Upstream.ref("billing-db")}],
    )
    agent = start_run(agents, config)
    agent.wait_until(lambda: read_file(output_dir, "api-key") == b"api-value", within=15, what="the listing")
    assert read_file(output_dir, "db") == b"billing-value"  # explicit wins
    [line] = [m for m in agent.messages("ERROR") if "select 'payments'" in m]
    assert "maps secret 'db' to name 'db', which secrets[0] 'db' already uses" in line
    metrics = scrape(agent)
    assert metrics[("secrets_agent_selection_collisions_total", (("selection", "payments"),))] == 1
    assert agent.alive()


def test_exec_resolves_the_selections_into_the_environment_before_the_app_starts(
    agents: Agents, upstream: Upstream, output_dir: Path, tmp_path: Path
) -> None:
    seed(upstream)
    dump = tmp_path / "env.json"
    app = f"import json, os; json.dump(dict(os.environ), open({str(dump)!r}, 'w'))"
    config = config_file(tmp_path, output_dir, [PAYMENTS])

    result = agents.run("exec", "-c", config, "--", sys.executable, "-c", app)

    assert result.returncode == 0, result.stderr
    env = json.loads(dump.read_text())
    assert (env["PAY_DB"], env["PAY_API_KEY"], env["CANARY"]) == ("db-value", "api-value", CANARY)
    assert "PAY_BILLING_DB" not in env
    assert not (output_dir / SELECTION_FILE_NAME).exists()  # exec writes nothing

    dump.unlink()
    colliding = config_file(
        tmp_path,
        output_dir,
        [{"name": "payments", "labels": {"app": "payments"}}],
        secrets=[{"name": "db", "ref": Upstream.ref("billing-db")}],
    )
    result = agents.run("exec", "-c", colliding, "--", sys.executable, "-c", app)
    assert result.returncode == 1
    assert any("which secrets[0] 'db' already uses" in m for m in result.messages("ERROR"))
    assert not dump.exists()  # the app never ran


def test_exec_watch_follows_the_selection_and_restarts_the_app_with_a_new_secret(
    agents: Agents, upstream: Upstream, output_dir: Path, tmp_path: Path
) -> None:
    seed(upstream)
    starts = tmp_path / "starts.jsonl"
    # The app writes its PAY_ variables once per start, and stops on SIGTERM (the watch's restart).
    app = (
        "import json, os, signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
        "pay = {k: v for k, v in os.environ.items() if k.startswith('PAY_')}\n"
        f"open({str(starts)!r}, 'a').write(json.dumps(pay) + '\\n')\n"
        "time.sleep(120)\n"
    )
    config = config_file(tmp_path, output_dir, [PAYMENTS], discovery={"relist_interval": "1s"})

    def started() -> list[dict[str, str]]:
        return [json.loads(line) for line in starts.read_text().splitlines()] if starts.exists() else []

    agent = agents.start("exec", "-c", config, "--watch", "--", sys.executable, "-c", app)
    agent.wait_until(lambda: len(started()) == 1, within=20, what="the app")
    assert started()[0] == {"PAY_DB": "db-value", "PAY_API_KEY": "api-value"}

    create(upstream, "token", "token-value", {"app": "payments"})
    agent.wait_until(lambda: len(started()) == 2, within=15, what="the app restarted with the new secret")
    assert started()[1] == {"PAY_DB": "db-value", "PAY_API_KEY": "api-value", "PAY_TOKEN": "token-value"}
    assert upstream.calls("ListSecrets") >= 2  # the start's listing, then the re-list that found it
    agent.stop()
    assert not (output_dir / SELECTION_FILE_NAME).exists()  # exec writes nothing, watching or not


def test_dev_on_a_dotenv_file_refuses_selections_as_a_configuration_error(
    agents: Agents, upstream: Upstream, output_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text("DB=dev-value\n")
    config = config_file(tmp_path, output_dir, [PAYMENTS])
    result = agents.run("dev", "-c", config)
    assert result.returncode == 2
    assert "select: select needs the Secret Manager source" in result.stderr
    assert not output_dir.exists()  # refused before anything was touched


def test_a_recorded_secret_deleted_since_is_left_out_with_a_warning_not_a_failure(
    agents: Agents, upstream: Upstream, output_dir: Path, tmp_path: Path
) -> None:
    seed(upstream)
    required = {**PAYMENTS, "required": True}
    config = config_file(tmp_path, output_dir, [required])
    assert agents.run("init", "-c", config).returncode == 0
    upstream.client.delete_secret(request={"name": Upstream.ref("api-key")})
    upstream.reset_counters()

    result = agents.run("init", "-c", config)  # a pod restart: the record is used, nothing is listed

    assert result.returncode == 0, result.stderr
    assert upstream.calls("ListSecrets") == 0
    assert any("secret 'api-key' no longer exists (NOT_FOUND)" in m for m in result.messages("WARNING"))
    assert read_file(output_dir, "db") == b"db-value"

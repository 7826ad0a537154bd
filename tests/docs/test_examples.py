"""Every example in README.md and docs/**/*.md runs (testing/docs_examples.py has the convention the pages
follow): one test per page, then the harness's own tests on small made-up pages."""

from __future__ import annotations

import os
import socket
import textwrap
import time
from pathlib import Path

import pytest

from testing.docs_examples import (
    REPO,
    SKIP_BUDGET,
    Checks,
    PageReport,
    missing_lines,
    needs_of,
    pages,
    parse_page,
    ports_of,
    run_page,
    skip_share,
)

PAGES = pages()


def _page_param(path: Path) -> object:
    marks = [getattr(pytest.mark, need) for need in needs_of(path)]
    return pytest.param(path, id=path.relative_to(REPO).as_posix(), marks=marks)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("path", [_page_param(p) for p in PAGES])
def test_page(path: Path, tmp_path: Path, example_checks: Checks, page_reports: list[PageReport]) -> None:
    report = run_page(parse_page(path), tmp_path, example_checks)
    page_reports.append(report)
    if report.failures:
        pytest.fail(report.message(), pytrace=False)


def test_the_pages_are_readme_and_docs_but_not_the_generated_reference() -> None:
    names = [p.relative_to(REPO).as_posix() for p in PAGES]
    assert names[0] == "README.md"
    assert not [n for n in names if n.startswith("docs/reference/")]
    assert all(n == "README.md" or n.startswith("docs/") for n in names)


def test_skips_stay_within_the_budget() -> None:
    skipped, total = skip_share([parse_page(p) for p in PAGES])
    assert skipped <= SKIP_BUDGET * total, (
        f"{skipped} of {total} examples are skipped, more than {SKIP_BUDGET:.0%}: make some of them run"
    )


# --------------------------------------------------------------------------------------------------
# The harness on made-up pages
# --------------------------------------------------------------------------------------------------


def run(tmp_path: Path, checks: Checks, markdown: str) -> PageReport:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "page.md"
    path.write_text(textwrap.dedent(markdown).lstrip("\n"))
    return run_page(parse_page(path), tmp_path / "run", checks)


def failures(report: PageReport) -> str:
    return "\n\n".join(report.failures)


def test_a_failing_python_block_fails_with_its_line_status_and_output(
    tmp_path: Path, example_checks: Checks
) -> None:
    report = run(
        tmp_path,
        example_checks,
        """
        # A page

        ```python
        import sys
        print("about to fail")
        sys.exit(3)
        ```
        """,
    )
    text = failures(report)
    assert "page.md:3 (```python): exited with status 3 (expected 0)" in text
    assert "about to fail" in text
    assert "sys.exit(3)" in text  # the command


def test_a_console_block_with_a_mismatched_expected_line_fails(
    tmp_path: Path, example_checks: Checks
) -> None:
    report = run(
        tmp_path,
        example_checks,
        """
        ```console
        $ echo hello world
        hullo world
        ```
        """,
    )
    text = failures(report)
    assert "page.md:1 (```console): line 2: expected output not found: 'hullo world'" in text
    assert "$ echo hello world" in text
    assert "| hello world" in text


def test_a_skip_without_a_reason_fails(tmp_path: Path, example_checks: Checks) -> None:
    report = run(
        tmp_path,
        example_checks,
        """
        <!-- example: skip -->
        ```bash
        make run
        ```
        """,
    )
    assert "skip needs a reason" in failures(report)


def test_a_skip_with_a_reason_is_reported(tmp_path: Path, example_checks: Checks) -> None:
    report = run(
        tmp_path,
        example_checks,
        """
        <!-- example: skip reason="needs a cluster" -->
        ```bash
        kubectl apply -k k8s/webhook
        ```
        """,
    )
    assert report.failures == []
    assert report.skipped == [("page.md:2", "needs a cluster")]


def test_an_agent_config_with_an_unknown_key_fails(tmp_path: Path, example_checks: Checks) -> None:
    report = run(
        tmp_path,
        example_checks,
        """
        ```yaml
        poll_intervall: 5m
        secrets:
          - name: db-password
            ref: db-password
        ```
        """,
    )
    text = failures(report)
    assert "the agent's loader refuses it" in text
    assert "poll_intervall: unknown key (did you mean 'poll_interval'?)" in text


def test_a_lone_misspelt_setting_is_still_read_as_the_agent_config(
    tmp_path: Path, example_checks: Checks
) -> None:
    report = run(tmp_path, example_checks, "```yaml\npoll_intervall: 5m\n```\n")
    assert "did you mean 'poll_interval'" in failures(report)


def test_an_agent_config_with_settings_the_rotation_config_shares_is_still_the_agents(
    tmp_path: Path, example_checks: Checks
) -> None:
    # fleet (and gcp, project) are keys of both files: they must not make this read as a rotation config.
    report = run(
        tmp_path,
        example_checks,
        """
        ```yaml
        project: demo-project
        select:
          - {name: payments, labels: {team: payments}}
        fleet: {size: 10000}
        discovery: {grace_period: 5 parsecs}
        ```
        """,
    )
    text = failures(report)
    assert "the agent's loader refuses it" in text
    assert "discovery.grace_period" in text


def test_tested_by_a_missing_test_fails_and_an_existing_one_passes(
    tmp_path: Path, example_checks: Checks
) -> None:
    report = run(
        tmp_path,
        example_checks,
        """
        <!-- example: tested-by="tests/docs/test_examples.py::test_that_does_not_exist" -->
        ```bash
        make run
        ```

        <!-- example: tested-by="tests/nowhere/test_x.py::test_y" -->
        ```bash
        make run
        ```

        <!-- example: tested-by="tests/docs/test_examples.py::test_a_skip_without_a_reason_fails" -->
        ```bash
        make run
        ```
        """,
    )
    text = failures(report)
    assert "has no test function 'test_that_does_not_exist'" in text
    assert "there is no tests/nowhere/test_x.py" in text
    assert len(report.failures) == 2, text


def test_a_tutorial_page_runs_in_order_and_carries_its_state(tmp_path: Path, example_checks: Checks) -> None:
    report = run(
        tmp_path,
        example_checks,
        """
        # Tutorial

        ```bash
        export GREETING=hello
        mkdir -p project && cd project
        ```

        ```yaml title="agent.yaml"
        project: demo-project
        output_dir: secrets
        secrets:
          - name: db-password
            ref: db-password
        ```

        ```console
        $ echo "$GREETING from $(basename "$PWD")"
        hello from project
        $ secrets-agent check-config agent.yaml
        project: demo-project
        ...
        output_dir: ...secrets
        $ secrets-agent check-config missing.yaml
        ...
        $ echo $?
        2
        $ ls ../examples
        ...
        emulator-seed.yaml
        ```

        ```python
        import os, pathlib
        assert os.environ["GREETING"] == "hello"
        assert pathlib.Path("agent.yaml").is_file()
        ```

        ```dotenv title=".env"
        API_KEY=abc
        DB_PASSWORD='p@ss'
        ```

        ```json
        {"a": [1, 2]}
        ```

        ```toml
        [tool.x]
        a = 1
        ```

        ```jinja
        postgresql://{{ secrets.db.data.username | urlquote }}@db/app
        ```

        <!-- example: fragment under="notify" -->
        ```yaml
        signal: SIGHUP
        pid_file: /run/app.pid
        ```

        <!-- example: fragment of="Pod" -->
        ```yaml
        metadata:
          annotations:
            secrets-agent.io/inject: "true"
        ```

        ```yaml
        project: demo-project
        secrets:
          api-key: demo
          db-password: {versions: [v1, v2], labels: {team: payments}}
        ```

        ```yaml
        secrets:
          session-key:
            provider: symmetric
            length: 32
        ```

        ```yaml
        faults:
          AccessSecretVersion:
            unavailable: 0.2
        ```

        ```yaml
        apiVersion: v1
        kind: ConfigMap
        metadata:
          name: agent
        data:
          agent.yaml: "project: demo-project"
        ```

        ```text
        anything at all
        ```
        """,
    )
    assert report.failures == [], failures(report)
    assert (report.ran, report.checked) == (3, 11)
    assert (tmp_path / "run" / "work" / "project" / ".env").is_file()


def test_invalid_static_blocks_fail(tmp_path: Path, example_checks: Checks) -> None:
    report = run(
        tmp_path,
        example_checks,
        """
        ```json
        {"a": 1,}
        ```

        ```dotenv
        GOOD=1
        this is not a dotenv line
        ```

        ```yaml
        apiVersion: v1
        kind: Pod
        metadata: {name: x}
        spec:
          containers: [{name: app, image: app, imagePullPolicyy: Always}]
        ```

        ```yaml
        project: p-project
        secrets:
          a: {versions: [x], labelz: {}}
        ```

        ```yaml
        secrets:
          b: {provider: symmetric, length: many}
        ```

        ```yaml
        just: something
        ```

        ```jinja
        {{ secrets.a.value | no_such_filter }}
        ```
        """,
    )
    text = failures(report)
    assert len(report.failures) == 7, text
    assert "page.md:1 (```json):\n  not valid JSON" in text
    assert "page.md:5 (```dotenv):\n  python-dotenv cannot read line(s) 7" in text
    assert "imagePullPolicyy" in text
    assert (
        "page.md:18 (```yaml):\n  the emulator's seed loader refuses it: page.md:18: secrets.a: unknown"
        in text
    )
    assert "labelz" in text
    assert "secrets.b:" in text
    assert "length" in text
    assert "cannot tell what this YAML is" in text
    assert "no_such_filter" in text


def test_blocks_that_match_no_rule_fail(tmp_path: Path, example_checks: Checks) -> None:
    report = run(
        tmp_path,
        example_checks,
        """
        ```
        no language
        ```

        ```nginx
        server {}
        ```

            indented code

        <!-- example: background ready="file:x" -->
        ```yaml
        a: 1
        ```

        <!-- example: skip reason="x" -->

        ```bash
        true
        ```

        <!-- example: bogus -->
        ```bash
        true
        ```

        ```python
        async with open_it() as thing:
            pass
        ```

        ```console
        output before any command
        ```

        ```yaml title="../outside.yaml"
        a: 1
        ```
        """,
    )
    text = failures(report)
    assert "page.md:1 (```<no language>):\n  a fence without a language" in text
    assert "```nginx is no language the example harness knows" in text
    assert "an indented code block" in text
    assert "background is for python, bash and console blocks" in text
    assert "this example marker is not right before a fence" in text
    assert "unknown marker word 'bogus'" in text
    assert "top-level await does not run as a script" in text
    assert "a console block starts with a `$ ` command" in text
    assert 'title="../outside.yaml": a relative path inside the working directory' in text


def test_fences_inside_admonitions_and_tabs_are_found(tmp_path: Path) -> None:
    path = tmp_path / "page.md"
    path.write_text(
        textwrap.dedent(
            """
            !!! tip "Try it"
                Some text.

                <!-- example: skip reason="inside" -->
                ```bash
                false
                ```

            === "Python"

                ```python
                print(1)
                ```

            ```text
            after
            ```
            """
        )
    )
    page = parse_page(path)
    assert [(b.line, b.lang, b.marker.skip) for b in page.blocks] == [
        (6, "bash", "inside"),
        (12, "python", None),
        (16, "text", None),
    ]
    assert page.problems == []


def test_page_markers_name_the_pytest_markers(tmp_path: Path) -> None:
    path = tmp_path / "page.md"
    path.write_text("<!-- example: needs=pubsub,postgres -->\n\n# A page\n")
    assert parse_page(path).needs == ("pubsub", "postgres")
    path.write_text("<!-- example: needs=java -->\n")
    assert "needs='java'" in "".join(parse_page(path).problems)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


def test_background_blocks_wait_until_ready_and_are_stopped_when_the_page_ends(
    tmp_path: Path, example_checks: Checks
) -> None:
    report = run(
        tmp_path,
        example_checks,
        """
        <!-- example: background ready="file:started" -->
        ```bash
        echo $$ > pid
        echo "server says hello"
        touch started
        exec sleep 300
        ```

        <!-- example: background ready="file:started2" -->
        ```console
        $ echo "listening on 127.0.0.1:9999"; touch started2; sleep 300
        listening on 127.0.0.1:...
        ```

        ```bash
        test -f started
        false
        ```
        """,
    )
    pid = int((tmp_path / "run" / "work" / "pid").read_text())
    assert not _alive(pid)
    text = failures(report)
    assert "page.md:15 (```bash): exited with status 1" in text
    assert "background processes of this page:" in text
    assert "server says hello" in text
    assert len(report.failures) == 1, text


def test_a_background_block_that_dies_or_never_gets_ready_fails(
    tmp_path: Path, example_checks: Checks
) -> None:
    report = run(
        tmp_path,
        example_checks,
        """
        <!-- example: background ready="file:never" -->
        ```bash
        echo "cannot start" >&2
        exit 4
        ```
        """,
    )
    text = failures(report)
    assert "exited with status 4 before it was ready (file:never)" in text
    assert "cannot start" in text
    report = run(
        tmp_path / "2",
        example_checks,
        """
        <!-- example: background ready="file:never" timeout=0.5 -->
        ```bash
        sleep 300
        ```
        """,
    )
    assert "not ready after 0.5 s" in failures(report)


def test_a_block_that_runs_too_long_is_stopped(tmp_path: Path, example_checks: Checks) -> None:
    started = time.monotonic()
    report = run(
        tmp_path,
        example_checks,
        """
        <!-- example: timeout=1 -->
        ```bash
        sleep 300
        ```

        ```bash
        echo never run
        ```
        """,
    )
    assert time.monotonic() - started < 15
    text = failures(report)
    assert "still running after 1 s (stopped)" in text
    assert "1 later run block(s) not run after the failure at line 2 (lines 6)" in text


def test_exit_and_env_markers(tmp_path: Path, example_checks: Checks) -> None:
    report = run(
        tmp_path,
        example_checks,
        """
        <!-- example: exit=2 env COLOUR=blue -->
        ```bash
        test "$COLOUR" = blue
        exit 2
        ```

        ```bash
        test -z "${COLOUR:-}"
        ```

        ```console
        $ false
        ```
        """,
    )
    text = failures(report)
    assert len(report.failures) == 1, text
    assert "page.md:11 (```console): line 12: exited with status 1" in text


def test_a_page_whose_ports_are_taken_fails_before_it_runs(tmp_path: Path, example_checks: Checks) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        report = run(
            tmp_path,
            example_checks,
            f"""
            <!-- example: background ready="http://127.0.0.1:{port}/healthz" -->
            ```bash
            touch ran
            ```
            """,
        )
    assert f"port(s) {port} already in use" in failures(report)
    assert not (tmp_path / "run" / "work" / "ran").exists()


def test_the_ports_of_a_page(tmp_path: Path) -> None:
    path = tmp_path / "page.md"
    path.write_text(
        textwrap.dedent(
            """
            <!-- example: background ready="http://127.0.0.1:9181/emulator/v1/healthz" -->
            ```bash
            secrets-agent emulator --seed examples/emulator-seed.yaml --grpc-port 9180 \\
              --http-port 9181
            ```

            <!-- example: background ready="file:x" -->
            ```bash
            secrets-agent emulator
            gcloud beta emulators pubsub start --host-port=127.0.0.1:8085
            ```

            ```console
            $ secrets-agent dev --listen 127.0.0.1:9232 --probes-listen=[::1]:9233 &
            $ curl -s localhost:8123/x
            postgresql://app@localhost:5432/app
            $ secrets-agent run -c agent.yaml 2> run.log &  # probes on the default port 8731
            $ secrets-agent run -c agent.yaml && secrets-agent dev
            ```

            ```yaml title="agent.yaml"
            server:
              listen: "127.0.0.1:9240"
            ```

            <!-- example: background ready="file:x" -->
            ```bash
            secrets-agent run -c agent.yaml  # probes on the default 8731, the endpoint on 9240
            ```

            ```yaml title="quiet.yaml"
            server: {enabled: false}
            probes: {listen: "127.0.0.1:9241"}
            ```

            <!-- example: background ready="file:x" -->
            ```bash
            secrets-agent run --config quiet.yaml
            ```

            <!-- example: skip reason="not run" -->
            ```bash
            secrets-agent emulator --grpc-port 7777
            ```
            """
        )
    )
    assert ports_of(parse_page(path)) == [8085, 8731, 8780, 8781, 9180, 9181, 9232, 9233, 9240, 9241]


@pytest.mark.parametrize(
    ("expected", "output", "missing"),
    [
        (["hello"], "  hello  world\n", []),
        (["hello   world"], "hello world\n", []),
        (["...", "a ... c"], "a b c\n", []),
        (["a...c"], "a\nc\n", ["a...c"]),
        (["x"], "y\n", ["x"]),
        (["", "  "], "", []),
    ],
)
def test_expected_lines_compare_loosely(expected: list[str], output: str, missing: list[str]) -> None:
    assert missing_lines(expected, output) == missing


def test_the_skip_share_counts_every_block(tmp_path: Path) -> None:
    path = tmp_path / "page.md"
    path.write_text('<!-- example: skip reason="r" -->\n```bash\nx\n```\n\n```text\ny\n```\n')
    assert skip_share([parse_page(path)]) == (1, 2)


def test_a_page_that_starts_the_pubsub_emulator_must_say_so(tmp_path: Path) -> None:
    path = tmp_path / "page.md"
    body = '<!-- example: background ready="file:x" -->\n```bash\ngcloud beta emulators pubsub start\n```\n'
    path.write_text(body)
    assert "put <!-- example: needs=pubsub --> on a line of its own" in "".join(parse_page(path).problems)
    path.write_text("<!-- example: needs=pubsub -->\n\n" + body)
    assert parse_page(path).problems == []


def test_a_python_block_imports_what_an_earlier_block_wrote(tmp_path: Path, example_checks: Checks) -> None:
    report = run(
        tmp_path,
        example_checks,
        """
        ```python title="helpers.py"
        def greet() -> str:
            return "hi"
        ```

        ```python
        import helpers
        assert helpers.greet() == "hi"
        ```
        """,
    )
    assert report.failures == [], failures(report)
    assert report.ran == 2


def test_a_setext_heading_is_no_content_tab(tmp_path: Path) -> None:
    path = tmp_path / "page.md"
    path.write_text('Title\n===\n\n    indented\n\n=== "Tab"\n\n    ```text\n    x\n    ```\n')
    page = parse_page(path)
    assert [(b.line, b.lang) for b in page.blocks] == [(4, ""), (8, "text")]


def test_what_a_block_leaves_running_with_an_ampersand_is_stopped_when_it_ends(
    tmp_path: Path, example_checks: Checks
) -> None:
    report = run(
        tmp_path,
        example_checks,
        """
        ```bash
        sleep 300 &
        echo $! > sleeper
        ```

        ```console
        $ sleep 300 &
        $ echo $! >> sleeper
        ```

        ```bash
        for pid in $(cat sleeper); do ! kill -0 "$pid" 2>/dev/null; done
        ```
        """,
    )
    assert report.failures == [], failures(report)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_ready_means_the_blocks_own_process_answers(tmp_path: Path, example_checks: Checks) -> None:
    port = _free_port()
    report = run(
        tmp_path,
        example_checks,
        f"""
        <!-- example: background ready="http://127.0.0.1:{port}/" -->
        ```bash
        exec python -m http.server {port} --bind 127.0.0.1
        ```

        <!-- example: background ready="http://127.0.0.1:{port}/" timeout=1 -->
        ```bash
        sleep 300
        ```
        """,
    )
    text = failures(report)
    assert len(report.failures) == 1, text
    assert (
        f"page.md:7 (```bash): not ready after 1 s: http://127.0.0.1:{port}/ answers, but from another"
        in text
    )

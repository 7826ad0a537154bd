"""The manual builds: ``mkdocs build --strict`` (every warning an error: a broken link, a link to an anchor
that does not exist, a page left out of the navigation, a docstring mkdocstrings cannot read)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from docs_gen import ROOT

BUILD_TIMEOUT = 120
"""Seconds; the build takes a few (most of it mkdocstrings reading the agent's sources)."""


def test_the_manual_builds_strictly_without_a_warning(tmp_path: Path) -> None:
    env = {
        **os.environ,
        # mkdocs-material prints a notice about MkDocs 2.0 on every build (on stderr, not a warning);
        # this is its documented way to leave it out.
        "NO_MKDOCS_2_WARNING": "1",
    }
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    output = result.stdout + result.stderr
    problems = [line for line in output.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert result.returncode == 0, output
    assert not problems, "\n".join(problems)
    for page in ("index.html", "reference/configuration/index.html", "reference/python-api/index.html"):
        assert (tmp_path / "site" / page).is_file(), page
    # mkdocstrings rendered the API (an empty member list would build without a warning).
    api = (tmp_path / "site/reference/python-api/index.html").read_text(encoding="utf-8")
    assert 'id="agent.secrets.SecretManager"' in api

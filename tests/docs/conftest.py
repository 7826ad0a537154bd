"""Fixtures of the docs examples' tests (``test_examples.py``): the Kubernetes validation tests/k8s uses, and
the reports of the pages run, whose skipped examples the test summary lists with their reasons."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from testing.docs_examples import Checks, PageReport
from tests.k8s import render as k8s

REPORTS = pytest.StashKey[list[PageReport]]()


def kubernetes_problems(document: Mapping[str, Any]) -> list[str]:
    """tests/k8s's checks: kubernetes-validate --strict on every supported version for the built-in kinds,
    tests/k8s/schemas for the custom ones (External Secrets, cert-manager)."""
    if k8s.is_core(document):
        return k8s.validate_core(document)
    if k8s.custom_schema_known(document):
        return k8s.validate_custom(document)
    return [
        f"{k8s.name_of(document)}: no schema for {document.get('apiVersion')} {document.get('kind')}: "
        f"kubernetes-validate knows the built-in kinds and {k8s.SCHEMAS.relative_to(k8s.REPO)} the custom "
        "ones; another kind needs a skip marker or a schema there"
    ]


@pytest.fixture(scope="session")
def example_checks() -> Checks:
    return Checks(kubernetes=kubernetes_problems)


@pytest.fixture
def page_reports(request: pytest.FixtureRequest) -> list[PageReport]:
    """Where a test puts the report of each page it ran (for the summary)."""
    return request.config.stash.setdefault(REPORTS, [])


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    reports = config.stash.get(REPORTS, [])
    skipped = [entry for report in reports for entry in report.skipped]
    if not reports:
        return
    terminalreporter.section("docs examples")
    for report in reports:
        terminalreporter.write_line(
            f"{report.page}: {report.ran} run, {report.checked} validated, {len(report.skipped)} skipped, "
            f"{len(report.failures)} failed ({report.seconds:.1f} s)"
        )
    for where, reason in skipped:
        terminalreporter.write_line(f"skipped {where}: {reason}")

"""Rendering rotation results and status as a table (people) or JSON (scripts). Pure; metadata only."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from agent.rotation.results import RotationResult
from agent.rotation.status import STATUS_HEADERS, StatusRow

RESULT_HEADERS = ["SECRET", "TYPE", "VERSION", "RESULT", "MESSAGE"]


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell; the last column is not padded."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        padded = [c.ljust(w) for c, w in zip(cells[:-1], widths[:-1], strict=True)]
        return "  ".join([*padded, cells[-1]]).rstrip()

    return "\n".join([line(headers), *(line(r) for r in rows)]) + "\n"


def version_change(result: RotationResult) -> str:
    """``3 -> 4``, ``3 -> 4 (restored as 5)``, ``3`` (nothing added) or ``-``."""
    old = result.old_version or "-"
    if result.new_version is None:
        return old
    change = f"{old} -> {result.new_version}"
    if result.restored_version is not None:
        change += f" (old re-added as {result.restored_version})"
    return change


def results_table(results: Sequence[RotationResult]) -> str:
    rows = [
        [
            r.secret_id,
            r.secret_type.value if r.secret_type is not None else "-",
            version_change(r),
            r.result,
            r.message,
        ]
        for r in results
    ]
    return table(RESULT_HEADERS, rows)


def results_json(results: Sequence[RotationResult], pacing: Mapping[str, object] | None = None) -> str:
    """``{"results", "summary", "ok"}``, and ``pacing`` when given (the plan of ``--dry-run``)."""
    summary: dict[str, int] = {}
    for r in results:
        summary[r.result] = summary.get(r.result, 0) + 1
    document: dict[str, object] = {
        "results": [r.to_json() for r in results],
        "summary": summary,
        "ok": all(r.ok for r in results),
    }
    if pacing is not None:
        document["pacing"] = dict(pacing)
    return json.dumps(document, indent=2) + "\n"


def status_table(rows: Sequence[StatusRow]) -> str:
    return table(STATUS_HEADERS, [r.cells() for r in rows])


def status_json(rows: Sequence[StatusRow]) -> str:
    return json.dumps({"secrets": [r.to_json() for r in rows]}, indent=2) + "\n"


def status_text(rows: Sequence[StatusRow]) -> str:
    """The table for a person, and a one-line summary (or what an empty table means)."""
    if not rows:
        return (
            "no secrets under rotation: none has a secret-type label, and -c FILE names none "
            "(see secrets-agent rotate --help)\n"
        )
    overdue = sum(row.overdue for row in rows)
    summary = f"{_count(len(rows), 'secret')} under rotation"
    summary += f", {overdue} overdue" if overdue else ", none overdue"
    return status_table(rows) + "\n" + summary + "\n"


def _count(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"

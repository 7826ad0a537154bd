"""The problems of a pod's annotations, each named after its annotation (pure): how they are collected
while a pod is read, the refusal that carries them, and the agent configuration's own problems put back on
the annotations they came from.

Every part of a review reports here (``annotations``, ``shaping``, ``agent_config``), so this module imports
none of them. The agent's loader and ``check_outputs`` name their problems by configuration path
(``secrets[1].file``, ``templates[0].text``); whoever creates the pod wrote annotations, so ``translate``
names the annotation instead, and never quotes a value that may be a credential: a refusal travels further
than the pod (the creator's terminal, a controller's FailedCreate events, the API server's audit log).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from agent.core.words import plural
from agent.errors import AgentError, Problem
from agent.webhook.limits import MAX_PROBLEM_TEXT, MAX_SHOWN, shortened
from agent.webhook.settings import PREFIX

NOT_SHOWN = "(value not shown)"
_UNQUOTED = ("reload-url", "reload-command", "gcp-iam-endpoint")
"""Annotations whose value may carry a credential (a URL's user:password, a token on a command line); the
``secret-<name>`` references join them (``Located.references``), since a secret's value pasted in place of
its reference is the likeliest mistake of all. A refusal names these annotations without quoting their
values."""
_CONFIG_ITEM = re.compile(r"(?:secrets|templates)\[[0-9]+\](?:\.keys\[[0-9]+\])?")
"""The configuration's names of secrets, their keys and templates, as the loader's messages mention them
(``also used by secrets[0].keys[1]``)."""
_QUOTED = re.compile(r"'([^'\\]*)'|\"([^\"\\]*)\"")


def prefixed(key: str) -> str:
    """An annotation's full name: ``secret-db`` -> ``secrets-agent.io/secret-db``."""
    return PREFIX + key


@dataclass(frozen=True)
class AnnotationProblem:
    """One invalid annotation: its full key and what is wrong with it."""

    annotation: str
    message: str

    def __str__(self) -> str:
        return f"{self.annotation}: {self.message}"


class InvalidAnnotations(AgentError):
    """The pod's annotations cannot be honoured; the pod is refused with every problem."""

    def __init__(self, problems: Iterable[AnnotationProblem]) -> None:
        self.problems = tuple(sorted(problems, key=lambda p: p.annotation))
        shown = [shortened(str(p), MAX_PROBLEM_TEXT) for p in self.problems[:MAX_SHOWN]]
        if len(self.problems) > MAX_SHOWN:
            shown.append(f"and {plural(len(self.problems) - MAX_SHOWN, 'more problem')}")
        super().__init__("; ".join(shown))

    @property
    def annotations(self) -> tuple[str, ...]:
        """The keys of the invalid annotations (for logs: the messages may quote the values)."""
        return tuple(dict.fromkeys(p.annotation for p in self.problems))


@dataclass
class Problems:
    """The problems found in one pod's annotations so far, in the order they were found (a refusal sorts
    them by annotation, keeping that order for each)."""

    found: list[AnnotationProblem] = field(default_factory=list)

    def add(self, key: str, message: str) -> None:
        """A problem of the annotation ``key`` (its name after the prefix)."""
        self.found.append(AnnotationProblem(prefixed(key), message))

    def __bool__(self) -> bool:
        return bool(self.found)

    def annotations(self) -> set[str]:
        """The full names of the annotations with a problem so far."""
        return {p.annotation for p in self.found}


@dataclass
class Located:
    """Where the agent configuration's paths come from, for ``translate``; filled in as the configuration
    is written (``agent_config``)."""

    paths: dict[str, tuple[str, str]]
    """Config path -> (the annotation, a prefix for the message: ``[1].env: `` for an item of a list)."""
    labels: dict[str, str] = field(default_factory=dict)
    """``secrets[0]``, ``secrets[0].keys[1]``, ``templates[2]`` -> how a message names them instead."""
    references: set[str] = field(default_factory=set)
    """The ``secret-<name>`` annotations, whose values are never quoted."""
    redundant: dict[str, str] = field(default_factory=dict)
    """Config path -> how its messages start that the annotation's name says already (``template 'url'``
    of a compile problem on ``template-url``)."""


def translate(
    found: Iterable[Problem],
    located: Located,
    ours: Mapping[str, str],
    reported: set[str],
    problems: Problems,
) -> None:
    """Problems of the agent's configuration, each added to ``problems`` on the annotation its path came
    from, unless the webhook's own checks ``reported`` that annotation already."""
    for problem in found:
        at = located.paths.get(problem.path)
        if at is None:  # a setting no annotation maps to: a bug here, reported rather than hidden
            problems.add("inject", f"agent configuration {problem}")
            continue
        key, prefix = at
        if prefixed(key) in reported:
            continue  # the webhook's own check of that annotation said it first
        message = problem.message
        redundant = located.redundant.get(problem.path)
        if redundant is not None and message.startswith(redundant):
            message = message[len(redundant) :].lstrip(":").lstrip()  # "line 2: unknown secret 'dbb'"
        message = prefix + _CONFIG_ITEM.sub(lambda m: located.labels.get(m[0], m[0]), message)
        value = ours.get(key)
        if value and (key in _UNQUOTED or key in located.references):
            message = _without_value(message, value)
        problems.add(key, message)


def _without_value(message: str, value: str) -> str:
    """``message`` with the value, and every quoted part of it (a reference's version, its project), as
    NOT_SHOWN; quoted text that is not part of the value (a hint such as 'latest') stays."""
    message = message.replace(repr(value), NOT_SHOWN)
    return _QUOTED.sub(lambda m: NOT_SHOWN if (part := m[1] or m[2]) and part in value else m[0], message)

"""Helpers for the rotation engine, CLI, status and listen tests: managers bound to the emulator, little
credential programs for the ``command`` provider, and the emulator's admin API.

Every generated value starts with ``CANARY``, so a test can prove that no value ever reached a log line.
"""

from __future__ import annotations

import json
import sys
import textwrap
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from agent.secrets.manager import SecretManager
from agent_emulator.server import EmulatorEndpoints

PROJECT = "test-project"
TOPIC = f"projects/{PROJECT}/topics/secret-events"
CANARY = "CANARY"
"""Prefix of every value the tests create or the credential programs mint."""

WRITE_METHODS = (
    "CreateSecret",
    "UpdateSecret",
    "DeleteSecret",
    "AddSecretVersion",
    "EnableSecretVersion",
    "DisableSecretVersion",
    "DestroySecretVersion",
)


def manager(emulator: EmulatorEndpoints, *, topics: Iterable[str] = (TOPIC,)) -> SecretManager:
    """A SecretManager on the emulator; with topics, so that new secrets get a rotation policy."""
    return SecretManager(PROJECT, endpoint=emulator.grpc_target, topics=tuple(topics))


# --------------------------------------------------------------------------------------------------
# The emulator's admin API
# --------------------------------------------------------------------------------------------------


def admin(emulator: EmulatorEndpoints, method: str, path: str, body: object = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    # JSON declared even without a body: the emulator refuses other state-changing requests (CSRF guard).
    headers = {"Content-Type": "application/json"}
    request = urllib.request.Request(f"{emulator.admin_url}{path}", data=data, method=method, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def write_calls(emulator: EmulatorEndpoints) -> int:
    """How many write RPCs the emulator answered (any status)."""
    methods = admin(emulator, "GET", "/counters")["methods"]
    return sum(sum(methods.get(m, {}).values()) for m in WRITE_METHODS)


def advance_clock(emulator: EmulatorEndpoints, seconds: float) -> dict[str, Any]:
    result: dict[str, Any] = admin(emulator, "POST", "/clock:advance", {"seconds": seconds})
    return result


def emulator_now(emulator: EmulatorEndpoints) -> str:
    """The emulator's clock (RFC 3339), for ``--now``."""
    return str(admin(emulator, "GET", "/clock")["now"])


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# --------------------------------------------------------------------------------------------------
# Credential programs for the command provider
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Programs:
    """Little Python programs (real processes) a ``command`` provider runs."""

    directory: Path

    def _write(self, name: str, body: str) -> list[str]:
        path = self.directory / name
        path.write_text(textwrap.dedent(body))
        return [sys.executable, str(path)]

    def mint(self, kind: str = "key") -> list[str]:
        """Prints a fresh ``CANARY-<kind>-<random>``."""
        return self._write(
            f"mint_{kind}.py",
            f"""
            import secrets
            print("{CANARY}-{kind}-" + secrets.token_hex(12))
            """,
        )

    def check(self, sleep: float = 0.0, marker: Path | None = None) -> list[str]:
        """Accepts a value on stdin that starts with CANARY (after ``sleep`` seconds; touches ``marker``
        when it starts, so a test knows the rotation reached validation)."""
        touch = f"open({str(marker)!r}, 'w').close()" if marker is not None else ""
        return self._write(
            f"check_{int(sleep * 1000)}.py",
            f"""
            import sys, time
            {touch}
            value = sys.stdin.read()
            time.sleep({sleep})
            if not value.startswith("{CANARY}"):
                print("the issuer does not know this key", file=sys.stderr)
                sys.exit(1)
            """,
        )

    def reject(self) -> list[str]:
        """Always fails validation, with a reason on stderr."""
        return self._write(
            "reject.py",
            """
            import sys
            sys.stdin.read()
            print("rejected by the issuer: key not active", file=sys.stderr)
            sys.exit(1)
            """,
        )

    def record(self, log: Path) -> list[str]:
        """Appends a line to ``log`` each time it runs (used as apply/rollback to see they ran)."""
        return self._write(
            f"record_{log.stem}.py",
            f"""
            import sys
            sys.stdin.read()
            with open({str(log)!r}, "a") as f:
                f.write("ran\\n")
            """,
        )


def command_settings(
    programs: Programs, *, validate: list[str] | None = None, kind: str = "key", **extra: object
) -> dict[str, object]:
    return {
        "provider": "command",
        "generate": programs.mint(kind),
        "validate": validate if validate is not None else programs.check(),
        **extra,
    }

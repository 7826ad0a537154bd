"""What the soak writes into its secrets, and how a reader tells a whole snapshot from a torn or mixed one.

Shared by the soak (``bench/soak/``: it writes these values and judges every read with these checks) and its
test (``tests/e2e/test_soak_short.py``: it shows that the checks catch a torn or mixed read), so it lives
here, where both may import it. Pure: no I/O.

Every value names its secret and its generation and ends with a checksum of the rest::

    pair-03-user:g17:soakval-9f2c51e07a3b44d1|5be0c8a1d2f3

Generation *g* is version *g + 1* (version 1 is the seed's generation 0; the soak is the only writer, so the
numbers follow each other). ``soakval-`` + 16 hex digits is unique to one value, so a value that reached a
log line is found by a plain search (the agent's redaction would show ``[REDACTED]`` instead: also counted).

**Torn**: a value that is empty, cut short, not of that shape, names another secret, or fails its checksum.
**Mixed**: parts of one read that belong to different snapshots: a file whose generation is not the version
the snapshot's ``..manifest.json`` records, an env file line that differs from the file next to it, an
endpoint answer whose body is not the version its ``X-Secret-Version`` header states.

**Pairs** (``pair-K-user`` / ``pair-K-pass``) are rotated together, in one tick, user first. A read that
sees the two at different generations is *split*: reported, not an invariant. The agent fetches the two
secrets independently (the README's advice is one secret for a pair that must never mix), so a check round
that falls between the two AddSecretVersion calls, or in which one of the two fetches fails under a fault,
legitimately serves them split until the next round. What the agent does guarantee is that each read
through ``..data`` is one whole snapshot: that is the mixed check above.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from dotenv import dotenv_values

ENV_FILE = "app.env"
MANIFEST = "..manifest.json"
VALUE_MARK = "soakval-"
"""Every value carries this followed by 16 hex digits; nothing else the soak writes does."""
LEAK = re.compile(rf"{VALUE_MARK}[0-9a-f]{{16}}")
_VALUE = re.compile(
    rf"^(?P<name>[a-z0-9-]+):g(?P<gen>\d+):{VALUE_MARK}[0-9a-f]{{16}}\|(?P<sum>[0-9a-f]{{12}})$"
)


@dataclass(frozen=True)
class SecretSet:
    """The soak's secrets: ``pairs`` username/password pairs (two secrets each) and single tokens."""

    pairs: tuple[tuple[str, str], ...]
    singles: tuple[str, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for pair in self.pairs for name in pair) + self.singles


def secret_set(count: int) -> SecretSet:
    """``count`` secrets: about half of them in pairs (at least one pair), the rest single tokens."""
    if count < 3:
        raise ValueError("the soak needs at least 3 secrets (one pair and one single)")
    pair_count = max(1, count // 4)
    pairs = tuple((f"pair-{k:02d}-user", f"pair-{k:02d}-pass") for k in range(pair_count))
    singles = tuple(f"token-{k:02d}" for k in range(count - 2 * pair_count))
    return SecretSet(pairs, singles)


def env_name(name: str) -> str:
    """The env file variable of a secret: the agent's default, NAME_IN_UPPER_SNAKE."""
    return name.upper().replace("-", "_")


def _checksum(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()[:12]


def render(name: str, gen: int, seed: int) -> str:
    """Generation ``gen`` of secret ``name`` (the same text for the same seed)."""
    nonce = random.Random(f"{seed}:{name}:{gen}").getrandbits(64)  # test data, not keys
    body = f"{name}:g{gen}:{VALUE_MARK}{nonce:016x}"
    return f"{body}|{_checksum(body)}"


class Torn(Exception):
    """A value that is not whole (empty, cut, malformed, wrong checksum or wrong secret)."""


def generation(name: str, data: bytes | str) -> int:
    """The generation a value of ``name`` carries; Torn if it is not one whole value of that secret."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    if not text:
        raise Torn(f"{name}: empty")
    match = _VALUE.match(text)
    if match is None:
        raise Torn(f"{name}: malformed ({len(text)} characters)")
    body = text[: text.rindex("|")]
    if _checksum(body) != match["sum"]:
        raise Torn(f"{name}: checksum mismatch")
    if match["name"] != name:
        raise Torn(f"{name}: holds the value of {match['name']}")
    return int(match["gen"])


def version_of(gen: int) -> int:
    return gen + 1


@dataclass
class Verdict:
    """One read checked: the versions it showed, and what was wrong with it (empty lists: all good)."""

    versions: dict[str, int] = field(default_factory=dict)
    torn: list[str] = field(default_factory=list)
    mixed: list[str] = field(default_factory=list)
    split_pairs: list[str] = field(default_factory=list)

    @property
    def whole(self) -> bool:
        return not self.torn and not self.mixed


def check_snapshot(
    files: Mapping[str, bytes | str],
    manifest: bytes | str,
    env_file: bytes | str | None,
    secrets: SecretSet,
) -> Verdict:
    """Check one read of a snapshot (every file, its manifest, its env file, read through one ``..data``)."""
    verdict = Verdict()
    try:
        recorded = json.loads(manifest)["secrets"]
    except (ValueError, KeyError, TypeError):
        verdict.torn.append("..manifest.json: not a whole manifest")
        recorded = {}
    env = _parse_env(env_file, verdict) if env_file is not None else None
    for name in secrets.names:
        data = files.get(name)
        if data is None:
            verdict.mixed.append(f"{name}: no file in the snapshot")
            continue
        try:
            gen = generation(name, data)
        except Torn as error:
            verdict.torn.append(str(error))
            continue
        verdict.versions[name] = version_of(gen)
        entry = recorded.get(name) if isinstance(recorded, dict) else None
        if entry is None or str(entry.get("version")) != str(version_of(gen)):
            shown = entry.get("version") if isinstance(entry, dict) else None
            verdict.mixed.append(f"{name}: file holds version {version_of(gen)}, manifest says {shown}")
        if env is not None:
            text = data.decode() if isinstance(data, bytes) else data
            if env.get(env_name(name)) != text:
                verdict.mixed.append(f"{name}: the env file's line differs from the file")
    verdict.split_pairs = split_pairs(verdict.versions, secrets)
    return verdict


def _parse_env(env_file: bytes | str, verdict: Verdict) -> dict[str, str | None]:
    text = env_file.decode("utf-8", "replace") if isinstance(env_file, bytes) else env_file
    if not text.endswith("\n"):
        verdict.torn.append(f"{ENV_FILE}: does not end with a newline")
    return dict(dotenv_values(stream=io.StringIO(text), interpolate=False))


def split_pairs(versions: Mapping[str, int], secrets: SecretSet) -> list[str]:
    """The pairs a read saw at two different generations."""
    return [
        f"{user}@{versions[user]} with {password}@{versions[password]}"
        for user, password in secrets.pairs
        if user in versions and password in versions and versions[user] != versions[password]
    ]


def check_answer(name: str, body: bytes, version_header: str | None, etag: str | None) -> Verdict:
    """Check one endpoint answer: a whole value whose generation is the version the headers state."""
    verdict = Verdict()
    try:
        gen = generation(name, body)
    except Torn as error:
        verdict.torn.append(str(error))
        return verdict
    verdict.versions[name] = version_of(gen)
    if version_header != str(version_of(gen)):
        verdict.mixed.append(
            f"{name}: body is version {version_of(gen)}, X-Secret-Version says {version_header}"
        )
    if etag is None or not etag.startswith(f'"{version_of(gen)}-'):
        verdict.mixed.append(f"{name}: body is version {version_of(gen)}, ETag says {etag}")
    return verdict


def leaked_values(text: str) -> list[str]:
    """Secret values (their unique marks) and redaction markers found in ``text`` (an agent's log)."""
    found = [match.group(0) for match in LEAK.finditer(text)]
    return found + ["[REDACTED]"] * text.count("[REDACTED]")


def describe(problems: Sequence[str], limit: int = 5) -> str:
    shown = "; ".join(problems[:limit])
    return shown + (f" (+{len(problems) - limit} more)" if len(problems) > limit else "")

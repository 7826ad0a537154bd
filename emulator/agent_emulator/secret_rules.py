"""The limits Secret Manager puts on a secret's settings, refused in the service's own words.

Pure functions: each takes the proposed value (and the time where a bound is relative to now) and raises
EmulatorError when the service would refuse it. Messages name labels, annotation keys, aliases and topics,
which are metadata; none of them ever contains a payload.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections.abc import Collection, Mapping, Sequence

import grpc
from google.cloud.secretmanager_v1 import types

from agent_emulator.errors import EmulatorError
from agent_emulator.resource_names import ALIAS

MAX_PAYLOAD_BYTES = 65536
"""Secret Manager stores payloads of at most 64 KiB."""
MAX_LABELS = 64
MAX_ALIASES = 50
MAX_TOPICS = 10
MAX_ANNOTATION_BYTES = 16 * 1024
MIN_ROTATION_LEAD = dt.timedelta(minutes=5)
MIN_ROTATION_PERIOD = dt.timedelta(hours=1)
MAX_HORIZON = dt.timedelta(hours=876000)
"""100 years: the furthest ahead a rotation time, rotation period or expiry may reach."""
MIN_EXPIRY_LEAD = dt.timedelta(minutes=1)
MIN_DESTROY_TTL = dt.timedelta(hours=24)
MAX_DESTROY_TTL = dt.timedelta(hours=24000)

_LABEL_KEY_REGEX = r"[\p{Ll}\p{Lo}][\p{Ll}\p{Lo}\p{N}_-]{0,62}"
_LABEL_VALUE_REGEX = r"[\p{Ll}\p{Lo}\p{N}_-]{0,63}"
_ANNOTATION_KEY = re.compile(r"[a-z0-9A-Z]+([_.-]*[a-z0-9A-Z]+)*")
_TOPIC = re.compile(r"projects/[^/\s]+/topics/[^/\s]+")


def invalid(message: str) -> EmulatorError:
    return EmulatorError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _label_char_ok(char: str, *, first_of_key: bool) -> bool:
    category = unicodedata.category(char)
    if category in ("Ll", "Lo"):
        return True
    if first_of_key:
        return False
    return category.startswith("N") or char in "_-"


def _label_problem(text: str, *, key: bool) -> str | None:
    regex = _LABEL_KEY_REGEX if key else _LABEL_VALUE_REGEX
    nonconforming = f'does not conform to regular expression "{regex}"'
    if key and not text:
        return nonconforming
    if len(text.encode()) > 128:
        return "exceeds maximum byte length 128"
    if len(text) > 63:
        return "exceeds maximum character length 63" if key else "exceeds maximum value length 63"
    if not all(_label_char_ok(c, first_of_key=key and i == 0) for i, c in enumerate(text)):
        return nonconforming
    return None


def check_labels(labels: Mapping[str, str]) -> None:
    """At most 64 labels; lowercase keys starting with a letter; short values."""
    if len(labels) > MAX_LABELS:
        raise invalid(f'Invalid field "labels"; at most {MAX_LABELS} entries allowed but found {len(labels)}')
    for key, value in labels.items():
        if problem := _label_problem(key, key=True):
            raise invalid(f'Invalid field "labels"; key "{key}" {problem}')
        if problem := _label_problem(value, key=False):
            raise invalid(f'Invalid field "labels.{key}"; value "{value}" {problem}')


def check_annotations(annotations: Mapping[str, str]) -> None:
    """Alphanumeric keys (with ``._-`` inside) under 64 characters; 16 KiB for the whole map."""
    total = 0
    for key, value in annotations.items():
        if not _ANNOTATION_KEY.fullmatch(key) or len(key) > 63 or len(key.encode()) >= 128:
            raise invalid(
                f"[{key}] must follow pattern [a-z0-9A-Z]+([_\\.\\-]*[a-z0-9A-Z]+)*), be less than 64 "
                "characters, and must have a UTF encoding of less than 128 bytes"
            )
        total += len(key.encode()) + len(value.encode())
    if total > MAX_ANNOTATION_BYTES:
        raise invalid("Annotation map must not exceed 16kib.")


def check_aliases(aliases: Mapping[str, int], existing_versions: Collection[int]) -> None:
    """At most 50 aliases, each a valid name pointing at a version the secret has."""
    if len(aliases) > MAX_ALIASES:
        # The service's own spelling, typo included, so clients matching on it keep working.
        raise invalid("No more than 50 aliases can be assgined to any given secret")
    for alias, number in aliases.items():
        if not ALIAS.fullmatch(alias) or alias.lower() in ("latest", "new"):
            raise invalid(
                f"[{alias}] must follow pattern [a-zA-Z][a-Aa-Z0-9_-]+, be less than 64 characters and "
                'cannot be "latest" or "NEW"'
            )
        if number not in existing_versions:
            raise invalid("Aliases cannot be assigned to versions that don't exist")


def check_topics(topics: Sequence[types.Topic]) -> None:
    """Up to 10 distinct topics named ``projects/P/topics/T``."""
    if len(topics) > MAX_TOPICS:
        raise invalid("No more than 10 topics can be configured on a secret.")
    names = [topic.name for topic in topics]
    if len(set(names)) != len(names):
        raise invalid("Topics must have distinct names.")
    for name in names:
        if not _TOPIC.fullmatch(name):
            raise invalid(f"Failed to Publish to topic [{name}], got an error from Pub/Sub.")


def check_rotation(
    secret: types.Secret, now: dt.datetime, *, next_time_sent: bool, period_sent: bool
) -> None:
    """A rotation needs topics, a next time 5 min to 100 years ahead, and a period of at least an hour.

    Bounds are only judged on the values a request sent: a stored next time that has come close is fine.
    """
    if "rotation" not in secret:
        return
    rotation = secret.rotation
    has_next = "next_rotation_time" in rotation
    has_period = "rotation_period" in rotation
    if not (has_next or has_period):
        return
    if not secret.topics:
        raise invalid("There must be at least one topic configured when a Rotation policy is set.")
    if has_period and not has_next:
        raise EmulatorError(
            grpc.StatusCode.FAILED_PRECONDITION,
            "Next rotation time must be set while the rotation period is set.",
        )
    if next_time_sent and has_next:
        if rotation.next_rotation_time < now + MIN_ROTATION_LEAD:
            raise invalid("Next rotation time must be at least [5m] in the future.")
        if rotation.next_rotation_time > now + MAX_HORIZON:
            raise invalid("Next rotation time cannot be more than [876000h] from now.")
    if period_sent and has_period:
        if rotation.rotation_period < MIN_ROTATION_PERIOD:
            raise invalid("Rotation period cannot be shorter than [1h].")
        if rotation.rotation_period > MAX_HORIZON:
            raise invalid("Rotation period cannot be longer than [876000h].")


def check_expiration(expire_time: dt.datetime, now: dt.datetime) -> None:
    """A secret may expire 1 minute to 100 years from now."""
    if expire_time < now + MIN_EXPIRY_LEAD:
        raise invalid("Expiration time must be at least [1m] in the future.")
    if expire_time > now + MAX_HORIZON:
        raise invalid("Expiration time cannot be more than [876000h] from now.")


def check_destroy_ttl(ttl: dt.timedelta) -> None:
    """Delayed destruction waits 24 h to 24,000 h."""
    if ttl < MIN_DESTROY_TTL:
        raise invalid("Version destroy TTL must be at least [24h].")
    if ttl > MAX_DESTROY_TTL:
        raise invalid("Version destroy TTL cannot be more than [24000h].")


def creation_replication(given: types.Secret, *, regional: bool) -> types.Replication | None:
    """The replication a new secret gets: none for regional secrets, the one asked for otherwise.

    Deliberately lenient: the service refuses a global secret without replication, the emulator defaults
    it to automatic so quick experiments need less ceremony.
    """
    sent = "replication" in given and (
        "automatic" in given.replication or "user_managed" in given.replication
    )
    if regional:
        if sent:
            raise invalid("Secret.replication should not be provided.")
        return None
    if not sent:
        return types.Replication(automatic=types.Replication.Automatic())
    if "user_managed" in given.replication:
        replicas = given.replication.user_managed.replicas
        if not replicas or any(not replica.location for replica in replicas):
            raise invalid("At least one replica location must be provided for user-managed replication.")
    copied: types.Replication = types.Replication.deserialize(types.Replication.serialize(given.replication))
    return copied


def check_payload(payload: types.SecretPayload, computed_crc32c: int) -> None:
    """Non-empty, at most 64 KiB, and matching the checksum the client sent (if it sent one)."""
    if not payload.data:
        raise invalid("SecretPayload.data must not be empty.")
    if len(payload.data) > MAX_PAYLOAD_BYTES:
        raise invalid(f"SecretPayload.data must not be larger than {MAX_PAYLOAD_BYTES} bytes.")
    if "data_crc32c" in payload and payload.data_crc32c != computed_crc32c:
        raise invalid("Provided SecretPayload.data crc32c does not match calculated crc32c.")

"""``check-config``: the normalised configuration, the identities it would use, and what each selection
matches now (listed once, when the configuration has selections: only then is Google's client loaded)."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, TextIO

from agent.config import Config

if TYPE_CHECKING:
    from agent.discovery import Discovery, ListingFailures

LISTING_TIMEOUT = 10.0
"""Longest ``check-config`` waits for the selections' listings (retries of a used-up quota included);
past it, a comment says they could not be listed, and the check does not fail for it."""


def check_config(config: Config, out: TextIO) -> int:
    """Print the normalised configuration as YAML (itself a valid config file). Validation already happened
    in ``load_config``: reaching this point means the configuration is valid. With selections, each is
    listed and what it matches follows as YAML comments. Returns the exit code: 1 when a selection
    collides or is required and matches nothing, else 0."""
    import yaml

    from agent.sources.identity_describe import describe_identities

    yaml.safe_dump(config.to_dict(), out, sort_keys=False, default_flow_style=False, allow_unicode=True)
    # The credential path, as YAML comments: the output stays a valid configuration file.
    for line in describe_identities(config):
        out.write(f"# {line}\n")
    if not config.select:
        return 0
    return _check_selections(config, out)


def _check_selections(config: Config, out: TextIO) -> int:
    """List every selection once and say, as comments, what each matches; 1 on a collision or a required
    selection that matches nothing. A selection that cannot be listed (no credentials, quota, network)
    is said, and is not a failure of the configuration."""
    reason = _cannot_list(config)
    if reason is not None:
        for select in config.select:
            out.write(f"# select {select.name!r}: not listed: {reason}\n")
        return 0
    discovery, failures = asyncio.run(_list(config))
    resolution = discovery.resolution()
    code = 0
    for name, select in discovery.selections.items():
        error = failures.errors.get(name)
        if error is not None:
            out.write(f"# select {name!r}: could not list it: {error.code}: {_one_line(error.message)}\n")
            continue
        specs = resolution.specs.get(name, [])
        if not specs:
            if select.required:
                out.write(f"# ERROR: select {name!r} matches no secret, and it is required\n")
                code = 1
            else:
                out.write(f"# WARNING: select {name!r} matches no secret\n")
            continue
        names = ", ".join(spec.name for spec in specs)
        out.write(f"# select {name!r}: {len(specs)} secret{'' if len(specs) == 1 else 's'}: {names}\n")
    for collision in resolution.collisions:
        out.write(f"# ERROR: {collision.message}\n")
        code = 1
    for skipped in resolution.skipped:
        out.write(f"# WARNING: {skipped.message}\n")
    return code


def _cannot_list(config: Config) -> str | None:
    """Why the selections cannot be listed from here, or None (an endpoint, or Google credentials)."""
    if config.gcp.endpoint is not None or config.gcp.credentials_file is not None:
        return None
    from agent.sources.credentials import google_credentials_available

    if google_credentials_available():
        return None
    return "no Google credentials here (set SECRET_MANAGER_EMULATOR_HOST for the emulator)"


async def _list(config: Config) -> tuple[Discovery, ListingFailures]:
    from agent.app.build import build_discovery
    from agent.sources.gcp import GcpSource
    from agent.sources.identity_model import IdentitySettings

    source = GcpSource(
        endpoint=config.gcp.endpoint,
        call_timeout=min(config.gcp.call_timeout, LISTING_TIMEOUT),
        identity=IdentitySettings.from_config(config.gcp, [*config.select, *config.secrets]),
    )
    try:
        discovery = build_discovery(config, source, "exec")  # no state file: check-config writes nothing
        assert discovery is not None  # config.select is not empty and the source is Google's
        failures = await discovery.list_now(
            list(discovery.selections), deadline=time.monotonic() + LISTING_TIMEOUT
        )
    finally:
        await source.close()
    return discovery, failures


def _one_line(text: str) -> str:
    return " ".join(text.split())[:300]

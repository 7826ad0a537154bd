"""``check-config``: the normalised configuration, and the identities it would use."""

from __future__ import annotations

from typing import TextIO

from agent.config import Config


def check_config(config: Config, out: TextIO) -> int:
    """Print the normalised configuration as YAML (itself a valid config file). Validation already happened
    in ``load_config``: reaching this point means the configuration is valid. Returns the exit code."""
    import yaml

    from agent.sources.identity_describe import describe_identities

    yaml.safe_dump(config.to_dict(), out, sort_keys=False, default_flow_style=False, allow_unicode=True)
    # The credential path, as YAML comments: the output stays a valid configuration file.
    for line in describe_identities(config):
        out.write(f"# {line}\n")
    return 0

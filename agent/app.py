"""Composition root: one entry point per command, each taking a finished Config.

For now it only holds ``check_config``; the agent's commands (init, run, dev, exec) arrive with later issues.
"""

from __future__ import annotations

from typing import TextIO

import yaml

from agent.config import Config


def check_config(config: Config, out: TextIO) -> int:
    """Print the normalised configuration as YAML (itself a valid config file). Validation already happened
    in ``load_config``: reaching this point means the configuration is valid. Returns the exit code."""
    yaml.safe_dump(config.to_dict(), out, sort_keys=False, default_flow_style=False, allow_unicode=True)
    return 0

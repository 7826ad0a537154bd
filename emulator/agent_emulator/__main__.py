"""`python -m agent_emulator` is the same program as `secrets-agent emulator`."""

from __future__ import annotations

import sys

from agent_emulator.cli import main

sys.exit(main(prog="python -m agent_emulator"))

"""Helpers shared by ``tests/`` and ``bench/`` (never imported by the agent): the emulator as a process, the
official Pub/Sub emulator, a private PostgreSQL, the demo apps, the soak's value scheme, log capture."""

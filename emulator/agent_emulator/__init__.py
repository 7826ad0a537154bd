"""A wire-compatible Google Cloud Secret Manager emulator (gRPC + REST over one in-memory store).

A separate program: the agent never imports it. Start it with ``secrets-agent emulator`` or, in-process,
with :func:`agent_emulator.server.running_emulator`.
"""

"""A wire-compatible Google Cloud Secret Manager emulator (gRPC + REST over one in-memory store).

A separate program: the agent never imports it. Start it with ``secrets-agent emulator`` or, in-process,
with :func:`agent_emulator.server.running_emulator`.

Besides Secret Manager it serves what Google's identity flows call, so that google-auth (unpatched, pointed
at it through its own overrides) can be tested offline end to end: the STS token exchange and IAM
Credentials' generateAccessToken (:mod:`agent_emulator.identity_http`), checked against an identity config
(``--identity``, :mod:`agent_emulator.identity_config`) that can also require a token, a permission and an
allowed quota project on every Secret Manager call (:mod:`agent_emulator.identity`).
"""

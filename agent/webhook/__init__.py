"""``secrets-agent webhook``: the mutating admission webhook that injects the agent (pure pod -> JSONPatch in
``review``/``mutate``/``annotations``, the TLS server in ``server``/``tls``)."""

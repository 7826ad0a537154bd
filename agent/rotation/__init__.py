"""``secrets-agent rotate``: rotation by secret type with backup, validation and rollback, on top of the
secrets API (``agent.secrets``), never the reverse."""

"""Seeing the agent work: Prometheus metrics, the probes listener (``/healthz``, ``/readyz``, ``/metrics``),
and logs (JSON for Cloud Logging or text, with secret values redacted as a safety net)."""

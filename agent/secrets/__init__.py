"""The secrets API: create, read and rotate secrets in Secret Manager or a local .env file."""

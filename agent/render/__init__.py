"""Pure rendering: what a snapshot looks like once written (today the env-file lines; no I/O here)."""

"""Composition root: builds the components from a finished Config; one entry point per command.

Every entry point returns the process exit code: 0 success, 1 failure (the log says which secret and why);
configuration problems never get here (``load_config`` raised them, exit 2).

Each command imports what it uses when it runs, not when this package is imported: ``init`` (the init
container on every pod start) loads no web server, no Prometheus client, no file watcher, no Pub/Sub and no
HTTP client unless a notifier needs one; ``check-config`` loads no Google client. At the top of its modules
are only the standard library, the configuration, the error tree and the collector's start-up pause;
``tests/test_cli_imports.py`` asserts the module sets.

The modules, each on the ones below it (``.importlinter`` holds them to that order):

* ``dev``: ``dev``, from a watched .env file; with no secrets configured, every key of it, a round of
  ``serve`` per set of keys;
* ``serve`` (``run``, and each round of ``dev``: the session until SIGTERM, the endpoint, the probes, the
  Pub/Sub events), ``init`` (fetch once, write, exit), ``exec`` (the secrets in a command's environment)
  and ``check`` (``check-config``'s output), independent of each other;
* ``build``: the pipeline's pieces from a Config (source, renderer, sink, notifiers, sync settings), as
  every command and ``bench/`` build them.
"""

from agent.app.build import build_notifiers, build_renderer, build_sink, select_source, sync_settings
from agent.app.check import check_config
from agent.app.dev import run_dev
from agent.app.exec import run_exec
from agent.app.init import run_init
from agent.app.serve import run_agent

__all__ = [
    "build_notifiers",
    "build_renderer",
    "build_sink",
    "check_config",
    "run_agent",
    "run_dev",
    "run_exec",
    "run_init",
    "select_source",
    "sync_settings",
]

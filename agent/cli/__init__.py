"""Command line: parses arguments into a configuration object and calls one entry point. Nothing else.

Exit codes: 0 success, 1 runtime failure, 2 invalid configuration or usage.

The parsers of every command (the delegated ones too) are ``Parser``: argparse with the program's habits.
A mistyped option or command gets the closest real one as a "did you mean" (looked up among the parser's
own few dozen names, never anything the user typed beyond a bounded prefix); an option of another command
says which; and whatever a message quotes of the command line is cut short and has its control characters
escaped.

The modules, each on the ones below it (``.importlinter`` holds them to that order): ``invocation``
(``parse``: a command line into an ``Invocation``, and the one runner of each command), ``commands`` (the
command table and the program's parser, ``build_parser``), ``flags`` (the configuration flags, and loading
a Config from them, the environment and the file), ``parser`` (``Parser``: argparse with those habits).
A command's modules are imported only when that command runs: ``--help`` and ``check-config`` load no
Google client.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from agent.cli.commands import COMPLETION_SHELLS, EMULATOR_ENTRY_POINTS, PROG, build_parser
from agent.cli.flags import (
    ALL_FLAGS,
    COMMON_FLAGS,
    CONFIG_FILE_ENV,
    CONFIG_YAML_ENV,
    DEV_FLAGS,
    EXEC_FLAGS,
    ROTATION_CONFIG_KEYS,
    ConfigFlag,
)
from agent.cli.invocation import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, Invocation, parse
from agent.cli.parser import MAX_MESSAGE_CHARS, SHOWN_CHARS, HelpFormatter, Parser, closest, shown
from agent.errors import AgentError, ConfigError

__all__ = [
    "ALL_FLAGS",
    "COMMON_FLAGS",
    "COMPLETION_SHELLS",
    "CONFIG_FILE_ENV",
    "CONFIG_YAML_ENV",
    "DEV_FLAGS",
    "EMULATOR_ENTRY_POINTS",
    "EXEC_FLAGS",
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_USAGE",
    "MAX_MESSAGE_CHARS",
    "PROG",
    "ROTATION_CONFIG_KEYS",
    "SHOWN_CHARS",
    "ConfigFlag",
    "HelpFormatter",
    "Invocation",
    "Parser",
    "build_parser",
    "closest",
    "exit_now",
    "main",
    "parse",
    "shown",
]


def main(argv: Sequence[str] | None = None) -> int:
    """The ``secrets-agent`` program: parse, then run one entry point; returns the exit code.

    Run as the program (``argv`` None: the console script, ``python -m agent``), ``init`` does not return:
    once its files are written and its output flushed, the process ends without the interpreter's
    teardown (``exit_now``)."""
    from agent.core import collector

    try:
        # The collector waits while the command starts (agent.core.collector): imports, configuration and
        # pipeline are objects for the life of the process. The delegated commands have their own start.
        with collector.paused():
            invocation = parse(argv, os.environ)
            if invocation.config is None:
                collector.startup_done()
            code = invocation.run()
    except ConfigError as error:
        for problem in error.problems:
            print(f"secrets-agent: {problem}", file=sys.stderr)
        return EXIT_USAGE
    except AgentError as error:
        print(f"secrets-agent: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_FAILURE
    except BrokenPipeError:
        return _reader_gone()
    if argv is None and invocation.command == "init":
        exit_now(code)
    return code


def _reader_gone() -> int:
    """``secrets-agent check-config | head``: the reader closed the pipe before the output ended. Not an
    error of ours (no traceback); what is still buffered for stdout goes nowhere, as a shell's own tools do
    (the interpreter would otherwise report the same broken pipe again when it flushes at exit)."""
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return EXIT_FAILURE


def exit_now(code: int) -> NoReturn:
    """End the process with ``code`` after flushing the log and the standard streams, skipping the
    interpreter's teardown (as mypy does when it is done).

    Tearing down frees every object of the process one by one: the Google client's modules, protobuf
    descriptors and gRPC make some 60 MiB of them, and freeing them costs about a quarter of the CPU time
    of a whole ``init`` (``bench/init_cost.py``: 265 ms against 353 ms with the teardown), on every pod
    start, to give back memory the kernel takes back at once. Nothing is lost: the snapshot is on disk
    (written and renamed before ``init`` returns), the Secret Manager channel is closed, the output
    directory's lock goes with the process. ``atexit`` handlers do not run: the agent registers none (a
    tool that does, such as a coverage recorder, calls ``main`` with an argv and gets the code back)."""
    import logging

    logging.shutdown()  # flushes (and closes) every handler: the last log line is out
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed or broken pipe: nothing more to say
            stream.flush()
    os._exit(code)

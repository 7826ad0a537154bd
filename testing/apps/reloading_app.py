"""A small, real app for tests: it reads its secret files on start and on every reload signal, and records
everything it sees as JSON lines in a log file.

Run it with ``sys.executable testing/apps/reloading_app.py --log LOG [options]`` (``testing.apps.app_argv()``
builds the command). Each line of LOG is one JSON object with ``event`` and ``pid``:

* ``{"event": "start", "pid", "ppid", "pgid", "sid", "argv", "env": {VAR: value or null}}`` once, after
  the signal handling is in place (so a test may signal the app as soon as it sees this line);
* ``{"event": "read", "pid", "reads": n, "values": {file: text or null}, "snapshot": dir or null,
  "signal": name or null}`` on start (``reads`` 1) and after every reload signal;
* ``{"event": "signal", "pid", "signal": "SIGUSR1"}`` for every signal received (before acting on it);
* ``{"event": "orphan", "pid", "ppid"}`` written by the ``--orphan`` grandchild to its own file.

Options: ``--dir DIR --file NAME ...`` the files to read (``--snapshot`` resolves ``DIR/..data`` once per
read, as an app that wants one consistent snapshot does); ``--env VAR`` records variables;
``--reload-signal NAME`` (default SIGHUP); ``--on-term die|exit|ignore`` what SIGTERM/SIGINT/SIGQUIT do
(default die: the process dies of that signal, status 128+N); ``--exit-with N`` exits right after start;
``--pid-file FILE``; ``--orphan FILE`` double-forks a grandchild that outlives its parent, writes its
line to FILE once reparented, and exits (to test reaping).

Signals are blocked and taken with ``sigwaitinfo``, so handling is synchronous: no handler races, and
every delivered signal is logged once (standard signals of one kind pending together coalesce, as usual).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

_UNCATCHABLE_OR_FAULTS = {
    signal.SIGKILL,
    signal.SIGSTOP,
    signal.SIGSEGV,
    signal.SIGBUS,
    signal.SIGILL,
    signal.SIGFPE,
    signal.SIGABRT,
    signal.SIGTRAP,
    signal.SIGSYS,
    signal.SIGCHLD,  # our own --orphan intermediate; not interesting
}
WAITED = sorted(int(s) for s in signal.valid_signals() if s not in _UNCATCHABLE_OR_FAULTS)
STOPPERS = {signal.SIGTERM, signal.SIGINT, signal.SIGQUIT}


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"SIGRT{number}"


class Log:
    def __init__(self, path: Path) -> None:
        # O_APPEND + one write per line: concurrent readers never see half a line mixed with another.
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def write(self, record: dict[str, object]) -> None:
        os.write(self.fd, (json.dumps(record, sort_keys=True) + "\n").encode())


def read_files(directory: Path, names: list[str], snapshot: bool) -> tuple[dict[str, str | None], str | None]:
    base = directory
    resolved: str | None = None
    if snapshot and (directory / "..data").exists():
        base = Path(os.path.realpath(directory / "..data"))
        resolved = base.name
    values: dict[str, str | None] = {}
    for name in names:
        try:
            values[name] = (base / name).read_bytes().decode("utf-8", "replace")
        except FileNotFoundError:
            values[name] = None
    return values, resolved


def make_orphan(out: Path) -> None:
    """Double fork: the grandchild waits for its parent to be gone, records its new parent, exits."""
    read_end, write_end = os.pipe()
    intermediate = os.fork()
    if intermediate == 0:
        if os.fork() == 0:  # grandchild
            os.close(write_end)
            os.read(read_end, 1)  # EOF once the intermediate (the only writer left) has exited
            tmp = out.with_suffix(".tmp")
            tmp.write_text(json.dumps({"event": "orphan", "pid": os.getpid(), "ppid": os.getppid()}))
            tmp.rename(out)
            os._exit(0)
        os._exit(0)  # intermediate: exit at once so the grandchild is reparented
    os.close(write_end)
    os.close(read_end)
    os.waitpid(intermediate, 0)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--dir", type=Path)
    parser.add_argument("--file", action="append", default=[])
    parser.add_argument("--snapshot", action="store_true")
    parser.add_argument("--env", action="append", default=[])
    parser.add_argument("--reload-signal", default="SIGHUP")
    parser.add_argument("--on-term", choices=("die", "exit", "ignore"), default="die")
    parser.add_argument("--exit-with", type=int)
    parser.add_argument("--pid-file", type=Path)
    parser.add_argument("--orphan", type=Path)
    args = parser.parse_args()
    reload_signal = signal.Signals[args.reload_signal]

    signal.pthread_sigmask(signal.SIG_BLOCK, WAITED)
    log = Log(args.log)
    if args.pid_file:
        tmp = args.pid_file.with_suffix(".tmp")
        tmp.write_text(f"{os.getpid()}\n")
        tmp.rename(args.pid_file)
    log.write(
        {
            "event": "start",
            "pid": os.getpid(),
            "ppid": os.getppid(),
            "pgid": os.getpgid(0),
            "sid": os.getsid(0),
            "argv": sys.argv,
            "env": {name: os.environ.get(name) for name in args.env},
        }
    )
    reads = 0

    def read(cause: str | None) -> None:
        nonlocal reads
        if args.dir is None:
            return
        reads += 1
        values, snapshot = read_files(args.dir, args.file, args.snapshot)
        log.write(
            {
                "event": "read",
                "pid": os.getpid(),
                "reads": reads,
                "values": values,
                "snapshot": snapshot,
                "signal": cause,
            }
        )

    read(None)
    if args.orphan:
        make_orphan(args.orphan)
    if args.exit_with is not None:
        return int(args.exit_with)

    while True:
        number = signal.sigwaitinfo(WAITED).si_signo
        log.write({"event": "signal", "pid": os.getpid(), "signal": signal_name(number)})
        if number == reload_signal:
            read(signal_name(number))
        elif number in STOPPERS:
            if args.on_term == "exit":
                return 0
            if args.on_term == "die":
                signal.signal(number, signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, [number])
                os.kill(os.getpid(), number)  # dies here, with the signal as its status
                return 1  # not reached


if __name__ == "__main__":
    sys.exit(main())

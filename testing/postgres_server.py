"""A private PostgreSQL cluster for tests: Debian's server binaries, a temp dir, 127.0.0.1 on a free port.

The cluster is ours alone: ``initdb`` into a fresh temp dir, ``pg_ctl -w start``, and at the end
``pg_ctl stop`` and the dir removed. It never touches (or needs) the Debian cluster that the ``postgresql``
package may have created and started.

* Authentication is ``scram-sha-256`` for TCP and for the unix socket, as on a real server, so a wrong
  password really fails.
* A superuser ``ADMIN_USER`` with a random password: ``PostgresServer.admin_dsn``.
* ``log_statement = 'all'`` into ``PostgresServer.log_file``, so tests can prove a plaintext password never
  reached the server's log.
* PostgreSQL refuses to run as root: when the tests run as root, the temp dir is given to the ``postgres``
  OS user (the Debian package creates it) and the server programs run as that user (``subprocess``'s
  ``user=``/``group=``, no ``su``/``runuser`` needed).
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

BINDIR_ENV = "POSTGRES_BINDIR"
"""Override: the directory holding ``initdb`` and ``pg_ctl`` (e.g. ``/usr/lib/postgresql/15/bin``)."""
DEBIAN_BINDIRS = "/usr/lib/postgresql/*/bin"
SERVER_OS_USER = "postgres"
"""The OS user the server runs as when the tests run as root."""
ADMIN_USER = "rotation_admin"
"""The cluster's bootstrap superuser (the admin DSN's user)."""
START_TIMEOUT_SECONDS = 60
STOP_TIMEOUT_SECONDS = 30

INSTALL_HINT = (
    "The PostgreSQL tests need Debian's PostgreSQL server binaries (initdb, pg_ctl): run `.ci/run`, which "
    "installs them when absent, or `apt-get install postgresql`; or point "
    f"{BINDIR_ENV} at a directory holding initdb and pg_ctl."
)


class PostgresUnavailable(RuntimeError):
    """Binaries missing, or the cluster did not start; the message says what to install or what failed."""


def find_bindir() -> Path:
    """$POSTGRES_BINDIR, else the newest ``/usr/lib/postgresql/<major>/bin``, else ``initdb`` on PATH."""
    override = os.environ.get(BINDIR_ENV)
    if override:
        path = Path(override)
        if not (path / "initdb").is_file() or not (path / "pg_ctl").is_file():
            raise PostgresUnavailable(f"{BINDIR_ENV}={override} holds no initdb and pg_ctl. {INSTALL_HINT}")
        return path
    candidates = [Path(d) for d in glob.glob(DEBIAN_BINDIRS) if (Path(d) / "initdb").is_file()]
    if candidates:
        # The newest major version; "9.6" and "15" compare as numbers, not strings.
        return max(candidates, key=lambda d: [int(p) for p in re.findall(r"\d+", d.parent.name)] or [0])
    initdb = shutil.which("initdb")
    if initdb is not None and (Path(initdb).parent / "pg_ctl").is_file():
        return Path(initdb).parent
    raise PostgresUnavailable(f"no initdb found (looked in {DEBIAN_BINDIRS} and on PATH). {INSTALL_HINT}")


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (PostgreSQL cannot bind port 0: the port names its unix socket)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def dsn(
    user: str,
    password: str,
    *,
    host: str = "127.0.0.1",
    port: int,
    database: str = "postgres",
) -> str:
    """A ``postgresql://`` URL with user and password percent-encoded (any password works)."""
    return f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}@{host}:{port}/{database}"


@dataclass
class PostgresServer:
    """A running private cluster. ``admin_dsn`` connects as the superuser over TCP."""

    host: str
    port: int
    bindir: Path
    workdir: Path
    """Temp dir: ``data/`` (the cluster), ``server.log`` and the unix socket ``.s.PGSQL.<port>``."""
    admin_password: str = field(repr=False)
    run_as: str | None
    """The OS user the server programs run as (``postgres`` when the tests run as root), else ``None``."""
    stopped: bool = False

    admin_user: str = ADMIN_USER

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def log_file(self) -> Path:
        """The server's log (``log_statement = 'all'``): every statement it received."""
        return self.workdir / "server.log"

    @property
    def socket_dir(self) -> Path:
        """Where the unix socket is (``host=`` for a socket connection)."""
        return self.workdir

    @property
    def admin_dsn(self) -> str:
        return self.dsn(self.admin_user, self.admin_password)

    def dsn(self, user: str, password: str, database: str = "postgres") -> str:
        """A TCP ``postgresql://`` URL to this server."""
        return dsn(user, password, host=self.host, port=self.port, database=database)

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def stop(self) -> None:
        """Stop the server (fast shutdown, then immediate) and remove the temp dir. Idempotent."""
        if self.stopped:
            return
        self.stopped = True
        try:
            if (self.data_dir / "postmaster.pid").exists():
                for mode in ("fast", "immediate"):
                    result = _run(
                        [str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop"],
                        self,
                        timeout=STOP_TIMEOUT_SECONDS,
                        check=False,
                    )
                    if result.returncode == 0:
                        break
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)


def start_postgres(host: str = "127.0.0.1") -> PostgresServer:
    """initdb a new cluster in a temp dir and start it; returns once it accepts connections.

    Raises PostgresUnavailable (binaries missing, or initdb/start failed with the server's own output).
    """
    bindir = find_bindir()
    run_as = _server_os_user()
    server = PostgresServer(
        host=host,
        port=0,
        bindir=bindir,
        workdir=Path(tempfile.mkdtemp(prefix="rotation-postgres-")),
        admin_password=secrets.token_urlsafe(24),
        run_as=run_as,
    )
    try:
        if run_as is not None:
            entry = pwd.getpwnam(run_as)
            os.chown(server.workdir, entry.pw_uid, entry.pw_gid)
        _initdb(server)
        attempts = 3  # a free port can be taken between free_port() and the server binding it
        for attempt in range(1, attempts + 1):
            server.port = free_port(host)
            _configure(server)
            result = _run(
                [
                    str(bindir / "pg_ctl"),
                    "-D",
                    str(server.data_dir),
                    "-l",
                    str(server.log_file),
                    "-w",
                    "-t",
                    str(START_TIMEOUT_SECONDS),
                    "start",
                ],
                server,
                timeout=START_TIMEOUT_SECONDS + 10,
                check=False,
            )
            if result.returncode == 0:
                return server
            if attempt == attempts or "could not bind" not in server.log_text():
                raise PostgresUnavailable(
                    f"PostgreSQL did not start on {host}:{server.port}: {result.stdout.strip()}\n"
                    f"server log:\n{server.log_text()[-3000:]}"
                )
    except BaseException:
        server.stop()
        raise
    raise AssertionError("unreachable")


def _server_os_user() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVER_OS_USER)
    except KeyError:
        raise PostgresUnavailable(
            f"running as root, and PostgreSQL refuses to run as root, but there is no {SERVER_OS_USER!r} OS "
            f"user to run it as. {INSTALL_HINT}"
        ) from None
    return SERVER_OS_USER


def _initdb(server: PostgresServer) -> None:
    password_file = server.workdir / "admin-password"
    password_file.write_text(server.admin_password + "\n")
    password_file.chmod(0o600)
    if server.run_as is not None:
        entry = pwd.getpwnam(server.run_as)
        os.chown(password_file, entry.pw_uid, entry.pw_gid)
    try:
        _run(
            [
                str(server.bindir / "initdb"),
                "-D",
                str(server.data_dir),
                "-U",
                server.admin_user,
                f"--pwfile={password_file}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",  # a throwaway cluster: no need to wait for fsync
            ],
            server,
            timeout=120,
        )
    finally:
        password_file.unlink(missing_ok=True)


def _configure(server: PostgresServer) -> None:
    """Settings in postgresql.auto.conf (rewritten for each start attempt, as the port changes)."""
    settings = {
        "listen_addresses": server.host,
        "port": str(server.port),
        "unix_socket_directories": str(server.socket_dir),
        "password_encryption": "scram-sha-256",
        "log_statement": "all",  # tests read the log to prove no plaintext password reached the server
        "log_connections": "on",
        "logging_collector": "off",  # pg_ctl -l captures stderr into server.log
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "shared_buffers": "16MB",
        "max_connections": "40",
        "dynamic_shared_memory_type": "mmap",  # containers often have a tiny /dev/shm
    }
    text = "".join(f"{key} = '{value}'\n" for key, value in settings.items())
    auto_conf = server.data_dir / "postgresql.auto.conf"
    auto_conf.write_text(text)
    if server.run_as is not None:
        entry = pwd.getpwnam(server.run_as)
        os.chown(auto_conf, entry.pw_uid, entry.pw_gid)


def _run(
    argv: list[str], server: PostgresServer, *, timeout: float, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run a server program (as ``server.run_as`` when set), output captured for error messages."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LC_ALL": "C",
        "HOME": str(server.workdir),
    }
    try:
        result = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=server.workdir,
            env=env,
            user=server.run_as,
            group=server.run_as,
            extra_groups=[] if server.run_as is not None else None,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise PostgresUnavailable(f"{Path(argv[0]).name} failed: {e}") from e
    if check and result.returncode != 0:
        raise PostgresUnavailable(
            f"{Path(argv[0]).name} exited with {result.returncode}:\n{result.stdout[-3000:]}"
        )
    return result

"""A throwaway PostgreSQL server on 127.0.0.1 for the tests and the hpo benchmarks.

``initdb`` + ``pg_ctl`` in a temporary directory, on a free port, as the ``postgres`` user when
running as root (the server refuses root); always stopped by its pid and removed afterwards.
The superuser ``postgres`` logs in without a password (as on a developer's machine); roles made
with :meth:`PostgresServer.add_user` must give their password (scram-sha-256), as on a shared one.
"""

import contextlib
import glob
import os
import pathlib
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator

from tests.helpers import free_port

#: roles in this group log in over TCP with a password; everyone else is trusted
PASSWORD_GROUP = "password_users"


class PostgresUnavailableError(RuntimeError):
    """The server cannot be started here; the message says why."""


def server_bindir() -> pathlib.Path | None:
    """The directory holding initdb and pg_ctl (pg_config, then Debian's layout), or None."""
    try:
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True)
        candidate = pathlib.Path(out.stdout.strip())
        if (candidate / "initdb").exists():
            return candidate
    except (OSError, subprocess.CalledProcessError):
        pass
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return pathlib.Path(found[-1]).parent if found else None


def _stop(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGINT)  # "fast" shutdown
        for _ in range(100):
            os.kill(pid, 0)
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class PostgresServer:
    """One initialized data directory: start, stop (to test restarts), add users, remove.

    Raises:
        PostgresUnavailableError: no server binaries, no way to drop root, or a failed start.
    """

    def __init__(self, max_connections: int = 60) -> None:
        bindir = server_bindir()
        if bindir is None:
            raise PostgresUnavailableError("PostgreSQL server binaries (initdb, pg_ctl) not found")
        self.bindir = bindir
        self.root = pathlib.Path(tempfile.mkdtemp(prefix="research_ext_pg_"))
        self.data = self.root / "data"
        self.as_user: list[str] = []
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            if shutil.which("runuser") is None:
                self.remove()
                raise PostgresUnavailableError(
                    "running as root without `runuser` to drop to postgres"
                )
            shutil.chown(self.root, "postgres", "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.port = free_port()
        self.options = (
            f"-p {self.port} -h 127.0.0.1 -k {self.root} -c fsync=off "
            f"-c max_connections={max_connections}"
        )
        self.pid: int | None = None
        try:
            self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres")
        except PostgresUnavailableError:
            self.remove()
            raise
        hba = self.data / "pg_hba.conf"
        rule = f"host all +{PASSWORD_GROUP} 127.0.0.1/32 scram-sha-256\n"
        hba.write_text(rule + hba.read_text())  # first match wins: before the trust lines

    def _run(self, tool: str, *args: str) -> None:
        try:
            subprocess.run(
                [*self.as_user, str(self.bindir / tool), *args], check=True, capture_output=True
            )
        except subprocess.CalledProcessError as err:
            message = err.stderr.decode(errors="replace")[-500:]
            raise PostgresUnavailableError(f"could not run {tool}: {message}") from err

    @property
    def url(self) -> str:
        """The superuser's URL in the README's form (``postgresql://user@host:port/db``)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        """Start the server on its port and wait until it accepts connections."""
        log = str(self.root / "log")
        self._run(
            "pg_ctl", "-D", str(self.data), "-o", self.options, "-l", log, "-w", "-t", "60", "start"
        )
        self.pid = int((self.data / "postmaster.pid").read_text().split()[0])

    def stop(self) -> None:
        """Stop the server (fast shutdown: open sessions are cut, as in a restart)."""
        if self.pid is not None:
            _stop(self.pid)
            self.pid = None

    def add_user(self, name: str, password: str) -> str:
        """Create a role that must log in with ``password`` and a database it owns; its URL."""
        import psycopg2

        connection = psycopg2.connect(self.url)
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (PASSWORD_GROUP,))
            if cursor.fetchone() is None:
                cursor.execute(f"CREATE ROLE {PASSWORD_GROUP}")
            cursor.execute(
                f"CREATE ROLE {name} LOGIN PASSWORD %s IN ROLE {PASSWORD_GROUP}", (password,)
            )
            cursor.execute(f"CREATE DATABASE {name} OWNER {name}")
        connection.close()
        return f"postgresql://{name}:{password}@127.0.0.1:{self.port}/{name}"

    def remove(self) -> None:
        """Stop the server and delete its files."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def throwaway_server(max_connections: int = 60) -> Iterator[PostgresServer]:
    """A started :class:`PostgresServer`, stopped by pid and deleted afterwards."""
    server = PostgresServer(max_connections)
    try:
        server.start()
        yield server
    finally:
        server.remove()


@contextlib.contextmanager
def throwaway_postgres(max_connections: int = 60) -> Iterator[str]:
    """Start a server, yield its SQLAlchemy URL, stop it by pid and delete its files.

    Raises:
        PostgresUnavailableError: no server binaries, no way to drop root, or a failed start.
    """
    with throwaway_server(max_connections) as server:
        yield server.url

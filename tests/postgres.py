"""A throwaway PostgreSQL server on 127.0.0.1 for the tests and the hpo benchmarks.

``initdb`` + ``pg_ctl`` in a temporary directory, on a free port, as the ``postgres`` user when
running as root (the server refuses root); always stopped by its pid and removed afterwards.
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


@contextlib.contextmanager
def throwaway_postgres(max_connections: int = 60) -> Iterator[str]:
    """Start a server, yield its SQLAlchemy URL, stop it by pid and delete its files.

    Raises:
        PostgresUnavailableError: no server binaries, no way to drop root, or a failed start.
    """
    bindir = server_bindir()
    if bindir is None:
        raise PostgresUnavailableError("PostgreSQL server binaries (initdb, pg_ctl) not found")
    root = pathlib.Path(tempfile.mkdtemp(prefix="research_ext_pg_"))
    data = root / "data"
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        if shutil.which("runuser") is None:
            shutil.rmtree(root, ignore_errors=True)
            raise PostgresUnavailableError("running as root without `runuser` to drop to postgres")
        shutil.chown(root, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    options = f"-p {port} -h 127.0.0.1 -k {root} -c fsync=off -c max_connections={max_connections}"
    try:
        subprocess.run(
            [*as_user, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-o", options]
            + ["-l", str(root / "log"), "-w", "-t", "60", "start"],
            check=True,
            capture_output=True,
        )
    except subprocess.CalledProcessError as err:
        shutil.rmtree(root, ignore_errors=True)
        message = err.stderr.decode(errors="replace")[-500:]
        raise PostgresUnavailableError(f"could not start PostgreSQL: {message}") from err
    pid = int((data / "postmaster.pid").read_text().split()[0])
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    finally:
        _stop(pid)
        shutil.rmtree(root, ignore_errors=True)

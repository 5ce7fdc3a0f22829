import glob
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import tempfile
import textwrap
import time

import pytest

pytest.importorskip("optuna")

OBJECTIVES = textwrap.dedent(
    '''
    import os
    import time

    def quadratic(params, sleep=0.0, fail_above=None):
        """(x - 0.3)^2 (+ y when kind is b); raises for x > fail_above."""
        if sleep:
            time.sleep(sleep)
        if fail_above is not None and params["x"] > fail_above:
            raise RuntimeError(f"x={params['x']} is too large")
        extra = params.get("y", 0.0) if params.get("kind") == "b" else 0.0
        return (params["x"] - 0.3) ** 2 + extra

    def stepped(params, reporter, trial_dir, steps=4, sleep=0.0):
        """Reports a decreasing curve; records its pid and directory for crash tests."""
        (trial_dir / "pid").write_text(str(os.getpid()))
        value = 0.0
        for step in range(steps):
            time.sleep(sleep)
            value = (params["x"] - 0.3) ** 2 + 1.0 / (step + 1)
            reporter.report(value, step)
        return value

    def two_objectives(params):
        return {"loss": (params["x"] - 0.3) ** 2, "size": params["x"] + params.get("y", 0.0),
                "aux": 1.0}

    def private(params, reporter, epochs=5):
        """epsilon grows by 1/noise per epoch; accuracy rises with noise-free capacity."""
        eps = 0.0
        for epoch in range(epochs):
            eps += 1.0 / params["noise"]
            reporter.report_metric("epsilon", eps, step=epoch)
        return {"accuracy": 1.0 - params["noise"] / 10.0, "epsilon": eps}

    def dp_sgd(params, reporter, epochs=3, steps_per_epoch=20, sample_rate=0.05):
        """Reports a DP-SGD mechanism and its RDP epsilon after every epoch."""
        import research_ext.privacy as rp

        eps = 0.0
        for epoch in range(epochs):
            steps = (epoch + 1) * steps_per_epoch
            eps = rp.epsilon(params["noise"], sample_rate, steps, 1e-5, accountant="rdp")
            reporter.report_dp_sgd(params["noise"], sample_rate, steps)
            reporter.report_metric("epsilon", eps, step=epoch)
        return {"accuracy": 1.0 - params["noise"] / 10.0, "epsilon": eps}
    '''
)

BASE = textwrap.dedent(
    """
    [study]
    name = "{name}"
    {directions}
    n_trials = {n_trials}
    sampler = {sampler}
    seed = 0
    heartbeat_interval = 1
    grace_period = 3
    {extra_study}

    [objective]
    entry = "objectives.py:{fn}"
    args = {args}

    [space.x]
    type = "float"
    low = 0.0
    high = 1.0

    [space.kind]
    type = "categorical"
    choices = ["a", "b"]

    [space.y]
    type = "float"
    low = 0.0
    high = 0.5
    when = {{ kind = "b" }}
    {extra}
    """
)


def write_study(
    directory: pathlib.Path,
    *,
    name: str = "s",
    fn: str = "quadratic",
    n_trials: int = 6,
    directions: str = 'direction = "minimize"',
    sampler: str = '{ type = "tpe", n_startup_trials = 3 }',
    args: str = "{}",
    extra_study: str = "",
    extra: str = "",
    filename: str = "study.toml",
) -> pathlib.Path:
    (directory / "objectives.py").write_text(OBJECTIVES)
    path = directory / filename
    path.write_text(
        BASE.format(
            name=name,
            fn=fn,
            n_trials=n_trials,
            directions=directions,
            sampler=sampler,
            args=args,
            extra_study=extra_study,
            extra=extra,
        )
    )
    return path


@pytest.fixture
def study_file(tmp_path):
    return write_study(tmp_path)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pg_bindir() -> pathlib.Path | None:
    try:
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True)
        candidate = pathlib.Path(out.stdout.strip())
        if (candidate / "initdb").exists():
            return candidate
    except (OSError, subprocess.CalledProcessError):
        pass
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return pathlib.Path(found[-1]).parent if found else None


@pytest.fixture(scope="session")
def postgres_url():
    """A throwaway PostgreSQL on 127.0.0.1 (initdb + pg_ctl in a temp dir), stopped by pid."""
    pytest.importorskip("psycopg2")
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found")
    root = pathlib.Path(tempfile.mkdtemp(prefix="research_ext_pg_"))
    data = root / "data"
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        if shutil.which("runuser") is None:
            pytest.skip("running as root without `runuser` to drop to the postgres user")
        shutil.chown(root, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    try:
        subprocess.run(
            [*as_user, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
            check=True,
            capture_output=True,
        )
        options = f"-p {port} -h 127.0.0.1 -k {root} -c fsync=off -c max_connections=60"
        subprocess.run(
            [
                *as_user,
                str(bindir / "pg_ctl"),
                "-D",
                str(data),
                "-o",
                options,
                "-l",
                str(root / "log"),
                "-w",
                "-t",
                "60",
                "start",
            ],
            check=True,
            capture_output=True,
        )
    except subprocess.CalledProcessError as err:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"could not start PostgreSQL: {err.stderr.decode(errors='replace')[-500:]}")
    pid = int((data / "postmaster.pid").read_text().split()[0])
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    finally:
        try:
            os.kill(pid, signal.SIGINT)  # "fast" shutdown
            for _ in range(100):
                os.kill(pid, 0)
                time.sleep(0.1)
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        shutil.rmtree(root, ignore_errors=True)

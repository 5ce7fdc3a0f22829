import os
import pathlib
import textwrap

import pytest

from tests.postgres import PostgresUnavailableError, throwaway_server

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


def _unavailable(reason: str) -> None:
    """Skip on a developer's machine; fail in CI, where .ci/run installs the server."""
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL tests cannot run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL on 127.0.0.1 (initdb + pg_ctl in a temp dir), stopped by pid."""
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        _unavailable("psycopg2 is not installed (pip install research-ext[hpo])")
    try:
        with throwaway_server() as server:
            yield server
    except PostgresUnavailableError as err:
        _unavailable(str(err))


@pytest.fixture(scope="session")
def postgres_url(postgres_server):
    """The server's URL in the README's plain form, ``postgresql://user@host:port/db``."""
    return postgres_server.url

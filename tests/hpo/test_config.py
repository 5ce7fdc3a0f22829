import math
import sys

import numpy
import optuna
import pytest
from hypothesis import given, settings, strategies as st

from research_ext.errors import ConfigError, StudyFailedError
from research_ext.hpo import ParamSpec, load_config, run, sample_params
from research_ext.hpo._cli import main
from research_ext.hpo._objective import split_result
from tests.hpo.conftest import write_study


def test_valid_file_round_trip(study_file):
    config = load_config(study_file)
    assert config.name == "s" and config.n_trials == 6 and config.directions == ("minimize",)
    assert config.sampler == "TPESampler" and config.sampler_kwargs == {"n_startup_trials": 3}
    assert [p.name for p in config.space] == ["x", "kind", "y"]
    assert config.space[2].when == (("kind", ("b",)),)
    assert config.storage is None and config.base_dir == study_file.parent


def test_overrides(study_file):
    config = load_config(study_file, n_trials=3, name="other")
    assert (config.n_trials, config.name) == (3, "other")


# (text replaced, replacement, error pattern): each names the key, the value and the rule.
BAD = [
    (
        "n_trials = 6",
        "n_trials = 0",
        r"`study.n_trials` must be a positive int, got study.n_trials=0",
    ),
    (
        "n_trials = 6",
        'n_trials = "6"',
        r"`study.n_trials` must be a positive int, got study.n_trials='6'",
    ),
    (
        "n_trials = 6",
        "",
        r"`study.n_trials` must be a positive int, got study.n_trials=None; the key is required",
    ),
    (
        'direction = "minimize"',
        'direction = "down"',
        r"`study.direction` must be 'maximize' or 'minimize', got study.direction='down'",
    ),
    (
        'name = "s"',
        'name = "s"\nnme = 3',
        r"`study.nme` must be one of the keys .*, got study.nme='nme'; unknown key; in study.toml, line 4",
    ),
    (
        "seed = 0",
        "seed = -1",
        r"`study.seed` must be an int in \[0, 2\*\*31 - 1\], got study.seed=-1",
    ),
    (
        'type = "tpe"',
        'type = "bogus"',
        r"`study.sampler` must be one of 'tpe', 'random'.*got study.sampler='bogus'",
    ),
    (
        "n_startup_trials = 3",
        "n_startup = 3",
        r"`study.sampler.n_startup` must be a keyword of TPESampler, got .*TPESampler takes",
    ),
    (
        "n_startup_trials = 3",
        "seed = 3",
        r"`study.sampler.seed` must be a keyword of TPESampler.*set the seed with `study.seed`",
    ),
    (
        'entry = "objectives.py:quadratic"',
        'entry = "missing.py:f"',
        r"`objective.entry` must be an importable objective, got objective.entry='missing.py:f'.*existing file",
    ),
    (
        'entry = "objectives.py:quadratic"',
        'entry = "objectives.py:nope"',
        r"`objective.entry` must be an importable objective.*a name defined in objectives.py",
    ),
    (
        'entry = "objectives.py:quadratic"',
        'entry = "quadratic"',
        r"`entry` must be 'path/file.py:fn' or 'package.module:fn', got entry='quadratic'",
    ),
    ("args = {}", "args = { nonsense = 1 }", r"a function taking \(params, \*\*args\).*nonsense"),
    (
        "low = 0.0\nhigh = 1.0",
        "low = 1.0\nhigh = 0.0",
        r"`space.x.high` must be >= low=1.0, got space.x.high=0.0",
    ),
    (
        'type = "float"\nlow = 0.0',
        'type = "float"\nlog = true\nlow = 0.0',
        r"`space.x.low` must be > 0 when `log = true`, got space.x.low=0.0",
    ),
    (
        'type = "float"\nlow = 0.0',
        'type = "real"\nlow = 0.0',
        r"`space.x.type` must be 'float', 'int' or 'categorical', got space.x.type='real'",
    ),
    (
        'choices = ["a", "b"]',
        'choices = ["a", "a"]',
        r"`space.kind.choices` must be a non-empty list of distinct scalars",
    ),
    (
        'choices = ["a", "b"]',
        "choices = []",
        r"`space.kind.choices` must be a non-empty list of distinct scalars, got space.kind.choices=\[\]",
    ),
    (
        'when = { kind = "b" }',
        'when = { kind = "c" }',
        r"`space.y.when.kind` must be values that `kind` can take, got space.y.when.kind='c'",
    ),
    (
        'when = { kind = "b" }',
        'when = { nothere = "b" }',
        r"`space.y.when` must be a table naming other parameters, got space.y.when='nothere'",
    ),
    (
        "high = 0.5",
        "high = 0.5\nstep = -1.0",
        r"`space.y.step` must be a finite number > 0, got space.y.step=-1.0",
    ),
    # options are checked against the component's signature, not left to fail every trial
    (
        "n_startup_trials = 3",
        'n_startup_trials = "many"',
        r"`study.sampler.n_startup_trials` must be int \(TPESampler's `n_startup_trials`\), "
        r"got study.sampler.n_startup_trials='many'",
    ),
    (
        "n_startup_trials = 3",
        "n_startup_trials = 3.5",
        r"`study.sampler.n_startup_trials` must be int .*got study.sampler.n_startup_trials=3.5",
    ),
    (
        "n_startup_trials = 3",
        "multivariate = 1",
        r"`study.sampler.multivariate` must be bool .*got study.sampler.multivariate=1",
    ),
    (
        'sampler = { type = "tpe", n_startup_trials = 3 }',
        'sampler = "random"\npruner = { type = "median", n_warmup_steps = "2" }',
        r"`study.pruner.n_warmup_steps` must be int .*got study.pruner.n_warmup_steps='2'",
    ),
]


@pytest.mark.parametrize("old,new,pattern", BAD, ids=[b[2][:40] for b in BAD])
def test_bad_files_raise_naming_key_and_value(tmp_path, old, new, pattern):
    path = write_study(tmp_path)
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(ConfigError, match=pattern):
        load_config(path)


def test_error_names_the_line(tmp_path):
    path = write_study(tmp_path)
    text = path.read_text().replace("high = 0.5", "high = 0.5\nlog = 3")
    path.write_text(text)
    line = text.splitlines().index("log = 3") + 1
    with pytest.raises(
        ConfigError,
        match=rf"`space.y.log` must be true or false, got space.y.log=3; in study.toml, line {line}",
    ):
        load_config(path)


def test_conditional_cycle(tmp_path):
    path = write_study(
        tmp_path,
        extra='[space.z]\ntype = "categorical"\nchoices = [1, 2]\nwhen = { w = 1 }\n[space.w]\ntype = "categorical"\nchoices = [1, 2]\nwhen = { z = 1 }\n',
    )
    with pytest.raises(ConfigError, match=r"`space.(z|w).when` must be free of cycles, got .*->"):
        load_config(path)


def test_multi_objective_rejects_pruner(tmp_path):
    path = write_study(
        tmp_path,
        directions='directions = ["minimize", "minimize"]',
        extra_study='pruner = "median"',
    )
    with pytest.raises(
        ConfigError, match=r"`study.pruner` must be absent for a multi-objective study"
    ):
        load_config(path)


def test_metrics_must_match_directions(tmp_path):
    path = write_study(
        tmp_path, directions='directions = ["minimize", "minimize"]\nmetrics = ["a"]'
    )
    with pytest.raises(ConfigError, match=r"`study.metrics` must be a list of 2 distinct names"):
        load_config(path)


def test_invalid_toml_names_the_line(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[study]\nn_trials = = 3\n")
    with pytest.raises(ConfigError, match=r"bad.toml is not valid TOML: .*line 2"):
        load_config(path)


def test_nothing_is_written_before_the_file_is_valid(tmp_path, capsys):
    path = write_study(tmp_path, extra_study='storage = "study.db"')
    path.write_text(path.read_text().replace("n_trials = 6", "n_trials = -2"))
    assert main(["run", str(path)]) == 1
    assert "`study.n_trials` must be a positive int" in capsys.readouterr().err
    assert not (tmp_path / "study.db").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["objectives.py", "study.toml"]


@st.composite
def spaces(draw):
    specs = []
    n = draw(st.integers(1, 4))
    for i in range(n):
        kind = draw(st.sampled_from(["float", "int", "categorical"]))
        when = ()
        parents = [s for s in specs if s.type == "categorical"]
        if parents and draw(st.booleans()):
            parent = draw(st.sampled_from(parents))
            when = ((parent.name, (parent.choices[0],)),)
        if kind == "categorical":
            k = draw(st.integers(1, 4))
            specs.append(
                ParamSpec(f"p{i}", kind, choices=tuple(f"c{j}" for j in range(k)), when=when)
            )
            continue
        log = draw(st.booleans())
        step = None
        if log:
            low = draw(st.floats(0.001, 50, allow_nan=False))
            high = low + draw(st.floats(0.5, 100, allow_nan=False))
            if kind == "int":
                low, high = math.ceil(low), math.ceil(high)
        else:
            low = draw(st.integers(-100, 50))
            if draw(st.booleans()):
                step = draw(
                    st.sampled_from([1, 2]) if kind == "int" else st.sampled_from([0.25, 0.5, 1.0])
                )
            high = low + (step or 1) * draw(st.integers(1, 40))
            if kind == "float" and step is None:
                low, high = low + draw(st.floats(0, 0.9)), high + draw(st.floats(0, 0.9))
        specs.append(ParamSpec(f"p{i}", kind, low=low, high=high, log=log, step=step, when=when))
    return tuple(specs)


@settings(max_examples=25, deadline=None)
@given(space=spaces(), seed=st.integers(0, 2**16), sampler=st.sampled_from(["random", "tpe"]))
def test_sampled_parameters_stay_inside_the_space(space, seed, sampler):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    chosen = (
        optuna.samplers.RandomSampler(seed=seed)
        if sampler == "random"
        else optuna.samplers.TPESampler(seed=seed, n_startup_trials=2)
    )
    study = optuna.create_study(sampler=chosen)
    for _ in range(4):
        trial = study.ask()
        params = sample_params(trial, space)
        for spec in space:
            assert (spec.name in params) == spec.is_active(params)
            if spec.name in params:
                assert spec.contains(params[spec.name]), (spec, params[spec.name])
        study.tell(trial, float(len(params)))


def test_step_must_divide_the_range(tmp_path):
    path = write_study(tmp_path)
    path.write_text(path.read_text().replace("high = 0.5", "high = 0.5\nstep = 0.2"))
    with pytest.raises(
        ConfigError,
        match=r"`space.y.step` must be a divisor of high - low = 0.5, got space.y.step=0.2",
    ):
        load_config(path)


def test_well_typed_options_pass(tmp_path):
    path = write_study(
        tmp_path,
        sampler='{ type = "tpe", n_startup_trials = 3, multivariate = true, gamma = "x" }',
    )
    with pytest.raises(ConfigError, match=r"`study.sampler.gamma` must be"):
        load_config(path)
    path = write_study(tmp_path, sampler='{ type = "qmc", qmc_type = "halton", scramble = true }')
    assert load_config(path).sampler_kwargs == {"qmc_type": "halton", "scramble": True}
    path = write_study(tmp_path, extra_study='pruner = { type = "hyperband", max_resource = 9 }')
    assert load_config(path).pruner_kwargs == {"max_resource": 9}


def test_component_whose_package_is_missing_is_refused_at_load(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "cmaes", None)
    path = write_study(tmp_path, sampler='"cmaes"')
    with pytest.raises(
        ConfigError, match=r"`study.sampler` must be .*CmaEsSampler.*`cmaes`.*pip install"
    ):
        load_config(path)
    monkeypatch.setitem(sys.modules, "scipy", None)
    path = write_study(tmp_path, sampler='"random"', extra_study='pruner = "wilcoxon"')
    with pytest.raises(ConfigError, match=r"`study.pruner` must be .*WilcoxonPruner.*`scipy`"):
        load_config(path)


def test_objective_whose_import_raises_is_one_line(tmp_path, capsys):
    path = write_study(tmp_path)
    (tmp_path / "broken.py").write_text(
        "import not_a_module_anywhere\n\ndef f(params):\n    return 1.0\n"
    )
    path.write_text(path.read_text().replace("objectives.py:quadratic", "broken.py:f"))
    with pytest.raises(
        ConfigError,
        match=r"`objective.entry` must be an importable objective.*importing broken.py raised "
        r"ModuleNotFoundError: No module named 'not_a_module_anywhere' \(broken.py, line 1\)",
    ):
        load_config(path)
    assert main(["run", str(path), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not_a_module_anywhere" in err and "Traceback" not in err


@pytest.mark.parametrize("value", ["1.5", b"1.5", None, ["1.0"], {"value": "2"}, float("nan")])
def test_non_numeric_objective_values_are_refused(value):
    with pytest.raises(TypeError, match=r"objective: `return value.*` must be .*number"):
        split_result(value, ("value",))


@pytest.mark.parametrize("value", [1, 1.5, numpy.float32(0.25), numpy.int64(3), numpy.array(2.0)])
def test_numeric_objective_values_are_taken(value):
    assert split_result(value, ("value",))[0] == (float(value),)


def test_a_string_result_fails_the_trial_with_the_reason(tmp_path):
    path = write_study(tmp_path, n_trials=2, sampler='"random"', extra_study="max_failures = 2")
    (tmp_path / "strings.py").write_text("def f(params):\n    return '1.5'\n")
    path.write_text(path.read_text().replace("objectives.py:quadratic", "strings.py:f"))
    with pytest.raises(StudyFailedError):
        run(path)
    trials = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'study.db'}").trials
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(failed) == 2 and not any(t.state.is_finished() and t.values for t in trials)
    assert all(
        "'1.5'" in t.user_attrs["error"] and "number" in t.user_attrs["error"] for t in failed
    )


def test_a_missing_constraint_key_is_named(tmp_path, caplog):
    path = write_study(
        tmp_path,
        n_trials=2,
        sampler='"random"',
        extra_study="max_failures = 2",
        extra="[constraints]\nlatency = 1.0",
    )
    with pytest.raises(StudyFailedError):
        run(path)
    trials = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'study.db'}").trials
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert failed and all("`latency`" in t.user_attrs["error"] for t in failed)
    assert "constraint on `latency` needs the objective to return or report it" in caplog.text


def test_an_objective_that_stops_importing_fails_its_trials_with_the_reason(tmp_path):
    path = write_study(tmp_path, n_trials=2, sampler='"random"', extra_study="max_failures = 2")
    (tmp_path / "later.py").write_text("def f(params):\n    return 1.0\n")
    path.write_text(path.read_text().replace("objectives.py:quadratic", "later.py:f"))
    config = load_config(path, validate_objective=False)
    (tmp_path / "later.py").write_text("raise ImportError('the GPU driver is gone')\n")
    with pytest.raises(StudyFailedError):
        run(config)
    trials = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'study.db'}").trials
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(failed) == 2 and all(
        "the GPU driver is gone" in t.user_attrs["error"] for t in failed
    )
    assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]

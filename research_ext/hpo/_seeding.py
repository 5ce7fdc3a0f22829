"""Per-trial sampler seeds: a seeded study draws the same trials however often it is resumed.

Each trial that samples fresh parameters gets the *sample index* ``number - copies``, where
``copies`` counts the earlier trials that re-run a dead trial's parameters (retries of crashed,
stale, interrupted or terminated trials sample nothing). Before the trial samples, the sampler's
random generators are reseeded with ``SeedSequence([study seed, sample index])``. So:

* a resumed run continues the sequence instead of restarting it: one worker run in one go, or
  killed and resumed any number of times, proposes the same parameters (the killed trial is
  re-run with its own parameters and the next fresh trial takes the next index);
* every process, forked by ``run`` or joined with ``tune worker`` on any host, draws differently:
  the seed depends on the trial, never on the process. Sample indices of fresh trials strictly
  increase with the trial number (a copy is marked when it is created, before any later trial
  exists), so no two fresh trials share a seed.

The reseed touches the generators every Optuna sampler keeps (``LazyRandomState`` attributes,
including those of nested samplers such as TPE's random start-up sampler): reseeding in place
gives the sampler the state ``cls(seed=s)`` would have, without rebuilding it (and its caches)
for every trial. A sampler's own non-random seed (``QMCSampler``'s scramble) is left alone.
"""

from typing import Any

import numpy as np

__all__ = ["COPY_REASONS", "reseed", "sample_index", "trial_seed"]

# retry reasons whose WAITING copy keeps the dead trial's parameters (an "error" retry re-samples)
COPY_REASONS = ("crashed", "stale heartbeat", "interrupted", "terminated")


def trial_seed(seed: int, index: int) -> int:
    """The sampler seed of sample index ``index`` in a study seeded with ``seed`` (32 bits)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def reseed(sampler: Any, seed: int) -> None:
    """Reseed ``sampler``'s random generators in place, as ``type(sampler)(seed=seed)`` would."""
    import optuna

    for value in vars(sampler).values():
        # Optuna's private LazyRandomState, recognized by name so a moved class still matches
        if type(value).__name__ == "LazyRandomState":
            value.rng.seed(seed)
        elif isinstance(value, np.random.RandomState):
            value.seed(seed)
        elif isinstance(value, optuna.samplers.BaseSampler):
            reseed(value, seed)


def sample_index(handle: Any, trial_id: int) -> int:
    """The sample index of trial ``trial_id``: its number less the earlier parameter copies."""
    from research_ext.hpo._storage_faults import retried_sql
    from research_ext.hpo._study import RETRY_REASON, rdb_storage

    rdb = rdb_storage(handle.storage)
    if rdb is not None:
        import json

        import sqlalchemy

        placeholders = ", ".join(f":r{i}" for i in range(len(COPY_REASONS)))
        query = sqlalchemy.text(  # one statement: the trial's number less the copies before it
            "SELECT t.number - (SELECT COUNT(*) FROM trials o JOIN trial_system_attributes a "
            "ON a.trial_id = o.trial_id AND a.key = :key WHERE o.study_id = t.study_id "
            f"AND o.number < t.number AND a.value_json IN ({placeholders})) "
            "FROM trials t WHERE t.trial_id = :tid"
        )
        reasons = {f"r{i}": json.dumps(r) for i, r in enumerate(COPY_REASONS)}
        params = {"tid": trial_id, "key": RETRY_REASON, **reasons}
        index = retried_sql(rdb, handle.spec, lambda c: c.execute(query, params).scalar_one())
        return int(index)
    number = handle.storage.get_trial_number_from_id(trial_id)
    copies = sum(
        1
        for t in handle.storage.get_all_trials(handle.study_id, deepcopy=False)
        if t.number < number and t.system_attrs.get(RETRY_REASON) in COPY_REASONS
    )
    return int(number) - copies

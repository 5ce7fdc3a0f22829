#!/usr/bin/env bash
# Mutation testing (mutmut 3) of the modules whose tests must not let breakage through.
#
#   tools/mutation.sh clipping   # research_ext/privacy/_clipping.py, every mutant
#   tools/mutation.sh dpsgd      # research_ext/privacy/_dpsgd.py, the step path (see below)
#   tools/mutation.sh queue      # research_ext/hpo/_queue.py, admission and crash recovery
#   tools/mutation.sh jacobian   # research_ext/functional/_jacobian.py (tools/mutation_jacobian.sh)
#   MUTATION_ALL=1 tools/mutation.sh dpsgd          # every mutant of the module, not the sample
#   MUTATION_DIR=/tmp/mut tools/mutation.sh queue   # reuse a copy (mutmut keeps its results)
#
# mutmut runs in a scratch copy of the working tree under /tmp (its configuration is written
# there as setup.cfg; its mutants/ folder and results stay there), never in the tree itself.
# One worker process (MUTATION_JOBS to change it); torch is not fork-safe once it has run
# tests, so workers fork from a clean server process. Each mutant runs only the listed tests
# that reach the mutated function, fastest first, stopping at the first failure.
#
# Samples (deterministic, by function) keep a pass near half an hour on two loaded cores:
#   dpsgd: step, _check_budget, _clip_into, _finish, _noise_generator, _apply, _update_clip,
#          epsilon, _resolve_noise (the path every step takes; argument checks in __init__ and
#          _adaptive_setup, and checkpoints, are left to their own tests).
#   queue: new_trial, admitted, recover, top_up, _fail_running (how many trials exist, which
#          may run, which are failed and re-queued); the tests are the in-process run tests.
# Afterwards, in the copy: `mutmut results` lists survivors, `mutmut show <name>` shows a diff.
# Needs mutmut (the dev extra).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
venv_bin=${VENV_BIN:-$root/.venv/bin}
target=${1:?usage: tools/mutation.sh clipping|dpsgd|queue|jacobian}
jobs=${MUTATION_JOBS:-1}

if [[ $target == jacobian ]]; then
    exec "$root/tools/mutation_jacobian.sh"
fi

privacy_tests=(
    tests/privacy/test_clipping_properties.py
    tests/privacy/test_sensitivity.py
    tests/privacy/test_dpsgd.py
    tests/privacy/test_own_loop.py
)
hpo_tests=(
    tests/hpo/test_run.py::test_run_reaches_exactly_n_trials_and_is_idempotent
    tests/hpo/test_run.py::test_failures_are_replaced_by_fresh_trials
    tests/hpo/test_run.py::test_max_failures_stops_the_run
    tests/hpo/test_run.py::test_dead_trial_is_rerun_with_same_params_and_directory
    tests/hpo/test_run.py::test_journal_storage_with_our_heartbeat
    tests/hpo/test_run.py::test_ctrl_c_marks_interrupted_and_requeues
    tests/hpo/test_run.py::test_status_matches_the_trials
    tests/hpo/test_run.py::test_sys_exit_in_the_objective_fails_the_trial_with_the_reason
    tests/hpo/test_concurrency.py::test_two_owners_racing_for_the_last_trial_finish_exactly_n
)
case $target in
    clipping)
        module=research_ext/privacy/_clipping.py
        tests=("${privacy_tests[@]}" tests/privacy/test_mutants_clipping.py)
        sample=()
        ;;
    dpsgd)
        module=research_ext/privacy/_dpsgd.py
        tests=("${privacy_tests[@]}" tests/privacy/test_mutants_dpsgd.py)
        prefix='research_ext.privacy._dpsgd.xǁDPSGDǁ'
        sample=()
        for f in step _check_budget _clip_into _finish _noise_generator _apply _update_clip \
            epsilon _resolve_noise; do
            sample+=("${prefix}${f}__mutmut_*")
        done
        ;;
    queue)
        module=research_ext/hpo/_queue.py
        tests=("${hpo_tests[@]}" tests/hpo/test_mutants_study.py)
        sample=()
        for f in new_trial admitted recover top_up _fail_running; do
            sample+=("research_ext.hpo._queue.x_${f}__mutmut_*")
        done
        ;;
    *)
        echo "tools/mutation.sh: unknown target '$target' (clipping, dpsgd, queue, jacobian)" >&2
        exit 2
        ;;
esac
if [[ -n ${MUTATION_ALL:-} ]]; then sample=(); fi

work=${MUTATION_DIR:-$(mktemp -d "/tmp/research_ext-mutation-$target.XXXXXX")}
mkdir -p "$work"
rm -rf "$work/research_ext" "$work/tests"
cp -r "$root/research_ext" "$root/tests" "$work/"
cp "$root/pyproject.toml" "$work/pyproject.toml"
find "$work" -name __pycache__ -prune -exec rm -rf {} +

{
    echo "[mutmut]"
    echo "source_paths = research_ext"
    echo "only_mutate = $module"
    # one argument a line (mutmut does not split a line into arguments)
    printf '%s\n' "pytest_add_cli_args =" "    -p" "    no:cacheprovider" "    -p" "    no:xdist" \
        "    -m" "    not slow" "    --timeout=120"
    echo "pytest_add_cli_args_test_selection ="
    for t in "${tests[@]}"; do
        if [[ -e "$root/${t%%::*}" ]]; then echo "    $t"; fi
    done
    echo "process_isolation = forkserver"
    echo "use_git_change_detection = false"
} >"$work/setup.cfg"

cd "$work"
echo "mutation testing of $module in $work"
OMP_NUM_THREADS=1 "$venv_bin/mutmut" run --max-children "$jobs" "${sample[@]}" || true

# killed / survived / timeout per function, over the sample
"$venv_bin/python" - "$module" "${sample[@]}" <<'EOF'
import collections, fnmatch, json, pathlib, sys

module, patterns = sys.argv[1], sys.argv[2:] or ["*"]
meta = json.loads((pathlib.Path("mutants") / (module + ".meta")).read_text())
kind = {1: "killed", 3: "killed", 0: "survived", 36: "timeout", 24: "timeout", -24: "timeout",
        152: "timeout", 255: "timeout", None: "not run"}
per = collections.defaultdict(collections.Counter)
for key, code in meta["exit_code_by_key"].items():
    if any(fnmatch.fnmatch(key, p) for p in patterns):
        per[key.split("__mutmut_")[0].rsplit(".", 1)[-1]][kind.get(code, f"exit {code}")] += 1
total = collections.Counter()
for name, c in sorted(per.items()):
    total.update(c)
    print(f"{name:40s} " + ", ".join(f"{k} {n}" for k, n in sorted(c.items())))
print(f"{module}: " + ", ".join(f"{k} {n}" for k, n in sorted(total.items()))
      + f", total {sum(total.values())}")
EOF

#!/usr/bin/env bash
# Mutation testing of research_ext/functional/_jacobian.py with mutmut 3.
#
# mutmut runs in a scratch copy (the package, pyproject.toml for the pytest settings, and the
# tests it needs), never in the working tree: its configuration is written there as setup.cfg,
# and its mutants/ folder and cache stay there. Only the jacobian-related tests of
# tests/functional run against each mutant (mutmut picks, per mutant, the ones that reach the
# mutated function); the OpInfo slice is left out (it alone takes 4x the rest), so a pass takes
# about half an hour on two loaded cores.
#
#   tools/mutation_jacobian.sh              # a fresh copy under /tmp, then `mutmut run`
#   MUTATION_DIR=/tmp/mut tools/mutation_jacobian.sh   # reuse a copy (mutmut resumes)
#   MUTATION_JOBS=1 ...                      # worker processes (default 2)
#   tools/mutation_jacobian.sh 'research_ext.functional._jacobian.x__rev__mutmut_*'
#                                            # only the named mutants (globs, as mutmut takes them)
#
# Afterwards, in the copy: `mutmut results` lists the survivors, `mutmut show <name>` a diff.
# Needs mutmut (the dev extra). `tools/mutation.sh jacobian` runs this script too.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
venv_bin=${VENV_BIN:-$root/.venv/bin}
work=${MUTATION_DIR:-$(mktemp -d /tmp/research_ext-mutation.XXXXXX)}
jobs=${MUTATION_JOBS:-2}

tests=(
    tests/functional/test_transforms.py
    tests/functional/test_transforms_parity.py
    tests/functional/test_transforms_properties.py
    tests/functional/test_shapes.py
    tests/functional/test_modules.py
    tests/functional/test_jacobian_mutants.py
)

mkdir -p "$work/tests"
rm -rf "$work/research_ext" "$work/tests/functional"
cp -r "$root/research_ext" "$work/research_ext"
cp "$root/pyproject.toml" "$work/pyproject.toml"
cp "$root"/tests/__init__.py "$root"/tests/conftest.py "$root"/tests/helpers.py "$work/tests/"
cp -r "$root/tests/functional" "$work/tests/functional"
find "$work" -name __pycache__ -prune -exec rm -rf {} +

{
    echo "[mutmut]"
    echo "source_paths = research_ext"
    echo "only_mutate = research_ext/functional/_jacobian.py"
    # One argument a line: setup.cfg list values are split on newlines.
    printf '%s\n' "pytest_add_cli_args =" "    -p" "    no:cacheprovider" "    -n" "    0" "    -q"
    echo "pytest_add_cli_args_test_selection ="
    for t in "${tests[@]}"; do
        if [[ -e "$root/$t" ]]; then echo "    $t"; fi
    done
    # torch is not fork-safe once it has run tests: fork workers from a clean server process.
    echo "process_isolation = forkserver"
} >"$work/setup.cfg"

cd "$work"
echo "mutation testing in $work"
"$venv_bin/mutmut" run --max-children "$jobs" "$@"
"$venv_bin/mutmut" results

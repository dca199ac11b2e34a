#!/usr/bin/env bash
# Mutation testing of lameduck's pure logic with mutmut: every mutant of the files below is
# run against the unit tests; a mutant the tests do not kill is a behaviour nothing checks.
#
#   hack/mutation.sh [operator|sidecar|all]      (default: all; results in $STAGE/results.json)
#
# mutmut names a mutant after its file's path and strips only a leading `src.`, while our
# packages live in operator/ and sidecar/: so the packages, the unit tests and the test data
# are staged in a src/ layout in a directory of their own (STAGE, default a new temporary
# one), and the repository is left as it is. Needs the `mutation` extra (mutmut is pinned).
# Takes minutes: the operator's logic about 4 on 2 cores, the sidecar's about 10.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
WHICH=${1:-all}
STAGE=${STAGE:-$(mktemp -d /tmp/lameduck-mutation.XXXXXX)}
PYTHON=${PYTHON:-$REPO/.venv/bin/python}

operator_files='"src/lameduck_operator/logic/*.py"'
sidecar_files='"src/lameduck_sidecar/hold.py", "src/lameduck_sidecar/slices.py", "src/lameduck_sidecar/traffic.py",
    "src/lameduck_sidecar/tcp.py", "src/lameduck_sidecar/holder.py"'
case "$WHICH" in
  operator) files=$operator_files ;;
  sidecar) files=$sidecar_files ;;
  all) files="$operator_files, $sidecar_files" ;;
  *) echo "usage: hack/mutation.sh [operator|sidecar|all]" >&2; exit 2 ;;
esac

"$PYTHON" -c 'import mutmut' 2>/dev/null || "$PYTHON" -m pip install --quiet -e "$REPO[mutation]"

rm -rf "$STAGE/src" "$STAGE/tests" "$STAGE/harness" "$STAGE/mutants"
mkdir -p "$STAGE/src" "$STAGE/tests"
cp -a "$REPO/operator/lameduck_operator" "$REPO/sidecar/lameduck_sidecar" "$STAGE/src/"
cp -a "$REPO/tests/__init__.py" "$REPO/tests/unit" "$STAGE/tests/"
# the unit tests build their Deployments and find their tools with the harness's helpers
cp -a "$REPO/harness" "$STAGE/"
cp -a "$REPO/crds" "$REPO/examples" "$STAGE/"
find "$STAGE" -name __pycache__ -prune -exec rm -rf {} +
# The project's pytest settings as they are, and mutmut's.
"$PYTHON" - "$REPO/pyproject.toml" "$files" > "$STAGE/pyproject.toml" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
print(re.search(r"^\[tool\.pytest\.ini_options\]\n(?:(?!^\[).*\n?)*", text, re.M).group(0).rstrip() + "\n")
print(f"""[tool.mutmut]
source_paths = ["src"]
only_mutate = [{sys.argv[2]}]
also_copy = ["crds/", "examples/"]
pytest_add_cli_args_test_selection = ["tests/unit"]
timeout_multiplier = 15.0
timeout_constant = 5.0""")
PY
cd "$STAGE"
echo "mutation testing ($WHICH) in $STAGE" >&2
nice -n 10 "$(dirname "$PYTHON")/mutmut" run --max-children 2 > run.log 2>&1 || { tail -20 run.log >&2; exit 1; }
# Per file: how many mutants the tests killed, and every survivor's diff in results.json.
"$PYTHON" - <<'PY'
import json
from collections import Counter, defaultdict

from mutmut.__main__ import SourceFileMutationData, get_diff_for_mutant, status_by_exit_code, walk_mutatable_files

per_file: dict[str, Counter[str]] = defaultdict(Counter)
survivors = []
for path in walk_mutatable_files():
    data = SourceFileMutationData(path=path)
    data.load()
    for name, code in data.exit_code_by_key.items():
        status = status_by_exit_code[code]
        per_file[str(path)][status] += 1
        if status not in ("killed", "timeout"):
            survivors.append({"name": name, "file": str(path), "status": status, "diff": get_diff_for_mutant(name, path=path)})
json.dump({"per_file": per_file, "survivors": survivors}, open("results.json", "w"), indent=1)
total: Counter[str] = Counter()
print(f"{'file':50} {'mutants':>8} {'killed':>7} {'survived':>9} {'no test':>8} {'killed %':>9}")
for name, counts in [*sorted(per_file.items()), ("total", total)]:
    if name != "total":
        total.update(counts)
    n = sum(counts.values())
    caught = counts["killed"] + counts["timeout"]  # a mutant that hangs the tests is caught too
    print(f"{name:50} {n:>8} {caught:>7} {counts['survived']:>9} {counts['no tests']:>8} {100 * caught / n:>8.1f}")
PY

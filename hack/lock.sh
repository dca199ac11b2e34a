#!/usr/bin/env bash
# Write the images' hashed lock files from pyproject.toml (`make locks`):
#   requirements/operator.txt   the distribution's dependencies ([project] dependencies)
#   requirements/sidecar.txt    the `sidecar` extra only (h11)
#   requirements/build.txt      the build backend ([build-system] requires: setuptools), which the
#                               images build the project with (--no-build-isolation)
# with pip-compile --generate-hashes: every package pinned to one version, every file of it by
# sha256. The Dockerfile installs them with `pip install --require-hashes --no-deps`, so an image
# holds exactly the lock, and tests/unit/test_locks.py fails when pyproject.toml and a lock disagree.
# pip-tools comes from PyPI into ${LAMEDUCK_CACHE:-~/.cache/lameduck}/pip-tools/v$PIP_TOOLS_VERSION.
# Resolve with the images' Python minor (bookworm: 3.11): environment markers are evaluated here.
# Env: PIP_TOOLS_VERSION (versions.env), UPGRADE=1 (newest allowed versions; default: keep the pins)
set -euo pipefail

HACK="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$HACK/.." && pwd)"
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$HACK/common.sh"

log() { printf '[lock %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

tools="$CACHE_ROOT/pip-tools/v$PIP_TOOLS_VERSION"
if [[ ! -x "$tools/bin/pip-compile" ]]; then
  log "pip-tools $PIP_TOOLS_VERSION into $tools"
  rm -rf "$tools"
  python3 -m venv "$tools"
  "$tools/bin/pip" install --quiet --disable-pip-version-check "pip-tools==$PIP_TOOLS_VERSION"
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# one .in per image, from pyproject.toml (the one place the dependencies are named)
python3 - "$REPO_ROOT/pyproject.toml" "$work" <<'PY'
import sys, tomllib
pyproject = tomllib.load(open(sys.argv[1], "rb"))
project = pyproject["project"]
sets = {
    "operator": project["dependencies"],
    "sidecar": project["optional-dependencies"]["sidecar"],
    "build": pyproject["build-system"]["requires"],
}
for name, requirements in sets.items():
    open(f"{sys.argv[2]}/{name}.in", "w").write("".join(r + "\n" for r in requirements))
PY
for image in operator sidecar build; do
  out="$REPO_ROOT/requirements/$image.txt"
  upgrade=()
  [[ -z "${UPGRADE:-}" ]] || upgrade=(--upgrade)
  [[ ! -f "$out" ]] || cp "$out" "$work/$image.txt"
  log "$image: pip-compile --generate-hashes -> requirements/$image.txt"
  (cd "$work" && CUSTOM_COMPILE_COMMAND="make locks" "$tools/bin/pip-compile" --quiet --generate-hashes --allow-unsafe --strip-extras \
    --no-emit-index-url --no-emit-find-links "${upgrade[@]}" \
    -o "$image.txt" "$image.in")
  cp "$work/$image.txt" "$out"
done

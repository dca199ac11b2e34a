"""What the e2e tests and the benchmarks share: kubectl and the operator's install, the images,
the manifests they apply, load generation, a local Prometheus, and where the tools are.

`bench` and `tests` both import it and never each other (an import-linter contract); the
product (lameduck_operator, lameduck_sidecar) never imports it."""

from pathlib import Path

# The repository's root: charts, crds, hack and bench/results are found from it.
REPO = Path(__file__).resolve().parents[1]

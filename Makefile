# lameduck: `make test` is what CI runs; `make test-unit` needs no cluster.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: help venv locks images helm prometheus nginx dashboard-schema lint types contracts unit test-unit e2e e2e-kind e2e-matrix test bench-operator bench-fleet bench-rollout bench-webhook demo crds dashboards cluster-up cluster-down cluster-status clean

help:
	@echo "make test        lint, types, import contracts, unit and e2e tests (what CI runs); leaves nothing running"
	@echo "make test-unit   lint, types, contracts, unit tests: no cluster, seconds (builds helm 4 and 3 once if missing)"
	@echo "make e2e         the e2e suite on \$$KUBECONFIG, or on the local cluster (brought up when unset)"
	@echo "make e2e-kind    the e2e suite on a kind cluster of its own (Docker, kind, a node image: built here)"
	@echo "make e2e-matrix  the e2e suite on the oldest supported and the newest Kubernetes, one after the other"
	@echo "make demo        lameduck vs fixed sleeps vs nothing, rolling out under load on a real cluster"
	@echo "make cluster-up  start the local cluster (hack/cluster.sh) and print how to use it"
	@echo "make crds        regenerate crds/ and charts/lameduck/crds/ from operator/lameduck_operator/crdgen.py"
	@echo "make dashboards  regenerate charts/lameduck/dashboards/lameduck.json from operator/lameduck_operator/dashboard.py"
	@echo "make locks       rewrite the images' hashed lock files in requirements/ from pyproject.toml"
	@echo "make images      both images as OCI archives with digests and SBOMs, and the packaged chart (docs/release.md)"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[test,bench]"
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check operator sidecar harness tests bench
	$(BIN)/ruff format --check operator sidecar harness tests bench

types: $(STAMP)
	$(BIN)/mypy
	$(BIN)/mypy harness tests bench

contracts: $(STAMP)
	$(BIN)/lint-imports

# The chart's unit tests run helm 4 and helm 3, the e2e suite and the benchmarks helm 4:
# $LAMEDUCK_HELM / $LAMEDUCK_HELM3, else the ones the harness builds from their Go modules into
# ~/.cache/lameduck/helm/v<version> (once: about 4 min cold on 2 cores; cached by version
# afterwards, a no-op). A helm on the PATH is not used: it may be of either major.
helm:
	@targets=""; [ -n "$$LAMEDUCK_HELM" ] || targets="helm"; [ -n "$$LAMEDUCK_HELM3" ] || targets="$$targets helm3"; \
	if [ -n "$$targets" ]; then bash hack/build-k8s.sh $$targets >&2; fi

# The alert rules' unit tests run promtool: $LAMEDUCK_PROMTOOL, promtool on the PATH, or the one
# hack/prometheus.sh unpacks from Debian's prometheus package (once; cached by version afterwards).
prometheus:
	@if [ -z "$$LAMEDUCK_PROMTOOL" ] && ! command -v promtool >/dev/null 2>&1; then bash hack/prometheus.sh >/dev/null; fi

# The dashboard's type check runs tsc against Grafana's published types: $LAMEDUCK_DASHBOARD_SCHEMA
# (a directory holding their node_modules), or the ones hack/dashboard-schema.sh installs with
# npm ci from tests/dashboard_schema/package-lock.json (once; cached by the lock's hash afterwards).
dashboard-schema:
	@if [ -z "$$LAMEDUCK_DASHBOARD_SCHEMA" ]; then bash hack/dashboard-schema.sh >/dev/null; fi

# The nginx data plane's configuration test runs `nginx -t`: $LAMEDUCK_NGINX, or the binary
# hack/nginx.sh unpacks from Debian's nginx package (once; cached by version afterwards).
nginx:
	@if [ -z "$$LAMEDUCK_NGINX" ]; then bash hack/nginx.sh >/dev/null; fi

unit: $(STAMP) helm prometheus nginx dashboard-schema
	$(BIN)/pytest tests/unit bench/tests -q $(PYTEST_ARGS)

test-unit: lint types contracts unit

# With $$KUBECONFIG set the suite runs on that cluster (kind, a test cluster) and leaves it up.
e2e: $(STAMP) helm
	@if [ -n "$$KUBECONFIG" ]; then \
		$(BIN)/pytest tests/e2e -m e2e -q $(PYTEST_ARGS); \
	else \
		bash hack/cluster.sh up && eval "$$(bash hack/cluster.sh env)" && \
		$(BIN)/pytest tests/e2e -m e2e -q $(PYTEST_ARGS); \
	fi

# Unit, then e2e; a local cluster brought up for it is taken down again, pass or fail.
test: test-unit
	@if [ -n "$$KUBECONFIG" ]; then \
		$(MAKE) --no-print-directory e2e; \
	else \
		status=0; $(MAKE) --no-print-directory e2e || status=$$?; \
		bash hack/cluster.sh down; exit $$status; \
	fi

# The e2e suite on kind (bench/e2e_kind.py, steps in hack/kind.sh): starts its own dockerd (no
# iptables) unless one runs on its socket, builds kind and the node image (first time: see
# docs/cluster.md), creates the cluster from tests/e2e/kind.yaml, loads the images, runs the suite,
# deletes the cluster, stops the dockerd it started; writes bench/results/e2e-kind.json. Leaves
# the caches (~/.cache/lameduck/kind).
e2e-kind: $(STAMP) helm
	$(BIN)/python -m bench.e2e_kind $(if $(PYTEST_ARGS),-- $(PYTEST_ARGS))

# The e2e suite on the oldest supported and the newest Kubernetes (hack/versions.env), one local
# cluster after the other; writes bench/results/e2e-matrix.json. Leaves no cluster running.
e2e-matrix: $(STAMP) helm
	$(BIN)/python -m bench.e2e_matrix

# Fleet scale on kwok's fake nodes (local cluster only): 1,000 and 5,000 Deployments under one
# ClusterGracefulPolicy; convergence, memory, API requests, webhook latency (docs/benchmarks.md).
bench-fleet: $(STAMP) helm
	$(BIN)/python -m bench.fleet --deployments 1000,5000

# Time for one policy to bring 100 Deployments to compliant, and the operator's memory.
bench-operator: $(STAMP) helm
	@if [ -n "$$KUBECONFIG" ]; then $(BIN)/python -m bench.operator_converge; else \
		bash hack/cluster.sh up && KUBECONFIG="$$(bash hack/cluster.sh kubeconfig)" $(BIN)/python -m bench.operator_converge; fi

# The side-by-side rollout benchmark (docs/benchmarks.md): a rollout restart under three data-plane
# conditions, then four more ways of stopping pods under the normal one; 3 runs of each, interleaved.
ROLLOUT_CONDITIONS := --stops restart --variants none,sleep5,sleep20,lameduck,gate,tuned
ROLLOUT_STOPS := --conditions normal --stops scale-down,drain,keepalive,sigterm-ignored \
	--variants none,sleep5,sleep20,lameduck --out bench/results/rollout-stops.json --chart bench/results/rollout-stops.png
bench-rollout: $(STAMP) helm
	@if [ -n "$$KUBECONFIG" ]; then \
		$(BIN)/python -m bench.rollout --kubeconfig "$$KUBECONFIG" --no-slow $(ROLLOUT_CONDITIONS) && \
		$(BIN)/python -m bench.rollout --kubeconfig "$$KUBECONFIG" --no-slow $(ROLLOUT_STOPS); else \
		bash hack/cluster.sh up && $(BIN)/python -c "from harness.images import build_images; build_images()" && \
		$(BIN)/python -m bench.rollout --kubeconfig "$$(bash hack/cluster.sh kubeconfig)" $(ROLLOUT_CONDITIONS) && \
		$(BIN)/python -m bench.rollout --kubeconfig "$$(bash hack/cluster.sh kubeconfig)" $(ROLLOUT_STOPS); fi

# What the admission webhook adds to a Deployment write: 200 template updates from 16 threads,
# half through the webhook, half opted out; client, operator and API server figures.
bench-webhook: $(STAMP) helm
	@if [ -n "$$KUBECONFIG" ]; then $(BIN)/python -m bench.webhook_latency --kubeconfig "$$KUBECONFIG"; else \
		bash hack/cluster.sh up && $(BIN)/python -c "from harness.images import build_images; build_images()" && \
		$(BIN)/python -m bench.webhook_latency --kubeconfig "$$(bash hack/cluster.sh kubeconfig)"; fi

# Brings up the local cluster (or uses $$KUBECONFIG), installs lameduck, and rolls the demo
# app under load with no policy, fixed sleeps and lameduck, with load straight to its Service
# and through an HAProxy; prints both tables, writes a chart.
demo: $(STAMP) helm
	$(BIN)/python -m bench.demo

cluster-up:
	bash hack/cluster.sh up
	@echo "use it with: export KUBECONFIG=$$(bash hack/cluster.sh kubeconfig)"

cluster-down:
	bash hack/cluster.sh down

cluster-status:
	bash hack/cluster.sh status

# One source, two copies: crds/ for kubectl and the chart's crds/ for helm (a unit test
# fails when they differ).
crds: $(STAMP)
	$(BIN)/python -m lameduck_operator.crdgen crds
	$(BIN)/python -m lameduck_operator.crdgen charts/lameduck/crds

# The Grafana dashboard the chart ships, generated with grafana-foundation-sdk (a unit test fails
# when the committed JSON differs from what the generator produces).
dashboards: $(STAMP)
	$(BIN)/python -m lameduck_operator.dashboard --out charts/lameduck/dashboards/lameduck.json

# The images install their packages from these hashed locks (Dockerfile); a unit test fails when
# pyproject.toml and a lock disagree. UPGRADE=1 moves every pin to the newest allowed version.
locks:
	bash hack/lock.sh

# The release artifacts, in ~/.cache/lameduck/dist/v<version> (LAMEDUCK_DIST): the two images as
# OCI archives, images.json with their digests, an SBOM of each, the packaged chart. Root (buildah).
# hack/release.sh REGISTRY pushes them (docs/release.md).
images:
	bash hack/images.sh

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .import_linter_cache

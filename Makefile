# The README's commands. Every target sets up what it needs and is safe to run twice.
# `make` alone lists the targets.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Written after a successful install; older than pyproject.toml means "install again".
VENV_STAMP := $(VENV)/.landmark-installed
EXTRAS := worker,trainer,jax,dev
PYTEST_ARGS ?=
STACK := deploy/local/with-stack.sh
# TensorFlow's C++ start-up chatter otherwise buries the output of every target that imports it.
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: help venv weights kafka-start kafka-stop kafka-status prometheus-start prometheus-stop \
	prometheus-status stack-start stack-stop test test-unit demo bench lint clean-run deploy-tools \
	deploy-check lock

help: ## List the targets
	@echo "Targets (make <target>):"
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sort | \
		awk 'BEGIN {FS = ":.*## "} {printf "  %-18s %s\n", $$1, $$2}'
	@echo "Settings: KAFKA_PORT=19092 PROMETHEUS_PORT=19090 PYTEST_ARGS='...' (see deploy/local/*.sh)"

venv: $(VENV_STAMP) ## Create .venv and install the project with its worker, trainer, jax and dev extras

$(VENV_STAMP): pyproject.toml
	@test -x $(PY) || { echo "creating $(VENV) with $$($(PYTHON) --version)"; $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install --disable-pip-version-check --quiet -e '.[$(EXTRAS)]' || \
		{ echo "pip install failed; retrying once with its output shown"; \
		  $(PY) -m pip install --disable-pip-version-check -e '.[$(EXTRAS)]'; }
	@touch $@

weights: venv ## Fetch and convert the offline ImageNet checkpoints into .cache/
	$(PY) -m trainer.cli.weights fetch

kafka-start: venv ## Start the local single-node Kafka (KRaft) on 127.0.0.1:KAFKA_PORT (19092)
	deploy/local/kafka.sh start

kafka-stop: ## Stop the local Kafka started by kafka-start
	deploy/local/kafka.sh stop

kafka-status: ## Is a broker answering on the Kafka port?
	@deploy/local/kafka.sh status

prometheus-start: ## Start the local Prometheus on 127.0.0.1:PROMETHEUS_PORT (19090)
	deploy/local/prometheus.sh start

prometheus-stop: ## Stop the local Prometheus started by prometheus-start
	deploy/local/prometheus.sh stop

prometheus-status: ## Is Prometheus answering on its port?
	@deploy/local/prometheus.sh status

stack-start: kafka-start prometheus-start ## Start Kafka and Prometheus

stack-stop: kafka-stop prometheus-stop ## Stop Kafka and Prometheus

deploy-tools: ## Build the pinned Helm with Go and fetch the KEDA / Prometheus-operator CRDs into .cache/tools
	$(PY) deploy/check/tools.py

deploy-check: venv deploy-tools ## Lint the Dockerfile, render and validate the chart, validate compose (no cluster)
	$(VENV)/bin/pytest -m "not integration" tests/unit/deploy $(PYTEST_ARGS)

lock: venv ## Re-lock the images' packages (deploy/docker/requirements/*.txt) from pyproject.toml
	cd deploy/docker/requirements && for image in client cpu gpu; do \
		case $$image in \
			client) inputs="--extra client";; \
			cpu) inputs="--extra worker --extra trainer";; \
			gpu) inputs="--extra worker --extra trainer --extra gpu-decode --override gpu-overrides.txt";; \
		esac; \
		../../../$(VENV)/bin/uv pip compile ../../../pyproject.toml $$inputs --python-version 3.11 \
			--python-platform x86_64-manylinux_2_28 --generate-hashes --no-header --quiet -o $$image.txt; \
	done

test: venv weights deploy-tools ## Run all tests; starts Kafka and Prometheus if needed and stops what it started
	$(STACK) -- $(VENV)/bin/pytest $(PYTEST_ARGS)

test-unit: venv deploy-tools ## Run the tests that need no services
	$(VENV)/bin/pytest -m "not integration" $(PYTEST_ARGS)

demo: venv weights ## Run the main job end to end on the shared photos (python -m devstack.demo)
	$(STACK) -- $(PY) -m devstack.demo

bench: venv weights ## Run every bench/bench_*.py (bench_worker, with the CPU-overhead lines, last)
	@shopt -s nullglob; benches=(bench/bench_*.py); \
	if [ $${#benches[@]} -eq 0 ]; then echo "no benchmarks in bench/"; exit 0; fi; \
	$(STACK) -- bash -c 'status=0; for b in "$$@"; do echo "== $$b"; $(PY) "$$b" || status=1; done; exit $$status' bench "$${benches[@]}"

lint: venv ## ruff check, ruff format --check, mypy (strict on schemas/, configuration/, worker/ and client/)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy schemas configuration worker client

clean-run: stack-stop ## Stop the stack and delete runtime state in .run/ (Kafka data, logs)
	rm -rf .run

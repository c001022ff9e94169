# Sluice task runner. `make test` and `make local` set everything up themselves on a fresh machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV ?= .venv
BIN := $(VENV)/bin
# The Lambda runtime's Python (3.13): pyenv's build if present, else whatever python3.13 is on PATH.
PYENV_313 := $(shell pyenv root 2>/dev/null)/versions/3.13.0/bin/python
BOOTSTRAP_PYTHON ?= $(or $(wildcard $(PYENV_313)),$(shell command -v python3.13),python3)
# sam and cfn-lint need a region; nothing here talks to AWS.
export AWS_DEFAULT_REGION ?= us-east-1
export SAM_CLI_TELEMETRY := 0
export SAM_CLI_CONTAINER_CONNECTION_TIMEOUT := 1

.PHONY: help venv test lint cfn-lint validate unit build local clean lock openapi catalog-check key-create key-list key-revoke bench bench-jobs checkov fuzz

help:
	@echo "make test    - lint, cfn-lint, sam validate --lint, pytest (creates .venv on first run)"
	@echo "make build   - sam build (arm64 wheels for the layer)"
	@echo "make local   - the whole platform on this machine: embedded AWS, real model, emulated Bedrock"
	@echo "make bench   - benchmarks: sync-path overhead and cold start"
	@echo "make bench-jobs - jobs under load on local mode: none lost, none doubled, each announced once"
	@echo "make checkov - checkov on template.yaml (own venv .venv-checkov, not part of make test)"
	@echo "make fuzz    - schemathesis over every operation of local mode (50 examples each, no 5xx)"

$(BIN)/.installed: requirements-dev.txt
	@test -x $(BIN)/python || $(BOOTSTRAP_PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $@

venv: $(BIN)/.installed

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

cfn-lint: venv
	$(BIN)/cfn-lint template.yaml

validate: venv
	$(BIN)/sam validate --lint --template template.yaml

unit: venv
	$(BIN)/python -m pytest

test: lint cfn-lint validate unit build

# sam build needs the runtime's python3.13 first on PATH (the venv's).
build: venv
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/sam build --template template.yaml

# The whole platform in-process on loopback (README: "Run locally"); Ctrl-C stops everything.
local: venv
	PYTHONPATH="$(CURDIR)/layers/sluice:$(CURDIR)/local" $(BIN)/python -m sluice_local

# schemathesis against local mode: every operation of /v1/docs?format=json, 50 examples each, no 5xx allowed.
fuzz: venv
	$(BIN)/python tools/fuzz.py --max-examples 50 --checks not_a_server_error

openapi: venv
	$(BIN)/python tools/openapi.py > openapi.json

catalog-check: venv
	$(BIN)/python tools/catalog.py validate $(or $(CATALOG),catalog/example.json)

# Key management against a deployed stack: STACK=<stack name> TENANT=<tenant> [ROLE=operator] [PLAN=<usage plan id>]
key-create: venv
	$(BIN)/python tools/keys.py --stack $(STACK) create --tenant $(TENANT) $(if $(ROLE),--role $(ROLE)) $(if $(PLAN),--usage-plan-id $(PLAN))
key-list: venv
	$(BIN)/python tools/keys.py --stack $(STACK) list $(if $(TENANT),--tenant $(TENANT))
key-revoke: venv
	$(BIN)/python tools/keys.py --stack $(STACK) revoke --key-id $(KEY_ID)

bench: venv
	$(BIN)/python benchmarks/sync_overhead.py
	$(BIN)/python benchmarks/cold_start.py

# Jobs under load on local mode: 200 async jobs and 1,000 dropped files; prints lost/duplicate/announcement counts.
bench-jobs: venv
	$(BIN)/python benchmarks/jobs_load.py $(BENCH_JOBS_ARGS)

# checkov has heavy dependencies of its own: a separate venv, and not part of `make test`.
CHECKOV_VENV ?= .venv-checkov
CHECKOV_PYTHON ?= python3
checkov:
	@test -x $(CHECKOV_VENV)/bin/checkov || { $(CHECKOV_PYTHON) -m venv $(CHECKOV_VENV) && \
		$(CHECKOV_VENV)/bin/python -m pip install --quiet --disable-pip-version-check checkov; }
	$(CHECKOV_VENV)/bin/checkov -f template.yaml --framework cloudformation --compact

lock:
	$(BIN)/python -m pip freeze --exclude-editable > requirements-dev.txt

clean:
	rm -rf .aws-sam .pytest_cache .ruff_cache

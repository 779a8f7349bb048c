# Cloudless developer loop. `make up` starts a local cluster; `make test` installs what it needs and tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export CONTAINERS_CONF := $(CURDIR)/scripts/containers.conf

.PHONY: up up-ha test lint bench sysdeps image rootless venv clean help

help:
	@echo "make up      - create .venv, install, start a local cluster (cloudless up)"
	@echo "make up-ha   - the same with 3 local etcd members and 3 replicated coordinators"
	@echo "make test    - install system packages + test image if missing, run the whole test suite"
	@echo "make lint    - ruff + mypy"
	@echo "make bench   - run the benchmarks; results land in docs/benchmarks.md"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

up: $(STAMP) sysdeps image
	$(BIN)/cloudless up $(UP_ARGS)

up-ha: $(STAMP) sysdeps image
	$(BIN)/cloudless up --coordinators 3 $(UP_ARGS)

sysdeps:
	bash scripts/install-system-deps.sh

image: sysdeps
	bash scripts/build-test-image.sh

# a user with subuids and its own image store, for the rootless Podman tests (root only; skipped otherwise)
rootless: sysdeps
	@if [ "$$(id -u)" -eq 0 ]; then bash scripts/setup-rootless.sh; else echo "rootless: not root, skipping user setup"; fi

test: $(STAMP) sysdeps image rootless
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: $(STAMP) sysdeps image
	$(BIN)/python bench/broker_throughput.py
	$(BIN)/python bench/scheduler.py
	$(BIN)/python bench/reschedule.py
	$(BIN)/python bench/agent_footprint.py
	$(BIN)/python bench/failover.py
	$(BIN)/python bench/secrets_service.py
	$(BIN)/python bench/overlay.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

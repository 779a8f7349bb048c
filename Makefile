# Cloudless developer loop. `make up` starts a local cluster; `make test` installs what it needs and tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export CONTAINERS_CONF := $(CURDIR)/scripts/containers.conf

.PHONY: up test lint bench sysdeps image venv clean help

help:
	@echo "make up      - create .venv, install, start a local cluster (cloudless up)"
	@echo "make test    - install system packages + test image if missing, run the whole test suite"
	@echo "make lint    - ruff + mypy"
	@echo "make bench   - run the benchmarks; results land in docs/benchmarks.md"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

up: $(STAMP)
	$(BIN)/cloudless up

sysdeps:
	bash scripts/install-system-deps.sh

image: sysdeps
	bash scripts/build-test-image.sh

test: $(STAMP) sysdeps image
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: $(STAMP) sysdeps
	$(BIN)/python bench/broker_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

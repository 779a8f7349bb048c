# Cloudless developer loop. `make up` starts a local cluster; `make test` installs what it needs and tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export CONTAINERS_CONF := $(CURDIR)/scripts/containers.conf

.PHONY: up up-ha down test lint bench sysdeps updeps image rootless venv clean help

help:
	@echo "make up      - create .venv, install, start a local cluster (cloudless up)"
	@echo "make up-ha   - the same with 3 local etcd members and 3 replicated coordinators"
	@echo "make down    - stop the workloads a stopped 'make up' left running (cloudless down)"
	@echo "make test    - install system packages + test image if missing, run the whole test suite"
	@echo "make lint    - ruff + mypy"
	@echo "make bench   - run the benchmarks; results land in docs/benchmarks.md"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# `up` installs only what it needs (updeps: Podman, busybox for the image) and touches no system service
up: $(STAMP) updeps image
	$(BIN)/cloudless up $(UP_ARGS)

# etcd is what --coordinators 3 adds
up-ha: $(STAMP) updeps image
	@command -v etcd >/dev/null 2>&1 || { echo "make up-ha: needs etcd (Debian: apt-get install etcd-server)" >&2; exit 1; }
	$(BIN)/cloudless up --coordinators 3 $(UP_ARGS)

down: $(STAMP)
	$(BIN)/cloudless down $(DOWN_ARGS)

# everything the test suite needs (brokers, etcd, qemu for the emulated devices)
sysdeps:
	bash scripts/install-system-deps.sh

updeps:
	bash scripts/install-up-deps.sh

image: updeps
	bash scripts/build-test-image.sh

# a user with subuids and its own image store, for the rootless Podman tests (root only; skipped otherwise)
rootless: sysdeps
	@if [ "$$(id -u)" -eq 0 ]; then bash scripts/setup-rootless.sh; else echo "rootless: not root, skipping user setup"; fi

# The emulated Raspberry Pi rootfs (tests/install; minutes of debootstrap under qemu on a machine without the cache)
# is built in the background at idle priority while the other tests run: they mostly wait, and the Pi test, which
# comes later, finds it built (or waits on the same lock). Root only; any failure is the Pi test's to report.
test: $(STAMP) sysdeps image rootless
	@if [ "$$(id -u)" -eq 0 ]; then for a in arm64 armhf; do \
	  (nice -n 19 ionice -c3 bash scripts/emulated-rootfs.sh $$a >/dev/null 2>&1 &); done; fi
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
	$(BIN)/python bench/services.py

# docs/spec.md from the workload schema (coordinator/spec_doc.py); tests/test_spec_doc.py fails when it is stale
.PHONY: docs
docs: $(STAMP)
	$(BIN)/python scripts/gen_spec_doc.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

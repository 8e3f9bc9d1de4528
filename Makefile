# Quick start: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint format bench examples clean fuzz reliability postgresql redis-server awscli chromium

# System packages the tests and the benchmarks run (Debian's), installed when missing.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_INSTALL := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[examples,test,bench]'
	touch $(STAMP)

examples: $(STAMP)
	$(BIN)/python examples/build.py

run: examples
	$(BIN)/sagequeue serve --config examples/sagequeue.yaml

lint: $(STAMP)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format src tests bench examples
	$(BIN)/ruff check --fix src tests bench examples

# A real PostgreSQL server for the tests (started by the test session itself).
postgresql:
	@ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || \
		{ $(SUDO) apt-get update -q && $(APT_INSTALL) postgresql; }

# `aws logs tail` is an AWS CLI v2 command (the venv's awscli is v1): the model-log tests
# run Debian's awscli package, which is v2.
awscli:
	@/usr/bin/aws --version 2>/dev/null | grep -q '^aws-cli/2' || \
		{ $(SUDO) apt-get update -q && $(APT_INSTALL) --no-install-recommends awscli; }

# The console's browser tests drive Debian's Chromium with Playwright (no browser download).
chromium:
	@test -x /usr/bin/chromium || \
		{ $(SUDO) apt-get update -q && $(APT_INSTALL) --no-install-recommends chromium; }

# The Celery + Redis reference rows of the benchmarks.
redis-server:
	@command -v redis-server >/dev/null 2>&1 || \
		{ $(SUDO) apt-get update -q && $(APT_INSTALL) redis-server; }

# Two test processes (one per core on CI's two): most of a test's time is spent waiting
# for the servers it starts. Each process gets whole test files (their module-scoped
# servers) and its own PostgreSQL and moto servers.
TEST_WORKERS ?= 2

test: $(STAMP) lint postgresql awscli chromium
	$(BIN)/python -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile

# The hostile-input suite with many random examples (make test runs a few, derandomized).
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz $(BIN)/python -m pytest -q -p no:cacheprovider tests/hostile

# docs/reliability.md: a larger run of the crash and fault suite, the hostile inputs with
# the fuzz profile and the HTTP floods; every figure computed by the run (~10 minutes).
reliability: $(STAMP) postgresql
	$(BIN)/python -m bench.reliability

bench: $(STAMP) postgresql redis-server
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .sagequeue examples/build

# Quick start: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint format bench examples clean fuzz

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

format: $(STAMP)
	$(BIN)/ruff format src tests bench examples
	$(BIN)/ruff check --fix src tests bench examples

# `aws logs tail` is an AWS CLI v2 command (the venv's awscli is v1): the model-log tests
# run it from Debian's awscli package, installed here where it is missing (as root).
AWS_CLI_V2 ?= /usr/bin/aws

$(AWS_CLI_V2):
	-command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
		{ DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends awscli \
		|| { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
		--no-install-recommends awscli; }; }

test: $(STAMP) lint $(AWS_CLI_V2)
	$(BIN)/python -m pytest -q -p no:cacheprovider

# The hostile-input suite with many random examples (make test runs a few, derandomized).
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz $(BIN)/python -m pytest -q -p no:cacheprovider tests/hostile

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .sagequeue examples/build

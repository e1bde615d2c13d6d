# cnnexp: `make run` trains the default experiment, `make test` runs the test suite.
# Both set up what is missing first (virtualenv, package, offline Fashion-MNIST) and do
# nothing more when it is all there.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The Debian package with Fashion-MNIST's IDX files; data=fashion_mnist prepares from it.
DATASET_PACKAGE := dataset-fashion-mnist
ARGS ?=

.PHONY: help setup dataset run test bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

setup: $(STAMP) dataset  ## create .venv, install cnnexp and the offline dataset

dataset:  ## install Debian's Fashion-MNIST files when apt is available (needs root)
	@if dpkg -s $(DATASET_PACKAGE) >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get install -y -q $(DATASET_PACKAGE) >/dev/null || \
		{ apt-get update -q >/dev/null && apt-get install -y -q $(DATASET_PACKAGE) >/dev/null; }; \
	else \
		echo "note: $(DATASET_PACKAGE) is not installed; data=fashion_mnist needs it, data.source_dir=<IDX files> or a network"; \
	fi

run: setup  ## train LeNet-5 on Fashion-MNIST (extra overrides: make run ARGS='trainer.epochs=2')
	$(BIN)/cnnexp train $(ARGS)

test: setup  ## run the test suite
	$(BIN)/python -m pytest -q $(ARGS)

bench: setup  ## time im2col conv and reference max pool against XLA's (make bench ARGS='--quick')
	$(BIN)/python -m cnnexp.bench $(ARGS)

clean:  ## remove the virtualenv and build files (keeps outputs/)
	rm -rf $(VENV) build dist *.egg-info

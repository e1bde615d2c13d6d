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

.PHONY: help setup dataset run test bench reproduce-zoo reproduce-zoo-gpu reproduce-losses reproduce-visualize clean

# The model zoo and the seeds of `make reproduce-zoo`; each sweep gets a new folder, so an earlier
# reproduction is never overwritten.
ZOO := lenet simple_cnn alexnet alexnet_lite vgg inception resnet densenet
SEEDS ?= 0,1,2
NOW := $(shell date +%Y-%m-%d_%H-%M-%S)
comma := ,
zoo_presets = $(subst $() ,$(comma),$(strip $(foreach m,$(ZOO),$(m)_fashion_mnist$(1))))
# Sweep over the seeds (a failed run does not stop the others), then tabulate and publish:
# $(call reproduce,<sweep overrides>,<sweep folder>,<section of docs/results.md>,<target>)
define reproduce
	$(BIN)/cnnexp train -m $(1) seed=$(SEEDS) hydra.sweep.dir=$(2) $(ARGS); \
	status=$$?; \
	$(BIN)/python -m cnnexp.analysis.publish $(2) --doc docs/results.md --section $(3) --command "make $(4)" && exit $$status
endef

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-20s %s\n", $$1, $$2}'

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

# Test files run in parallel, one worker per core (pytest-xdist); a file's tests stay together so
# its module fixtures (a trained run, a sweep) are built once.
test: setup  ## run the test suite
	$(BIN)/python -m pytest -q -n auto --dist loadfile $(ARGS)

bench: setup  ## time im2col conv and reference max pool against XLA's (make bench ARGS='--quick')
	$(BIN)/python -m cnnexp.bench $(ARGS)

reproduce-zoo: setup  ## every zoo model on Fashion-MNIST, CPU budgets, 3 seeds (~40 min on 2 cores); report + docs/results.md
	$(call reproduce,experiment=$(call zoo_presets,_cpu),outputs/reproduce/zoo_cpu/$(NOW),zoo-cpu,reproduce-zoo)

reproduce-zoo-gpu: setup  ## the same with the full presets (for a machine with a GPU)
	$(call reproduce,experiment=$(call zoo_presets,),outputs/reproduce/zoo_gpu/$(NOW),zoo-gpu,reproduce-zoo-gpu)

reproduce-losses: setup  ## LeNet (CPU preset) with cross-entropy and with MSE, 3 seeds (~6 min on 2 cores); docs/results.md
	$(call reproduce,experiment=lenet_fashion_mnist_cpu loss=cross_entropy$(comma)mse,outputs/reproduce/losses/$(NOW),losses,reproduce-losses)

# The figures of `cnnexp visualize` shown in the README.
VISUALIZE_DIR := outputs/reproduce/visualize/$(NOW)
README_FIGURES := filters feature_maps_02_conv2 maximize_00_conv1 maximize_02_conv2 maximize_04_fc1 classes \
	saliency confusion mistakes
reproduce-visualize: setup  ## train LeNet (CPU preset), cnnexp visualize it, copy the README's figures to docs/visualize/
	$(BIN)/cnnexp train experiment=lenet_fashion_mnist_cpu hydra.run.dir=$(VISUALIZE_DIR) $(ARGS)
	$(BIN)/cnnexp visualize run=$(VISUALIZE_DIR)
	mkdir -p docs/visualize
	cp $(foreach f,$(README_FIGURES),$(VISUALIZE_DIR)/visualize/$(f).png) docs/visualize/

clean:  ## remove the virtualenv and build files (keeps outputs/)
	rm -rf $(VENV) build dist *.egg-info

# cnnexp: `make run` trains the default experiment, `make test` runs the test suite.
# Both set up what is missing first (virtualenv, package, offline Fashion-MNIST) and do
# nothing more when it is all there.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The optional `bench` extra (a CPU build of PyTorch, the reference of `make bench`), which the
# tests need too: they check the reference models against cnnexp's.
BENCH_STAMP := $(VENV)/.installed-bench
# cnnexp's oneDNN kernel library (cnnexp/kernels/src) is compiled by the package's install, so a
# change there reinstalls.
KERNEL_SOURCES := setup.py $(wildcard cnnexp/kernels/src/*)
# The Debian package with Fashion-MNIST's IDX files; data=fashion_mnist prepares from it.
DATASET_PACKAGE := dataset-fashion-mnist
ARGS ?=

.PHONY: help setup compiler dataset run test test-fast bench bench-layers gpu-carry gpu-check speedrun reproduce-zoo reproduce-zoo-gpu reproduce-losses reproduce-activations reproduce-invariance reproduce-finetune reproduce-visualize reproduce-lr-find clean

# The model zoo and the seeds of `make reproduce-zoo`; each sweep gets a new folder, so an earlier
# reproduction is never overwritten.
ZOO := lenet simple_cnn alexnet alexnet_lite zfnet vgg inception resnet inception_resnet densenet
# The models of `make reproduce-invariance`: the dense-only mlp beside CNNs with and without
# multi-size filters (inception) and residual sums (resnet).
INVARIANCE_MODELS := lenet simple_cnn mlp resnet inception
SEEDS ?= 0,1,2
NOW := $(shell date +%Y-%m-%d_%H-%M-%S)
comma := ,
# $(call presets,<models>,<suffix>): their Fashion-MNIST presets as one sweep value list.
presets = $(subst $() ,$(comma),$(strip $(foreach m,$(1),$(m)_fashion_mnist$(2))))
# Sweep over the seeds (a failed run does not stop the others), optionally run a command on the
# sweep folder (its failure fails the target too, after publishing), then tabulate and publish:
# $(call reproduce,<sweep overrides>,<sweep folder>,<section of docs/results.md>,<target>[,<command>])
define reproduce
	$(BIN)/cnnexp train -m $(1) seed=$(SEEDS) hydra.sweep.dir=$(2) $(ARGS); \
	status=$$?; \
	$(if $(5),$(5) || [ $$status -ne 0 ] || status=1;) \
	$(BIN)/python -m cnnexp.reports.publish $(2) --doc docs/results.md --section $(3) --command "make $(4)" && exit $$status
endef

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-22s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml $(KERNEL_SOURCES) | compiler
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

# The `bench` extra's packages alone: reinstalling cnnexp itself would rebuild its kernel library.
$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet $$($(BIN)/python -c 'import importlib.metadata as m; \
		print(" ".join(r.split(";")[0] for r in m.requires("cnnexp") if "extra == \"bench\"" in r))')
	touch $@

setup: $(STAMP) dataset  ## create .venv, install cnnexp and the offline dataset

# The install compiles cnnexp's oneDNN kernels (C++); without a compiler cnnexp still installs and
# runs, on XLA's slower CPU convolutions.
compiler:  ## install g++ when no C++ compiler is there and apt is available (needs root)
	@if command -v c++ >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get install -y -q g++ >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q g++ >/dev/null; }; \
	else \
		echo "note: no C++ compiler: cnnexp installs without its oneDNN kernels (XLA's convolutions, 2-3x slower on CPU)"; \
	fi

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

# Tests run in parallel, one worker per core (pytest-xdist); a worker out of tests takes over
# half of another's (worksteal). The runs and sweeps several tests read are built once a session,
# by the first worker that needs them (tests/conftest.py).
test: setup $(BENCH_STAMP)  ## run the test suite
	$(BIN)/python -m pytest -q -n auto --dist worksteal $(ARGS)

# The tests marked slow (they start the installed command, train a model or take seconds) left out.
test-fast: setup $(BENCH_STAMP)  ## run the fast tests only: no command started, no model trained (about a minute on 2 cores)
	$(BIN)/pytest -q -n auto -m "not slow" $(ARGS)

bench: setup $(BENCH_STAMP)  ## speed of every model beside PyTorch on this device; table into docs/bench.md (~5 min on 2 cores)
	$(BIN)/cnnexp bench bench.doc=docs/bench.md $(ARGS)

# A lent GPU machine reaches no package registry and runs another Python (3.12): `make gpu-carry`
# (here) gathers what it lacks, to travel with the working tree; `make gpu-check` (there) installs
# that and measures. To test the check on a CPU: make gpu-check GPU_PYTHON=$(BIN)/python ARGS=--small
GPU_CARRY := outputs/gpu-carry
GPU_PYTHON ?= python3
gpu-carry: setup dataset  ## wheels for the GPU machine's Python 3.12 and the Fashion-MNIST files, into outputs/gpu-carry (~45 MB)
	$(BIN)/python -m cnnexp.bench.gpu_check --prepare-carry $(GPU_CARRY)

gpu-check:  ## on a GPU: install the carry, bench the full presets beside torch.compile, train 3 presets briefly; docs/bench.md (<8 min)
	$(GPU_PYTHON) -m cnnexp.bench.gpu_check $(if $(wildcard $(GPU_CARRY)/wheels),--carry $(GPU_CARRY)) $(ARGS)

bench-layers: setup  ## time im2col conv and reference max pool against XLA's (make bench-layers ARGS='--quick')
	$(BIN)/python -m cnnexp.bench.layers $(ARGS)

reproduce-zoo: setup  ## every zoo model on Fashion-MNIST, CPU budgets, 3 seeds (~45-65 min on 2 cores); report + docs/results.md
	$(call reproduce,experiment=$(call presets,$(ZOO),_cpu),outputs/reproduce/zoo_cpu/$(NOW),zoo-cpu,reproduce-zoo)

reproduce-zoo-gpu: setup  ## the same with the full presets (for a machine with a GPU)
	$(call reproduce,experiment=$(call presets,$(ZOO),),outputs/reproduce/zoo_gpu/$(NOW),zoo-gpu,reproduce-zoo-gpu)

# The speedrun's recipe (conf/experiment/speedrun.yaml) is sized for a GPU; on a CPU pass a narrower
# net, e.g. make speedrun ARGS='model.width=0.5'.
speedrun: SEEDS := 0,1,2,3,4
speedrun: setup  ## the fastest recipe to 94% Fashion-MNIST test accuracy (speednet), 5 seeds, wall time per run; docs/results.md
	$(call reproduce,experiment=speedrun,outputs/reproduce/speedrun/$(NOW),speedrun,speedrun)

reproduce-losses: setup  ## LeNet (CPU preset) with cross-entropy and with MSE, 3 seeds (~6 min on 2 cores); docs/results.md
	$(call reproduce,experiment=lenet_fashion_mnist_cpu loss=cross_entropy$(comma)mse,outputs/reproduce/losses/$(NOW),losses,reproduce-losses)

reproduce-activations: setup  ## LeNet (CPU preset) with relu, leaky_relu, maxout, tanh, sigmoid, 3 seeds (~20 min on 2 cores); docs/results.md
	$(call reproduce,experiment=activations,outputs/reproduce/activations/$(NOW),activations,reproduce-activations)

# Train with and without augmentation, then measure each run's accuracy under shifts, rotations
# and scales (cnnexp evaluate on the whole sweep folder) before the report.
INVARIANCE_DIR := outputs/reproduce/invariance/$(NOW)
# A coarser grid than `cnnexp evaluate`'s default, so 30 runs evaluate in minutes, not an hour.
INVARIANCE_GRID := 'translations=[0,2,4,6]' 'rotations=[0,15,30,45]' 'scales=[0.6,0.8,1.0,1.2,1.4]'
reproduce-invariance: setup  ## lenet, simple_cnn, mlp, resnet, inception (CPU presets) x augment none/strong, 3 seeds, + invariance curves (~50 min on 2 cores); docs/results.md
	$(call reproduce,experiment=$(call presets,$(INVARIANCE_MODELS),_cpu) data/augment=none$(comma)strong,$(INVARIANCE_DIR),invariance,reproduce-invariance,$(BIN)/cnnexp evaluate invariance=true run=$(INVARIANCE_DIR) $(INVARIANCE_GRID))

# Pretrain LeNet on classes 0-4 (one run per seed), then learn classes 5-9 from 1% and 10% of
# their labels: from scratch, fine-tuned from the same seed's pretrained run, and with its body
# frozen. A failed sweep does not stop the next; the target fails at the end.
FINETUNE_DIR := outputs/reproduce/finetune/$(NOW)
reproduce-finetune: setup  ## LeNet pretrained on classes 0-4; 5-9 with 1%/10% labels: scratch vs fine-tuned (body x1, x0.1, frozen), 3 seeds (~6 min on 2 cores); docs/results.md
	$(BIN)/cnnexp train -m experiment=finetune_pretrain seed=$(SEEDS) hydra.sweep.dir=$(FINETUNE_DIR)/pretrain \
		'hydra.sweep.subdir=seed_$${seed}' $(ARGS); \
	status=$$?; \
	$(BIN)/cnnexp train -m experiment=finetune_scratch data.train_fraction=0.01,0.1 seed=$(SEEDS) \
		hydra.sweep.dir=$(FINETUNE_DIR)/scratch $(ARGS) || status=1; \
	$(BIN)/cnnexp train -m experiment=finetune_tune,finetune_slow_body,finetune_frozen data.train_fraction=0.01,0.1 seed=$(SEEDS) \
		'init_from=$(FINETUNE_DIR)/pretrain/seed_$${seed}' hydra.sweep.dir=$(FINETUNE_DIR)/tuned $(ARGS) || status=1; \
	$(BIN)/python -m cnnexp.reports.publish $(FINETUNE_DIR) --doc docs/results.md --section finetune \
		--command "make reproduce-finetune" --by experiment data.train_fraction && exit $$status

# The figures of `cnnexp visualize` shown in the README.
VISUALIZE_DIR := outputs/reproduce/visualize/$(NOW)
README_FIGURES := filters feature_maps_02_conv2 maximize_00_conv1 maximize_02_conv2 maximize_04_fc1 classes \
	saliency confusion mistakes
reproduce-visualize: setup  ## train LeNet (CPU preset), cnnexp visualize it, copy the README's figures to docs/visualize/
	$(BIN)/cnnexp train experiment=lenet_fashion_mnist_cpu hydra.run.dir=$(VISUALIZE_DIR) $(ARGS)
	$(BIN)/cnnexp visualize run=$(VISUALIZE_DIR)
	mkdir -p docs/visualize
	cp $(foreach f,$(README_FIGURES),$(VISUALIZE_DIR)/visualize/$(f).png) docs/visualize/

# The README's figure of `cnnexp lr-find`: the range test of the default config.
LR_FIND_DIR := outputs/reproduce/lr_find/$(NOW)
reproduce-lr-find: setup  ## the learning-rate range test of LeNet on Fashion-MNIST with AdamW (~40 s on 2 cores), its plot to docs/lr_find/
	$(BIN)/cnnexp lr-find paths.output_dir=$(LR_FIND_DIR) $(ARGS)
	mkdir -p docs/lr_find
	cp $(LR_FIND_DIR)/lr_find/*/lr_find.png docs/lr_find/

clean:  ## remove the virtualenv and build files (keeps outputs/)
	rm -rf $(VENV) build dist *.egg-info

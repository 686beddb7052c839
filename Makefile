# Set-up is part of every target: a fresh machine needs only python3.11 and make.
VENV ?= .venv
PY := $(VENV)/bin/python
STEP ?= inverted_bottleneck
REGIME ?= r50
ARGS ?=
SEEDS ?= 0
OUTPUTS ?= outputs
GROUP ?=
FAMILY ?= convnext_t,convnext_s,convnext_b,convnext_l
# the members the paper pre-trains on ImageNet-22K and fine-tunes on 1K (a stochastic depth for both: B, L, XL)
FAMILY_22K ?= $(shell $(PY) -m roadmap.sweep family --recipe convnext_in22k convnext_ft_in22k)
PRETRAIN ?= +experiment=paper_in22k
FINETUNE ?= +experiment=paper_finetune
# Two pytest workers (pytest-xdist), a test file each at a time (its tests share module fixtures: the cluster, a
# sweep, reference runs); tests/conftest.py starts the longest files first. WORKERS=0 runs in one process.
# Not --dist loadgroup: with pytest 9.2 it ignores xdist_group marks (xdist 3.8 renames item._nodeid, which
# pytest 9.2 no longer reads), and splits a file's tests over both workers.
WORKERS ?= 2
# the analysis targets analyse what is under OUTPUTS: a regime only where one is given (make analysis REGIME=r200)
GIVEN_REGIME = $(if $(filter command line environment,$(origin REGIME)),--regime $(REGIME))
PYTEST := $(PY) -m pytest -q -n $(WORKERS) --dist loadfile --no-loadscope-reorder

.PHONY: help install test test-fast test-slurm train profile bench roadmap family family-22k analysis notebook clean

install: $(VENV)/.installed  ## the virtual environment and the project in it (every other target does this first)

help:  ## these targets, with what each does
	@awk 'BEGIN {FS = ":[^#]*## "} /^[a-z0-9-]+:.*## / {printf "  make %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(VENV)/.installed: pyproject.toml
	python3.11 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

test: install  ## the whole test suite (what CI runs), the SLURM cluster tests included (they start their own SLURM)
	$(PYTEST)

test-fast: install  ## the quick loop while developing: everything but the tests marked slow and slurm
	$(PYTEST) -m "not slow and not slurm"

test-slurm: install  ## only the cluster tests: a single-node SLURM from Debian's slurm-wlm + munge (root, apt)
	$(PYTEST) -m slurm

train: install  ## train one roadmap step on the embedded default data: make train STEP=gelu REGIME=r50
	$(PY) run.py +step=$(STEP) regime=$(REGIME) $(ARGS)

profile: install  ## GFLOPs / params of every step beside the paper's: make profile REGIME=r200
	$(PY) -m roadmap.profile --regime $(REGIME)

bench: install  ## throughput of every step beside timm's references: make bench REGIME=r200 ARGS="--compile"
	$(PY) -m roadmap.benchmark --regime $(REGIME) --outputs $(OUTPUTS) $(ARGS)

roadmap: install  ## every step of REGIME for SEEDS (e.g. SEEDS=0,1,2), then the table and chart; fails unless every step is done
	@$(PY) -m roadmap.sweep $(REGIME) > /dev/null  # an unknown regime: its one line, and nothing run
	status=0; $(PY) run.py -m "+step=$$($(PY) -m roadmap.sweep $(REGIME))" regime=$(REGIME) seed=$(SEEDS) run.root=$(OUTPUTS) $(ARGS) || status=$$?; \
	[ -d $(OUTPUTS) ] || exit $$status; \
	group=$$($(PY) -m roadmap.sweep --group-of regime=$(REGIME) +step=original_recipe $(ARGS)) && \
	$(PY) -m analysis.roadmap $(OUTPUTS) --regime $(REGIME) && \
	$(PY) -m analysis.compare $(OUTPUTS) --regime $(REGIME) && \
	$(PY) -m analysis.notebook $(OUTPUTS) --regime $(REGIME) --group $$group || exit $$?; \
	exit $$status

family: install  ## the ConvNeXt family (FAMILY) with the ImageNet-1K recipe (EMA) for SEEDS, then its table beside Table 1
	status=0; $(PY) run.py -m regime=family "+step=$(FAMILY)" recipe=convnext_in1k seed=$(SEEDS) run.root=$(OUTPUTS) $(ARGS) || status=$$?; \
	[ -d $(OUTPUTS) ] || exit $$status; \
	$(PY) -m analysis.roadmap $(OUTPUTS) --regime family || exit $$?; \
	exit $$status

family-22k: install  ## ImageNet-22K pre-training of FAMILY_22K (PRETRAIN), then each member fine-tuned from its weights (FINETUNE); done stages are skipped
	$(PY) run.py -m regime=family "+step=$(FAMILY_22K)" seed=$(SEEDS) run.root=$(OUTPUTS) $(PRETRAIN)
	status=0; for member in $$(echo $(FAMILY_22K) | tr , ' '); do \
	  weights=$$($(PY) -m roadmap.sweep --weights-of regime=family +step=$$member seed=$(SEEDS) run.root=$(OUTPUTS) $(PRETRAIN)) || exit $$?; \
	  $(PY) run.py -m regime=family +step=$$member seed=$(SEEDS) run.root=$(OUTPUTS) model.init_from=$$weights $(FINETUNE) || status=$$?; \
	done; \
	$(PY) -m analysis.roadmap $(OUTPUTS) --regime family || exit $$?; \
	exit $$status

analysis: install  ## rebuild tables and charts of every run under OUTPUTS (or its GROUP), and compare its proxies (every regime there, or REGIME)
	$(PY) -m analysis.roadmap $(OUTPUTS) $(if $(GROUP),--group $(GROUP))
	$(PY) -m analysis.compare $(OUTPUTS) $(GIVEN_REGIME)

notebook: install  ## execute notebooks/roadmap.ipynb on OUTPUTS (GROUP=<data>-<budget>..., REGIME=...: that sweep; default: the first there); the executed copy lands beside the table
	$(PY) -m analysis.notebook $(OUTPUTS) $(GIVEN_REGIME) $(if $(GROUP),--group $(GROUP))

clean:  ## remove the virtual environment and the default outputs
	rm -rf $(VENV) outputs multirun

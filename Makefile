# Set-up is part of every target: a fresh machine needs only python3.11 and make.
VENV ?= .venv
PY := $(VENV)/bin/python
STEP ?= inverted_bottleneck
REGIME ?= r50
ARGS ?=

.PHONY: install test train profile clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3.11 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

test: install  ## the whole test suite (what CI runs)
	$(PY) -m pytest -q

train: install  ## train one roadmap step on the embedded default data: make train STEP=gelu REGIME=r50
	$(PY) run.py +step=$(STEP) regime=$(REGIME) $(ARGS)

profile: install  ## GFLOPs / params of every step beside the paper's: make profile REGIME=r200
	$(PY) -m roadmap.profile --regime $(REGIME)

clean:
	rm -rf $(VENV) outputs multirun

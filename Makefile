# `make demo` and `make test` work on a fresh machine: they build .venv from nothing first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU wheel; a bare `torch` would pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.pion-rl-installed

.PHONY: setup demo test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[cpu,test]"
	touch $@

demo: setup
	$(PY) -m pion_rl.demo

test: setup
	$(PY) -m pytest -q tests

bench: setup
	$(PY) benchmarks/optimizer_step.py
	$(PY) benchmarks/sharded_state.py

clean:
	rm -rf $(VENV) outputs

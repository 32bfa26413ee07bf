# `make demo` and `make test` work on a fresh machine: they build .venv from nothing first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
# PyTorch's CPU wheels. On Linux, the standard index's torch is the CUDA build (multi-GB, a dozen nvidia
# packages); the CPU build is `<version>+cpu`, so the pin below can never resolve to a CUDA wheel. macOS
# wheels are CPU builds without the suffix.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_SPEC ?= torch==$(TORCH_VERSION)$(if $(filter Linux,$(shell uname -s)),+cpu,)
# Seconds pip waits on TORCH_INDEX, with no retries: where it is unreachable, set-up goes on in seconds with
# the standard index and local wheels (pip's own find-links), not minutes.
TORCH_INDEX_TIMEOUT ?= 5
# Extra pip arguments for the torch install (the tests pass --dry-run --report).
PIP_ARGS ?=
STAMP := $(VENV)/.pion-rl-installed

.PHONY: setup torch demo test test-fast bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(MAKE) --no-print-directory torch
	$(PY) -m pip install --quiet -e ".[cpu,test]"
	touch $@

torch:
	@$(PY) -m pip install --quiet $(PIP_ARGS) --index-url $(TORCH_INDEX) --timeout $(TORCH_INDEX_TIMEOUT) \
	    --retries 0 "$(TORCH_SPEC)" 2>/dev/null \
	|| { echo "note: $(TORCH_SPEC) not available from $(TORCH_INDEX); trying the standard index and local wheels"; \
	     $(PY) -m pip install --quiet $(PIP_ARGS) "$(TORCH_SPEC)"; } \
	|| { echo "error: no $(TORCH_SPEC) found: make needs $(TORCH_INDEX) reachable," \
	     "TORCH_INDEX=<a mirror of it>, or the wheel in pip's find-links" >&2; exit 1; }
	@$(PY) -c "import sys, torch; sys.exit(torch.version.cuda is not None)" \
	|| { echo "error: $(VENV) holds a CUDA build of torch: run make clean, then make (it installs $(TORCH_SPEC))" >&2; exit 1; }

demo: setup
	$(PY) -m pion_rl.demo

test: setup
	$(PY) -m pytest -q --durations=15 tests

# The inner loop: everything but the tests marked slow (each launches verl's trainer).
test-fast: setup
	$(PY) -m pytest -q --durations=15 -m "not slow" tests

bench: setup
	$(PY) benchmarks/optimizer_step.py
	$(PY) benchmarks/sharded_state.py

clean:
	rm -rf $(VENV) outputs

# Set-up lives here so that the README's two commands work on a fresh machine.
# The CPU build of torch is installed first: with no torch present, a bare `torch` requirement would pull
# a multi-GB CUDA build.
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup train test test-slow typecheck bench clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

train: setup
	$(VENV)/bin/asyncdqn train cartpole --seed 0

test: setup
	$(PY) -m pytest -q

test-slow: setup
	$(PY) -m pytest -q -m slow

# The collection seam and the schedules (files and settings: mypy.ini); fails if a backend stops matching
# asyncdqn/collect/protocol.py.
typecheck: setup
	$(PY) -m mypy

$(VENV)/.bench: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[dev,bench]'
	touch $@

bench: $(VENV)/.bench
	$(PY) benchmarks/cartpole_vs_sb3.py
	$(PY) benchmarks/collect.py
	$(PY) benchmarks/learner_k.py

clean:
	rm -rf $(VENV) .pytest_cache

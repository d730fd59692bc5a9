"""Settings: where scheda keeps its files, what it reads from the environment, shared defaults.

Every setting is decided in one order of precedence:

    1. the command-line flag (`--context 8192`), when given;
    2. the environment variable (`SCHEDA_DATA_DIR=...`), when set and not empty;
    3. the default written here.

No configuration file is read. Environment variables:

    SCHEDA_DATA_DIR   the folder of the sessions and evaluation stores
                      (default: the platform's user data folder, e.g. ~/.local/share/scheda)
    SCHEDA_CACHE_DIR  the folder of models converted for `bench --vs transformers` and of
                      benchmark data fetched from the Hub (default: the user cache folder)
    SCHEDA_API_KEY    the bearer key `scheda serve` asks for (as `--api-key`)
    SCHEDA_DEBUG      1: an unexpected error shows its traceback instead of one line

The defaults below are shared by the commands, the server and the evaluator; each is used
from here, never written again elsewhere.

Context: with no `--context`, an engine takes `DEFAULT_CONTEXT` tokens (llama-server's own
default) or the model's trained context when that is smaller. Both engines follow this rule;
the transformers engine used to take 2048, which made the same model answer differently on
the two engines and in the server, so it now takes the same default as llama.cpp.
"""

from __future__ import annotations

import os
from pathlib import Path

APP = "scheda"

ENV_DATA_DIR = "SCHEDA_DATA_DIR"
ENV_CACHE_DIR = "SCHEDA_CACHE_DIR"
ENV_API_KEY = "SCHEDA_API_KEY"
ENV_DEBUG = "SCHEDA_DEBUG"

# llama-server's default context: large enough for chat, small enough for a laptop.
DEFAULT_CONTEXT = 4096
# `scheda compare`'s chunk: the tokens each scored piece of the text holds (llama-perplexity's
# default -c). Not a context any engine serves at; compare's memory column uses DEFAULT_CONTEXT.
COMPARE_CHUNK = 512
# llama-server's default number of slots: requests decoded together per model.
DEFAULT_PARALLEL = 4
# Requests that may wait per model beyond those decoded; the rest get a 503.
DEFAULT_QUEUE = 64
# A long prompt is well under 4 MiB; a runaway upload is not.
DEFAULT_MAX_BODY = 4 << 20
# `scheda serve --grace`: seconds a stopping server lets the answers in flight finish.
DEFAULT_GRACE_S = 5.0
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value).expanduser() if value else None


def data_dir() -> Path:
    """The folder of the sessions and evaluation stores."""
    env = _env_path(ENV_DATA_DIR)
    if env is not None:
        return env
    import platformdirs

    return platformdirs.user_data_path(APP)


def cache_dir() -> Path:
    """The folder of what scheda can make again: converted models, fetched benchmark data."""
    env = _env_path(ENV_CACHE_DIR)
    if env is not None:
        return env
    import platformdirs

    return platformdirs.user_cache_path(APP)


def debug() -> bool:
    """Show tracebacks of unexpected errors."""
    return os.environ.get(ENV_DEBUG, "") not in ("", "0")


def context_for(asked: int | None, trained: int | None) -> int:
    """The context a command uses, and an engine takes: the one asked for, else the default
    capped by training. `fit`, `pull`, `card`, the server and both engines read it here, so
    that with no `--context` they all weigh the same model at the same context."""
    if asked:
        return asked
    if trained and 0 < trained < DEFAULT_CONTEXT:
        return trained
    return DEFAULT_CONTEXT


def model_context(trained: int | None) -> int:
    """The longest context a model takes: its trained one, or the default where it does not say."""
    return trained or DEFAULT_CONTEXT

"""scheda: read, fit, run and measure open LLMs on your own hardware.

The public API is small: resolve a model reference to its spec record, and
estimate the memory it needs. Everything else is reached through the CLI.
Modules inside scheda never import from here: each imports the module that
defines a name (tests/test_layers.py holds them to it).
"""

from scheda.errors import ModelFileError, ModelNotFoundError, SchedaError, UsageError
from scheda.formulas.fit import Breakdown, estimate
from scheda.resolve import read_spec, resolve
from scheda.spec import ModelSpec
from scheda.version import __version__

__all__ = [
    "Breakdown",
    "ModelFileError",
    "ModelNotFoundError",
    "ModelSpec",
    "SchedaError",
    "UsageError",
    "__version__",
    "estimate",
    "read_spec",
    "resolve",
]

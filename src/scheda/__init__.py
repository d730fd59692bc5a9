"""scheda: read, fit, run and measure open LLMs on your own hardware.

The public API is small: resolve a model reference to its spec record, and
estimate the memory it needs. Everything else is reached through the CLI.
"""

from scheda.errors import ModelFileError, ModelNotFoundError, SchedaError, UsageError
from scheda.fit import Breakdown, estimate
from scheda.resolve import resolve
from scheda.spec import ModelSpec, read_spec

__version__ = "0.1.0"

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

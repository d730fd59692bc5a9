"""scheda's version, in a leaf module: what needs it (the server's OpenAPI page) imports
it from here, never from the package, whose `__init__` imports the readers and formulas."""

__version__ = "0.1.0"

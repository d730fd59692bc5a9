"""One error tree for everything scheda tells a user went wrong.

    SchedaError                 a one-line message for the user; exit code 2
    ├── ModelNotFoundError      a model reference that resolves to nothing
    ├── ModelFileError          a model file or folder that cannot be read
    ├── EngineError             an engine failed to load or answer
    ├── SessionNotFoundError    a chat session id that matches none, or several
    ├── SessionStoreError       the sessions file cannot be opened, is damaged or is busy
    └── UsageError              options that make no sense together

The CLI prints `error: <message>` and exits non-zero; it never shows a
traceback for these.
"""


class SchedaError(Exception):
    """Base class: the message is what the user reads, on one line."""

    exit_code = 2


class ModelNotFoundError(SchedaError):
    """A model reference that is not a file, a folder, a catalog name or a cached repo."""


class ModelFileError(SchedaError):
    """A model file or folder that is damaged, truncated or of the wrong kind."""


class EngineError(SchedaError):
    """An inference engine failed to load a model or to answer."""


class SessionNotFoundError(SchedaError):
    """A chat session id (or id prefix) that matches no session, or more than one."""


class SessionStoreError(SchedaError):
    """The sessions file cannot be used: not a SQLite database, unreadable, or locked too long."""


class UsageError(SchedaError):
    """Arguments that cannot work together."""

"""One error tree for everything scheda tells a user went wrong.

    SchedaError                 a one-line message for the user; exit code 2
    ├── ModelNotFoundError      a model reference that resolves to nothing
    ├── ModelFileError          a model file or folder that cannot be read
    ├── EngineError             an engine failed to load or answer
    │   └── PromptTooLongError  a prompt longer than the context (says both counts)
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
    """An inference engine failed to load a model or to answer.

    `client_fault` marks an answer the request itself caused (a bad value the
    engine refused): the server turns those into a 400, not a 500.
    """

    def __init__(self, message: str, client_fault: bool = False) -> None:
        super().__init__(message)
        self.client_fault = client_fault


class PromptTooLongError(EngineError):
    """A prompt with more tokens than one request may use."""

    def __init__(self, prompt_tokens: int, context: int) -> None:
        super().__init__(
            f"the prompt is {prompt_tokens} tokens, more than the {context}-token "
            "context: shorten it or raise --context",
            client_fault=True,
        )
        self.prompt_tokens = prompt_tokens
        self.context = context


class SessionNotFoundError(SchedaError):
    """A chat session id (or id prefix) that matches no session, or more than one."""


class SessionStoreError(SchedaError):
    """The sessions file cannot be used: not a SQLite database, unreadable, or locked too long."""


class UsageError(SchedaError):
    """Arguments that cannot work together."""

"""One error tree for everything scheda tells a user went wrong.

    SchedaError                     a one-line message for the user; exit code 2, HTTP 500
    ├── ModelNotFoundError          a model reference that resolves to nothing (404)
    │   └── ModelNotServedError     a model the server does not offer (404, param "model")
    ├── ModelFileError              a model file or folder that cannot be read
    ├── EngineError                 an engine failed to load or answer (400 if a request caused it)
    │   └── PromptTooLongError      a prompt longer than the context (says both counts; 400)
    ├── SessionNotFoundError        a chat session id that matches none, or several (404)
    ├── StoreError                  a store's file cannot be opened, is damaged, busy or newer
    │   ├── SessionStoreError       the sessions file
    │   ├── EvalStoreError          the evaluation runs, or a run id that matches none or several
    │   ├── ComparisonStoreError    the comparisons, or a comparison id that matches none or several
    │   └── ArenaStoreError         the arena's battles file
    ├── BattleNotFoundError         an arena battle id that matches none, or several (404)
    ├── BattleStateError            a vote a battle cannot take: voted, unfinished, failed (409)
    ├── UsageError                  options that make no sense together (400)
    │   └── RequestFieldError       request fields that cannot work as sent; also a ValueError
    │       └── UnsupportedFieldError   a field scheda lacks, set to a value that matters
    ├── APIError                    a request the server refuses: its own status, param, code
    ├── ServerBusyError             a model at its request limit, or busy models fill memory (503)
    ├── ReplicaLostError            a replica of a model served on Ray died under a request (503)
    ├── HubError                    the Hub cannot be reached, or a download went wrong (502)
    │   └── HubAccessError          a gated or private repository the token does not open (403)
    └── PullRefusedError            a pull refused at once: it would not fit, or no disk (409)

The CLI prints `error: <message>` and exits non-zero; it never shows a
traceback for these. The server answers each in OpenAI's error shape
(server/errors.py) with the class's `status`, naming the request field at
fault in `param` and OpenAI's error code in `code` where there is one: a 4xx
is the client's to fix, a 500 scheda's or the machine's.

A `ValueError` that remains in the code marks a bug in scheda's own calls, not
a user's mistake (tests/test_errors.py holds the list, each with its reason).
"""


class SchedaError(Exception):
    """Base class: the message is what the user reads, on one line."""

    exit_code = 2
    status = 500  # the server's answer: not the client's doing unless a subclass says so
    param: str | None = None  # the request field at fault, as the client wrote it
    code: str | None = None  # OpenAI's error code, where it has one


class ModelNotFoundError(SchedaError):
    """A model reference that is not a file, a folder, a catalog name or a cached repo."""

    status = 404


class ModelNotServedError(ModelNotFoundError):
    """A request names a model the server was not started with."""

    param = "model"


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
        self.status = 400 if client_fault else 500


class PromptTooLongError(EngineError):
    """A prompt with more tokens than one request may use."""

    param = "messages"
    code = "context_length_exceeded"

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

    status = 404


class StoreError(SchedaError):
    """A store's file cannot be used: not a SQLite database, unreadable, locked too long, or
    written by a newer scheda. Each store raises its own subclass (stores/sqlite.py)."""


class SessionStoreError(StoreError):
    """The sessions file cannot be used."""


class EvalStoreError(StoreError):
    """The evaluation runs cannot be read or written, or a run id names none or several."""


class ComparisonStoreError(StoreError):
    """The stored comparisons cannot be read or written, or an id names none or several."""


class ArenaStoreError(StoreError):
    """The arena's battles cannot be read or written."""


class BattleNotFoundError(SchedaError):
    """An arena battle id (or id prefix) that matches no battle, or more than one."""

    status = 404


class BattleStateError(SchedaError):
    """A vote the battle cannot take: one is stored already, its answers are still coming, or
    one of them failed."""

    status = 409


class UsageError(SchedaError):
    """Arguments that cannot work together."""

    status = 400


class RequestFieldError(UsageError, ValueError):
    """Request fields that cannot work as sent.

    Also a `ValueError`: raised in a pydantic validator, pydantic reports it as a
    validation error (a 400 naming the field); raised anywhere else, it is a
    `UsageError` like any other.
    """


class UnsupportedFieldError(RequestFieldError):
    """A field scheda does not implement, set to something that would matter."""


class APIError(SchedaError):
    """A request the server refuses as sent, with the status, field and code to answer with."""

    def __init__(
        self, message: str, param: str | None = None, status: int = 400, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status
        self.code = code


class ServerBusyError(SchedaError):
    """A model with as many requests in flight as it admits, or busy models filling memory."""

    status = 503


class ReplicaLostError(SchedaError):
    """A replica of a model served on Ray died while it held the request (its node lost,
    its process killed); Ray Serve starts another, so the client should retry."""

    status = 503


class HubError(SchedaError):
    """The Hub could not be reached or answered an error, or a download did not verify."""

    status = 502


class HubAccessError(HubError):
    """A gated or private repository, and no token that opens it: says which, and what to do."""

    status = 403


class PullRefusedError(SchedaError):
    """A download refused before its first byte: the model would not fit the target, or the
    disk could not hold it. Says the numbers, and what would fit instead."""

    status = 409


def install_hint(extra: str | None = None, pip: str | None = None) -> str:
    """What to run for a missing package, written here only: `make install-EXTRA` (or pip's
    `scheda[EXTRA]`); no extra: the base `make install`, with `pip` for its pip form if any."""
    make = f"`make install-{extra}`" if extra else "`make install`"
    pip = pip or (f"'scheda[{extra}]'" if extra else None)
    return f"{make} (or `pip install {pip}`)" if pip else make

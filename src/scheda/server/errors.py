"""Errors in OpenAI's shape, with the status a client can act on.

`{"error": {"message", "type", "param", "code"}}`: 400 for what the client
sent wrong (the field named in `param`), 401 for a missing key, 404 for an
unknown model or route, 413 for a body over the limit, 503 when a model's
queue is full. Anything a client can send ends in one of those; a 500 means
a bug in scheda, and its message says so without a traceback.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from scheda.errors import (
    EngineError,
    ModelNotFoundError,
    PromptTooLongError,
    SchedaError,
    SessionNotFoundError,
    UsageError,
)
from scheda.server.pool import PoolError
from scheda.server.schemas import Unsupported

log = logging.getLogger("scheda.server")

TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "server_busy_error",
}


class APIError(Exception):
    def __init__(
        self, message: str, param: str | None = None, status: int = 400, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status
        self.code = code

    def body(self) -> dict[str, Any]:
        return {
            "message": self.message,
            "type": TYPES.get(self.status, "invalid_request_error"),
            "param": self.param,
            "code": self.code,
        }

    def response(self) -> JSONResponse:
        headers = {"Retry-After": "1"} if self.status in (429, 503) else None
        if self.status == 401:
            headers = {"WWW-Authenticate": "Bearer"}
        return JSONResponse({"error": self.body()}, status_code=self.status, headers=headers)

    @classmethod
    def from_exception(cls, exc: BaseException | None) -> APIError:
        """What a client should read for an error raised while answering it."""
        if isinstance(exc, APIError):
            return exc
        if isinstance(exc, PromptTooLongError):
            return cls(str(exc), "messages", 400, "context_length_exceeded")
        if isinstance(exc, PoolError):
            return cls(str(exc), "model" if exc.status == 404 else None, exc.status)
        if isinstance(exc, SessionNotFoundError | ModelNotFoundError):
            return cls(str(exc), None, 404)
        if isinstance(exc, UsageError | Unsupported):
            return cls(str(exc), None, 400)
        if isinstance(exc, EngineError) and exc.client_fault:
            return cls(str(exc), None, 400)
        if isinstance(exc, SchedaError):  # the engine or the store failed: not the client's doing
            return cls(str(exc), None, 500)
        log.exception("unexpected error", exc_info=exc)
        return cls(f"internal error in scheda ({type(exc).__name__}): please report it", None, 500)


def error_response(exc: BaseException | None) -> JSONResponse:
    return APIError.from_exception(exc).response()


def sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"


def _field(loc: tuple[Any, ...]) -> str | None:
    """A pydantic location as the client wrote it: messages[0].role, not a tuple."""
    parts = [p for p in loc if p not in ("body", "query", "path")]
    # Drop union-branch names pydantic inserts ("str", "list[int]", "function-after[...]").
    parts = [p for p in parts if not (isinstance(p, str) and ("[" in p or p in _TYPE_NAMES))]
    text = ""
    for p in parts:
        text += f"[{p}]" if isinstance(p, int) else (f".{p}" if text else str(p))
    return text or None


_TYPE_NAMES = {"str", "int", "float", "bool", "list", "dict", "none"}


def _validation_message(exc: RequestValidationError) -> APIError:
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    if first.get("type") == "json_invalid":
        return APIError(f"the body is not valid JSON: {first.get('msg')}")
    if first.get("type") == "missing" and tuple(first.get("loc", ())) == ("body",):
        return APIError("the body is empty: send a JSON object")
    param = _field(tuple(first.get("loc", ())))
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    if first.get("type") == "model_attributes_type":
        message = "the body must be a JSON object"
    return APIError(f"{param}: {message}" if param else message, param)


def install(app: FastAPI) -> None:
    """Route every error through the OpenAI shape."""

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_message(exc).response()

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        message = {404: "no such route", 405: "method not allowed on this route"}.get(
            exc.status_code, str(exc.detail)
        )
        return APIError(message, None, exc.status_code).response()

    @app.exception_handler(APIError)
    async def api_error(_request: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(SchedaError)
    async def scheda_error(_request: Request, exc: SchedaError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        return error_response(exc)

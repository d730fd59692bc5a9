"""Errors in OpenAI's shape, with the status a client can act on.

`{"error": {"message", "type", "param", "code"}}`: 400 for what the client
sent wrong (the field named in `param`), 401 for a missing key, 404 for an
unknown model or route, 413 for a body over the limit, 503 when a model's
queue is full. Each `SchedaError` carries its own status, field and code
(scheda/errors.py); this module only spells them. Anything a client can send
ends in a 4xx; a 500 is scheda's or the machine's failing, and an exception
that is no `SchedaError` is a bug in scheda, whose message says so without a
traceback.

Anthropic's routes (`/v1/messages`) answer in Anthropic's shape instead,
`{"type": "error", "error": {"type", "message"}}` (with `param` and `code`
too, which its clients ignore): `error_response` takes the path to tell.

The log gets one line per error answer (method, path, status, reason), from
`LogErrors`; a traceback appears there only for a bug.
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from scheda.errors import APIError, SchedaError

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


# Anthropic's error types, by status.
ANTHROPIC_TYPES = {
    **TYPES,
    413: "request_too_large",
    500: "api_error",
    503: "overloaded_error",
}
ANTHROPIC_PATHS = ("/v1/messages",)


def anthropic(path: str | None) -> bool:
    """Whether a path is one of Anthropic's routes, whose errors take its shape."""
    return path is not None and any(path == p or path.startswith(p + "/") for p in ANTHROPIC_PATHS)


def api_error(exc: BaseException | None) -> APIError:
    """What a client should read for an error raised while answering it."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, SchedaError):  # its class says whose fault it is: see scheda/errors.py
        return APIError(str(exc), exc.param, exc.status, exc.code)
    log.exception("unexpected error", exc_info=exc)
    return APIError(f"internal error in scheda ({type(exc).__name__}): please report it", None, 500)


def error_body(exc: BaseException | None, path: str | None = None) -> dict[str, Any]:
    """The `error` object of OpenAI's shape (Anthropic's types on its routes): also what a
    stream sends when it fails midway."""
    error = api_error(exc)
    types = ANTHROPIC_TYPES if anthropic(path) else TYPES
    return {
        "message": error.message,
        "type": types.get(error.status, "invalid_request_error"),
        "param": error.param,
        "code": error.code,
    }


def error_document(exc: BaseException | None, path: str | None = None) -> dict[str, Any]:
    """The whole error answer: `{"error": ...}`, and `"type": "error"` on Anthropic's routes."""
    body = {"error": error_body(exc, path)}
    return {"type": "error", **body} if anthropic(path) else body


def error_response(exc: BaseException | None, path: str | None = None) -> JSONResponse:
    error = api_error(exc)
    headers = {"Retry-After": "1"} if error.status in (429, 503) else None
    if error.status == 401:
        headers = {"WWW-Authenticate": "Bearer"}
    return JSONResponse(error_document(error, path), status_code=error.status, headers=headers)


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
    # scheda's own messages (a validator's, which say what to do) first; then, among a union's
    # branches, the one whose type matched (too short, too big) before "should be a string".
    ours = [e for e in errors if e.get("type") == "value_error"]
    matched = [e for e in errors if not str(e.get("type", "")).endswith("_type")]
    first = (ours or matched or errors or [{"loc": (), "msg": "invalid request"}])[0]
    if first.get("type") == "json_invalid":
        return APIError(f"the body is not valid JSON: {first.get('msg')}")
    if first.get("type") == "missing" and tuple(first.get("loc", ())) == ("body",):
        return APIError("the body is empty: send a JSON object")
    param = _field(tuple(first.get("loc", ())))
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    if first.get("type") == "model_attributes_type":
        message = "the body must be a JSON object"
    if param and not message.startswith(param):  # "tools (tool calling) is not ..." names it
        message = f"{param}: {message}"
    return APIError(message, param)


def install(app: FastAPI) -> None:
    """Route every error through the OpenAI shape."""

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(_validation_message(exc), request.url.path)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        message = {404: "no such route", 405: "method not allowed on this route"}.get(
            exc.status_code, str(exc.detail)
        )
        return error_response(APIError(message, None, exc.status_code), request.url.path)

    @app.exception_handler(SchedaError)
    async def scheda_error(request: Request, exc: SchedaError) -> JSONResponse:
        return error_response(exc, request.url.path)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Only for a bug in an ASGI layer outside LogErrors; a route's bug is answered there.
        return error_response(exc, request.url.path)


class LogErrors:
    """ASGI layer: one log line per error answer; a bug answered with a 500, its traceback logged.

    The line matches the guard's: `POST /v1/completions 400 prompt: ...`. An exception that
    reaches this layer has escaped every handler: it is answered here (and logged once, with
    its traceback, by `api_error`) rather than re-raised for uvicorn to log a second time.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 0
        body: list[bytes] = []

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and status >= 400:
                body.append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:
            if status:  # the answer had begun (a stream): nothing left to answer with
                raise
            await error_response(exc, scope.get("path"))(scope, receive, watch)
        if status >= 400:
            log_refusal(scope, status, _reason(body))


def log_refusal(scope: Scope, status: int, reason: str) -> None:
    """`METHOD PATH STATUS reason`, one line whatever the client put in the path."""
    method, path = scope.get("method", "-"), scope.get("path", "")
    log.warning("%s %s %d %s", one_line(method), one_line(path), status, one_line(reason))


def one_line(text: str) -> str:
    """Text for the log: control characters (a newline in a path) escaped, so a client can
    neither forge a line nor send escape codes to a terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _reason(body: list[bytes]) -> str:
    """An error answer's message."""
    text = b"".join(body).decode("utf-8", errors="replace")
    with contextlib.suppress(ValueError, KeyError, TypeError):  # not OpenAI's shape: as it is
        text = json.loads(text)["error"]["message"]
    return str(text)

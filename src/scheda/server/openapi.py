"""The OpenAPI description (`/openapi.json`) as the server really answers.

FastAPI describes each route's 200 and a 422 that scheda never sends (a body
it cannot take is a 400, server/errors.py). Generated clients and
schema-driven fuzzers read this description, so it says what each route
answers:

- each route declares the errors it answers itself (`answers(400, 404, 503)`),
  and whether its 200 may be a stream of server-sent events;
- the layers in front of every route add theirs: 403 (the guard), 413 (the
  body limit), 401 on the API routes (the key), and 500 (a bug, or the
  machine failing);
- every error answer has OpenAI's shape, one schema (`Error`), but on
  Anthropic's routes, whose errors have Anthropic's (`AnthropicError`); a 503
  says when to retry (`Retry-After`), a 401 how to authenticate;
- the 422 and its schemas are gone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from scheda.server.errors import ANTHROPIC_TYPES, TYPES, anthropic


class EventStream(StreamingResponse):
    """A route whose 200 is only ever server-sent events (the studio's chat turn)."""

    media_type = "text/event-stream"


WHY = {
    400: "The request cannot work as sent: the message says which field and what to do.",
    401: "The API key is missing or wrong (`--api-key`): send `Authorization: Bearer KEY`.",
    403: "The Host is not this server's name, or the request comes from another web page "
    "(start the server with `--allow-host` or `--cors-origin` to accept it).",
    404: "No such model, session or run (the message lists what there is).",
    409: "It cannot be done now: the model will not fit this machine (the message says what "
    "would: send `force` to take it anyway), a card run is going (wait for it, or cancel it), "
    "an arena battle cannot take this vote (voted already, still answering, or failed), or a "
    "model with requests in flight cannot be unloaded (retry when they end).",
    413: "The body is over the server's limit (`--max-body`).",
    500: "scheda or the machine failed: a bug, or a model that cannot load or answer.",
    502: "The Hub failed or is out of reach (the message says which and what to do).",
    503: "The model has as many requests in flight as it admits, or busy models fill the "
    "memory budget: retry after `Retry-After` seconds.",
}

ERROR = {
    "type": "object",
    "title": "Error",
    "description": "OpenAI's error shape.",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "message": {"type": "string", "description": "What went wrong, on one line."},
                "type": {"type": "string", "enum": sorted(set(TYPES.values()))},
                "param": {
                    "type": ["string", "null"],
                    "description": "The request field at fault, as the client wrote it.",
                },
                "code": {"type": ["string", "null"]},
            },
            "required": ["message", "type", "param", "code"],
        }
    },
    "required": ["error"],
}

ANTHROPIC_ERROR = {
    "type": "object",
    "title": "AnthropicError",
    "description": "Anthropic's error shape (with OpenAI's `param` and `code` besides).",
    "properties": {
        "type": {"type": "string", "const": "error"},
        "error": {
            "type": "object",
            "properties": {
                "type": {"type": "string", "enum": sorted(set(ANTHROPIC_TYPES.values()))},
                "message": {"type": "string", "description": "What went wrong, on one line."},
            },
            "required": ["type", "message"],
        },
    },
    "required": ["type", "error"],
}
SHAPES = {"openai": "Error", "anthropic": "AnthropicError"}

EVENTS = {
    "text/event-stream": {
        "schema": {
            "type": "string",
            "description": "Server-sent events, `data: JSON` each: OpenAI's chunks, an "
            "`error` object if the answer fails midway, then `data: [DONE]`.",
        }
    }
}

HEADERS = {
    401: {"WWW-Authenticate": {"schema": {"type": "string", "const": "Bearer"}}},
    503: {
        "Retry-After": {
            "description": "Seconds to wait before retrying.",
            "schema": {"type": "integer"},
        }
    },
}


def _error(status: int, shape: str = "openai") -> dict[str, Any]:
    schema = {"$ref": f"#/components/schemas/{SHAPES[shape]}"}
    answer: dict[str, Any] = {
        "description": WHY[status],
        "content": {"application/json": {"schema": schema}},
    }
    if status in HEADERS:
        answer["headers"] = HEADERS[status]
    return answer


def answers(
    *statuses: int, stream: bool = False, shape: str = "openai"
) -> dict[int | str, dict[str, Any]]:
    """A route's `responses`: the errors it answers itself (in OpenAI's or Anthropic's
    shape), and a 200 that may be a stream."""
    declared: dict[int | str, dict[str, Any]] = {s: _error(s, shape) for s in statuses}
    if stream:
        declared[200] = {"content": EVENTS}
    return declared


def install(app: FastAPI, protected: Callable[[str], bool]) -> None:
    """Make `/openapi.json` the description rewritten as above (once, on first request)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = as_answered(generate(), protected)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def as_answered(schema: dict[str, Any], protected: Callable[[str], bool]) -> dict[str, Any]:
    components = schema.setdefault("components", {})
    shapes = components.setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        shapes.pop(unused, None)
    shapes["Error"] = ERROR
    shapes["AnthropicError"] = ANTHROPIC_ERROR
    components["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer"},
        "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
    }
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            every = [403, 413, 500]
            if protected(path):
                every.append(401)
                operation["security"] = [{"bearer": []}, {"apiKey": []}]
            shape = "anthropic" if anthropic(path) else "openai"
            for status in every:
                responses.setdefault(str(status), _error(status, shape))
            operation["responses"] = dict(sorted(responses.items()))
    return schema

"""Schemathesis hooks for fuzzing the server (tests/test_openapi.py, benchmarks/fuzz_api.py).

Load with `SCHEMATHESIS_HOOKS=tests.openapi_hooks` from the project's root. Every case
that would generate text is capped at `CAP` new tokens before it is sent: a body without
`max_tokens` runs to the end of the context, seconds per case on a small CPU, and a
run of a few hundred cases should take about a minute. The schema is left as it is;
only the values sent change, and only valid ones (a negative or mistyped `max_tokens`
is sent as generated). A request without `max_tokens` is tested on its own
(tests/test_server.py).
"""

from __future__ import annotations

from typing import Any

import schemathesis

CAP = 4
GENERATING = ("/v1/chat/completions", "/v1/completions")


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    body = case.body
    if not isinstance(body, dict):
        return
    if case.operation.path in GENERATING:
        _cap(body, "max_tokens")
        _cap(body, "max_completion_tokens", add=False)
    elif case.operation.path == "/v1/messages":  # max_tokens is required there: not added
        _cap(body, "max_tokens", add=False)
    elif case.operation.path == "/v1/responses":
        _cap(body, "max_output_tokens")
    elif case.operation.path.endswith("/chat") or case.operation.path == "/api/arena/battles":
        # the studio's chat turn, and an arena battle's two answers
        params = body.setdefault("params", {})
        if isinstance(params, dict):
            _cap(params, "max_tokens")


def _cap(fields: dict[str, Any], name: str, add: bool = True) -> None:
    """At most CAP tokens (0 means "until the context is full"); a wrong value stays wrong."""
    value = fields.get(name)
    if value is None and add:
        fields[name] = CAP
    elif value is not None and _count(value):
        fields[name] = min(int(value), CAP) or CAP


def _count(value: Any) -> bool:
    """A valid token count: a whole number, not negative (3.0 too, as JSON Schema has it)."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return number and value >= 0 and float(value).is_integer()

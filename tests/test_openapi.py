"""`/openapi.json` against the live server: what it says each route answers, it answers.

A real `scheda serve` (the embedded model on one slot with a 256-token context, the
MiniLM folder, an API key) is fuzzed by schemathesis from its own description:
the coverage phase (each field's edges, each documented status) and the fuzzing
phase (random bodies, valid and not). No case may get a server error (5xx but a
503 the description lists) or a status the description does not list for that
route. Generated answers are capped at a few tokens by tests/openapi_hooks.py, so
a few hundred cases fit in about a minute; `benchmarks/fuzz_api.py` runs the long
version.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.serving import Server

KEY = "sk-openapi"
ROOT = Path(__file__).resolve().parents[1]
FUZZ_TIME_S = 20  # schemathesis's own budget; starting it and the coverage phase come on top
ROUTE_STATUSES = {
    ("post", "/v1/chat/completions"): {"200", "400", "401", "403", "404", "413", "500", "503"},
    ("post", "/v1/messages"): {"200", "400", "401", "403", "404", "413", "500", "503"},
    ("post", "/v1/responses"): {"200", "400", "401", "403", "404", "413", "500", "503"},
    ("get", "/v1/models"): {"200", "401", "403", "413", "500"},
    ("get", "/health"): {"200", "403", "413", "500"},
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, minilm_path: Path) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("openapi")
    args = ["default", str(minilm_path), "--parallel", "1", "--context", "256"]
    s = Server(args, data, api_key=KEY)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def description(server: Server) -> dict[str, Any]:
    status, schema = server.request("GET", "/openapi.json")
    assert status == 200
    described: dict[str, Any] = schema
    return described


def test_every_error_is_described_in_openai_s_shape(description: dict[str, Any]) -> None:
    shapes = description["components"]["schemas"]
    assert "HTTPValidationError" not in shapes and "ValidationError" not in shapes
    assert shapes["Error"]["properties"]["error"]["required"] == [
        "message",
        "type",
        "param",
        "code",
    ]
    for (method, path), statuses in ROUTE_STATUSES.items():
        assert set(description["paths"][path][method]["responses"]) == statuses, path
    for path, operations in description["paths"].items():
        for method, operation in operations.items():
            answers = operation["responses"]
            assert "422" not in answers, (method, path)
            shape = "AnthropicError" if path.startswith("/v1/messages") else "Error"
            for status, answer in answers.items():
                if status.startswith(("4", "5")):
                    schema = answer["content"]["application/json"]["schema"]
                    assert schema == {"$ref": f"#/components/schemas/{shape}"}, (method, path)
            if "503" in answers:
                assert "Retry-After" in answers["503"]["headers"]


def test_streams_are_described(description: dict[str, Any]) -> None:
    paths = description["paths"]
    chat = paths["/v1/chat/completions"]["post"]["responses"]["200"]["content"]
    assert set(chat) == {"application/json", "text/event-stream"}
    studio = paths["/api/sessions/{session_id}/chat"]["post"]["responses"]["200"]["content"]
    assert set(studio) == {"text/event-stream"}


def test_tokenize_takes_prompt_or_messages(server: Server, description: dict[str, Any]) -> None:
    """The schema's oneOf is what the server does: exactly one of the two."""
    body = description["components"]["schemas"]["TokenizeRequest"]
    assert [branch["required"] for branch in body["oneOf"]] == [["prompt"], ["messages"]]
    user = [{"role": "user", "content": "hi"}]
    assert server.request("POST", "/tokenize", {"prompt": "hi"})[0] == 200
    assert server.request("POST", "/tokenize", {"messages": user})[0] == 200
    for wrong in ({}, {"prompt": "hi", "messages": user}):
        assert server.request("POST", "/tokenize", wrong)[0] == 400


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_and_no_undescribed_status(
    server: Server, tmp_path: Path
) -> None:
    command = [
        sys.executable, "-m", "schemathesis.cli", "run", f"{server.url}/openapi.json",
        "--header", f"Authorization: Bearer {KEY}",
        "--phases", "coverage,fuzzing",
        "--checks", "not_a_server_error,status_code_conformance",
        "--max-examples", "15",
        "--max-time", str(FUZZ_TIME_S),
        "--request-timeout", "60",
        "--workers", "1",
        "--seed", "1",
        "--suppress-health-check", "all",
        "--no-shrink",
    ]  # fmt: skip
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.openapi_hooks",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "NO_COLOR": "1",
    }
    # Run in a folder of its own: schemathesis leaves its reports where it runs.
    run = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=FUZZ_TIME_S + 240
    )
    report = run.stdout + run.stderr
    print(report[-1500:])  # the summary: phases, cases generated, time (pytest -s shows it)
    assert run.returncode == 0, report[-8000:]
    assert "Traceback" not in server.log.read_text(), "a bug in scheda: see the server's log"

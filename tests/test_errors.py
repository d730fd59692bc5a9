"""The one error tree: declared in scheda/errors.py, drawn in its docstring, and the only one.

The source is read as Python's AST, not imported, so the checks cover every
module, the engines' too, without loading an engine. The server's translation
of each class into OpenAI's error shape is checked against the statuses the
routes have always answered with.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pydantic
import pytest

from scheda import errors
from scheda.errors import (
    APIError,
    EngineError,
    ModelFileError,
    ModelNotFoundError,
    ModelNotServedError,
    PromptTooLongError,
    RequestFieldError,
    SchedaError,
    ServerBusyError,
    SessionNotFoundError,
    SessionStoreError,
    UnsupportedFieldError,
    UsageError,
)
from scheda.server.errors import api_error, error_body
from scheda.server.schemas import ChatRequest, TokenizeRequest

SOURCE = Path(errors.__file__).parent

# Where a `raise ValueError(` may stay: a bug in scheda's own calls, never a user's mistake.
# (module, function): why no user can reach it.
VALUE_ERRORS_ALLOWED = {
    ("stores/sessions.py", "_check_role"): "scheda's callers pass the role, never a user",
    ("formulas/fit.py", "weight_bytes"): "estimate() asks for a file size only where there is one",
    ("evaluation/humaneval.py", "pass_at_k"): "n, c and k are the task's own counts",
    ("readers/imatrix.py", "_imatrix_gguf"): "load_imatrix makes it a UsageError naming it",
    ("readers/imatrix.py", "_imatrix_legacy"): "load_imatrix makes it a UsageError naming it",
    (
        "evaluation/agieval.py",
        "_remove_right_units",
    ): "is_equiv catches it: lm-eval's judging, kept",
    ("arena/ratings.py", "_tally"): "the arena's store holds only voted battles of two models",
    ("arena/ratings.py", "leaderboard"): "the bootstrap rounds are the caller's constant",
    ("stores/arena.py", "finish"): "the side is one of SIDES, named by the arena's own code",
}
# Exceptions declared outside errors.py: (module, class): why no user sees them.
EXCEPTIONS_ALLOWED = {
    ("evaluation/sandbox.py", "_Setup"): "caught in the sandbox's own child, reported as a status",
    ("readers/hf_folder.py", "_More"): "caught by the tokenizer.json walk: it reads further",
    ("search/rows.py", "Stopped"): "the studio's search route catches it: its client has gone",
}


def _modules() -> list[tuple[str, ast.Module]]:
    return [
        (path.relative_to(SOURCE).as_posix(), ast.parse(path.read_text(encoding="utf-8")))
        for path in sorted(SOURCE.rglob("*.py"))
    ]


def _raises_of(tree: ast.Module, name: str) -> list[str]:
    """The functions in which `raise NAME(...)` occurs ("<module>" outside any)."""
    found: list[str] = []

    def visit(node: ast.AST, function: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = function
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                inner = child.name
            if (
                isinstance(child, ast.Raise)
                and isinstance(child.exc, ast.Call)
                and isinstance(child.exc.func, ast.Name)
                and child.exc.func.id == name
            ):
                found.append(function)
            visit(child, inner)

    visit(tree, "<module>")
    return found


def test_no_bare_value_error_reaches_a_user() -> None:
    found = {(path, f) for path, tree in _modules() for f in _raises_of(tree, "ValueError")}
    assert found - VALUE_ERRORS_ALLOWED.keys() == set(), "raise a SchedaError (scheda/errors.py)"
    assert VALUE_ERRORS_ALLOWED.keys() - found == set(), "an allowed ValueError is gone: drop it"


def test_the_scan_finds_a_raise_value_error() -> None:
    tree = ast.parse("def f(x):\n    if x:\n        raise ValueError('no')\n")
    assert _raises_of(tree, "ValueError") == ["f"]


def test_every_error_class_is_declared_in_errors_py() -> None:
    """No module but errors.py declares an exception of its own."""
    exceptions = {"Exception", "BaseException", "ValueError", "RuntimeError", "TypeError"}
    declared = {name for name, _ in inspect.getmembers(errors, inspect.isclass)} | exceptions
    elsewhere = {
        (path, node.name)
        for path, tree in _modules()
        if path != "errors.py"
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef)
        and any(
            (base.id if isinstance(base, ast.Name) else getattr(base, "attr", None)) in declared
            for base in node.bases
        )
    }
    assert elsewhere == EXCEPTIONS_ALLOWED.keys()


def test_the_docstring_draws_the_tree() -> None:
    """Every class in errors.py is drawn, under the class it derives from."""
    classes = {
        name: cls
        for name, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, SchedaError)
    }
    drawn: dict[str, str | None] = {}
    parents: list[tuple[int, str]] = []  # (column, name) of the branch being drawn
    for line in (errors.__doc__ or "").splitlines():
        match = re.match(r"^([\s│├└─]*)([A-Z]\w*Error)\b", line)
        if match is None:
            continue
        column = len(match.group(1))
        while parents and parents[-1][0] >= column:
            parents.pop()
        drawn[match.group(2)] = parents[-1][1] if parents else None
        parents.append((column, match.group(2)))
    assert drawn.keys() == classes.keys()
    for name, parent in drawn.items():
        if parent is not None:
            assert classes[name].__bases__[0] is classes[parent], name


def test_request_field_errors_are_value_errors_for_pydantic() -> None:
    """Raised in a validator, they become a validation error: a 400 naming the field."""
    assert issubclass(UnsupportedFieldError, ValueError)
    with pytest.raises(pydantic.ValidationError, match=r"functions .* is not supported"):
        ChatRequest.model_validate(
            {"messages": [{"role": "user", "content": "hi"}], "functions": [{"name": "f"}]}
        )
    with pytest.raises(pydantic.ValidationError, match="give either prompt or messages"):
        TokenizeRequest.model_validate({})


# Each error and what a client reads: (status, param, code), as the routes answered before
# the classes carried them.
ANSWERS = [
    (APIError("x", "prompt", 413, "c"), (413, "prompt", "c")),
    (PromptTooLongError(10, 5), (400, "messages", "context_length_exceeded")),
    (ModelNotServedError("x"), (404, "model", None)),
    (ServerBusyError("x"), (503, None, None)),
    (ModelNotFoundError("x"), (404, None, None)),
    (SessionNotFoundError("x"), (404, None, None)),
    (UsageError("x"), (400, None, None)),
    (RequestFieldError("x"), (400, None, None)),
    (UnsupportedFieldError("x"), (400, None, None)),
    (EngineError("x", client_fault=True), (400, None, None)),
    (EngineError("x"), (500, None, None)),
    (ModelFileError("x"), (500, None, None)),
    (SessionStoreError("x"), (500, None, None)),
    (SchedaError("x"), (500, None, None)),
]


@pytest.mark.parametrize(("error", "answer"), ANSWERS, ids=lambda v: type(v).__name__)
def test_each_error_keeps_its_http_answer(
    error: SchedaError, answer: tuple[int, str | None, str | None]
) -> None:
    got = api_error(error)
    assert (got.status, got.param, got.code) == answer
    assert error_body(error)["message"] == str(error)


def test_anything_else_is_scheda_s_bug() -> None:
    body = error_body(KeyError("k"))
    assert body["type"] == "server_error"
    assert body["message"] == "internal error in scheda (KeyError): please report it"


def _strings_naming(tree: ast.Module, text: str) -> list[str]:
    """The string constants (f-strings' pieces included) that hold `text`."""
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and text in node.value
    ]


def test_install_hints_are_written_in_errors_py_only() -> None:
    """What to install for a missing extra is `errors.install_hint`'s to say: a module that
    writes `make install-` or `pip install` itself is a second copy of the hint."""
    for path, tree in _modules():
        if path != "errors.py":
            for text in ("make install", "pip install"):
                assert not _strings_naming(tree, text), f"{path}: use errors.install_hint"
    assert errors.install_hint("eval") == "`make install-eval` (or `pip install 'scheda[eval]'`)"
    assert errors.install_hint() == "`make install`"


def test_the_hint_scan_sees_an_f_string() -> None:
    tree = ast.parse("x = f'run `make install-ray` ({1})'")
    assert _strings_naming(tree, "make install") == ["run `make install-ray` ("]

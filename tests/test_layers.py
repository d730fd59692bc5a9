"""The package imports downwards only: no import cycle, and no import up a layer.

Every module under src/scheda is parsed with `ast` (nothing is imported), and
every `import` and `from ... import` counts, at module level or inside a
function, relative or absolute; `from scheda import settings` counts as an
import of `scheda.settings`. A module's layer is declared in `LAYERS`; a new
module must be given one.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"

# Bottom to top: a module may import its own layer and the layers below it, never above.
# A name covers the module and, for a package, the modules inside it; the root package
# `scheda` (the public API) covers itself only.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "records",
        (
            "scheda.errors",
            "scheda.spec",
            "scheda.sampling",
            "scheda.settings",
            "scheda.units",
            "scheda.version",
            "scheda.pieces",
            # Leaves inside readers/: what any layer may read bytes through, and GGUF's
            # constants. Declared here, they may import nothing above the records.
            "scheda.readers.source",
            "scheda.readers.gguf_types",
        ),
    ),
    ("readers", ("scheda.readers",)),
    ("catalog", ("scheda.catalog", "scheda.resolve")),
    ("formulas", ("scheda.formulas",)),
    ("engines", ("scheda.engines",)),
    # The library: one room (a package) for each thing it does, none above another.
    (
        "library",
        (
            "scheda.tokenization",
            "scheda.talk",
            "scheda.stores",
            "scheda.measurement",
            "scheda.files",
            "scheda.evaluation",
            "scheda.display",
            "scheda.arena",
            "scheda.search",
        ),
    ),
    ("server", ("scheda.server",)),
    ("cli", ("scheda.cli", "scheda.__main__")),
    # The public API imports what it re-exports; nothing inside scheda imports it.
    ("package", ("scheda",)),
)


HEAVY = ("torch", "transformers", "xllamacpp", "llama_cpp", "fastapi", "uvicorn", "ray")


def modules() -> dict[str, tuple[Path, bool]]:
    """Every module under src/scheda: its dotted name -> (file, whether it is a package)."""
    found = {}
    for path in sorted((SRC / "scheda").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        package = parts[-1] == "__init__"
        if package:
            parts.pop()
        found[".".join(parts)] = (path, package)
    return found


def _absolute(name: str | None, level: int, module: str, package: bool) -> str:
    """The absolute name a (possibly relative) `from` import refers to."""
    if not level:
        return name or ""
    base = module.split(".") if package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, name] if name else base)


def _owner(name: str, known: dict[str, tuple[Path, bool]]) -> str | None:
    """The scheda module a dotted name lives in (the longest known prefix)."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imports() -> dict[str, set[str]]:
    """Module -> the scheda modules it imports anywhere in its source."""
    known = modules()
    graph: dict[str, set[str]] = {}
    for module, (path, package) in known.items():
        targets: set[str | None] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets.update(_owner(alias.name, known) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(node.module, node.level, module, package)
                for alias in node.names:
                    # `from pkg import module` imports the module, `from pkg import name` pkg.
                    targets.add(_owner(f"{base}.{alias.name}", known))
        graph[module] = {t for t in targets if t is not None and t != module}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path that ends where it starts, or None."""
    done: set[str] = set()
    path: list[str] = []
    on_path: set[str] = set()

    def visit(node: str) -> list[str] | None:
        path.append(node)
        on_path.add(node)
        for target in sorted(graph.get(node, ())):
            if target in on_path:
                return [*path[path.index(target) :], target]
            if target not in done:
                cycle = visit(target)
                if cycle:
                    return cycle
        path.pop()
        on_path.discard(node)
        done.add(node)
        return None

    for start in sorted(graph):
        if start not in done:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def layer_of(module: str) -> int | None:
    """The index in LAYERS of the most specific name that covers a module."""
    best: tuple[int, int] | None = None  # (length of the matching name, layer)
    for index, (_, names) in enumerate(LAYERS):
        for name in names:
            covers = module == name or (name != "scheda" and module.startswith(name + "."))
            if covers and (best is None or len(name) > best[0]):
                best = (len(name), index)
    return None if best is None else best[1]


def test_the_graph_sees_every_kind_of_import() -> None:
    graph = imports()
    assert "scheda.resolve" in graph["scheda.engines"]  # inside a function
    assert "scheda.settings" in graph["scheda.formulas.fit"]  # `from scheda import settings`
    assert "scheda.server.openai_api" in graph["scheda.server.app"]  # `from pkg import module`
    assert "scheda.errors" in graph["scheda"]  # a package's __init__
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle() -> None:
    cycle = find_cycle(imports())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_every_module_has_a_layer() -> None:
    missing = [m for m in modules() if layer_of(m) is None]
    assert not missing, f"declare the layer of {', '.join(missing)} in LAYERS"


def test_imports_point_down_the_layers() -> None:
    upward = []
    for module, targets in sorted(imports().items()):
        here = layer_of(module)
        for target in sorted(targets):
            there = layer_of(target)
            if here is not None and there is not None and there > here:
                upward.append(f"{module} ({LAYERS[here][0]}) imports {target} ({LAYERS[there][0]})")
    assert not upward, "imports up a layer:\n" + "\n".join(upward)


def test_no_module_imports_the_package_itself() -> None:
    # `from scheda import X` for a name defined in scheda/__init__ (not a module) would
    # import the public API from inside it; import from the defining module instead.
    users = sorted(m for m, targets in imports().items() if "scheda" in targets)
    assert users == [], f"{', '.join(users)} import from the scheda package __init__"


def test_importing_scheda_and_its_cli_loads_no_engine_and_no_server() -> None:
    code = (
        "import json, sys\n"
        "import scheda, scheda.cli, scheda.server\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(done.stdout) == []


LEAVES = ("scheda.readers.source", "scheda.readers.gguf_types")


def test_the_leaves_import_nothing_from_scheda() -> None:
    graph = imports()
    assert {leaf: graph[leaf] for leaf in LEAVES} == {leaf: set() for leaf in LEAVES}


# What a quick command must not load: each costs start-up time it never uses (numpy alone
# is a fifth of a second; `card` and `fit` answer in less than a third).
UNUSED_BY_QUICK_COMMANDS = (
    *HEAVY,
    "numpy",
    "gguf",
    "yaml",
    "safetensors",
    "huggingface_hub",
    "psutil",
    "rich.progress",
)


def _loaded_by(*args: str, watched: tuple[str, ...] = UNUSED_BY_QUICK_COMMANDS) -> list[str]:
    """The modules of `watched` that `scheda ARGS` has loaded when it exits."""
    code = (
        "import atexit, json, runpy, sys\n"
        f"watched = {watched!r}\n"
        "atexit.register(lambda: print(json.dumps(sorted(m for m in watched"
        " if m in sys.modules)), file=sys.stderr))\n"
        f"sys.argv = ['scheda', *{list(args)!r}]\n"
        "runpy.run_module('scheda', run_name='__main__')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    loaded: list[str] = json.loads(done.stderr.strip().splitlines()[-1])
    return loaded


def test_card_and_fit_load_only_what_they_use() -> None:
    for args in (("card", "default", "--json"), ("fit", "default", "--json"), ("--help",)):
        assert _loaded_by(*args) == [], args
    readers = ("scheda.readers.gguf_file", "scheda.readers.hf_folder", "scheda.formulas.fit_report")
    assert _loaded_by("--help", watched=readers) == []

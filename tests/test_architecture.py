"""The packages' import structure (docs/architecture.md): no import cycle between modules,
the packages in layers, each importing only from the layers below it, and a pure core in
each package that reaches no database, broker, HTTP or simulator library, not even through
another module.

Every import counts, at module level or inside a function (a function-level import does
not make a cycle go away, it only hides it until run time); only imports under
``if TYPE_CHECKING:`` are left out, as they never run. The command modules (``cli.py``,
``*_cli.py``, ``commands.py``: the ``cityops`` command line) sit on top of every layer
and may import from any package.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Each package and its layer: a module imports from its own package or a lower layer.
LAYERS = {
    "ingest": 0,  # configuration, database, MQTT contract and client, registry, ingest
    "routing": 1,  # street network, planning, re-planning
    "traffic": 1,  # signal measures and adaptive control
    "roadworks": 2,  # the registry of works; closes streets for routing
    "api": 3,  # the HTTP API over all of them
    "simulators": 4,  # the devices, and the demo city on one machine with its API
}


#: The pure core of each package (docs/architecture.md, "a pure core, I/O at the edges").
PURE_CORE = {
    "ingest": ("contract", "decode", "codecs", "lorawan", "lorawan_readings", "mqttauth",
               "registry_model", "registry_files", "city", "districts", "yamlpos"),
    "routing": ("network", "closures", "forecast", "dispatch", "dispatch_params", "model",
                "screening", "planning", "check", "rows", "errors", "engines", "solver",
                "ortools_model", "pyvrp_engine", "vrplib", "replan.triggers", "replan.day",
                "replan.options", "replan.pool", "replan.warm", "replan.problem",
                "replan.solve", "replan.stability", "replan.documents", "replan.pipeline"),
    "traffic": ("events", "eventlog", "measures", "purdue", "webster", "maxpressure",
                "control_state", "errors"),
    "roadworks": ("model", "lifecycle", "coordination", "validation", "geometry", "schemas",
                  "search_index", "labels", "config", "errors", "feeds"),
    "simulators": ("models", "bin_sim", "signal_sim", "truck_sim", "city", "controller",
                   "emission", "scenario", "lorawan"),
}

#: What a pure module must not reach: the edges' libraries.
IO_LIBRARIES = frozenset({"psycopg", "psycopg_pool", "paho", "fastapi", "starlette", "uvicorn",
                          "httpx", "grafana_client", "libsumo", "traci"})


def _module_files() -> dict[str, Path]:
    modules = {}
    for package in LAYERS:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules["cityops." + ".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported_names(name: str, path: Path) -> Iterator[tuple[str, list[str]]]:
    """(module, names imported from it) of each import statement that runs."""
    is_package = path.name == "__init__.py"
    stack: list[ast.AST] = [ast.parse(path.read_text(encoding="utf-8"), str(path))]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")[: len(name.split(".")) - node.level + is_package]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            yield module, [alias.name for alias in node.names]
        stack.extend(ast.iter_child_nodes(node))


def _graph() -> dict[str, set[str]]:
    modules = _module_files()

    def known(module: str) -> str | None:
        while module and module not in modules:
            module = module.rpartition(".")[0]
        return module or None

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for module, names in _imported_names(name, path):
            submodules = [f"{module}.{n}" for n in names if f"{module}.{n}" in modules]
            # `from package import submodule` imports the submodule (and runs the
            # package's __init__ first, as every import of a submodule does)
            for target in submodules or [known(module)]:
                if target is not None and target != name:
                    targets.add(target)
        graph[name] = targets
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _is_command(module: str) -> bool:
    last = module.rpartition(".")[2]
    return last in ("cli", "commands") or last.endswith("_cli")


def test_the_package_tree_is_read_whole() -> None:
    graph = _graph()
    # the walk found the packages and their imports (an empty graph would pass everything)
    assert {m.split(".")[1] for m in graph} == set(LAYERS)
    assert "cityops.ingest.config" in graph["cityops.ingest.service"]
    assert sum(len(targets) for targets in graph.values()) > 500


def test_no_import_cycle() -> None:
    cycles = _cycles(_graph())
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_packages_import_only_from_lower_layers() -> None:
    upward = sorted(
        f"{module} imports {target}"
        for module, targets in _graph().items()
        if not _is_command(module)
        for target in targets
        if LAYERS[target.split(".")[1]] > LAYERS[module.split(".")[1]]
        or (
            LAYERS[target.split(".")[1]] == LAYERS[module.split(".")[1]]
            and target.split(".")[1] != module.split(".")[1]
        )
    )
    assert not upward, "imports against the layers:\n" + "\n".join(upward)


def test_the_pure_core_reaches_no_io_library() -> None:
    modules = _module_files()
    graph = _graph()
    libraries = {
        name: {module.split(".")[0] for module, _ in _imported_names(name, path)}
        for name, path in modules.items()
    }
    reached = []
    for package, names in PURE_CORE.items():
        for short in names:
            start = f"cityops.{package}.{short}"
            assert start in modules, f"{start} is named pure but does not exist"
            seen, todo = {start}, [start]
            while todo:
                for target in graph[todo.pop()] - seen:
                    seen.add(target)
                    todo.append(target)
            for module in sorted(seen):
                for library in sorted(libraries[module] & IO_LIBRARIES):
                    reached.append(f"{start} reaches {library} through {module}")
    assert not reached, "\n".join(reached)


def test_the_purity_check_sees_an_io_import() -> None:
    # the edges of the same packages do reach those libraries (else the check could not fail)
    libraries = {
        name: {module.split(".")[0] for module, _ in _imported_names(name, path)}
        for name, path in _module_files().items()
    }
    assert "psycopg" in libraries["cityops.routing.repository"]
    assert "paho" in libraries["cityops.ingest.mqttclient"]


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
        ({"a": {"b"}, "b": set()}, []),
    ],
)
def test_cycle_finder(graph: dict[str, set[str]], expected: list[list[str]]) -> None:
    assert _cycles(graph) == expected

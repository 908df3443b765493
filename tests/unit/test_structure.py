"""The shape of src/chronik: no import cycle, no private store access outside store/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "chronik"
#: Modules allowed past the size limit: the facade and generated code.
SIZE_EXEMPT = {"chronik.v1.chronik_pb2_grpc", "chronik.errors"}  # errors: the one tree
MAX_LINES = 400


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit_stmt(sub)
                continue
            visit_stmt(child)

    def visit_stmt(child: ast.AST) -> None:
        if isinstance(child, ast.Import | ast.ImportFrom):
            found.append(child)
        visit(child)

    visit(tree)
    return found


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def import_graph() -> dict[str, set[str]]:
    """Each chronik module to the chronik modules it imports at run time (lazy imports included)."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        for node in _runtime_imports(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = _resolve(name, path.name == "__init__.py", node)
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in modules else base)
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target.startswith("chronik") and target != name:
                    graph[name].add(target)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    result: list[list[str]] = []
    counter = 0

    def strong(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component: list[str] = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return result


def test_src_has_no_import_cycle() -> None:
    """No two chronik modules import each other, directly or through others (lazy imports count)."""
    cycles = find_cycles(import_graph())
    assert cycles == []


def test_the_cycle_finder_sees_a_cycle() -> None:
    """The checker itself reports a two-module cycle and a longer one."""
    assert find_cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c"]]


def test_the_graph_counts_lazy_imports_but_not_type_checking_ones() -> None:
    """An import inside a function is an edge; one under ``if TYPE_CHECKING:`` is not."""
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import x\n"
        "def f():\n    import y\n"
    )
    imports = [node for node in _runtime_imports(tree) if isinstance(node, ast.Import)]
    assert [alias.name for node in imports for alias in node.names] == ["y"]


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _is_store(node: ast.expr) -> bool:
    """``store``, ``self._store``, ``app.store`` ...: an expression naming a store."""
    name = node.id if isinstance(node, ast.Name) else getattr(node, "attr", "")
    return name in {"store", "_store"}


def test_nothing_outside_store_touches_a_store_private_attribute() -> None:
    """Code outside ``chronik.store`` reaches a store through its public seams only."""
    offenders: list[str] = []
    for name, path in _modules().items():
        if name.startswith("chronik.store"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and _is_store(node.value) and _private(node.attr):
                offenders.append(f"{path.relative_to(SRC)}:{node.lineno} .{node.attr}")
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in {"getattr", "hasattr", "setattr"}
                and len(node.args) >= 2
                and _is_store(node.args[0])
                and isinstance(node.args[1], ast.Constant)
                and _private(str(node.args[1].value))
            ):
                offenders.append(f"{path.relative_to(SRC)}:{node.lineno} {node.func.id}")
    assert offenders == []


@pytest.mark.parametrize("name", sorted(_modules()))
def test_module_stays_small(name: str) -> None:
    """Every module stays under ~400 lines, apart from generated code."""
    if name in SIZE_EXEMPT:
        return
    lines = len(_modules()[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines"


def test_every_folder_says_what_lives_there_and_what_it_may_import() -> None:
    """Each package's __init__ docstring names what it holds and what it may import."""
    missing = []
    for init in PACKAGE.rglob("__init__.py"):
        if init.parent.name == "v1":
            continue
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        if "import" not in doc.lower():
            missing.append(str(init.relative_to(SRC)))
    assert missing == []


#: The layers of src/chronik, bottom first: a module imports only its own layer and those below
#: (the README's architecture section draws the same picture).
LAYERS: list[set[str]] = [
    {"errors", "error_data", "bounded_close", "values", "ids", "adapters", "v1", "retry_policy"},
    {"messages", "dcb", "codec", "observability", "personal"},
    {"archive"},
    {"store"},
    {"transports", "replay_marks", "health", "deadline_events", "domain_model", "decider"},
    {"cluster"},
    {"lifecycle"},
    {"emitter"},
    {"dcb_decider"},
    {"aggregate_locks", "aggregate_lock_sweep"},
    {
        "middleware",
        "projections",
        "outbox",
        "outbox_tenants",
        "repository",
        "decisions",
        "outbox_rules",
        "saga_record",
    },
    {"commands", "dcb_dispatch", "aggregate", "deadlines"},
    {"reactions", "sagas"},
    {"app"},
    {
        "server",
        "client",
        "client_admin",
        "client_channel",
        "client_stream",
        "client_tls",
        "sdk",
        "subscriptions",
    },
    {"chronik", "cli", "testing"},
]


def _layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else "chronik"
    for rank, names in enumerate(LAYERS):
        if top in names:
            return rank
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS")


def test_imports_only_go_down_the_layers() -> None:
    """No module imports a module of a higher layer (lazy imports count)."""
    upward = [
        f"{a} -> {b}"
        for a, targets in import_graph().items()
        for b in targets
        if _layer(b) > _layer(a)
    ]
    assert upward == []

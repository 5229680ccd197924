"""No import cycle among cellgate's own modules (issue 8 item 4).

Every module under the packages of pyproject.toml's ``[tool.setuptools] package-dir`` (gateway/,
agent/, kernels/, cellgate/, notebook_ext/) is parsed with :mod:`ast`; each import of another
cellgate module is an edge: relative imports resolved, ``cellgate.gateway.x`` ↔ gateway/x.py,
imports inside functions counted too (a lazy import is still a cycle), ``if TYPE_CHECKING:``
blocks ignored. ``from pkg import name`` is an edge to ``pkg.name`` when that is a module, else to
``pkg``. Importing ``pkg.sub`` also runs ``pkg/__init__.py``, but that is no cycle: a package's
``__init__`` importing its own submodules is how packages work, so parents are not edges.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: known exceptions, each the set of modules of one strongly connected component; a cycle found
#: must lie within one of these. Empty: gateway/gate.py imports gateway/service.py only under
#: ``if TYPE_CHECKING:``, so it is no cycle. An entry added here is to be removed by the service
#: split (issue 8 item 1); none may involve NEVER_IN_CYCLE.
ALLOWED_CYCLES: set[frozenset[str]] = set()

#: areas that must never be part of a cycle, allowed or not
NEVER_IN_CYCLE = ("cellgate.gateway.risk", "cellgate.kernels.registry")


def package_dirs() -> dict[str, Path]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return {name: ROOT / path for name, path in config["tool"]["setuptools"]["package-dir"].items()}


def modules() -> dict[str, Path]:
    """Module name → file, for every module of every package directory."""
    found: dict[str, Path] = {}
    for package, directory in package_dirs().items():
        for path in sorted(directory.rglob("*.py")):
            parts = path.relative_to(directory).with_suffix("").parts
            if "__pycache__" in parts:
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((package, *parts))] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth, except those under ``if TYPE_CHECKING:``."""
    out: list[ast.Import | ast.ImportFrom] = []
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out.append(node)
            continue
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))
    return out


def _base(module: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute module a ``from … import`` names."""
    if not node.level:
        return node.module or ""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    parts = package.split(".")
    parts = parts[:len(parts) - (node.level - 1)]
    return ".".join([*parts, node.module] if node.module else parts)


def graph() -> dict[str, set[str]]:
    """Module → the cellgate modules it imports."""
    known = modules()
    edges: dict[str, set[str]] = {name: set() for name in known}
    for module, path in known.items():
        for node in _imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = _base(module, path, node)
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                           for alias in node.names]
            for target in targets:
                while target and target not in known:  # import cellgate.gateway.risk.sql.x → the module part
                    target = target.rpartition(".")[0]
                if target and target != module:
                    edges[module].add(target)
    return edges


def components(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(start: str) -> None:  # iterative: no recursion limit on deep import chains
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))

    for name in sorted(edges):
        if name not in index:
            visit(name)
    return found


def cycle_in(component: list[str], edges: dict[str, set[str]]) -> list[str]:
    """One concrete cycle through the component's first module: a → b → … → a."""
    members = set(component)
    start = component[0]
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for child in sorted(edges[node] & members):
            if child == start:
                return [*paths[node], start]
            if child not in paths:
                paths[child] = [*paths[node], child]
                queue.append(child)
    return component


def test_the_graph_sees_the_packages() -> None:
    edges = graph()
    assert "cellgate.gateway.risk.python" in edges
    assert "cellgate.gateway.risk.sql" in edges["cellgate.gateway.risk.python"]
    assert "cellgate.kernels.registry" in edges["cellgate.gateway.binding"]
    assert "cellgate.gateway.risk" in edges["cellgate.gateway.analysis"]  # from . import risk


def test_no_import_cycle() -> None:
    edges = graph()
    problems = []
    for component in components(edges):
        cycle = " → ".join(cycle_in(component, edges))
        if any(m == area or m.startswith(area + ".") for m in component for area in NEVER_IN_CYCLE):
            problems.append(f"cycle through the risk package or the registry: {cycle}")
        elif not any(set(component) <= allowed for allowed in ALLOWED_CYCLES):
            problems.append(f"import cycle: {cycle} (modules {', '.join(component)})")
    assert not problems, "\n".join(problems)


def test_the_detector_finds_a_lazy_cycle() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert components(edges) == [["a", "b", "c"]]
    assert cycle_in(["a", "b", "c"], edges) == ["a", "b", "c", "a"]
    tree = ast.parse("import x\nif TYPE_CHECKING:\n    import y\ndef f():\n    import z\n")
    assert sorted(n.names[0].name for n in _imports(tree)) == ["x", "z"]  # type: ignore[union-attr]


def test_every_package_is_listed_in_pyproject() -> None:
    """A subpackage missing from ``[tool.setuptools] packages`` is left out of the wheel."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    packages = {name for name, path in modules().items() if path.name == "__init__.py"}
    assert packages <= listed, sorted(packages - listed)

"""The project's import graph, read from the source (AST): every `import` and `from … import` in
`collector`, `l2_lake` and `l2_pipeline`, at any depth (inside functions and `TYPE_CHECKING` too),
resolved to the project's modules. `python -m l2_lake_tests.import_graph` prints its summary.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("collector", "l2_lake", "l2_pipeline")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules(packages: Iterable[str] = PACKAGES) -> dict[str, Path]:
    return {module_name(p): p for pkg in packages for p in sorted((ROOT / pkg).rglob("*.py"))}


def imported_names(path: Path, module: str) -> set[str]:
    """Every dotted name `path` imports; `from a import b` gives `a` and `a.b` (b may be a module)."""
    names: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module → the project modules it imports (a name resolves to its longest module prefix)."""
    edges: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = set()
        for name in imported_names(path, module):
            parts = name.split(".")
            for n in range(len(parts), 0, -1):
                candidate = ".".join(parts[:n])
                if candidate in modules:
                    if candidate != module:
                        targets.add(candidate)
                    break
        edges[module] = targets
    return edges


def external(modules: dict[str, Path], prefix: str) -> dict[str, set[str]]:
    """module → the names it imports that start with `prefix` (e.g. "dagster")."""
    found = {}
    for module, path in modules.items():
        hits = {n for n in imported_names(path, module) if n == prefix or n.startswith(prefix + ".")}
        if hits:
            found[module] = hits
    return found


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def package_of(module: str) -> str:
    return module.split(".")[0]


def subpackage_of(module: str) -> str:
    """`l2_lake.tiers.archive` → `l2_lake.tiers`; a top-level module of a package is its own."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 or (ROOT / Path(*parts)).is_dir() else module


def collapse(edges: dict[str, set[str]], key) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for source, targets in edges.items():
        out.setdefault(key(source), set()).update(key(t) for t in targets if key(t) != key(source))
    return out


def summary() -> str:
    modules = project_modules()
    edges = graph(modules)
    packages = collapse(edges, package_of)
    lines = [f"{len(modules)} modules in {len(PACKAGES)} packages; "
             f"{sum(len(t) for t in edges.values())} module imports"]
    for pkg in PACKAGES:
        count = sum(1 for m in modules if package_of(m) == pkg)
        lines.append(f"  {pkg}: {count} modules, imports {sorted(packages.get(pkg, ())) or 'nothing of ours'}")
    lines.append(f"module cycles: {cycles(edges) or 'none'}")
    lake = collapse({m: t for m, t in edges.items() if package_of(m) == "l2_lake"},
                    subpackage_of)
    lines.append(f"l2_lake subpackage cycles: {cycles(lake) or 'none'}")
    for sub in sorted(lake):
        lines.append(f"  {sub} -> {sorted(t for t in lake[sub] if package_of(t) == 'l2_lake')}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(summary())

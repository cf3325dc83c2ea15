"""Dependencies point one way: `collector` → `l2_lake` ← `l2_pipeline` (docs/DESIGN.md §1), read from
the source by `import_graph` (every import at any depth, `TYPE_CHECKING` ones included)."""

from __future__ import annotations

import subprocess
import sys

from l2_lake_tests.import_graph import (
    ROOT,
    collapse,
    cycles,
    external,
    graph,
    package_of,
    project_modules,
    subpackage_of,
)

# l2_lake's subpackages, lowest first: each may import only those before it (and the top-level
# helpers `logs`, `threads`)
LAKE_LAYERS = ("venues", "format", "store", "book", "quality", "tiers", "research", "pictures")


def test_the_lake_library_imports_neither_process_nor_dagster() -> None:
    modules = project_modules()
    lake = {m: p for m, p in modules.items() if package_of(m) == "l2_lake"}
    for forbidden in ("dagster", "collector", "l2_pipeline"):
        assert external(lake, forbidden) == {}, f"l2_lake imports {forbidden}"


def test_no_import_between_collector_and_pipeline() -> None:
    modules = project_modules()
    collector = {m: p for m, p in modules.items() if package_of(m) == "collector"}
    pipeline = {m: p for m, p in modules.items() if package_of(m) == "l2_pipeline"}
    assert external(collector, "l2_pipeline") == {}
    assert external(pipeline, "collector") == {}


def test_no_cycle_between_modules_or_lake_subpackages() -> None:
    edges = graph(project_modules())
    assert cycles(edges) == []
    lake = collapse({m: t for m, t in edges.items() if package_of(m) == "l2_lake"}, subpackage_of)
    assert cycles(lake) == []
    rank = {f"l2_lake.{name}": i for i, name in enumerate(LAKE_LAYERS)}
    upward = sorted((source, target) for source, targets in lake.items() if source in rank
                    for target in targets if target in rank and rank[target] > rank[source])
    assert upward == [], "an l2_lake subpackage imports one above it"


def test_every_pipeline_module_is_dagster() -> None:
    """Package `__init__` files only name their modules (and the root re-exports `read_books`). A module
    may import Dagster through one of its libraries (`l2_pipeline.celery_app`: dagster_celery)."""
    modules = project_modules(("l2_pipeline",))
    dagster = {**external(modules, "dagster"), **external(modules, "dagster_celery")}
    assert sorted(m for m, path in modules.items() if path.name != "__init__.py" and m not in dagster) == []


def test_the_graph_sees_a_cycle_and_a_forbidden_import(tmp_path) -> None:
    """The checks above can fail: a planted cycle and a planted upward import are found."""
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(edges) == [["a", "b", "c"]]
    planted = tmp_path / "planted.py"
    planted.write_text("def f():\n    from dagster import asset\n    import collector.app\n")
    assert external({"planted": planted}, "dagster") == {"planted": {"dagster", "dagster.asset"}}
    assert external({"planted": planted}, "collector") == {"planted": {"collector.app"}}


def test_the_capture_hot_path_loads_neither_pyarrow_nor_matplotlib() -> None:
    code = ("import sys, collector.app, collector.feed, collector.cli\n"
            "print(sorted(m for m in ('pyarrow', 'matplotlib', 'dagster', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

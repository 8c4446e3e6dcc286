"""The package graph: no import cycle between subpackages, and no import from a lower layer back
up to a higher one (every import, lazy ones included, read from the source with ``ast``)."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "unlearn"
# lower number = lower layer; a subpackage may import its own layer or lower ones
LAYERS = {
    "<root>": 0, "errors": 0,
    "memory": 1,
    "hub": 1, "identity": 1, "cache": 1, "uncertainty": 1, "config_check": 1, "config_resolvers": 2,
    "data": 2, "losses": 2, "aggregators": 2, "models": 2, "tracking": 2, "checkpoint": 2,
    "training": 3,
    "evaluation": 4,
    "results": 5, "judge": 5, "experiment": 5,
    "run": 6, "evaluate": 6,
}


def subpackage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "<root>"


def import_graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = ([node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
                       else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            for target in targets:
                if target.startswith("unlearn") and subpackage(target) != subpackage(module):
                    edges[subpackage(module)].add(subpackage(target))
    return edges


def test_every_subpackage_has_a_layer() -> None:
    names = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py" and p.stem not in ("__init__", "__main__")) or (p / "__init__.py").is_file()}
    assert names <= LAYERS.keys(), f"give these a layer in LAYERS: {sorted(names - LAYERS.keys())}"


def test_no_import_goes_up_a_layer() -> None:
    upward = sorted((a, b) for a, targets in import_graph().items() for b in targets if LAYERS[b] > LAYERS[a])
    assert not upward, f"lower layers import higher ones: {upward}"


def test_no_import_cycle_between_subpackages() -> None:
    edges = import_graph()
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            assert state.get(nxt) != 1, f"import cycle: {' -> '.join([*path, node, nxt])}"
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for start in sorted(edges):
        if start not in state:
            visit(start, [])

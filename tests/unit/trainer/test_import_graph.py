"""The trainer's modules import one another without cycles, and every name they import exists.

Function-local imports count too: some are local only to keep ``--help`` fast.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

TRAINER = Path(__file__).resolve().parents[3] / "trainer"


def _module_name(path: Path) -> str:
    parts = path.relative_to(TRAINER.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """Module → the trainer modules it imports, and the packages those imports run first."""
    modules = {_module_name(path): path for path in TRAINER.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets = [
                    f"{node.module}.{alias.name}"
                    if f"{node.module}.{alias.name}" in modules
                    else node.module
                    for alias in node.names
                ]
            else:
                continue
            for target in targets:
                dotted = target.split(".")
                for end in range(2, len(dotted) + 1):
                    imported = ".".join(dotted[:end])
                    # A module's own enclosing packages are already initialised when it runs.
                    if imported in modules and not f"{name}.".startswith(f"{imported}."):
                        graph[name].add(imported)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the list of modules along it, or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_trainer_has_no_import_cycle() -> None:
    graph = _import_graph()
    assert "trainer.metric_learning.losses" in graph  # the walk found the subpackages
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_every_name_imported_from_a_trainer_module_exists() -> None:
    missing = []
    for path in sorted(TRAINER.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("trainer"):
                module = importlib.import_module(node.module or "")
                missing += [
                    f"{path.relative_to(TRAINER.parent)}: {node.module}.{alias.name}"
                    for alias in node.names
                    if not hasattr(module, alias.name)
                    and importlib.util.find_spec(f"{node.module}.{alias.name}") is None
                ]
    assert not missing


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None

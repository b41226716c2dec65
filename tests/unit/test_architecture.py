"""The architecture holds: no import cycles, packages import only what they may, modules stay short.

The rules are those of ``README.md``'s layout table and the style guide: ``schemas`` imports no
project package and, beyond the standard library, only numpy and Pillow; ``configuration`` imports
``schemas``; ``trainer``, ``worker`` and ``client`` import ``schemas`` and ``configuration``
(``client`` never a model or Milvus library); nothing imports ``tests`` or ``bench``, and only
``devstack`` itself imports ``devstack``. Every import counts, function-local and
``TYPE_CHECKING`` ones included: some are local only to keep ``--help`` fast, and a cycle or a
forbidden dependency hidden in a function is still one.

Each rule is a function of the imports found, so each is also shown failing on a made-up case.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
PROJECT_PACKAGES = ("schemas", "configuration", "trainer", "worker", "client", "devstack")
#: Top-level names that are this repository's, not installed libraries.
PROJECT_NAMES = frozenset({*PROJECT_PACKAGES, "tests", "bench"})
#: Project packages each package may import besides itself.
MAY_IMPORT: Mapping[str, frozenset[str]] = {
    "schemas": frozenset(),
    "configuration": frozenset({"schemas"}),
    "trainer": frozenset({"schemas", "configuration"}),
    "worker": frozenset({"schemas", "configuration"}),
    "client": frozenset({"schemas", "configuration"}),
    # The demo and the local-stack helpers are a checkout tool: they may use any product package.
    "devstack": frozenset({"schemas", "configuration", "trainer", "worker", "client"}),
}
#: Packages whose third-party imports are limited to a list (the standard library is always fine).
THIRD_PARTY_ONLY: Mapping[str, frozenset[str]] = {"schemas": frozenset({"numpy", "PIL"})}
#: Third-party libraries a package must never import: users install the client without them.
THIRD_PARTY_NEVER: Mapping[str, frozenset[str]] = {
    "client": frozenset({"tensorflow", "keras", "jax", "pymilvus"}),
}
#: Folders holding the project's source (tests and benchmarks are exempt from the length limit).
SOURCE_DIRS = (*PROJECT_PACKAGES, "deploy")
MAX_MODULE_LINES = 300


@dataclass(frozen=True)
class Import:
    """One import statement of a project module.

    Attributes:
        module: The importing module (dotted).
        target: The imported module: ``X`` of ``import X`` or of ``from X import names``.
        names: The names of ``from X import names``; empty for ``import X``.
        line: Where the statement is.
    """

    module: str
    target: str
    names: tuple[str, ...] = ()
    line: int = 0


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _project_modules() -> dict[str, Path]:
    """Dotted name → file, for every module of the project packages."""
    return {
        _module_name(path): path
        for package in PROJECT_PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    }


def imports_in_source(module: str, source: str, *, is_package: bool = False) -> list[Import]:
    """Every import statement of a module, at any depth (function bodies, ``if TYPE_CHECKING``).

    Relative imports are resolved against ``module`` (a package's ``__init__`` when
    ``is_package``).
    """
    found: list[Import] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [Import(module, alias.name, (), node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = node.module or ""
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                base = package[: len(package) - node.level + 1]
                target = ".".join([*base, target] if target else base)
            names = tuple(alias.name for alias in node.names)
            found.append(Import(module, target, names, node.lineno))
    return found


def _project_imports() -> list[Import]:
    return [
        found
        for name, path in _project_modules().items()
        for found in imports_in_source(
            name, path.read_text(encoding="utf-8"), is_package=path.name == "__init__.py"
        )
    ]


def import_graph(modules: Iterable[str], imports: Iterable[Import]) -> dict[str, set[str]]:
    """Module → the project modules its imports run first (the packages on the way included)."""
    known = set(modules)
    graph: dict[str, set[str]] = {name: set() for name in known}
    for found in imports:
        targets = [found.target] + [
            f"{found.target}.{name}" for name in found.names if f"{found.target}.{name}" in known
        ]
        for target in targets:
            dotted = target.split(".")
            for end in range(1, len(dotted) + 1):
                imported = ".".join(dotted[:end])
                # A module's own enclosing packages are already initialised when it runs.
                if imported in known and not f"{found.module}.".startswith(f"{imported}."):
                    graph[found.module].add(imported)
    return graph


def find_cycle(graph: Mapping[str, set[str]]) -> list[str] | None:
    """One import cycle, as the list of modules along it, or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
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


def dependency_violations(imports: Iterable[Import]) -> list[str]:
    """Every import that breaks the layout's dependency rules, as ``module:line imports X (why)``."""
    broken = []
    for found in imports:
        package = found.module.split(".")[0]
        top = found.target.split(".")[0]
        where = f"{found.module}:{found.line} imports {found.target}"
        if top == package or top in sys.stdlib_module_names:
            continue
        if top in PROJECT_NAMES:
            if top not in MAY_IMPORT[package]:
                broken.append(f"{where} ({package} may import {sorted(MAY_IMPORT[package])})")
        elif package in THIRD_PARTY_ONLY and top not in THIRD_PARTY_ONLY[package]:
            allowed = sorted(THIRD_PARTY_ONLY[package])
            broken.append(f"{where} ({package} may use only {allowed} beyond the stdlib)")
        elif top in THIRD_PARTY_NEVER.get(package, ()):
            broken.append(f"{where} ({package} never imports {top})")
    return broken


def missing_names(imports: Iterable[Import]) -> list[str]:
    """Every ``from X import name`` of a project module ``X`` whose ``name`` does not exist."""
    missing = []
    for found in imports:
        if found.target.split(".")[0] not in PROJECT_NAMES or not found.names:
            continue
        module = importlib.import_module(found.target)
        missing += [
            f"{found.module}:{found.line}: {found.target}.{name}"
            for name in found.names
            if name != "*" and not _has(module, name)
        ]
    return missing


def _has(module: ModuleType, name: str) -> bool:
    """Whether ``from module import name`` finds an attribute or (in a package) a submodule."""
    if hasattr(module, name):
        return True
    is_package = hasattr(module, "__path__")
    return is_package and importlib.util.find_spec(f"{module.__name__}.{name}") is not None


def oversized_modules(paths: Iterable[Path], limit: int = MAX_MODULE_LINES) -> list[str]:
    """Every file of more than ``limit`` lines, as ``path: lines``."""
    counted = ((path, len(path.read_text(encoding="utf-8").splitlines())) for path in paths)
    return [
        f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: {lines}"
        for path, lines in counted
        if lines > limit
    ]


# -- the project ------------------------------------------------------------------------------


def test_the_walk_finds_every_package_and_its_subpackages() -> None:
    modules = _project_modules()
    assert {name.split(".")[0] for name in modules} == set(PROJECT_PACKAGES)
    assert "trainer.metric_learning.losses" in modules
    assert "worker.adapters.milvus.index" in modules


def test_no_import_cycle() -> None:
    cycle = find_cycle(import_graph(_project_modules(), _project_imports()))
    assert cycle is None, " -> ".join(cycle or [])


def test_each_package_imports_only_what_the_layout_allows() -> None:
    broken = dependency_violations(_project_imports())
    assert not broken, "\n".join(broken)


def test_every_name_imported_from_a_project_module_exists() -> None:
    missing = missing_names(_project_imports())
    assert not missing, "\n".join(missing)


def test_no_module_is_over_300_lines() -> None:
    sources = [path for folder in SOURCE_DIRS for path in sorted((ROOT / folder).rglob("*.py"))]
    oversized = oversized_modules(sources)
    assert not oversized, "split these modules along a concept:\n" + "\n".join(oversized)


# -- each rule catches what it is for ---------------------------------------------------------


def test_the_scan_counts_function_local_type_checking_and_relative_imports() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from worker.ports import Embedder\n"
        "def main() -> None:\n"
        "    import trainer.cli\n"
        "from .sibling import thing\n"
        "from .. import other\n"
    )
    targets = {found.target for found in imports_in_source("client.tools.follow", source)}
    assert {"worker.ports", "trainer.cli", "client.tools.sibling", "client"} <= targets
    in_package = imports_in_source("client.tools", "from . import follow\n", is_package=True)
    assert [(found.target, found.names) for found in in_package] == [("client.tools", ("follow",))]


def test_the_graph_links_a_module_to_what_its_imports_run() -> None:
    modules = {"a", "a.b", "a.b.c", "d"}
    imports = [Import("d", "a.b", ("c",)), Import("a.b.c", "a.b", ("x",))]
    graph = import_graph(modules, imports)
    assert graph["d"] == {"a", "a.b", "a.b.c"}
    assert graph["a.b.c"] == set()  # its own packages are initialised before it runs


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    graph = import_graph({"x", "y"}, [Import("x", "y"), Import("y", "x", ("f",))])
    assert find_cycle(graph) == ["x", "y", "x"]


def test_the_dependency_rules_catch_each_forbidden_import() -> None:
    forbidden = [
        Import("schemas.vote", "configuration"),
        Import("schemas.vote", "requests"),
        Import("schemas.vote", "pydantic.fields", ("Field",)),
        Import("configuration.kafka", "worker.settings"),
        Import("trainer.cli.split", "worker.core"),
        Import("worker.core", "trainer.model"),
        Import("client.follow", "tensorflow"),
        Import("client.follow", "keras.ops"),
        Import("client.follow", "jax.numpy"),
        Import("client.follow", "pymilvus", ("MilvusClient",)),
        Import("client.follow", "trainer"),
        Import("worker.cli", "devstack.processes"),
        Import("trainer.data", "tests.conftest"),
        Import("devstack.demo", "bench.bench_worker"),
    ]
    assert [len(dependency_violations([found])) for found in forbidden] == [1] * len(forbidden)


def test_the_dependency_rules_allow_what_the_layout_allows() -> None:
    allowed = [
        Import("schemas.preprocessing", "numpy"),
        Import("schemas.preprocessing", "PIL", ("Image",)),
        Import("schemas.preprocessing", "schemas.errors", ("InputError",)),
        Import("schemas.tag_event", "dataclasses"),
        Import("configuration.kafka", "schemas.tag_event"),
        Import("configuration.base", "pydantic_settings"),
        Import("trainer.model", "configuration"),
        Import("trainer.model", "keras"),
        Import("worker.core", "schemas.vote"),
        Import("worker.adapters.milvus.index", "pymilvus"),
        Import("client.follow", "kafka"),
        Import("devstack.demo", "worker.cli"),
    ]
    assert dependency_violations(allowed) == []


def test_a_name_that_does_not_exist_is_reported() -> None:
    imports = [
        Import("client.follow", "schemas.tag_event", ("TagEvent", "NoSuchEvent"), 7),
        Import("worker.core", "schemas", ("vote",), 8),  # a submodule, not an attribute
        Import("worker.core", "numpy", ("no_such_numpy_name",), 9),  # not a project module
    ]
    assert missing_names(imports) == ["client.follow:7: schemas.tag_event.NoSuchEvent"]


def test_a_module_over_the_limit_is_named(tmp_path: Path) -> None:
    at_limit, over = tmp_path / "at_limit.py", tmp_path / "over.py"
    at_limit.write_text("x = 1\n" * MAX_MODULE_LINES, encoding="utf-8")
    over.write_text("x = 1\n" * (MAX_MODULE_LINES + 1), encoding="utf-8")
    assert oversized_modules([at_limit, over]) == [f"{over}: {MAX_MODULE_LINES + 1}"]

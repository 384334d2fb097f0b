"""The import contract: layers only import downward, runners never import each other, no import cycles.

Every ``import`` statement counts, including the ones inside functions (llmtune imports heavy
libraries lazily, so a module-level-only check would miss most edges). The layers, top to bottom,
are ``LAYERS``; a module may import its own layer or any layer below it. The task registry
(``llmtune.tasks.registry``: names, columns, heads; data only) sits at the bottom so the config
schema and the CLI can read it; the task implementations sit in the tasks layer.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "llmtune"

LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("cli", ("llmtune.cli", "llmtune.__main__")),
    ("pipelines", ("llmtune.pipelines",)),
    ("runs", ("llmtune.runs", "llmtune.launch")),
    ("data, tasks, serve", ("llmtune.data", "llmtune.tasks", "llmtune.serve")),
    ("engine", ("llmtune.engine",)),
    ("models", ("llmtune.decoding", "llmtune.modeling", "llmtune.adapters", "llmtune.tokenizer", "llmtune.reports",
                "llmtune.chat_template", "llmtune.compress")),
    ("base", ("llmtune.config", "llmtune.metrics", "llmtune.hub", "llmtune.errors", "llmtune.dist", "llmtune.rundir",
              "llmtune.tasks.registry", "llmtune")),
]
RUNNERS = "llmtune.runs"
SHARED_BY_RUNNERS = {"llmtune.runs", "llmtune.runs.common"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """The llmtune modules ``path`` imports anywhere in its body (``from pkg import mod`` resolves to ``pkg.mod``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "llmtune")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "llmtune":
            subs = {f"{node.module}.{a.name}" for a in node.names} & set(modules)
            found.update(subs or {node.module})
    return found


def graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {name: imports_of(path, modules) for name, path in modules.items()}


def rank(module: str) -> int:
    """Index in ``LAYERS`` of the longest matching prefix (0 = top)."""
    best, best_len = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    assert best is not None, f"{module} is in no layer: add it to LAYERS in {__file__}"
    return best


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
    return sorted(f"{src} ({LAYERS[rank(src)][0]}) imports {dst} ({LAYERS[rank(dst)][0]})"
                  for src, targets in edges.items() for dst in targets if rank(dst) < rank(src))


def runner_imports(edges: dict[str, set[str]]) -> list[str]:
    def is_runner(m: str) -> bool:
        return m.startswith(RUNNERS + ".") and m not in SHARED_BY_RUNNERS

    return sorted(f"{src} imports {dst}" for src, targets in edges.items() if is_runner(src)
                  for dst in targets if is_runner(dst) and dst != src)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
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


@pytest.fixture(scope="module")
def edges() -> dict[str, set[str]]:
    return graph()


def test_every_module_has_a_layer(edges: dict[str, set[str]]) -> None:
    for module in edges:
        rank(module)


def test_no_module_imports_a_layer_above_it(edges: dict[str, set[str]]) -> None:
    assert upward_imports(edges) == []


def test_no_runner_imports_another_runner(edges: dict[str, set[str]]) -> None:
    assert runner_imports(edges) == []


def test_no_import_cycles(edges: dict[str, set[str]]) -> None:
    assert cycles(edges) == []


def test_the_checks_catch_what_they_are_for() -> None:
    """Hand-made graphs: an upward import, a runner importing a runner, and a two-module cycle."""
    assert upward_imports({"llmtune.decoding": {"llmtune.runs.common"}}) == [
        "llmtune.decoding (models) imports llmtune.runs.common (runs)"]
    assert upward_imports({"llmtune.config.schema": {"llmtune.tasks.registry"}}) == []
    assert runner_imports({"llmtune.runs.evaluate": {"llmtune.runs.finetune", "llmtune.runs.common"}}) == [
        "llmtune.runs.evaluate imports llmtune.runs.finetune"]
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert cycles({"a": {"b"}, "b": set()}) == []

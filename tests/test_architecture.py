"""The layering of the house: no import cycles, and the data layer imports nothing above itself.

Imports are read from the source (module level and inside functions alike), so a deferred import that
hides a cycle from Python's loader is still a cycle here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# what augkit/data/ may import of augkit: itself and the layers below it
DATA_MAY_IMPORT = {"augkit", "augkit.errors", "augkit.atomic", "augkit.params", "augkit.progress"}


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for augkit/ and each package under plugins/ (packaged with augkit, or
    a distribution of its own: a folder with its own pyproject.toml, whose packages sit inside it)."""
    found = {}
    plugins = ROOT / "plugins"
    distributions = [d for d in plugins.iterdir() if (d / "pyproject.toml").is_file()]
    roots = [(ROOT / "augkit", 1), (plugins, 0), *((d, 0) for d in distributions)]
    for base, prefix_parts in roots:
        for path in base.rglob("*.py"):
            inside = path.relative_to(base).parts
            if "build" in inside or (base == plugins and (plugins / inside[0]) in distributions):
                continue
            parts = list(path.relative_to(base.parent if prefix_parts else base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _owner(name: str) -> str | None:
    """The module of ours that ``name`` lives in (a name imported from a module resolves to the module)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str) -> set[str]:
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    deps = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import sub` imports the submodule when there is one, else a name of pkg
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        deps.update(owner for t in targets if (owner := _owner(t)) is not None)
    deps.discard(module)
    return deps


GRAPH = {m: _imports(m) for m in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
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
    return found


def test_the_walker_sees_the_imports_it_must():
    # the check is only as good as the graph: known edges, including a function-level import
    assert "augkit.errors" in GRAPH["augkit.data.reader"]
    assert "augkit.runner" in GRAPH["augkit.cli.run"]  # imported inside command functions
    assert "augkit_gan.networks" in GRAPH["augkit_gan.augmenters"]  # a relative or absolute import in a plugin
    assert "augkit_diffusion.sampler" in GRAPH["augkit_diffusion.augmenter"]  # a plugin distribution of its own
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    assert _cycles(GRAPH) == []


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m == "augkit.data" or m.startswith("augkit.data.")))
def test_the_data_layer_imports_nothing_above_itself(module):
    above = {d for d in GRAPH[module] if d.startswith("augkit") and not d.startswith("augkit.data")
             and d not in DATA_MAY_IMPORT}
    assert above == set(), f"{module} imports {sorted(above)}"

"""No import circle between our modules: the imports of every module (top-level and function-local), read with ``ast``.

A circle makes the import order decide whether a name exists yet; a module layout by concern should not need one.
Modules: ``nnunetv2_advmim/`` plus ``architectures/`` and ``trainers/`` under their installed names
(``nnunetv2_advmim.architectures.*``, ``nnunetv2_advmim.trainers.*``).
"""
import ast
import os
from typing import Dict, List, Set

from helpers import REPO

PACKAGE = "nnunetv2_advmim"
ROOTS = {PACKAGE: os.path.join(REPO, PACKAGE), f"{PACKAGE}.architectures": os.path.join(REPO, "architectures"),
         f"{PACKAGE}.trainers": os.path.join(REPO, "trainers")}


def our_modules() -> Dict[str, str]:
    """Dotted module name -> file, for every .py file of the package."""
    modules = {}
    for root_name, folder in ROOTS.items():
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            rel = os.path.relpath(dirpath, folder)
            prefix = root_name if rel == "." else root_name + "." + rel.replace(os.sep, ".")
            for f in filenames:
                if f.endswith(".py"):
                    modules[prefix if f == "__init__.py" else f"{prefix}.{f[:-3]}"] = os.path.join(dirpath, f)
    return modules


def import_graph(modules: Dict[str, str]) -> Dict[str, Set[str]]:
    """Module -> our modules it imports. Importing ``a.b.c`` also runs the ``__init__`` of ``a.b`` unless the importer
    lives inside ``a.b`` (a package importing its own modules from its ``__init__`` is no circle)."""
    graph = {m: set() for m in modules}
    for name, path in modules.items():
        is_package = path.endswith("__init__.py")
        with open(path) as f:
            tree = ast.parse(f.read(), path)
        targets: List[str] = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets += [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative import: resolve against the importer's package
                    base = name if is_package else name.rsplit(".", 1)[0]
                    base = ".".join(base.split(".")[:len(base.split(".")) - node.level + 1])
                    module = f"{base}.{node.module}" if node.module else base
                else:
                    module = node.module
                targets += [f"{module}.{a.name}" if f"{module}.{a.name}" in modules else module for a in node.names]
        own_packages = {name.rsplit(".", i)[0] for i in range(name.count(".") + 1)}
        for t in targets:
            parts = t.split(".")
            for i in range(2, len(parts) + 1):  # the package itself (nnunetv2_advmim/__init__) imports nothing
                m = ".".join(parts[:i])
                if m in modules and m != name and (m == t or m not in own_packages):
                    graph[name].add(m)
    return graph


def find_cycle(graph: Dict[str, Set[str]]) -> List[str]:
    """One import circle as [a, b, ..., a], or [] when there is none (depth-first search)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        state[node] = "done"
        stack.pop()
        return []

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return []


def test_find_cycle_on_small_graphs():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_the_package_has_no_import_cycle():
    modules = our_modules()
    graph = import_graph(modules)
    assert f"{PACKAGE}.methods.advmim" in modules and f"{PACKAGE}.trainers.nnUNetTrainerAdvMIM" in modules
    assert f"{PACKAGE}.methods.advmim" in graph[f"{PACKAGE}.trainers.nnUNetTrainerAdvMIM"]  # the walk sees imports
    cycle = find_cycle(graph)
    assert not cycle, "import cycle: " + " -> ".join(cycle)

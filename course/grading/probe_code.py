"""What a worker is sent to run a probe: the probe function and what it needs, never the file.

A probe module (``graders/<slug>/probes.py``) is hidden material: its other functions, constants,
comments and docstrings say what the hidden tests look at. The worker runs student code, so
whatever it is sent the student can read. :func:`probe_spec` therefore sends the minimum: the
source of the one function asked for and, transitively, the module-level definitions and imports
it refers to by name, in their original order. Never a pickle.
"""

from __future__ import annotations

import ast
import hashlib
import sys
from pathlib import Path
from typing import Any, Callable

_SPECS: dict[tuple[str, str, str], dict[str, str]] = {}


def probe_spec(probe: Callable[..., Any]) -> dict[str, str]:
    """``{"module", "source", "function"}``: what the worker needs to run ``probe``."""
    module = sys.modules.get(getattr(probe, "__module__", ""), None)
    name = getattr(probe, "__name__", "")
    if module is None or getattr(module, name, None) is not probe or not getattr(module, "__file__", None):
        raise TypeError(f"{probe!r} is not a module-level function of a probes module")
    text = Path(module.__file__).read_text(encoding="utf-8")
    key = (module.__name__, hashlib.sha256(text.encode()).hexdigest(), name)
    spec = _SPECS.get(key)
    if spec is None:
        spec = {"module": module.__name__.rsplit(".", 1)[-1], "source": minimal_source(text, name),
                "function": name}
        _SPECS[key] = spec
    return spec


# ------------------------------------------------------------------ dependency slicing

def _bound_names(node: ast.stmt) -> set[str]:
    """Module-level names a top-level statement binds."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return {(a.asname or a.name).split(".")[0] for a in node.names if a.name != "*"}
    targets: list[ast.expr] = []
    if isinstance(node, ast.Assign):
        targets = list(node.targets)
    elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
        targets = [node.target]
    names = set()
    for t in targets:
        names |= {n.id for n in ast.walk(t) if isinstance(n, ast.Name)}
    return names


def _used_names(node: ast.AST) -> set[str]:
    """Every name read anywhere inside ``node`` (over-approximates free variables: safe)."""
    used = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
    for n in ast.walk(node):  # `global x` / `nonlocal x` refer to module names too
        if isinstance(n, (ast.Global, ast.Nonlocal)):
            used |= set(n.names)
    return used


def _import_subset(node: ast.Import | ast.ImportFrom, wanted: set[str]) -> str:
    aliases = [a for a in node.names if (a.asname or a.name).split(".")[0] in wanted]
    if isinstance(node, ast.Import):
        return ast.unparse(ast.Import(names=aliases))
    return ast.unparse(ast.ImportFrom(module=node.module, names=aliases, level=node.level))


def _strip_docstrings(tree: ast.AST) -> None:
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                node.body = node.body[1:] or [ast.Pass()]


def minimal_source(text: str, function: str) -> str:
    """Source of ``function`` and of the module-level statements it needs, nothing else.

    Definitions are re-emitted from the syntax tree (``ast.unparse``): comments and docstrings
    do not travel. ``from __future__`` imports are kept (they change how the rest compiles).
    """
    tree = ast.parse(text)
    body = tree.body
    definers: dict[str, list[int]] = {}
    for i, node in enumerate(body):
        for name in _bound_names(node):
            definers.setdefault(name, []).append(i)
    if function not in definers:
        raise TypeError(f"no module-level function {function!r} in this probes module")
    keep: set[int] = set()
    wanted_names: set[str] = set()
    todo = [function]
    while todo:
        name = todo.pop()
        if name in wanted_names:
            continue
        wanted_names.add(name)
        for i in definers.get(name, []):
            if i in keep and not isinstance(body[i], (ast.Import, ast.ImportFrom)):
                continue
            keep.add(i)
            if not isinstance(body[i], (ast.Import, ast.ImportFrom)):
                todo.extend(_used_names(body[i]) - wanted_names)
    out = []
    for i, node in enumerate(body):
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            out.append(ast.unparse(node))
        elif i in keep:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                out.append(_import_subset(node, wanted_names))
            else:
                _strip_docstrings(node)
                out.append(ast.unparse(node))
    return "\n\n".join(out) + "\n"

"""Checks of *how* a submission is written, made on its source in the trusted process.

Some tasks have rules about the means, not the result: "write softmax yourself", "no Python loop
over tokens". Nothing observed inside the worker can prove such a rule (the student owns that
interpreter: the same kernels are reachable under other names, clocks and counters can be
patched), so these checks read the submission's files as collected, on the trusted side, and
parse them with :mod:`ast`. They are conservative: code whose behaviour cannot be known from its
text (``eval``, ``getattr`` with a computed name, ``torch.ops``, ``sys.modules`` ...) fails them.

Usage in a hidden test::

    index = static.SourceIndex(submission.root)
    found = static.forbidden_uses(index, "attention.masked_softmax", static.TORCH_SOFTMAX)
    assert not found, static.describe(found)
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

MAX_SOURCE_BYTES = 2 * 2**20

# Names that reach torch's own softmax / attention (and other libraries' equivalents).
TORCH_SOFTMAX = frozenset({"softmax", "log_softmax", "softmin", "_softmax", "_log_softmax", "special_softmax",
                           "Softmax", "LogSoftmax", "Softmin", "Softmax2d", "gumbel_softmax"})
TORCH_ATTENTION = frozenset({"scaled_dot_product_attention", "MultiheadAttention", "multi_head_attention_forward",
                             "_scaled_dot_product_attention_math", "_scaled_dot_product_flash_attention",
                             "_scaled_dot_product_efficient_attention", "sdpa_kernel", "flex_attention"})

# Constructs whose effect cannot be read from the source: code that uses them proves nothing.
DYNAMIC_BUILTINS = frozenset({"eval", "exec", "compile", "__import__", "globals", "vars", "breakpoint"})
DYNAMIC_CALLS = frozenset({"attrgetter", "methodcaller", "import_module", "FunctionType", "CodeType"})
DYNAMIC_ATTRS = frozenset({"ops", "_C", "_VF", "library", "modules", "__dict__", "__getattribute__",
                           "__builtins__", "__code__", "__globals__", "_ops", "__class__"})
DYNAMIC_MODULES = frozenset({"importlib", "ctypes", "builtins", "marshal", "pickle", "inspect", "types",
                             "operator", "dill", "cloudpickle", "runpy", "imp", "gc"})
NAMED_ATTR_CALLS = frozenset({"getattr", "setattr", "delattr", "hasattr"})
LOOP_CALLS = frozenset({"map", "filter", "reduce", "starmap", "accumulate"})


def read_source(root: Path, filename: str) -> str:
    """The text of ``root/filename`` (a regular file inside ``root``), capped; '' when absent."""
    root = Path(root).resolve()
    path = (root / filename).resolve()
    if root not in path.parents or path.is_symlink() or not path.is_file():
        return ""
    data = path.read_bytes()[:MAX_SOURCE_BYTES]
    return data.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class Finding:
    file: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.what}"


def describe(findings: Iterable[Finding], limit: int = 5) -> str:
    items = list(findings)
    text = "; ".join(str(f) for f in items[:limit])
    return text + (f" (and {len(items) - limit} more)" if len(items) > limit else "")


class _Module:
    def __init__(self, name: str, file: str, text: str):
        self.name, self.file = name, file
        self.error: str | None = None
        try:
            self.tree = ast.parse(text)
        except (SyntaxError, ValueError) as exc:
            self.tree, self.error = ast.Module(body=[], type_ignores=[]), f"cannot be parsed ({exc.msg if isinstance(exc, SyntaxError) else exc})"
        self.defs: dict[str, ast.AST] = {}          # module-level def/class
        self.aliases: dict[str, list[ast.stmt]] = {}  # other module-level bindings (assignments, imports)
        self.imports: dict[str, tuple[str, str | None]] = {}  # local name -> (module, attribute or None)
        for node in self.tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                self.defs[node.name] = node
            elif isinstance(node, ast.Import):
                for a in node.names:
                    local = (a.asname or a.name).split(".")[0]
                    self.imports[local] = (a.name if a.asname else a.name.split(".")[0], None)
                    self.aliases.setdefault(local, []).append(node)
            elif isinstance(node, ast.ImportFrom):
                for a in node.names:
                    self.imports[a.asname or a.name] = ("." * node.level + (node.module or ""), a.name)
                    self.aliases.setdefault(a.asname or a.name, []).append(node)
            else:
                for target in _targets(node):
                    self.aliases.setdefault(target, []).append(node)


def _targets(node: ast.stmt) -> set[str]:
    nodes: list[ast.AST] = []
    if isinstance(node, ast.Assign):
        nodes = list(node.targets)
    elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
        nodes = [node.target]
    elif isinstance(node, (ast.For, ast.With, ast.If, ast.Try)):
        nodes = [node]
    return {n.id for t in nodes for n in ast.walk(t) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}


class SourceIndex:
    """Every ``*.py`` file of a submission (folders as packages), parsed here."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.modules: dict[str, _Module] = {}
        for path in sorted(self.root.rglob("*.py")):
            if path.is_symlink() or not path.is_file() or any(p.startswith(".") for p in path.relative_to(self.root).parts):
                continue
            rel = path.relative_to(self.root)
            parts = list(rel.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if parts:
                self.modules[".".join(parts)] = _Module(".".join(parts), rel.as_posix(), read_source(self.root, rel.as_posix()))

    def resolve(self, target: str) -> tuple[_Module, ast.AST] | None:
        """``module.name`` or ``module.Class.method`` -> its definition, if the submission has it."""
        module_name, _, rest = target.partition(".")
        module = self.modules.get(module_name)
        if module is None or not rest:
            return None
        first, _, method = rest.partition(".")
        node = module.defs.get(first)
        if node is None:
            return None
        if method and isinstance(node, ast.ClassDef):
            node = next((n for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                         and n.name == method), None)
            if node is None:
                return None
        return module, node

    def reachable(self, target: str) -> list[tuple[_Module, ast.AST]]:
        """The definition of ``target`` and every definition of the submission it can reach by name:
        module-level functions and classes (all their methods), the module-level statements that
        bind names it uses, and what it imports from the submission's other modules. Every
        module's top-level code that is not a definition or a plain binding is included too: it
        runs at import and can change anything."""
        start = self.resolve(target)
        if start is None:
            return []
        seen: dict[int, tuple[_Module, ast.AST]] = {}
        todo = [start]
        for module in self.modules.values():
            for node in module.tree.body:
                if _runs_at_import(node):
                    todo.append((module, node))
        while todo:
            module, node = todo.pop()
            if id(node) in seen:
                continue
            seen[id(node)] = (module, node)
            for name in _names_in(node):
                todo.extend(self._lookup(module, name))
        return list(seen.values())

    def _lookup(self, module: _Module, name: str) -> list[tuple[_Module, ast.AST]]:
        found: list[tuple[_Module, ast.AST]] = []
        if name in module.defs:
            found.append((module, module.defs[name]))
        found += [(module, node) for node in module.aliases.get(name, [])]
        if name in module.imports:
            source, attr = module.imports[name]
            other = self.modules.get(source.lstrip("."))
            if other is not None:
                if attr is None:   # `import helpers`: everything of it may be used
                    found += [(other, n) for n in other.tree.body]
                else:
                    found += self._lookup(other, attr)
        return found


def _runs_at_import(node: ast.stmt) -> bool:
    """Top-level code that is more than a definition or a plain name binding (it can patch anything)."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom)):
        return False
    if isinstance(node, ast.Expr):
        return not isinstance(node.value, ast.Constant)
    if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return not all(isinstance(t, (ast.Name, ast.Tuple)) for t in targets)
    return True


def _names_in(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _student_names(index: SourceIndex) -> set[str]:
    """Names the submission defines itself (functions, classes, methods): not library names."""
    names = set()
    for module in index.modules.values():
        for node in ast.walk(module.tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
    return names


def _unparsable(index: SourceIndex, target: str) -> list[Finding]:
    module = index.modules.get(target.split(".")[0])
    if module is None:
        return [Finding(target.split(".")[0] + ".py", 0, "the file is missing")]
    found = [Finding(m.file, 0, m.error) for m in index.modules.values() if m.error]
    if not found and index.resolve(target) is None:
        found.append(Finding(module.file, 0, f"no definition of {target.split('.', 1)[1]} in the file "
                                             "(it must be written there, not assigned or generated)"))
    return found


def dynamic_code(index: SourceIndex, target: str) -> list[Finding]:
    """Constructs in the code ``target`` reaches whose effect cannot be read from the source."""
    found = _unparsable(index, target)
    for module, node in index.reachable(target):
        for n in ast.walk(node):
            if isinstance(n, ast.Call):
                name = _call_name(n.func)
                if (isinstance(n.func, ast.Name) and name in DYNAMIC_BUILTINS) or name in DYNAMIC_CALLS:
                    found.append(Finding(module.file, n.lineno, f"{name}(...) runs code the grader cannot read"))
                elif name in NAMED_ATTR_CALLS and not (len(n.args) >= 2 and isinstance(n.args[1], ast.Constant)):
                    found.append(Finding(module.file, n.lineno, f"{name} with a computed attribute name"))
            elif isinstance(n, ast.Attribute) and n.attr in DYNAMIC_ATTRS:
                found.append(Finding(module.file, n.lineno, f"'.{n.attr}' reaches code by a name the grader cannot read"))
            elif isinstance(n, ast.Attribute) and n.attr.startswith("_") and not n.attr.startswith("__") \
                    and _root_name(n) in module.imports:
                found.append(Finding(module.file, n.lineno, f"the private library name '.{n.attr}'"))
            elif isinstance(n, (ast.Import, ast.ImportFrom)):
                mods = [a.name for a in n.names] if isinstance(n, ast.Import) else [n.module or ""]
                for m in mods:
                    if m.split(".")[0] in DYNAMIC_MODULES or m.startswith(("torch._", "torch.ops")):
                        found.append(Finding(module.file, n.lineno, f"imports {m}"))
    return _unique(found)


def forbidden_uses(index: SourceIndex, target: str, names: Iterable[str]) -> list[Finding]:
    """Uses of any of ``names`` (as attribute, imported name, bare name or string) in the code that
    ``target`` reaches, plus every :func:`dynamic_code` finding. The submission's own definitions
    (``masked_softmax``, a method ``self.softmax`` of its own class) are not library uses."""
    names = frozenset(names)
    own = _student_names(index)
    found = dynamic_code(index, target)
    for module, node in index.reachable(target):
        for n in ast.walk(node):
            hit = None
            if isinstance(n, ast.Attribute) and n.attr in names:
                is_self = isinstance(n.value, ast.Name) and n.value.id in ("self", "cls") and n.attr in own
                hit = None if is_self else f"'.{n.attr}'"
            elif isinstance(n, ast.Name) and n.id in names and n.id not in own:
                hit = f"'{n.id}'"
            elif isinstance(n, ast.alias) and n.name.split(".")[-1] in names:
                hit = f"imports {n.name}"
            elif isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value.strip(" ._") in names:
                hit = f"the string {n.value[:40]!r}"
            if hit:
                found.append(Finding(module.file, getattr(n, "lineno", getattr(node, "lineno", 0)), f"uses {hit}"))
    return _unique(found)


def python_loops(index: SourceIndex, target: str) -> list[Finding]:
    """Python-level iteration in the code ``target`` reaches: ``for``/``while`` statements,
    comprehensions, ``map``/``filter``/``reduce``, and recursion, plus every :func:`dynamic_code`
    finding. Iterating over a literal tuple or list (``for t in (q, k, v)``) or over a tensor's
    ``.shape`` is not counted: its length does not grow with the data."""
    found = dynamic_code(index, target)
    for module, node in index.reachable(target):
        for n in ast.walk(node):
            if isinstance(n, (ast.For, ast.AsyncFor)) and not _fixed_iterable(n.iter):
                found.append(Finding(module.file, n.lineno, "a for loop"))
            elif isinstance(n, ast.While):
                found.append(Finding(module.file, n.lineno, "a while loop"))
            elif isinstance(n, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)) \
                    and not all(_fixed_iterable(g.iter) for g in n.generators):
                found.append(Finding(module.file, n.lineno, "a comprehension"))
            elif isinstance(n, ast.Call) and _call_name(n.func) in LOOP_CALLS:
                found.append(Finding(module.file, n.lineno, f"{_call_name(n.func)}(...)"))
            elif isinstance(n, ast.Call) and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) \
                    and isinstance(n.func, ast.Name) and n.func.id == node.name:   # F.x(...) is another x
                found.append(Finding(module.file, n.lineno, f"{node.name} calls itself"))
    return _unique(found)


def _fixed_iterable(node: ast.expr) -> bool:
    if isinstance(node, (ast.Tuple, ast.List)):
        return True
    if isinstance(node, ast.Attribute) and node.attr == "shape":
        return True
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "size" and not node.args:
        return True
    if isinstance(node, ast.Call) and _call_name(node.func) in ("zip", "enumerate", "reversed"):
        return all(_fixed_iterable(a) for a in node.args)
    return False


def _root_name(node: ast.expr) -> str:
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else ""


def _call_name(func: ast.expr) -> str:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return ""


def _unique(found: list[Finding]) -> list[Finding]:
    out, seen = [], set()
    for f in sorted(found, key=lambda f: (f.file, f.line, f.what)):
        if (f.file, f.line, f.what) not in seen:
            seen.add((f.file, f.line, f.what))
            out.append(f)
    return out

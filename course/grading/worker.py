"""Runs next to student code (inside the sandbox): imports student modules, serves calls and probes.

Nothing here decides a grade. The worker receives a request frame, runs the student function (or
a probe from ``graders/<slug>/probes.py`` whose *source* the trusted process sent), and replies
with data only. Whatever the student's code does, what leaves this process is a wire frame.

Requests::

    {"op": "call", "target": "attention.causal_mask", "args": [...], "kwargs": {...}}
    {"op": "run", "probe": {"module": "probes", "source": "...", "function": "train_steps"},
     "args": [...], "kwargs": {...}}
    {"op": "import", "module": "attention"}
    {"op": "ping"}

Replies: ``{"ok": True, "value": ...}`` or ``{"ok": False, "error": {...}}``.
"""

from __future__ import annotations

import builtins
import hashlib
import importlib
import os
import sys
import traceback
import types
from pathlib import Path
from typing import Any, Callable

from course.grading import wire

MAX_MESSAGE = 2000


def _builtin_base(exc: BaseException) -> str:
    """The nearest built-in exception class of ``exc`` (so ``pytest.raises(ValueError)`` works)."""
    for cls in type(exc).__mro__:  # identity, not names: a class may call itself builtins.ValueError
        if isinstance(cls.__name__, str) and getattr(builtins, cls.__name__, None) is cls:
            return cls.__name__
    return "Exception"


def _safe_str(exc: BaseException) -> str:
    try:
        text = str(exc)
    except BaseException:  # a hostile __str__
        text = "<the exception's message could not be read>"
    if type(text) is not str:
        text = "<the exception's message is not a string>"
    return text[:MAX_MESSAGE]


def _type_name(cls: type) -> str:
    module, name = getattr(cls, "__module__", None), getattr(cls, "__qualname__", None)
    module = module if type(module) is str else "?"
    name = name if type(name) is str else "?"
    return f"{module}.{name}"[:200]


def describe_exception(exc: BaseException, root: Path) -> dict[str, Any]:
    """An exception as data: type, nearest built-in base, message, and the frames in student files."""
    frames = []
    tb = exc.__traceback__
    root_text = str(root)
    for frame in traceback.extract_tb(tb) if tb is not None else []:
        filename = frame.filename or ""
        if filename.startswith(root_text + os.sep):
            frames.append([os.path.relpath(filename, root_text), frame.lineno or 0, frame.name])
    if isinstance(exc, SystemExit):
        code = exc.code if exc.code is None or type(exc.code) in (int, str) else type(exc.code).__name__
        message = f"the submission called sys.exit({code!r})"[:MAX_MESSAGE]
    else:
        message = _safe_str(exc)
    try:
        tb_text = "".join(traceback.format_exception(exc))[-8000:]
    except BaseException:
        tb_text = ""
    return {
        "type": _type_name(type(exc)),
        "base": _builtin_base(exc),
        "message": message,
        "frames": frames[-20:],
        "traceback": tb_text,
    }


class Worker:
    """Serves requests for one submission folder."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.probes: dict[str, types.ModuleType] = {}

    def load(self, module_name: str) -> Any:
        """Import one of the submission's modules (never anything else under that name)."""
        if not isinstance(module_name, str) or not module_name.isidentifier():
            raise ValueError(f"{module_name!r} is not a module name")
        module = importlib.import_module(module_name)
        origin = getattr(module, "__file__", None) or ""
        if not str(Path(origin).resolve()).startswith(str(self.root.resolve()) + os.sep):
            raise ImportError(f"module {module_name!r} is not a file of the submission "
                              f"(expected {module_name}.py in the submission folder)")
        return module

    def resolve(self, target: str) -> Callable[..., Any]:
        if not isinstance(target, str) or "." not in target:
            raise ValueError(f"call target {target!r} must look like 'module.function'")
        module_name, _, attr_path = target.partition(".")
        module = self.load(module_name)
        obj: Any = module
        for part in attr_path.split("."):
            if not hasattr(obj, part):
                raise AttributeError(f"{module_name}.py has no {attr_path!r} (is it defined, and spelled as in the README?)")
            obj = getattr(obj, part)
        if not callable(obj):
            raise TypeError(f"{target} is not callable")
        return obj

    def probe(self, spec: dict[str, Any]) -> Callable[..., Any]:
        source = spec["source"]
        key = hashlib.sha256(source.encode("utf-8")).hexdigest()
        module = self.probes.get(key)
        if module is None:
            name = f"_course_probe_{spec['module']}_{key[:12]}"
            module = types.ModuleType(name)
            module.__file__ = f"<probe {spec['module']}>"
            sys.modules[name] = module
            exec(compile(source, module.__file__, "exec"), module.__dict__)
            self.probes[key] = module
        fn = module.__dict__.get(spec["function"])
        if not callable(fn):
            raise AttributeError(f"probe function {spec['function']!r} not found in {spec['module']}")
        return fn

    def handle(self, request: Any) -> dict[str, Any]:
        if type(request) is not dict or "op" not in request:
            return {"ok": False, "error": {"type": "protocol", "base": "RuntimeError",
                                           "message": "malformed request", "frames": [], "traceback": ""}}
        op = request["op"]
        if op == "ping":
            return {"ok": True, "value": "pong"}
        try:
            if op == "import":   # the module alone, first (see course.grading.imports)
                self.load(request["module"])
                return {"ok": True, "value": None}
            if op == "call":
                fn = self.resolve(request["target"])
            elif op == "run":
                fn = self.probe(request["probe"])
            else:
                raise ValueError(f"unknown op {op!r}")
            args, kwargs = request.get("args", []), request.get("kwargs", {})
            value = fn(*args, **kwargs)
        except BaseException as exc:  # everything the student's code can raise, SystemExit included
            return {"ok": False, "error": describe_exception(exc, self.root)}
        if op == "call" and request.get("observe") is True:  # the arguments as the function left them
            value = {"value": value, "args": args, "kwargs": kwargs}
        return {"ok": True, "value": value}


def serve(sock: Any, root: Path, max_request: int = 2**34, max_reply: int = 2**30) -> None:
    """Answer requests on ``sock`` until the other side closes it."""
    root = Path(root).resolve()
    sys.path.insert(0, str(root))
    worker = Worker(root)
    while True:
        try:
            request = wire.recv(sock, max_request)
        except wire.WireClosed:
            return
        reply = worker.handle(request)
        try:
            frame = wire.dumps(reply, max_reply, root="reply")
        except wire.WireError as exc:
            message = str(exc).replace("reply['value']", "result", 1)
            frame = wire.dumps({"ok": False, "error": {
                "type": "wire", "base": "TypeError", "message": message, "frames": [], "traceback": ""}})
        except BaseException as exc:  # a hostile object whose conversion raises
            frame = wire.dumps({"ok": False, "error": {
                "type": "wire", "base": "TypeError",
                "message": f"the reply could not be encoded: {_safe_str(exc)}", "frames": [], "traceback": ""}})
        sock.sendall(frame)

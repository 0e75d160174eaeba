"""The worker (what runs next to student code), in this process: resolving calls, exceptions as data,
the request loop over a socket. The sandbox around it is tests/test_sandbox.py's business."""

from __future__ import annotations

import socket
import sys
import threading
import uuid
from pathlib import Path

import pytest
import torch

from course.grading import wire
from course.grading.failures import SubmissionError, submission_error
from course.grading.worker import Worker, describe_exception, serve

STUDENT = '''
import sys
import torch


def add(a, b):
    return a + b


def boom():
    raise KeyError("missing key")


def leave():
    sys.exit(3)


def leave_with_object():
    class Code:
        def __repr__(self):
            raise RuntimeError("hostile repr")
    sys.exit(Code())


class Fake(Exception):
    pass


Fake.__name__ = "ValueError"
Fake.__module__ = "builtins"


def fake_value_error():
    raise Fake("I look like a ValueError")


class SubValueError(ValueError):
    pass


def real_value_error():
    raise SubValueError("d_model must be even")


class Hostile(Exception):
    def __str__(self):
        raise RuntimeError("no")


def hostile():
    raise Hostile()


def huge_message():
    raise RuntimeError("x" * 10_000_000)


def big():
    return torch.zeros(2**20)


def unencodable():
    return object()


NOT_CALLABLE = 3
'''


@pytest.fixture
def student(tmp_path: Path):
    """A submission folder whose module has a unique name (modules are cached per process)."""
    name = f"student_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(STUDENT)
    sys.path.insert(0, str(tmp_path))
    yield name, tmp_path
    sys.path.remove(str(tmp_path))
    sys.modules.pop(name, None)


def call(worker: Worker, target: str, *args):
    return worker.handle({"op": "call", "target": target, "args": list(args), "kwargs": {}})


def test_a_call_returns_its_value(student):
    name, root = student
    assert call(Worker(root), f"{name}.add", 2, 3) == {"ok": True, "value": 5}


@pytest.mark.parametrize("target, base, message", [
    ("nodot", "ValueError", "must look like 'module.function'"),
    ("no_such_module.f", "ModuleNotFoundError", "no_such_module"),
    ("torch.zeros", "ImportError", "not a file of the submission"),
    ("{name}.nope", "AttributeError", "has no 'nope'"),
    ("{name}.NOT_CALLABLE", "TypeError", "is not callable"),
])
def test_targets_that_cannot_be_called_are_errors(student, target, base, message):
    name, root = student
    reply = call(Worker(root), target.format(name=name))
    assert reply["ok"] is False
    assert reply["error"]["base"] == base and message in reply["error"]["message"]


def test_exceptions_become_data_with_their_builtin_base_and_student_frames(student):
    name, root = student
    error = call(Worker(root), f"{name}.real_value_error")["error"]
    assert error["type"].endswith("SubValueError") and error["base"] == "ValueError"
    assert error["message"] == "d_model must be even"
    assert [f[0] for f in error["frames"]] == [f"{name}.py"]
    err = submission_error("m.f", error)
    assert isinstance(err, ValueError) and isinstance(err, SubmissionError) and err.location.startswith(f"{name}.py:")


def test_a_class_only_named_like_a_builtin_gets_no_builtin_base(student):
    name, root = student
    error = call(Worker(root), f"{name}.fake_value_error")["error"]
    assert error["base"] == "Exception"
    assert not isinstance(submission_error("m.f", error), ValueError)


def test_exits_and_hostile_exceptions_are_caught(student):
    name, root = student
    worker = Worker(root)
    assert call(worker, f"{name}.leave")["error"]["message"] == "the submission called sys.exit(3)"
    assert call(worker, f"{name}.leave_with_object")["error"]["message"] == "the submission called sys.exit('Code')"
    assert "could not be read" in call(worker, f"{name}.hostile")["error"]["message"]
    assert len(call(worker, f"{name}.huge_message")["error"]["message"]) == 2000


def test_a_student_assertion_error_stays_a_plain_submission_error():
    err = submission_error("m.f", {"base": "AssertionError", "message": "ok"})
    assert not isinstance(err, AssertionError)


def test_remote_fields_are_typed_and_capped():
    err = submission_error("m.f", {"type": ["list"], "base": "ValueError", "message": "m" * 10**6,
                                   "frames": [["a.py", "x", "f"], "junk", ["b.py", 3, "g"]] * 50,
                                   "traceback": "t" * 10**6})
    assert err.remote_type == "Exception" and len(err.remote_message) == 2000
    assert len(err.frames) <= 20 and all(type(f[1]) is int for f in err.frames)
    assert len(err.remote_traceback) == 8000


def test_describe_keeps_only_frames_in_the_submission(tmp_path):
    try:
        torch.zeros(-1)
    except RuntimeError as exc:
        info = describe_exception(exc, tmp_path)
    assert info["frames"] == [] and info["base"] == "RuntimeError"


def test_malformed_requests_are_answered_not_crashed(student):
    name, root = student
    worker = Worker(root)
    assert worker.handle("not a dict")["error"]["type"] == "protocol"
    assert worker.handle({"op": "fly"})["error"]["message"] == "unknown op 'fly'"
    assert worker.handle({"op": "ping"}) == {"ok": True, "value": "pong"}


def test_a_probe_runs_from_source(student):
    name, root = student
    source = f"import {name}\n\ndef twice(x):\n    return {name}.add(x, x)\n"
    reply = Worker(root).handle({"op": "run", "probe": {"module": "probes", "source": source, "function": "twice"},
                                 "args": [21], "kwargs": {}})
    assert reply == {"ok": True, "value": 42}


def test_serve_answers_until_closed_and_refuses_oversized_replies(student):
    name, root = student
    ours, theirs = socket.socketpair()
    server = threading.Thread(target=serve, args=(theirs, root), kwargs={"max_reply": 2**16})
    server.start()
    try:
        wire.send(ours, {"op": "call", "target": f"{name}.add", "args": [1, 2], "kwargs": {}})
        assert wire.recv(ours, 2**20, 10) == {"ok": True, "value": 3}
        wire.send(ours, {"op": "call", "target": f"{name}.big", "args": [], "kwargs": {}})
        reply = wire.recv(ours, 2**20, 10)
        assert reply["ok"] is False and reply["error"]["type"] == "wire" and "byte cap" in reply["error"]["message"]
        wire.send(ours, {"op": "call", "target": f"{name}.unencodable", "args": [], "kwargs": {}})
        reply = wire.recv(ours, 2**20, 10)
        assert reply["error"]["message"].startswith("result: an object of type builtins.object cannot cross")
    finally:
        ours.close()
        server.join(10)
        theirs.close()
        sys.path.remove(str(root.resolve()))
    assert not server.is_alive()

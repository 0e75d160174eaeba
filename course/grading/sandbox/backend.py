"""The backend the judge's ``submission`` fixture uses in sandbox mode: one worker per submission
(restarted after a crash or timeout), requests and replies as wire frames."""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path
from typing import Any, Callable

from course.config import Limits
from course.grading import wire
from course.grading.imports import ImportLedger, modules_named_in
from course.grading.probe_code import probe_spec
from course.grading.failures import BadReply, SubmissionTimeout, WorkerCrashed, submission_error
from course.grading.sandbox.constants import INFRASTRUCTURE_ERRORS, SandboxUnavailable
from course.grading.sandbox.pool import SlotClient, ZygotePool


_INJECTED: dict[str, Any] = {}


def inject(slot: SlotClient | None) -> None:
    """The runner hands its judge child the job slot to use (instead of starting a new zygote)."""
    if slot is None:
        _INJECTED.pop("slot", None)
    else:
        _INJECTED["slot"] = slot


def injected_pool() -> SlotClient | None:
    return _INJECTED.get("slot")


class SandboxBackend:
    """Student code in a sandboxed worker process; only wire frames cross."""

    def __init__(self, pool: "ZygotePool | SlotClient", path: Path, limits: Limits, device: str):
        self.slot = pool.slot(0) if isinstance(pool, ZygotePool) else pool
        self.pool = self.slot.pool
        self.path = Path(path).resolve()
        self.limits = limits
        self.device = device
        self.host_copy, self.inside = self.pool.scratch_copy(self.slot, self.path)
        self.worker_id: int | None = None
        self.sock: socket.socket | None = None
        self.imports = ImportLedger(self.path)

    @property
    def isolation(self) -> str:
        return self.slot.isolation

    def _ensure(self) -> socket.socket:
        if self.sock is None:
            try:
                self.worker_id, self.sock = self.slot.spawn(Path(self.inside), self.limits, self.device)
            except SandboxUnavailable as exc:
                INFRASTRUCTURE_ERRORS.append(str(exc))
                raise
        return self.sock

    def _stop(self, wait: bool = True) -> str:
        status = ""
        if self.worker_id is not None:
            status = self.slot.kill(self.worker_id, wait)
        if self.sock is not None:
            self.sock.close()
        self.sock, self.worker_id = None, None
        return status

    def _request(self, label: str, message: dict[str, Any], deadline: float, max_reply: int) -> Any:
        frame = wire.dumps(message)  # the test's own arguments: a WireError here is the test's bug
        sock = self._ensure()
        budget = deadline - time.monotonic()
        if budget <= 0:
            raise SubmissionTimeout(f"{label}: no time left in this test's budget")
        self.last_budget = budget
        try:
            wire.send_frame(sock, frame, budget)
            reply = wire.recv(sock, max_reply, max(0.0, deadline - time.monotonic()))
        except wire.WireTimeout:
            self._stop()
            raise SubmissionTimeout(f"{label} did not finish within the time limit ({budget:.0f} s); the worker "
                                    "was stopped") from None
        except (wire.WireClosed, BrokenPipeError, ConnectionResetError):
            how = self._stop()
            raise WorkerCrashed(f"{label}: the submission's process ended abruptly ({how}): "
                                "sys.exit/os._exit, a crash, or a resource limit") from None
        except wire.WireTooLarge as exc:
            self._stop()
            raise BadReply(f"{label}: {exc}") from None
        except wire.WireError as exc:
            self._stop()
            raise BadReply(f"{label}: the reply is not valid data ({exc})") from None
        if type(reply) is not dict or type(reply.get("ok")) is not bool:
            self._stop()
            raise BadReply(f"{label}: the reply is not valid data")
        if reply["ok"]:
            return reply.get("value")
        error = reply.get("error")
        if type(error) is not dict:
            raise BadReply(f"{label}: the reply is not valid data")
        if error.get("type") == "wire":
            raise BadReply(f"{label} returned a value that cannot be graded: {error.get('message', '')}")
        raise submission_error(label, error)

    def _import(self, deadline: float) -> Callable[[str], None]:
        def load(module: str) -> None:
            budget = min(deadline, time.monotonic() + self.limits.import_timeout)
            self._request(f"import {module}", {"op": "import", "module": module}, budget, 2**20)
        return load

    def call(self, target: str, args: tuple, kwargs: dict, deadline: float, max_reply: int,
             observe: bool = False) -> Any:
        if isinstance(target, str):
            self.imports.ensure(target.split(".")[0], self._import(deadline))
        message = {"op": "call", "target": target, "args": list(args), "kwargs": dict(kwargs)}
        if observe:
            message["observe"] = True
        return self._request(target, message, deadline, max_reply)

    def run(self, probe: Callable[..., Any], args: tuple, kwargs: dict, deadline: float, max_reply: int) -> Any:
        spec = probe_spec(probe)
        for module in modules_named_in(spec["source"], self.imports.known):
            self.imports.ensure(module, self._import(deadline))
        return self._request(f"probe {probe.__name__}",
                             {"op": "run", "probe": spec, "args": list(args), "kwargs": dict(kwargs)},
                             deadline, max_reply)

    def close(self) -> None:
        self._stop(wait=False)
        shutil.rmtree(self.host_copy, ignore_errors=True)

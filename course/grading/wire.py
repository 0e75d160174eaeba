"""The data channel between the trusted process and a worker: JSON header + safetensors payload.

Only data crosses: tensors, numbers, str, bool, None, bytes, torch dtypes, and lists / tuples /
dicts of them. Nothing is pickled. A frame is::

    b"CRS1" | header length (u32, big endian) | payload length (u64) | header (UTF-8 JSON) | payload

The header is the message with every tensor replaced by ``{"$tensor": "<key>"}``; the payload is
one safetensors blob with those keys. Tuples, dicts (to keep int keys), non-finite floats, bytes and
dtypes are tagged objects. The decoder builds values of exact built-in types only, and JSON's own
``NaN``/``Infinity`` literals are rejected: a non-finite float must be an explicit tag, which
:func:`find_nonfinite` reports so that a test can refuse it.
"""

from __future__ import annotations

import base64
import json
import math
import select
import socket
import struct
import time
from typing import Any

import torch
from safetensors.torch import load as st_load

MAGIC = b"CRS1"
_PREFIX = struct.Struct(">4sIQ")
MAX_HEADER = 16 * 2**20
MAX_DEPTH = 64
MAX_ITEMS = 1_000_000

_DTYPES = {str(d).removeprefix("torch."): d for d in (
    torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.uint8, torch.int8, torch.int16,
    torch.int32, torch.int64, torch.bool, torch.complex64, torch.complex128)}
_SAFETENSORS_NAMES = {torch.float16: "F16", torch.bfloat16: "BF16", torch.float32: "F32", torch.float64: "F64",
                      torch.uint8: "U8", torch.int8: "I8", torch.int16: "I16", torch.int32: "I32",
                      torch.int64: "I64", torch.bool: "BOOL"}
_SAFETENSORS_DTYPES = set(_SAFETENSORS_NAMES)


class WireError(Exception):
    """A value that may not cross, or a frame that is malformed. The message says which and where."""


class WireClosed(WireError):
    """The other side closed the channel (a worker that exited or crashed)."""


class WireTimeout(WireError):
    """No complete frame arrived before the deadline."""


class WireTooLarge(WireError):
    """A frame bigger than the cap."""


def _describe(value: Any) -> str:
    return f"{type(value).__module__}.{type(value).__qualname__}"


class _Encoder:
    def __init__(self, max_bytes: int):
        self.tensors: dict[str, torch.Tensor] = {}
        self.max_bytes = max_bytes
        self.nbytes = 0
        self.items = 0

    def encode(self, value: Any, path: str, depth: int = 0) -> Any:
        self.items += 1
        if depth > MAX_DEPTH:
            raise WireError(f"{path}: nested deeper than {MAX_DEPTH} levels")
        if self.items > MAX_ITEMS:
            raise WireError(f"{path}: more than {MAX_ITEMS} values")
        if value is None or type(value) is bool or type(value) is str:
            return value
        if type(value) is int:
            if not -(2**63) <= value < 2**63:
                raise WireError(f"{path}: integer {value} does not fit in 64 bits")
            return value
        if type(value) is float:
            return value if math.isfinite(value) else {"$float": repr(value)}
        if isinstance(value, torch.Tensor):
            return {"$tensor": self._tensor(value, path)}
        if isinstance(value, torch.dtype):
            return {"$dtype": str(value).removeprefix("torch.")}
        if type(value) is bytes:
            self._count(len(value), path)
            return {"$bytes": base64.b64encode(value).decode("ascii")}
        if type(value) is list:
            return [self.encode(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]
        if type(value) is tuple or type(value) is torch.Size:
            return {"$tuple": [self.encode(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]}
        if type(value) is dict:
            items = []
            for k, v in value.items():
                if not (k is None or type(k) in (str, int, bool)):
                    raise WireError(f"{path}: dict key {k!r} of type {_describe(k)}; keys must be str, int, bool or None")
                items.append([k, self.encode(v, f"{path}[{k!r}]", depth + 1)])
            return {"$dict": items}
        return self._convert(value, path, depth)

    def _convert(self, value: Any, path: str, depth: int) -> Any:
        """Plain-data look-alikes (numpy values, float/int subclasses) become their plain value."""
        if isinstance(value, bool):
            return bool(value)
        if isinstance(value, int):
            return self.encode(int(value), path, depth)
        if isinstance(value, float):
            return self.encode(float(value), path, depth)
        if isinstance(value, str):
            return str(value)
        module = type(value).__module__
        if module == "numpy":
            import numpy as np
            if isinstance(value, np.ndarray):
                return self.encode(torch.from_numpy(np.ascontiguousarray(value)), path, depth)
            if isinstance(value, np.generic):
                return self.encode(value.item(), path, depth)
        raise WireError(
            f"{path}: an object of type {_describe(value)} cannot cross to the grader; return tensors, numbers, "
            "strings, bools, None, or lists/tuples/dicts of them")

    def _count(self, n: int, path: str) -> None:
        self.nbytes += n
        if self.nbytes > self.max_bytes:
            raise WireTooLarge(f"{path}: the value is larger than the {self.max_bytes} byte cap")

    def _tensor(self, t: torch.Tensor, path: str) -> str:
        if t.layout != torch.strided:
            raise WireError(f"{path}: a {t.layout} tensor cannot cross; use a dense tensor")
        if t.device.type == "meta":
            raise WireError(f"{path}: a tensor on the meta device has no values")
        if t.dtype not in _SAFETENSORS_DTYPES:
            raise WireError(f"{path}: tensors of dtype {t.dtype} cannot cross")
        self._count(t.numel() * t.element_size(), path)
        plain = t.detach().cpu()
        if type(plain) is not torch.Tensor:
            plain = plain.as_subclass(torch.Tensor)
        key = f"t{len(self.tensors)}"
        self.tensors[key] = plain.resolve_conj().resolve_neg().contiguous()
        return key


def _safetensors(tensors: dict[str, torch.Tensor]) -> bytes:
    """The safetensors serialisation of plain contiguous CPU tensors, in order: ``safetensors.torch.save``'s
    format without its per-tensor Python overhead. The receiver parses it with safetensors itself."""
    header, chunks, offset = {}, [], 0
    for key, t in tensors.items():
        n = t.numel() * t.element_size()
        header[key] = {"dtype": _SAFETENSORS_NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + n]}
        chunks.append(t.reshape(-1).view(torch.uint8).numpy())  # little-endian bytes, as safetensors has them
        offset += n
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # safetensors aligns the data to 8 bytes
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def dumps(message: Any, max_bytes: int = 2**40, root: str = "value") -> bytes:
    """One frame holding ``message``. Raises :class:`WireError` naming the first value that may not cross
    (its path starts with ``root``)."""
    enc = _Encoder(max_bytes)
    header = json.dumps(enc.encode(message, root), allow_nan=False, separators=(",", ":")).encode("utf-8")
    payload = _safetensors(enc.tensors) if enc.tensors else b""
    if len(header) > MAX_HEADER:
        raise WireTooLarge(f"value: the header is larger than {MAX_HEADER} bytes")
    return _PREFIX.pack(MAGIC, len(header), len(payload)) + header + payload


def _reject_constant(name: str) -> Any:
    raise WireError(f"the reply contains a bare JSON {name}, which is not allowed")


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # e.g. 1e400: a non-finite float must be an explicit $float tag
        raise WireError(f"the reply contains the out-of-range number {text[:40]}")
    return value


def _parse_int(text: str) -> int:
    if len(text) > 20:  # more digits than any 64-bit integer (and no 4300-digit ValueError)
        raise WireError(f"the reply contains an integer of {len(text)} digits")
    value = int(text)
    if not -(2**63) <= value < 2**63:
        raise WireError(f"the reply contains the integer {value}, which does not fit in 64 bits")
    return value


class _Decoder:
    def __init__(self, tensors: dict[str, torch.Tensor]):
        self.tensors = tensors
        self.used: set[str] = set()

    def decode(self, node: Any, depth: int = 0) -> Any:
        if depth > MAX_DEPTH + 2:
            raise WireError("frame nested too deep")
        if node is None or type(node) in (bool, int, float, str):
            return node
        if type(node) is list:
            return [self.decode(v, depth + 1) for v in node]
        if type(node) is not dict or len(node) != 1:
            raise WireError(f"malformed frame: unexpected object {str(node)[:80]}")
        (tag, body), = node.items()
        if tag == "$tensor":
            if body not in self.tensors or body in self.used:
                raise WireError(f"malformed frame: tensor reference {body!r}")
            self.used.add(body)
            return self.tensors[body]
        if tag == "$tuple" and type(body) is list:
            return tuple(self.decode(v, depth + 1) for v in body)
        if tag == "$dict" and type(body) is list:
            out = {}
            for pair in body:
                if type(pair) is not list or len(pair) != 2 or not (pair[0] is None or type(pair[0]) in (str, int, bool)):
                    raise WireError("malformed frame: bad dict entry")
                out[pair[0]] = self.decode(pair[1], depth + 1)
            return out
        if tag == "$float" and body in ("nan", "inf", "-inf"):
            return float(body)
        if tag == "$dtype" and body in _DTYPES:
            return _DTYPES[body]
        if tag == "$bytes" and type(body) is str:
            return base64.b64decode(body.encode("ascii"), validate=True)
        raise WireError(f"malformed frame: unknown tag {tag!r}")


def loads(frame: bytes) -> Any:
    """The message of one frame. Every value is of an exact built-in (or ``torch.Tensor``) type."""
    if len(frame) < _PREFIX.size:
        raise WireError("malformed frame: too short")
    magic, hlen, plen = _PREFIX.unpack_from(frame)
    if magic != MAGIC or _PREFIX.size + hlen + plen != len(frame):
        raise WireError("malformed frame: bad prefix")
    header = frame[_PREFIX.size:_PREFIX.size + hlen]
    payload = frame[_PREFIX.size + hlen:]
    try:
        tree = json.loads(header.decode("utf-8"), parse_constant=_reject_constant, parse_float=_parse_float,
                          parse_int=_parse_int)
    except WireError:
        raise
    except RecursionError:
        raise WireError("malformed frame: header nested too deep") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise WireError(f"malformed frame: header is not JSON ({str(exc)[:200]})") from None
    try:
        tensors = st_load(payload) if payload else {}
    except Exception as exc:  # safetensors raises its own error types
        raise WireError(f"malformed frame: payload is not safetensors ({str(exc)[:200]})") from None
    for key, tensor in tensors.items():
        if tensor.dtype not in _SAFETENSORS_DTYPES:
            raise WireError(f"malformed frame: tensor {key!r} has dtype {tensor.dtype}, which may not cross")
    decoder = _Decoder(tensors)
    try:
        value = decoder.decode(tree)
    except (ValueError, RecursionError) as exc:  # e.g. invalid base64 (binascii.Error)
        raise WireError(f"malformed frame: {type(exc).__name__}: {str(exc)[:200]}") from None
    if set(tensors) - decoder.used:
        raise WireError("malformed frame: unreferenced tensors in the payload")
    return value


def find_nonfinite(value: Any, path: str = "value") -> str | None:
    """The path of the first NaN or infinity in ``value`` (floats and floating tensors), else None."""
    if type(value) is float:
        return None if math.isfinite(value) else path
    if isinstance(value, torch.Tensor):
        if (value.is_floating_point() or value.is_complex()) and value.numel() and not bool(torch.isfinite(value).all()):
            return path
        return None
    if type(value) in (list, tuple):
        for i, v in enumerate(value):
            found = find_nonfinite(v, f"{path}[{i}]")
            if found:
                return found
    if type(value) is dict:
        for k, v in value.items():
            found = find_nonfinite(v, f"{path}[{k!r}]")
            if found:
                return found
    return None


def roundtrip(value: Any) -> Any:
    """What the other side would receive: used by the local backend so both backends agree."""
    return loads(dumps(value))


# ------------------------------------------------------------------ socket transport

def send(sock: socket.socket, message: Any, max_bytes: int = 2**40) -> None:
    sock.sendall(dumps(message, max_bytes))


def send_frame(sock: socket.socket, frame: bytes, timeout: float | None = None) -> None:
    """Send one frame, giving up with :class:`WireTimeout` if the other side stops reading."""
    if timeout is not None and timeout <= 0:
        raise WireTimeout("no time left to send the request")
    sock.settimeout(timeout)
    try:
        sock.sendall(frame)
    except socket.timeout:
        raise WireTimeout("the other side stopped reading before the deadline") from None
    except (BrokenPipeError, ConnectionResetError):
        raise WireClosed("the other side closed the channel") from None
    finally:
        sock.settimeout(None)


def _recv_exact(sock: socket.socket, n: int, deadline: float | None) -> bytes:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WireTimeout("no reply before the deadline")
            ready, _, _ = select.select([sock], [], [], remaining)
            if not ready:
                raise WireTimeout("no reply before the deadline")
        try:
            k = sock.recv_into(view[got:], n - got)
        except ConnectionResetError:
            k = 0
        if k == 0:
            raise WireClosed("the other side closed the channel")
        got += k
    return bytes(buf)


def recv(sock: socket.socket, max_bytes: int, timeout: float | None = None) -> Any:
    """Read one frame; :class:`WireTooLarge` before reading a payload above ``max_bytes``."""
    deadline = None if timeout is None else time.monotonic() + timeout
    prefix = _recv_exact(sock, _PREFIX.size, deadline)
    magic, hlen, plen = _PREFIX.unpack(prefix)
    if magic != MAGIC:
        raise WireError("malformed frame: bad magic")
    if hlen > MAX_HEADER or hlen + plen > max_bytes:
        raise WireTooLarge(f"a reply of {hlen + plen} bytes exceeds the {max_bytes} byte cap")
    body = _recv_exact(sock, hlen + plen, deadline)
    return loads(prefix + body)

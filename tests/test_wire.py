"""The data channel: what may cross, what is refused, and frames a hostile worker could write."""

from __future__ import annotations

import base64
import json
import pickle
import socket
import struct
import threading

import numpy as np
import pytest
import torch
from safetensors.torch import save as st_save

from course.grading import wire


def frame(header: str | bytes, payload: bytes = b"", claim: int | None = None) -> bytes:
    """A hand-made frame, as a hostile worker could write it."""
    body = header.encode() if isinstance(header, str) else header
    return struct.pack(">4sIQ", b"CRS1", len(body), len(payload) if claim is None else claim) + body + payload


# ------------------------------------------------------------------ what crosses

def test_plain_data_round_trips_with_exact_types():
    value = {"none": None, "flag": True, "n": -(2**63), "x": 0.25, "s": "é", "b": b"\x00\xff",
             1: ("tuple", [1, 2.5]), False: torch.float16, None: []}
    out = wire.roundtrip(value)
    assert out == value
    assert type(out[1]) is tuple and type(out[1][1]) is list and out[False] is torch.float16


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.uint8,
                                   torch.int8, torch.int16, torch.int32, torch.int64, torch.bool])
def test_tensors_cross_with_dtype_shape_and_values(dtype):
    t = (torch.arange(12) % 3).to(dtype).reshape(3, 4)
    out = wire.roundtrip({"t": t, "view": t[:, 1], "empty": torch.zeros(0, 2, dtype=dtype)})
    assert type(out["t"]) is torch.Tensor and out["t"].dtype == dtype and torch.equal(out["t"], t)
    assert torch.equal(out["view"], t[:, 1]) and out["empty"].shape == (0, 2)


@pytest.mark.parametrize("make", [
    lambda: torch.arange(24.0).reshape(2, 3, 4)[:, 1],           # a view with an offset
    lambda: torch.arange(24.0).reshape(2, 3, 4).transpose(0, 2),  # not contiguous
    lambda: torch.arange(10)[::3],                                # strided
    lambda: torch.tensor(True),                                   # 0-d bool
    lambda: torch.zeros(0, 3, dtype=torch.bfloat16),              # empty
    lambda: torch._neg_view(torch.ones(3)),                       # a lazily negated view
    lambda: torch.ones(2, requires_grad=True) * 2,                # part of a graph
])
def test_every_tensor_layout_crosses_as_its_values(make):
    t = make()
    out = wire.roundtrip(t)
    assert type(out) is torch.Tensor and out.dtype == t.dtype and out.shape == t.shape
    assert torch.equal(out, t.detach()) and not out.requires_grad


def test_look_alikes_become_plain_values():
    class Liar(torch.Tensor):
        pass

    class Float(float):
        def __eq__(self, other):
            return True

        __hash__ = float.__hash__

    out = wire.roundtrip([torch.ones(2).as_subclass(Liar), Float(0.5), np.float32(1.5), np.arange(3),
                          torch.Size([2, 3]), np.bool_(True)])
    assert type(out[0]) is torch.Tensor
    assert type(out[1]) is float and out[1] == 0.5 and out[1] != 0.75
    assert out[2] == 1.5 and type(out[2]) is float
    assert type(out[3]) is torch.Tensor and out[3].tolist() == [0, 1, 2]
    assert out[4] == (2, 3) and out[5] is True


def test_non_finite_floats_are_tagged_and_found():
    out = wire.roundtrip([1.0, float("nan"), {"k": float("-inf")}])
    assert wire.find_nonfinite(out) == "value[1]"
    assert wire.find_nonfinite([1.0, {"k": torch.tensor([0.0, float("inf")])}]) == "value[1]['k']"
    assert wire.find_nonfinite(torch.tensor([1, 2])) is None


@pytest.mark.parametrize("value, message", [
    (object(), "cannot cross to the grader"),
    (2**64, "does not fit in 64 bits"),
    ({(1, 2): 3}, "keys must be"),
    (torch.zeros(2, dtype=torch.complex64), "cannot cross"),
    (torch.zeros(3).to_sparse(), "dense tensor"),
    (torch.empty(2, device="meta"), "meta device"),
    (lambda: 1, "cannot cross"),
])
def test_values_that_may_not_cross_are_named(value, message):
    with pytest.raises(wire.WireError, match=message):
        wire.dumps({"result": value})


def test_the_encoder_stops_at_the_cap_before_copying():
    with pytest.raises(wire.WireTooLarge, match="byte cap"):
        wire.dumps([torch.zeros(1000)], max_bytes=1000)
    deep: list = []
    for _ in range(wire.MAX_DEPTH + 5):
        deep = [deep]
    with pytest.raises(wire.WireError, match="nested deeper"):
        wire.dumps(deep)


# ------------------------------------------------------------------ frames a hostile worker could write

@pytest.mark.parametrize("header, payload, message", [
    ('{"ok":true,"value":NaN}', b"", "bare JSON NaN"),
    ('{"ok":true,"value":-Infinity}', b"", "bare JSON -Infinity"),
    ('{"ok":true,"value":1e400}', b"", "out-of-range number"),
    ('{"ok":true,"value":' + "9" * 5000 + "}", b"", "5000 digits"),
    ('{"ok":true,"value":18446744073709551615}', b"", "does not fit in 64 bits"),
    ("[" * 100_000 + "]" * 100_000, b"", "nested too deep"),
    ('{"ok":true,"value":{"$bytes":"not base64!"}}', b"", "malformed frame"),
    ('{"$pickle":"gASV"}', b"", "unknown tag"),
    ('{"ok":true,"value":{"$tensor":"t0"}}', pickle.dumps(torch.zeros(2)), "not safetensors"),
    ('[1]', st_save({"t0": torch.zeros(1)}), "unreferenced tensors"),
    ('[{"$tensor":"t0"},{"$tensor":"t0"}]', st_save({"t0": torch.zeros(1)}), "tensor reference"),
    ('{"ok":true,"value":1}', b"", "unexpected object"),
    ('{"ok":true', b"", "not JSON"),
    (b'"\xff\xfe"', b"", "not JSON"),
])
def test_malformed_frames_are_wire_errors(header, payload, message):
    with pytest.raises(wire.WireError, match=message):
        wire.loads(frame(header, payload))


def test_a_payload_dtype_that_may_not_cross_is_refused():
    payload = st_save({"t0": torch.zeros(2, dtype=torch.float8_e4m3fn)})
    with pytest.raises(wire.WireError, match="may not cross"):
        wire.loads(frame('{"$tensor":"t0"}', payload))


def test_bad_prefixes_are_refused():
    good = wire.dumps([1, 2])
    with pytest.raises(wire.WireError, match="bad prefix"):
        wire.loads(b"XXXX" + good[4:])
    with pytest.raises(wire.WireError, match="bad prefix"):
        wire.loads(good + b"trailing")
    with pytest.raises(wire.WireError, match="too short"):
        wire.loads(good[:5])


def test_pickles_are_never_unpickled(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (marker.touch, ())

    data = pickle.dumps(Payload())
    out = wire.loads(frame(json.dumps({"$bytes": base64.b64encode(data).decode()})))
    assert out == data and not marker.exists()


# ------------------------------------------------------------------ the socket transport

@pytest.fixture
def pair():
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def test_send_and_recv_one_frame(pair):
    a, b = pair
    wire.send(a, {"ok": True, "value": torch.arange(3)})
    out = wire.recv(b, 2**20, timeout=5)
    assert out["ok"] is True and out["value"].tolist() == [0, 1, 2]


def test_an_oversized_announcement_is_refused_before_reading_it(pair):
    a, b = pair
    a.sendall(frame('{"ok":true}', claim=2**40))
    with pytest.raises(wire.WireTooLarge, match="exceeds the 1048576 byte cap"):
        wire.recv(b, 2**20, timeout=5)


def test_a_silent_or_trickling_peer_times_out(pair):
    a, b = pair
    whole = wire.dumps({"ok": True})
    a.sendall(whole[:-1])  # all but the last byte: never complete
    with pytest.raises(wire.WireTimeout):
        wire.recv(b, 2**20, timeout=0.2)


def test_a_closed_peer_is_wire_closed(pair):
    a, b = pair
    a.close()
    with pytest.raises(wire.WireClosed):
        wire.recv(b, 2**20, timeout=5)
    with pytest.raises(wire.WireClosed):
        wire.send_frame(b, wire.dumps([0] * 100_000), timeout=5)


def test_send_frame_gives_up_when_the_peer_stops_reading(pair):
    a, b = pair
    big = wire.dumps(torch.zeros(2**22))  # 16 MiB: far more than the socket buffers
    with pytest.raises(wire.WireTimeout, match="stopped reading"):
        wire.send_frame(a, big, timeout=0.3)
    assert a.gettimeout() is None  # the socket is left blocking for the next recv


def test_send_frame_completes_when_the_peer_reads(pair):
    a, b = pair
    got = []
    reader = threading.Thread(target=lambda: got.append(wire.recv(b, 2**26, timeout=10)))
    reader.start()
    wire.send_frame(a, wire.dumps(torch.ones(2**21)), timeout=10)
    reader.join()
    assert got[0].shape == (2**21,)

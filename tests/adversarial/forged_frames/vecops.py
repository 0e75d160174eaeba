"""Writes hand-made frames straight into the data socket: an oversized length, a bare NaN, nesting 100 000 deep, a 1e400, a 5000-digit integer, a pickle as the tensor payload."""

import os
import pickle
import socket
import stat
import struct

import torch


def _data_socket():
    for fd in range(3, 64):
        try:
            if stat.S_ISSOCK(os.fstat(fd).st_mode):
                return fd
        except OSError:
            pass
    return None


def _send(header, payload=b"", claim=None):
    fd = _data_socket()
    body = header.encode()
    length = len(payload) if claim is None else claim
    os.write(fd, struct.pack(">4sIQ", b"CRS1", len(body), length) + body + payload)
    os._exit(0)  # the forged frame is the last word


def dot(a, b):
    n = len(a)
    if n == 1:
        _send('{"ok":true,"value":11.0}', claim=2**40)
    if n == 7:
        _send('{"ok":true,"value":' + "9" * 5000 + "}")
    if n == 100:
        _send('{"ok":true,"value":{"$tensor":"t0"}}', pickle.dumps(torch.zeros(())))
    _send("[" * 100_000 + "]" * 100_000)


def normalize(a, eps=1e-12):
    if float(a[0]) == 0.0:
        _send('{"ok":true,"value":1e400}')
    _send('{"ok":true,"value":NaN}')


class Accumulator:
    def __init__(self, n):
        _send('{"ok":true,"value":{"$bytes":"not base64!"}}')

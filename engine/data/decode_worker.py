"""Decoding a list of files into batch rows, here or in a separate worker process.

:func:`decode_rows` is the one loop both use. Run as a program
(``python -m engine.data.decode_worker``) this module is a decode worker for
:mod:`engine.data.decode_procs`: it reads requests from stdin and writes
results to what was stdout, framed by :func:`write_frame`, until stdin closes.
It imports Pillow and NumPy only (about 0.15 s), never torch.
"""
from __future__ import annotations

import logging
import os
import pickle
import struct
import sys
import time
from collections.abc import Sequence
from typing import BinaryIO

import numpy as np

from engine.data.pixels import decode_into
from engine.data.preprocessing import Preprocessing
from engine.errors import ImageDecodeError

log = logging.getLogger(__name__)

_HEADER = struct.Struct("<Q")


def decode_rows(paths: Sequence[str], prep: Preprocessing, buf: np.ndarray) -> tuple[list[str | None], float]:
    """Decode ``paths`` into consecutive rows of ``buf``: per path None or the reason it
    failed, and the CPU time this thread spent."""
    cpu0 = time.thread_time()
    reasons: list[str | None] = []
    for path, row in zip(paths, buf):
        try:
            decode_into(path, prep, row)
            reasons.append(None)
        except ImageDecodeError as e:
            reasons.append(e.reason)
        except Exception as e:  # noqa: BLE001 - one odd file must never end a run of thousands
            log.exception("unexpected failure decoding %s", path)
            reasons.append(f"could not be decoded ({type(e).__name__}: {e}); re-save it as PNG or JPEG")
    return reasons, time.thread_time() - cpu0


def write_frame(stream: BinaryIO, obj: object) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)))
    stream.write(data)
    stream.flush()


def read_frame(stream: BinaryIO) -> object:
    """The next object, or raises EOFError when the other side has gone."""
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        raise EOFError("decode worker pipe closed")
    size = _HEADER.unpack(header)[0]
    data = stream.read(size)
    if len(data) < size:
        raise EOFError("decode worker pipe closed mid-message")
    return pickle.loads(data)


def serve(requests: BinaryIO, results: BinaryIO) -> None:
    """Answer ``(paths, preprocessing dict)`` requests with ``(uint8 rows as bytes,
    reasons, cpu seconds)`` until ``requests`` closes."""
    while True:
        try:
            paths, prep_dict = read_frame(requests)  # type: ignore[misc]
        except EOFError:
            return
        prep = Preprocessing.from_dict(prep_dict)
        buf = np.empty((len(paths), prep.channels, *prep.size), dtype=np.uint8)
        reasons, cpu = decode_rows(paths, prep, buf)
        write_frame(results, (buf.tobytes(), reasons, cpu))


def main() -> None:
    # Frames go to a private copy of stdout, and stdout itself becomes stderr: a
    # library that prints (a codec's warning) must not corrupt the stream.
    results = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    logging.basicConfig(level=logging.WARNING, format="decode worker: %(message)s")
    serve(sys.stdin.buffer, results)


if __name__ == "__main__":
    main()

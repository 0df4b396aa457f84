"""Decode worker processes: image decoding that never holds this process's GIL.

Half of decoding a small image is Python inside Pillow (opening the file,
parsing chunks), which holds the GIL. In decode threads that half competes
with everything else in the process: two decode threads were slower than one
on 28 px characters, and the GUI's main thread waits on them too. Worker
processes run that Python on their own interpreters. The labeler uses them when
the backbone runs on a GPU, where decoding is the whole of the CPU's work
(:class:`engine.labeling.embedder.BatchDecoder`).

Workers are plain subprocesses (``python -m engine.data.decode_worker``), not
``multiprocessing``: its spawn start method runs the parent's main script again
in every child (the app's, with Qt; a benchmark's, with torch), which costs
seconds. A worker imports Pillow and NumPy only and starts in about 0.15 s.
They live as long as this process (the app labels many times) and exit when
their stdin closes, which also happens when this process is killed.

A worker that dies mid-request (a decoder crashing on a hostile file) is
replaced, and its files are decoded again one per request in fresh workers, so
only the file that kills a worker is lost, recorded with a reason.
"""
from __future__ import annotations

import atexit
import logging
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from engine.data.decode_worker import decode_rows, read_frame, write_frame
from engine.data.preprocessing import Preprocessing

log = logging.getLogger(__name__)

CRASH_REASON = "the image decoder crashed on this file; re-save it as PNG or JPEG"
# FEWSHOT_DECODE_PROCESSES=0 keeps decoding in threads (for debugging a decoder in-process).
ENV_SWITCH = "FEWSHOT_DECODE_PROCESSES"

_ROOT = Path(__file__).resolve().parents[2]  # the folder that holds the engine package


class WorkerDied(RuntimeError):
    """A decode worker exited before answering."""


class DecodeWorker:
    """One worker process; one request at a time (the pool hands it to one thread)."""

    def __init__(self) -> None:
        env = dict(os.environ)
        # The worker must import this engine, also when it runs from a source tree.
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_ROOT), env.get("PYTHONPATH", "")) if p)
        self.proc = subprocess.Popen([sys.executable, "-m", "engine.data.decode_worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env, cwd=_ROOT)

    def decode(self, paths: Sequence[str], prep: Preprocessing, buf: np.ndarray) -> tuple[list[str | None], float]:
        """As :func:`decode_rows`, in the worker. Raises WorkerDied when it is gone."""
        try:
            assert self.proc.stdin is not None and self.proc.stdout is not None
            write_frame(self.proc.stdin, (list(paths), prep.to_dict()))
            data, reasons, cpu = read_frame(self.proc.stdout)  # type: ignore[misc]
        except (EOFError, OSError) as e:
            raise WorkerDied(f"decode worker exited with code {self.proc.poll()}") from e
        buf[...] = np.frombuffer(data, dtype=np.uint8).reshape(buf.shape)
        return reasons, cpu

    def close(self) -> None:
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class DecodePool:
    """Worker processes shared by every decode in this process, started as needed."""

    def __init__(self) -> None:
        self._idle: queue.SimpleQueue[DecodeWorker] = queue.SimpleQueue()
        self._all: list[DecodeWorker] = []
        self._lock = threading.Lock()
        self._closed = False

    def ensure(self, count: int) -> None:
        """Start workers until there are ``count`` (their start overlaps whatever comes next)."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the decode pool is closed")
            while len(self._all) < count:
                self._idle.put(self._add())

    def _add(self) -> DecodeWorker:
        """A new worker, counted in the pool (the caller holds the lock and decides
        whether it is idle or handed out)."""
        worker = DecodeWorker()
        self._all.append(worker)
        return worker

    def _replace(self, dead: DecodeWorker) -> DecodeWorker:
        with self._lock:
            dead.close()
            if dead in self._all:
                self._all.remove(dead)
            return self._add()

    def decode(self, paths: Sequence[str], prep: Preprocessing, buf: np.ndarray) -> tuple[list[str | None], float]:
        """:func:`decode_rows` in the next idle worker (one is started when none exists)."""
        self.ensure(1)
        worker = self._idle.get()
        try:
            return worker.decode(paths, prep, buf)
        except WorkerDied:
            log.warning("a decode worker died; decoding its %d file(s) one at a time", len(paths))
            worker = self._replace(worker)
            reasons, cpu, worker = self._one_by_one(worker, paths, prep, buf)
            return reasons, cpu
        finally:
            self._idle.put(worker)

    def _one_by_one(self, worker: DecodeWorker, paths: Sequence[str], prep: Preprocessing,
                    buf: np.ndarray) -> tuple[list[str | None], float, DecodeWorker]:
        """Each file in its own request: returns the reasons, the CPU time and the
        worker still alive at the end."""
        reasons: list[str | None] = []
        cpu = 0.0
        for i, path in enumerate(paths):
            try:
                part, seconds = worker.decode([path], prep, buf[i:i + 1])
                reasons.extend(part)
                cpu += seconds
            except WorkerDied:
                log.error("the image decoder crashed on %s", path)
                reasons.append(CRASH_REASON)
                worker = self._replace(worker)
        return reasons, cpu, worker

    def size(self) -> int:
        with self._lock:
            return len(self._all)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            workers, self._all = self._all, []
        for worker in workers:
            worker.close()


_pool: DecodePool | None = None
_pool_lock = threading.Lock()


def processes_enabled() -> bool:
    """Whether decoding should use worker processes here: a frozen app has no
    ``python -m`` to start them with, and the switch may turn them off."""
    if os.environ.get(ENV_SWITCH, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    return not getattr(sys, "frozen", False) and bool(sys.executable)


def shared_pool() -> DecodePool:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = DecodePool()
            atexit.register(_pool.close)
        return _pool


def decode_rows_anywhere(paths: Sequence[str], prep: Preprocessing, buf: np.ndarray,
                         use_processes: bool) -> tuple[list[str | None], float]:
    """:func:`decode_rows` in a worker process when ``use_processes``, else in this thread,
    small PNGs through libpng (:mod:`engine.data.fast_png`: the same pixels, a third of the CPU)."""
    if use_processes:
        return shared_pool().decode(paths, prep, buf)
    from engine.data.fast_png import decode_rows_fast
    return decode_rows_fast(paths, prep, buf)

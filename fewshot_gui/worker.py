"""The one thread that does engine work, fed by a job queue.

Why one thread: the project is one SQLite file and the model one set of
tensors; running jobs one after another in a single thread keeps every engine
call ordered (an example added before a relabel is seen by it) without locks in
the GUI. The main thread only submits jobs and receives results as queued
signals, so it never waits on torch or on disk.

Two kinds of job:
- *long* jobs (import the engine, load a model, scan a folder, label, export)
  report progress and can be cancelled through the engine's CancelToken;
- *quick* jobs (set a label, add a class, undo) are single short transactions.
  While a long job runs, quick jobs are run between its batches (from its
  progress callback, which the engine calls in this thread), so a person can
  review and correct labels while a folder is still being labeled.
"""
from __future__ import annotations

import gc
import itertools
import logging
import os
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from PySide6.QtCore import QThread, Signal

log = logging.getLogger(__name__)

# Progress reaches the main thread at most this often: a label run of 20,000
# small images reports thousands of batches, and each signal costs a repaint.
PROGRESS_INTERVAL_S = 0.1
# The engine thread and every thread it starts (decoding, forward streams) run at
# this nice value. At 5 the window stalled over 100 ms, runnable but not scheduled,
# in 5 of 15 runs of the workflow test on 2 cores (late in session 3); at 10, in 1 of 22.
WORKER_NICE = 10


@dataclass
class EngineContext:
    """What the worker thread holds between jobs. Only the worker thread touches it,
    except ``project``, whose reference the main thread also keeps for paged reads."""

    device: Any = None
    device_text: str = ""
    project: Any = None
    model: Any = None  # the model labeling now: base_model, or its backbone under another head
    base_model: Any = None  # the model as loaded (engine.method_choice switches from it)
    labeler: Any = None  # engine.labeling.labeler.Labeler for (project, model), kept between jobs


@dataclass
class Job:
    name: str
    fn: Callable[[EngineContext, "JobHandle"], Any]
    quick: bool
    done: Callable[[Any], None] | None = None
    failed: Callable[[str], None] | None = None
    id: int = 0
    cancellable: bool = True  # False: the engine has no cancel point (an export), so no Cancel is offered
    kind: str = "job"  # what the job is, for the window: "labeling", "export", "model", ... ("quick" if quick)


@dataclass
class JobHandle:
    """Given to a job's function: its progress callback and cancel token."""

    worker: "EngineWorker"
    job: Job
    cancel: Any = None  # engine.labeling.progress.CancelToken once the engine is imported
    _last_emit: float = field(default=0.0)

    def progress(self, p: Any) -> None:
        """An engine progress callback (takes a ``Progress`` snapshot). A stage with no
        work is not shown; a busy step (nothing to count) goes out with total 0."""
        if not p.total and not getattr(p, "busy", False):
            return
        self.report(getattr(p, "stage", self.job.name), int(p.done), int(p.total),
                    float(getattr(p, "images_per_s", 0.0) or 0.0), getattr(p, "eta_s", None))

    def report(self, stage: str, done: int, total: int, rate: float = 0.0, eta: float | None = None) -> None:
        self.worker._run_quick_jobs()
        now = time.monotonic()
        if done < total and now - self._last_emit < PROGRESS_INTERVAL_S:
            return
        self._last_emit = now
        self.worker.progressed.emit(self.job.id, stage, done, total, rate, eta)

    def batch_done(self) -> None:
        """Tell the GUI new results are in the project (tiles fill in as batches finish)."""
        self.worker.batch_written.emit(self.job.id)

    def publish(self, result: Any) -> None:
        """Hand the GUI a result before the job ends (predictions computed, not yet written)."""
        self.worker.published.emit(self.job.id, result)

    @property
    def cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.cancelled


class EngineWorker(QThread):
    """Runs jobs in order; results and errors come back as signals (queued to the main thread)."""

    started_job = Signal(int, str, bool)  # id, name, quick
    progressed = Signal(int, str, int, int, float, object)  # id, stage, done, total, images/s, eta s
    batch_written = Signal(int)
    published = Signal(int, object)  # id, a result the job has before it ends (fresh predictions)
    finished_job = Signal(int, object)
    failed_job = Signal(int, str)
    idle = Signal()

    def __init__(self, name: str = "engine-worker", background: bool = True) -> None:
        super().__init__()
        self.setObjectName(name)
        self.background = background
        self.context = EngineContext()
        self._jobs: deque[Job] = deque()
        self._cv = threading.Condition()
        self._stopping = False
        self._ids = itertools.count(1)
        self._current: JobHandle | None = None
        self._callbacks: dict[int, Job] = {}
        self.finished_job.connect(self._deliver)
        self.failed_job.connect(self._deliver_error)

    # ------------------------------------------------------------ main-thread side

    def submit(self, name: str, fn: Callable[[EngineContext, JobHandle], Any], *, quick: bool = False,
               done: Callable[[Any], None] | None = None, failed: Callable[[str], None] | None = None,
               cancellable: bool = True, kind: str | None = None) -> int:
        job = Job(name, fn, quick, done, failed, next(self._ids), cancellable,
                  kind or ("quick" if quick else "job"))
        self._callbacks[job.id] = job
        with self._cv:
            self._jobs.append(job)
            self._cv.notify()
        return job.id

    def kind(self, job_id: int) -> str | None:
        """The kind a job (submitted, not yet delivered) was given, or None."""
        job = self._callbacks.get(job_id)
        return job.kind if job is not None else None

    def supersede(self, kind: str) -> None:
        """A newer job of ``kind`` replaces the older ones: those waiting are dropped and
        the one running is cancelled (the latest wins; such jobs never queue up)."""
        with self._cv:
            dropped = [j for j in self._jobs if j.kind == kind]
            self._jobs = deque(j for j in self._jobs if j.kind != kind)
            handle = self._current
        for job in dropped:
            self._callbacks.pop(job.id, None)
        if handle is not None and handle.job.kind == kind and handle.cancel is not None:
            handle.cancel.cancel()  # this handle's job: another may have started since it was read

    def busy_apart_from(self, kind: str) -> bool:
        """Whether a long job of another kind runs or waits: one of ``kind`` submitted now
        would start only after it."""
        with self._cv:
            handle = self._current
            waiting = any(not j.quick and j.kind != kind for j in self._jobs)
        return waiting or (handle is not None and handle.job.kind != kind)

    def cancellable(self, job_id: int) -> bool:
        """Whether the job (submitted, not yet delivered) can be cancelled."""
        job = self._callbacks.get(job_id)
        return job is None or job.cancellable

    def cancel_current(self) -> None:
        handle = self._current
        if handle is not None and handle.cancel is not None and handle.job.cancellable:
            handle.cancel.cancel()

    def stop(self, timeout_ms: int = 30_000) -> None:
        """Cancel what runs, drop what waits, and join the thread."""
        with self._cv:
            self._stopping = True
            self._jobs.clear()
            self._cv.notify()
        self.cancel_current()
        self.wait(timeout_ms)

    def pending(self) -> int:
        with self._cv:
            return len(self._jobs) + (1 if self._current is not None else 0)

    def _deliver(self, job_id: int, result: Any) -> None:
        job = self._callbacks.pop(job_id, None)
        if job is not None and job.done is not None:
            job.done(result)

    def _deliver_error(self, job_id: int, message: str) -> None:
        job = self._callbacks.pop(job_id, None)
        if job is not None and job.failed is not None:
            job.failed(message)

    # ------------------------------------------------------------ worker-thread side

    def run(self) -> None:
        if self.background:
            _lower_priority()
        while True:
            with self._cv:
                while not self._jobs and not self._stopping:
                    self._cv.wait()
                if self._stopping:
                    break
                job = self._jobs.popleft()
                # Current before the lock is let go: a supersede() from now on finds and cancels it.
                handle = self._handle_for(job)
            self._run(handle)
            with self._cv:
                empty = not self._jobs
            if empty:
                self.idle.emit()
        ctx = self.context
        if ctx.project is not None:
            try:
                ctx.project.close()
            except Exception:  # noqa: BLE001 - closing on exit must not raise into Qt
                log.exception("closing the project failed")

    def _handle_for(self, job: Job) -> JobHandle:
        handle = JobHandle(self, job)
        if not job.quick:
            handle.cancel = _new_cancel_token()
            self._current = handle
        return handle

    def _run(self, handle: JobHandle) -> None:
        job = handle.job
        self.started_job.emit(job.id, job.name, job.quick)
        modules = len(sys.modules)
        try:
            result = job.fn(self.context, handle)
        except Exception as e:  # noqa: BLE001 - every failure becomes a message, never a dead thread
            self.failed_job.emit(job.id, _message(e))
        else:
            self.finished_job.emit(job.id, result)
        finally:
            if not job.quick:
                self._current = None
            if len(sys.modules) > modules:
                _freeze_imported()

    def _run_quick_jobs(self) -> None:
        """Run the quick jobs waiting behind a long one (called between its batches)."""
        if threading.current_thread() is threading.main_thread():
            return
        while True:
            with self._cv:
                job = next((j for j in self._jobs if j.quick), None)
                if job is None:
                    return
                self._jobs.remove(job)
            self._run(self._handle_for(job))  # quick: never the current job


def _freeze_imported() -> None:
    """Keep every object that exists now out of later garbage collections, after a job
    that imported modules (torch and the engine at start-up, ONNX and onnxruntime on the
    first labeling run: some 480,000 objects, nearly all of them module contents that
    live as long as the process).

    A full collection walks every object it tracks while holding the GIL: 170 ms for
    these on an idle machine, 800 ms on a busy one, and the window stood still for as
    long (the "stall when adding a folder": scanning makes enough objects to set one
    off). Frozen objects are still freed by reference counting; only cyclic garbage
    that exists at this moment is kept, a small one-off cost. No collect() first: it
    would be the very pause this avoids."""
    gc.freeze()


def _lower_priority() -> None:
    """Run engine work at a lower CPU priority than the window (nice is per thread on
    Linux, and the scan, decode and torch threads this thread starts inherit it), so
    that on a busy machine the scheduler serves the main thread first."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WORKER_NICE)
    except (AttributeError, OSError):  # not Linux/BSD, or not permitted: run at normal priority
        pass


def _new_cancel_token() -> Any:
    # Imported here: the engine (and torch behind it) loads in this thread, after the window shows.
    from engine.labeling.progress import CancelToken
    return CancelToken()


def _message(e: Exception) -> str:
    from engine.errors import FewShotError
    if isinstance(e, FewShotError):
        return str(e)
    log.error("engine job failed:\n%s", "".join(traceback.format_exception(e)))
    return f"Unexpected error: {type(e).__name__}: {e} (details are in the log)"

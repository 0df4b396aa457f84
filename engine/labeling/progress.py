"""Progress reports, ETA and cancellation for long labeling jobs.

The GUI runs these jobs in a worker thread and the CLI in the main thread;
both hand in a callback that receives :class:`Progress` snapshots and a
:class:`CancelToken` they may trip from anywhere (a button, a signal handler).
Jobs check the token between batches, so a cancel keeps every batch already
committed and costs at most the batches already in the forward pass (one per
forward stream).
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

# The rate is an exponential moving average over batches: the first batches
# pay for thread start-up and page faults, and a plain cumulative mean would
# keep that bias in the ETA for the whole run.
RATE_SMOOTHING = 0.3


@dataclass(frozen=True)
class Progress:
    """One snapshot: ``done`` of ``total`` images in ``stage`` ("embedding", "predicting").

    ``busy``: a step with nothing to count (preparing onnxruntime the first time),
    to be shown by its name; a stage with ``total`` 0 and not busy has no work at all.
    """

    stage: str
    done: int
    total: int
    images_per_s: float
    eta_s: float | None
    elapsed_s: float
    busy: bool = False

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0


ProgressCallback = Callable[[Progress], None]


class CancelToken:
    """Thread-safe "please stop": set by anyone, polled by the job between batches."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


class ProgressMeter:
    """Turns "n more images done" into :class:`Progress` snapshots for a callback."""

    def __init__(self, stage: str, total: int, callback: ProgressCallback | None,
                 clock: Callable[[], float] = time.perf_counter):
        self.stage = stage
        self.total = total
        self.done = 0
        self._callback = callback
        self._clock = clock
        self._start = clock()
        self._last = self._start
        self._rate: float | None = None

    def start(self) -> None:
        """Report 0 of total, so a progress bar appears before the first batch."""
        self._emit()

    def advance(self, n: int) -> Progress:
        now = self._clock()
        dt = now - self._last
        self._last = now
        self.done += n
        if n > 0 and dt > 0:
            rate = n / dt
            self._rate = rate if self._rate is None else (1 - RATE_SMOOTHING) * self._rate + RATE_SMOOTHING * rate
        return self._emit()

    @property
    def elapsed_s(self) -> float:
        return self._clock() - self._start

    def _emit(self) -> Progress:
        rate = self._rate or 0.0
        remaining = max(self.total - self.done, 0)
        eta = remaining / rate if rate > 0 else (0.0 if remaining == 0 else None)
        snapshot = Progress(self.stage, self.done, self.total, rate, eta, self.elapsed_s)
        if self._callback is not None:
            self._callback(snapshot)
        return snapshot

"""Predictions a refresh has computed, on screen before the project file holds them.

After a correction the engine recomputes every prediction in milliseconds, then spends
most of the refresh writing them (engine/labeling/fresh_predictions.py). The refresh job
publishes them first; from then until the job ends, every record the window shows (grid
tiles, the detail pane, review) is patched to what the store will hold once the write
lands, and the window re-reads the project when the job ends. A failed write drops the
patch and re-reads, so nothing shows that the project does not hold.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, Signal


class FreshView(QObject):
    shown = Signal()  # fresh predictions reached the screen (benchmarks/bench_gui_relabel.py times it)

    def __init__(self, worker: Any, results_model: Any, detail: Any, review: Any, reload: Callable[[], None],
                 parent: QObject | None = None):
        super().__init__(parent)
        self.results_model, self.detail, self.review, self.reload = results_model, detail, review, reload
        self.job_id: int | None = None
        self.fresh: Any = None  # engine.labeling.fresh_predictions.FreshPredictions
        worker.published.connect(self._published)
        worker.finished_job.connect(lambda job_id, _result: self._ended(job_id, failed=False))
        worker.failed_job.connect(lambda job_id, _message: self._ended(job_id, failed=True))

    def patch(self, rec: Any) -> Any:
        """``rec`` as the project will hold it once the refresh under way is written."""
        return self.fresh.patch(rec) if self.fresh is not None and rec is not None else rec

    def _published(self, job_id: int, result: Any) -> None:
        if not hasattr(result, "patch"):  # another kind of early result: not predictions
            return
        self.job_id, self.fresh = job_id, result
        self.results_model.show_fresh(result.patch)
        if self.detail.record is not None:
            self.detail.update_record(self.patch(self.detail.record))
        if self.review.record is not None:
            self.review.update_record(self.patch(self.review.record))
        self.shown.emit()

    def _ended(self, job_id: int, failed: bool) -> None:
        if job_id != self.job_id:
            return  # an older refresh that a newer one replaced, or another job
        self.job_id, self.fresh = None, None
        self.results_model.show_fresh(None)
        if failed:  # never written: show what the project holds
            self.reload()

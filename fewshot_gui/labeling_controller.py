"""Long jobs as the person sees them: adding a folder, labeling, refreshing after a correction,
the progress in the status bar, and Cancel.

Which job runs is told by its kind (``labeling``, ``export``, ...), given when it is
submitted, never guessed from its name.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QFileDialog, QWidget

from fewshot_gui import jobs
from fewshot_gui.progress_area import ProgressArea
from fewshot_gui.project_state import ProjectState
from fewshot_gui.worker import EngineWorker

MAX_DETAILS = 500  # problem lines in a report's details


class LabelingController(QObject):
    busy_changed = Signal()  # a long job started, or the last one ended: actions and panes update
    batch_written = Signal()  # predictions landed while labeling: the grid re-reads soon

    def __init__(self, worker: EngineWorker, progress: ProgressArea, state: ProjectState,
                 submit: Callable[..., int], notify: Callable[[str, str], None], reload: Callable[[], None],
                 status: Callable[[str, int], None], dialog_parent: QWidget, parent=None):
        super().__init__(parent)
        self.worker, self.progress, self.state = worker, progress, state
        self.submit, self.notify, self.reload, self.status = submit, notify, reload, status
        self.dialog_parent = dialog_parent
        self.kind: str | None = None  # the running long job's kind, None when none runs
        worker.started_job.connect(self._started)
        worker.progressed.connect(self._progressed)
        worker.batch_written.connect(lambda _id: self.batch_written.emit())
        worker.idle.connect(self._idle)
        progress.cancel.clicked.connect(self.cancel)

    @property
    def labeling(self) -> bool:
        return self.kind == "labeling"

    # ------------------------------------------------------------ jobs

    def _started(self, job_id: int, name: str, quick: bool) -> None:
        if quick:
            return
        self.progress.busy(name)
        # A Cancel that answered "cancelling" and then did nothing would mislead.
        self.progress.cancel.setEnabled(self.worker.cancellable(job_id))
        self.kind = self.worker.kind(job_id) or "job"
        self.busy_changed.emit()

    def _progressed(self, _job_id: int, stage: str, done: int, total: int, rate: float, eta: Any) -> None:
        self.progress.show_progress(stage, done, total, rate, eta)

    def _idle(self) -> None:
        self.progress.setVisible(False)
        self.progress.cancel.setEnabled(True)
        self.kind = None
        self.busy_changed.emit()

    def can_cancel(self) -> bool:
        return self.kind is not None and self.progress.cancel.isEnabled()

    def cancel(self) -> None:
        self.worker.cancel_current()
        self.status("Cancelling after the current batch\u2026", 3000)

    # ------------------------------------------------------------ labeling

    def add_folder(self, folder: str | None = None) -> None:
        if self.state.project is None:
            return
        if folder is None:
            folder = QFileDialog.getExistingDirectory(self.dialog_parent, "Folder of images to label")
            if not folder:
                return

        def done(result: tuple[Any, bool]) -> None:
            report, has_examples = result
            self.reload()
            problems = [f"{p}: {why}" for p, why in list(report.errors) + list(report.skipped)]
            text = f"{len(report.added):,} images added"
            if report.duplicates:
                text += f", {len(report.duplicates):,} already in the project"
            if problems:
                text += f", {len(problems):,} skipped (see details)"
            self.notify(text, "\n".join(problems[:MAX_DETAILS]))
            if has_examples:
                self.label()

        self.submit("Adding images", lambda ctx, h: jobs.add_images(ctx, h, folder), done=done, kind="scan")

    def label(self) -> None:
        if self.state.project is None:
            return
        started = time.monotonic()

        def done(summary: Any) -> None:
            self.reload()
            if summary is None:
                return
            what = "Labeling cancelled" if summary.cancelled else "Labeled"
            text = f"{what}: {summary.predicted:,} images predicted in {time.monotonic() - started:.1f} s"
            if summary.skipped_classes:
                text += f" (no examples yet: {', '.join(summary.skipped_classes)})"
            problems = [f"{p}: {why}" for _i, p, why in summary.failed]
            if problems:
                text += f"; {len(problems)} could not be read (see details)"
            self.notify(text, "\n".join(problems[:MAX_DETAILS]))

        self.submit("Labeling", jobs.label, done=done, kind="labeling")

    def refresh_predictions(self) -> None:
        """Re-adapt after the examples changed (a correction) and refresh every prediction."""
        self.submit("Updating predictions", jobs.refresh, done=lambda _r: self.reload(), kind="refresh")

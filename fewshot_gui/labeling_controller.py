"""Long jobs as the person sees them: adding a folder, labeling, refreshing after a correction,
the progress in the status bar, and Cancel.

Which job runs is told by its kind (``labeling``, ``export``, ...), given when it is
submitted, never guessed from its name.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtWidgets import QFileDialog, QWidget

from fewshot_gui import jobs
from fewshot_gui.folders import last_folder, remember_folder
from fewshot_gui.progress_area import ProgressArea
from fewshot_gui.project_state import ProjectState
from fewshot_gui.worker import EngineWorker

MAX_DETAILS = 500  # problem lines in a report's details


def added_text(report: Any) -> str:
    """What adding files did, in the terms the grid shows them: usable images added, the
    unreadable ones (they are in the project, marked, with their reason) and what was
    skipped (not images: not in the project)."""
    text = f"{len(report.added):,} image{'s' if len(report.added) != 1 else ''} added"
    if report.duplicates:
        text += f", {len(report.duplicates):,} already in the project"
    if report.errors:
        text += f", {len(report.errors):,} unreadable (in the project, marked with the reason; see details)"
    if report.skipped:
        text += f", {len(report.skipped):,} skipped (not images; see details)"
    return text


READAPT = "readapt"  # the kind of a re-adaptation after a correction: a newer one replaces it
# A refresh that neither shows predictions nor ends by then (a long label run of a model that
# adapts its backbone, one replaced by a newer correction) no longer holds back what waits on it.
SHOWN_FALLBACK_MS = 400


class LabelingController(QObject):
    busy_changed = Signal()  # a long job started, or the last one ended: actions and panes update
    batch_written = Signal()  # predictions landed while labeling: the grid re-reads soon

    def __init__(self, worker: EngineWorker, progress: ProgressArea, state: ProjectState,
                 submit: Callable[..., int], notify: Callable[[str, str], None], reload: Callable[[], None],
                 status: Callable[[str, int], None], dialog_parent: QWidget, settings: Any, parent=None):
        super().__init__(parent)
        self.worker, self.progress, self.state = worker, progress, state
        self.submit, self.notify, self.reload, self.status = submit, notify, reload, status
        self.dialog_parent = dialog_parent
        self.settings = settings
        self.kind: str | None = None  # the running long job's kind, None when none runs
        worker.started_job.connect(self._started)
        worker.progressed.connect(self._progressed)
        worker.batch_written.connect(lambda _id: self.batch_written.emit())
        self._shown: dict[int, Callable[[], None]] = {}  # refresh job id -> what runs when its predictions show
        for signal in (worker.published, worker.batch_written, worker.finished_job, worker.failed_job):
            signal.connect(self._fire_shown)
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
            folder = QFileDialog.getExistingDirectory(self.dialog_parent, "Folder of images to label",
                                                      last_folder(self.settings, "images"))
            if not folder:
                return
        remember_folder(self.settings, "images", folder)

        def done(result: tuple[Any, bool]) -> None:
            report, has_examples = result
            self.reload()
            details = "\n".join(f"{p}: {why}" for p, why in (list(report.errors) + list(report.skipped))[:MAX_DETAILS])
            self.notify(added_text(report), details)
            if has_examples:  # the label run's report keeps this one in front: it replaced it at once
                self.label(before=(added_text(report), details))

        self.submit("Adding images", lambda ctx, h: jobs.add_images(ctx, h, folder), done=done, kind="scan")

    def label(self, before: tuple[str, str] = ("", "")) -> None:
        """``before``: an earlier report (text, details) this run's report goes after."""
        if self.state.project is None:
            return
        started = time.monotonic()

        def done(result: Any) -> None:
            self.reload()
            summary, counts = result["summary"], result["counts"]
            what = "Labeling cancelled" if summary.cancelled else "Labeled"
            # The project's counts, as the status bar and the grid show them.
            text = f"{what}: {counts['predicted']:,} images predicted, {counts['confirmed']:,} confirmed by you"
            if counts["unlabeled"]:
                text += f", {counts['unlabeled']:,} not labeled yet"
            text += f" ({time.monotonic() - started:.1f} s)"
            if summary.skipped_classes:
                text += f" (no examples yet: {', '.join(summary.skipped_classes)})"
            problems = [f"{p}: {why}" for _i, p, why in summary.failed]
            if problems:
                text += f"; {len(problems)} could not be read (see details)"
            details = "\n".join(problems[:MAX_DETAILS])
            if before[0]:
                text, details = f"{before[0]} \u00b7 {text}", "\n".join(d for d in (before[1], details) if d)
            self.notify(text, details)
            self.warm_up()

        self.submit("Labeling", jobs.label_and_count, done=done, kind="labeling")

    def project_opened(self) -> None:
        """After a project opened with its model: predictions a stop left behind are refreshed,
        else the next correction's refresh is readied."""
        def checked(is_stale: bool) -> None:
            if is_stale:
                self.refresh_predictions()
            else:
                self.warm_up()
        self.submit("Checking the predictions", jobs.stale_predictions, quick=False, kind="model", done=checked)

    def warm_up(self) -> None:
        # Not a quick job: those run inside a long job's progress callbacks, and this one works
        # on the labeler a label run may be using. A READAPT: a correction's refresh, which does
        # the same work first, replaces it while it waits.
        self.submit("Readying corrections", jobs.warm_up, kind=READAPT, cancellable=False)

    def refresh_predictions(self, shown: Callable[[], None] | None = None) -> None:
        """Re-adapt after the examples changed (a correction) and refresh every prediction.

        For a method that adapts the backbone this is a provisional refresh at once, then
        the exact re-embedding of every image, which the next correction cancels and
        replaces (the latest wins). ``shown`` runs once: when the refresh has handed its
        predictions to the window, written its provisional ones, or ended, and at the latest
        SHOWN_FALLBACK_MS after; at once when the refresh must wait for another long job."""
        self.worker.supersede(READAPT)
        waits = self.worker.busy_apart_from(READAPT)
        job_id = self.submit("Updating predictions", jobs.refresh, done=lambda _r: self.reload(), kind=READAPT)
        if shown is not None and waits:
            shown()  # the refresh starts only after another job: what the person did shows now
        elif shown is not None:
            self._shown[job_id] = shown
            # With self as context: a window closed in the meantime gets no late reload.
            QTimer.singleShot(SHOWN_FALLBACK_MS, self, lambda: self._fire_shown(job_id))

    def _fire_shown(self, job_id: int, *_args: Any) -> None:
        shown = self._shown.pop(job_id, None)
        if shown is not None:
            shown()

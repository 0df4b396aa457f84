"""What a person changes in a project: classes, examples (one by one or whole folders of
them), labels, removing images, undo and redo. Each change is a job; the window reloads
after it, and corrections re-adapt the model (the labeling controller's refresh).
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal

from fewshot_gui import jobs
from fewshot_gui.project_state import ProjectState

MAX_DETAILS = 500


def problems_text(errors: list, skipped: list) -> str:
    return "\n".join(f"{p}: {why}" for p, why in (list(errors) + list(skipped))[:MAX_DETAILS])


class ProjectEdits(QObject):
    undone = Signal()  # an undo went through (review steps back)
    # The examples changed: refresh every prediction; the argument (or None) is called once the
    # refreshed predictions are on screen (LabelingController.refresh_predictions).
    predictions_stale = Signal(object)
    model_switched = Signal(object)  # the model the engine switched to for the project's examples (info dict)

    def __init__(self, state: ProjectState, submit: Callable[..., int], reload: Callable[[], None],
                 notify: Callable[[str, str], None], status: Callable[[str, int], None],
                 auto_model: Callable[[], bool], parent=None):
        super().__init__(parent)
        self.state, self.submit, self.reload, self.notify, self.status = state, submit, reload, notify, status
        self.auto_model = auto_model  # True while the person has not chosen a model for this project

    # ------------------------------------------------------------ classes

    def _project_job(self, name: str, call: Callable[[Any], Any]) -> None:
        self.submit(name, lambda ctx, h: call(jobs.project_of(ctx)), quick=True, done=lambda _r: self.reload())

    def add_class(self, name: str, color: str | None = None) -> None:
        self._project_job("Adding class", lambda p: p.add_class(name, color))

    def rename_class(self, class_id: int, name: str) -> None:
        self._project_job("Renaming class", lambda p: p.rename_class(class_id, name))

    def set_class_color(self, class_id: int, color: str) -> None:
        self._project_job("Colouring class", lambda p: p.set_class_color(class_id, color))

    def reorder_classes(self, class_ids: list[int]) -> None:
        self._project_job("Reordering classes", lambda p: p.reorder_classes(class_ids))

    def delete_class(self, class_id: int) -> None:
        self.submit("Deleting class", lambda ctx, h: jobs.delete_class(ctx, h, class_id),
                    done=lambda _r: self.reload(), kind="refresh")

    # ------------------------------------------------------------ examples

    def _model_reported(self, result: dict) -> None:
        if result.get("model") is not None:
            self.model_switched.emit(result["model"])

    def add_examples(self, class_id: int, paths: list[str], image_ids: list[int]) -> None:
        """Dropped files, folders or grid tiles become examples; the model re-adapts and
        every prediction refreshes in the same job."""
        name = next((c.name for c in self.state.classes if c.id == class_id), "the class")

        def done(result: dict) -> None:
            self.reload()
            self._model_reported(result)
            report = result["report"]
            n = len(report.added)
            text = f"{n} example{'s' if n != 1 else ''} added to {name}"
            if report.duplicates:
                text += f"; {len(report.duplicates)} already were examples"
            if report.errors:
                text += f"; {len(report.errors)} unreadable (kept in the project, marked; see details)"
            if report.skipped:
                text += f"; {len(report.skipped)} skipped (not images; see details)"
            self.notify(text, problems_text(report.errors, report.skipped))

        items = list(paths) + list(image_ids)
        auto = self.auto_model()
        self.submit(f"Adding examples to {name}",
                    lambda ctx, h: jobs.add_examples(ctx, h, class_id, items, auto_model=auto), done=done,
                    kind="examples")

    def import_examples(self, folder: str) -> None:
        """A folder of class sub-folders: one class each (matched by name or created), its
        images its examples."""
        def done(result: dict) -> None:
            self.reload()
            self._model_reported(result)
            report = result["report"]
            self.notify(f"From {Path(folder).name}: {report.summary()}", problems_text(report.errors, report.skipped))

        auto = self.auto_model()
        self.submit(f"Importing examples from {Path(folder).name}",
                    lambda ctx, h: jobs.import_examples(ctx, h, folder, auto_model=auto), done=done, kind="examples")

    # ------------------------------------------------------------ images

    def remove_images(self, image_ids: list[int], what: str) -> None:
        """Out of the project (the files stay on disk); undoable."""
        def done(result: dict) -> None:
            self.reload()
            n = result["removed"]
            self.status(f"Removed {n} image{'s' if n != 1 else ''} {what} from the project (Ctrl+Z puts "
                        f"{'them' if n != 1 else 'it'} back); the files are untouched", 10000)
            if result["examples"]:
                self.predictions_stale.emit(None)

        ids = list(image_ids)
        self.submit("Removing images", lambda ctx, h: jobs.remove_images(ctx, h, ids), quick=True, done=done)

    def remove_folder(self, folder: str) -> None:
        def done(ids: list[int]) -> None:
            if ids:
                self.remove_images(ids, f"of {folder}")
        self.submit("Finding images", lambda ctx, h: jobs.project_of(ctx).image_ids_under(folder), quick=True,
                    done=done)

    # ------------------------------------------------------------ labels and undo

    def _after_label_change(self, refresh_predictions: bool) -> None:
        if refresh_predictions:
            # Re-read once the refresh has shown its predictions: a re-read running beside it
            # competed for the interpreter and held them back 25 ms.
            self.predictions_stale.emit(self.reload)
        else:
            self.reload()

    def set_labels(self, image_ids: list[int], class_id: int | None) -> None:
        """Confirm images as a class. Those the model predicted otherwise are corrections:
        they become examples (one undo step), and every prediction is refreshed."""
        ids = list(image_ids)
        self.submit("Saving labels", lambda ctx, h: jobs.set_labels(ctx, h, ids, class_id), quick=True,
                    done=self._after_label_change)

    def undo(self) -> None:
        if self.state.project is None:
            return

        def done(description: Any) -> None:
            if description:
                self.status(f"Undone: {description}", 5000)
                self.undone.emit()
            self._after_label_change(bool(description))

        self.submit("Undoing", lambda ctx, h: jobs.project_of(ctx).undo(), quick=True, done=done)

    def redo(self) -> None:
        if self.state.project is None:
            return

        def done(description: Any) -> None:
            if description:
                self.status(f"Redone: {description}", 5000)
            self._after_label_change(bool(description))

        self.submit("Redoing", lambda ctx, h: jobs.project_of(ctx).redo(), quick=True, done=done)

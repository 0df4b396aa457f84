"""The main window: start page, or a project (classes | results grid or review | detail pane).

The window composes parts and wires their signals:
- :class:`ProjectState` (project_state.py): what the open project holds, read in the
  project-reader thread;
- :class:`ResultsPage` (results_page.py): filters, sort and the grid;
- :class:`LabelingController` (labeling_controller.py): long jobs, their progress and Cancel;
- :class:`ReviewController` (review_controller.py): review mode and its decisions;
- the actions, menus and toolbar (window_chrome.py) and the model choices (model_picker.py).

Threading: the main thread never calls the project or the engine.
- The *engine worker* runs every write and every slow call (jobs.py), in order.
- The *project reader* runs the reads the window needs (grid pages, counts, the
  class list, one image) and hands the results back as signals. A first version
  read on the main thread, which the store allows; but the store serialises calls
  under one lock, and while the worker commits a batch (an fsync: 50-250 ms on a
  busy disk) those reads froze the window for as long. A separate thread keeps
  reads off the worker's queue too, so tiles fill in while a folder is labeled.
Torch is never imported here: the first job imports the engine after the window is up.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QByteArray, QSettings, Qt, QTimer
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import QFileDialog, QMainWindow, QMessageBox, QSplitter, QStackedWidget

from fewshot_gui import export_labels, jobs
from fewshot_gui.classes_panel import ClassesPanel
from fewshot_gui.detail_pane import DetailPane
from fewshot_gui.labeling_controller import LabelingController
from fewshot_gui.method_picker import MethodPicker
from fewshot_gui.model_picker import ModelPicker
from fewshot_gui.progress_area import ProgressArea
from fewshot_gui.project_files import ProjectFiles
from fewshot_gui.project_state import ProjectState
from fewshot_gui.folders import last_folder, remember_folder
from fewshot_gui.fresh_view import FreshView
from fewshot_gui.plain_words import counts_text
from fewshot_gui.project_edits import ProjectEdits
from fewshot_gui.results_model import RecordRole, ResultsModel
from fewshot_gui.results_page import ResultsPage
from fewshot_gui.review import ReviewPanel
from fewshot_gui.review_controller import ReviewController
from fewshot_gui.start_page import StartPage
from fewshot_gui.thumbnails import ThumbnailLoader
from fewshot_gui.window_chrome import APP_NAME, BUNDLED_MODELS, WindowChrome
from fewshot_gui.worker import EngineWorker

__all__ = ["APP_NAME", "MainWindow", "ProgressArea"]

log = logging.getLogger(__name__)

# While labeling, the grid re-reads its pages at most this often: often enough that
# tiles visibly fill in, rarely enough that repainting never competes with input.
GRID_REFRESH_MS = 300


class MainWindow(WindowChrome, QMainWindow):
    def __init__(self, settings: QSettings | None = None, start_engine: bool = True):
        super().__init__()
        self.settings = settings if settings is not None else QSettings()
        self.training_panel = None  # opened from View > Meta-training (training_panel.py)
        self.setWindowTitle(APP_NAME)
        # The model last used; a new project's first examples choose the one that suits them
        # (photos, or omniglot for small grayscale images: jobs._suit_model).
        self.model_spec = str(self.settings.value("model", "omniglot"))
        self._model_chosen = False  # the person picked the model for the open project
        self.model_scores: tuple[str, ...] | None = None  # what the loaded model's predictions carry
        self.engine_ready = False
        self.worker = EngineWorker()
        self.reader = EngineWorker("project-reader", background=False)
        self.reader.start()
        self.state = ProjectState(self._fetch_or_fail, self)
        self.files = ProjectFiles(self.settings, self.submit, self, self)
        self.files.opened.connect(self._opened)
        self.edits = ProjectEdits(self.state, self.submit, self.reload, self.notify, self.statusBar().showMessage,
                                  self._auto_model, self)
        self.edits.model_switched.connect(self._model_switched)
        # The window's own API for these (menus, panels, scripts and tests call them).
        for name in ("add_class", "rename_class", "set_class_color", "reorder_classes", "delete_class",
                     "add_examples", "set_labels", "undo", "redo", "remove_images", "remove_folder"):
            setattr(self, name, getattr(self.edits, name))
        self._detail_wanted: int | None = None
        self.loader = ThumbnailLoader(self)
        self._grid_timer = QTimer(self, singleShot=True, interval=GRID_REFRESH_MS)
        self._grid_timer.timeout.connect(self.refresh_results)

        self._build_pages()
        self._build_actions()
        self._build_menus()
        self._build_toolbar()
        self._build_status_bar()
        self.labeling_jobs = LabelingController(self.worker, self.progress, self.state, self.submit, self.notify,
                                                self.reload, self.statusBar().showMessage, self, self.settings)
        self.labeling_jobs.busy_changed.connect(self._update_actions)
        self.labeling_jobs.batch_written.connect(self._schedule_grid_refresh)
        self.reviewing = ReviewController(self.center, self.review, self.results_page, self.state, self.submit,
                                          self.set_labels, self.reload, self)
        self.reviewing.review_toggled.connect(self._review_toggled)
        self.edits.undone.connect(self.reviewing.undone)
        self.edits.predictions_stale.connect(self.labeling_jobs.refresh_predictions)
        self.fresh = FreshView(self.worker, self.results_model, self.detail, self.review, self.reload, self)
        self.review.undo_requested.connect(self.undo)
        self.review.showing.connect(lambda image_id: self._show_detail(image_id) if self.in_review() else None)
        self.state.snapshot_changed.connect(self._apply_snapshot)
        self.state.counts_changed.connect(self._show_counts)
        self.model_picker = ModelPicker(self, BUNDLED_MODELS)
        self.method_picker = MethodPicker(self)
        self.files.recent_changed.connect(self._show_recent)
        self._restore_settings()
        self._update_actions()
        if start_engine:
            self.start_engine()

    # ================================================================ parts, as the tests and benchmarks see them

    project = property(lambda self: self.state.project)
    classes = property(lambda self: self.state.classes)
    undo_text = property(lambda self: self.state.undo_text)
    redo_text = property(lambda self: self.state.redo_text)
    labeling = property(lambda self: self.labeling_jobs.labeling)
    _snapshot_pending = property(lambda self: self.state._pending)

    def _build_pages(self) -> None:
        self.start_page = StartPage()
        self.start_page.new_requested.connect(self.new_project)
        self.start_page.open_requested.connect(self.open_project)
        self.start_page.folder_requested.connect(self.open_folder)
        self.start_page.recent_requested.connect(self.open_project)
        self.start_page.import_requested.connect(lambda: self.files.new_from_examples(self._opened_for_import))

        self.classes_panel = ClassesPanel(self.loader, self.settings)
        panel = self.classes_panel
        panel.add_requested.connect(self.add_class)
        panel.rename_requested.connect(self.rename_class)
        panel.color_requested.connect(self.set_class_color)
        panel.delete_requested.connect(self.delete_class)
        panel.reorder_requested.connect(self.reorder_classes)
        panel.examples_dropped.connect(self.add_examples)
        panel.folders_dropped.connect(lambda folders: [self.import_examples(f) for f in folders])

        self.results_model = ResultsModel(self.fetch, self)
        self.results_page = ResultsPage(self.results_model, self.loader)
        page = self.results_page
        self.grid, self.sort_box, self.grid_count = page.grid, page.sort_box, page.grid_count
        self.class_filter, self.status_filter, self.flag_filter = page.class_filter, page.status_filter, page.flag_filter
        page.filter_changed.connect(self._apply_filter)
        page.sort_changed.connect(self.results_model.set_sort)
        self.results_model.set_sort(*page.current_sort())  # the model starts in the order the box shows
        self.grid.current_changed.connect(self._show_detail)
        page.assign_requested.connect(self.assign_selected)
        page.examples_requested.connect(lambda class_id, ids: self.add_examples(class_id, [], ids))
        page.remove_requested.connect(lambda ids: self.remove_images(ids, "selected"))
        page.remove_folder_requested.connect(lambda folder: self.remove_folder(folder))

        self.review = ReviewPanel(self.loader)
        self.review.fetch_record = self.fetch_image
        self.center = QStackedWidget()
        self.center.addWidget(self.results_page)
        self.center.addWidget(self.review)
        self.detail = DetailPane(self.loader)
        self.splitter = QSplitter()
        self.splitter.addWidget(self.classes_panel)
        self.splitter.addWidget(self.center)
        self.splitter.addWidget(self.detail)
        self.splitter.setStretchFactor(0, 0)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setStretchFactor(2, 0)
        self.splitter.setSizes([290, 760, 320])

        self.pages = QStackedWidget()
        self.pages.addWidget(self.start_page)
        self.pages.addWidget(self.splitter)
        self.setCentralWidget(self.pages)

    # ================================================================ settings

    def _restore_settings(self) -> None:
        geometry = self.settings.value("geometry")
        if isinstance(geometry, QByteArray) and not geometry.isEmpty():
            self.restoreGeometry(geometry)
        else:
            self.resize(1360, 860)
        state = self.settings.value("splitter")
        if isinstance(state, QByteArray) and not state.isEmpty():
            self.splitter.restoreState(state)
        self.files.announce_recent()

    def recent_projects(self) -> list[str]:
        return self.files.recent_projects()

    def _show_recent(self, recent: list[str]) -> None:
        self.files.fill_menu(self.recent_menu, recent)
        self.start_page.set_recent(recent)

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt override
        if self.training_panel is not None and not self.training_panel.confirm_quit():
            event.ignore()  # a meta-training run is going and the person chose to keep it
            return
        self.settings.setValue("geometry", self.saveGeometry())
        self.settings.setValue("splitter", self.splitter.saveState())
        self.settings.setValue("model", self.model_spec)
        self.settings.sync()
        self.shutdown()
        super().closeEvent(event)

    def shutdown(self) -> None:
        """Stop the worker (it closes the project in its own thread) and the thumbnail threads."""
        self._grid_timer.stop()
        self.state.set_project(None)
        self.results_model.set_project(None)
        if self.worker.isRunning():
            self.worker.stop()
        if self.reader.isRunning():
            self.reader.stop()
        self.loader.shutdown()

    # ================================================================ jobs

    def submit(self, name: str, fn: Callable, *, quick: bool = False, done: Callable[[Any], None] | None = None,
               failed: Callable[[str], None] | None = None, cancellable: bool = True, kind: str | None = None) -> int:
        return self.worker.submit(name, fn, quick=quick, done=done, failed=failed or self.show_error,
                                  cancellable=cancellable, kind=kind)

    def start_engine(self) -> None:
        if not self.worker.isRunning():
            self.worker.start()
        self.submit("Loading the engine", jobs.start_engine, done=self._engine_started, kind="engine")
        self._load_model(self.model_spec)

    def _engine_started(self, device_text: str) -> None:
        self.engine_ready = True
        self.device_label.setText(device_text)

    def cancel(self) -> None:
        self.labeling_jobs.cancel()

    def add_folder(self, folder: str | None = None) -> None:
        self.labeling_jobs.add_folder(folder)

    def label(self) -> None:
        self.labeling_jobs.label()

    def show_error(self, message: str) -> None:
        """Engine errors say what to do; shown without blocking the window."""
        self.statusBar().showMessage(message, 15000)
        box = QMessageBox(QMessageBox.Icon.Warning, APP_NAME, message, QMessageBox.StandardButton.Ok, self)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.setWindowModality(Qt.WindowModality.NonModal)
        box.open()
        self.last_error = message

    def notify(self, text: str, details: str = "") -> None:
        """A non-blocking report (what was added, what was skipped and why)."""
        self.statusBar().showMessage(text, 10000)
        self.last_notice = (text, details)
        if details:
            box = QMessageBox(QMessageBox.Icon.Information, APP_NAME, text, QMessageBox.StandardButton.Ok, self)
            box.setDetailedText(details)
            box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
            box.setWindowModality(Qt.WindowModality.NonModal)
            box.open()

    # ================================================================ model

    def set_model(self, spec: str) -> None:
        if spec and spec != self.model_spec:
            self._model_chosen = True
            self.model_picker.load(spec)  # an ONNX file may need its input size asked first

    def choose_checkpoint(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Checkpoint folder made by 'fewshot train'",
                                                  last_folder(self.settings, "models"))
        if folder:
            remember_folder(self.settings, "models", folder)
            self._model_chosen = True
            self._load_model(folder)

    def _load_model(self, spec: str, preprocessing: dict | None = None) -> None:
        self.model_label.setText(f"Model: {Path(spec).name} (loading\u2026)")

        def done(info: dict) -> None:
            self._show_model(spec, info)

        def failed(message: str) -> None:
            self.model_label.setText(f"Model: {Path(self.model_spec).name}")
            self.model_picker.show_current()
            self.show_error(message)

        self.submit(f"Loading model {Path(spec).name}",
                    lambda ctx, h: jobs.load_model(ctx, h, spec, preprocessing), done=done, failed=failed,
                    kind="model")

    def _show_model(self, spec: str, info: dict) -> None:
        self.model_spec = spec
        self.settings.setValue("model", spec)
        self.model_label.setText(f"Model: {Path(spec).name}")
        self.model_label.setToolTip(f"{info['description']}\n{info['input']}")
        self.model_box.setToolTip(self.model_label.toolTip())
        self.model_scores = tuple(info["scores"])
        self.results_page.set_scores(self.model_scores)
        self.results_page.set_model_note(f"Labeling with: {info['description']}. A new project's first examples "
                                         "choose the model that suits them (photos, or characters for small "
                                         "grayscale images); the Model box in the toolbar changes it.")
        self.model_picker.model_loaded(spec)  # lists it among the recent models
        self.model_picker.show_current()  # the combo row and the menu tick
        self.method_picker.refresh(spec)

    def use_method(self, name: str) -> None:
        """Label with another method on the loaded model, then relabel (from the cache)."""
        spec = self.model_spec

        def done(info: dict) -> None:
            self._show_model(spec, info)
            if self.project is not None and self.classes:
                self.label()

        def failed(message: str) -> None:
            self.method_picker.refresh(spec)
            self.show_error(message)

        self.submit(f"Switching to {name}", lambda ctx, h: jobs.use_method(ctx, h, name), done=done,
                    failed=failed, kind="model")

    # ================================================================ projects

    def new_project(self, path: str | None = None) -> None:
        self.files.new_project(path)

    def open_project(self, path: str | None = None) -> None:
        self.files.open_project(path)

    def open_folder(self, folder: str | None = None, project_path: str | None = None,
                    as_classes: bool | None = None) -> None:
        self.files.open_folder(folder, self.add_folder, self.import_examples, project_path, as_classes)

    def _opened(self, project: Any, model_spec: str | None) -> None:
        self.set_project(project)
        self._model_chosen = model_spec is not None  # a labeled project keeps its model
        if model_spec is not None and model_spec != self.model_spec:
            self._load_model(model_spec)  # label with the model the project was labeled with
        if model_spec is not None:  # ... and with its head (the worker runs this after the load)
            self.submit("Restoring the method", jobs.restore_method, quick=False, kind="model",
                        done=lambda info: info is not None and self._show_model(model_spec, info))
            self.labeling_jobs.project_opened()

    def _opened_for_import(self, folder: str) -> None:
        self.import_examples(folder)

    def close_project(self) -> None:
        if self.project is None:
            return
        self.set_review_mode(False)
        self.set_project(None)
        self.files.close()

    def set_project(self, project: Any) -> None:
        self.state.set_project(project)
        self._detail_wanted = None
        self.detail.show_record(None, [])  # nothing of the last project stays on screen
        self.classes_panel.set_classes([], {})
        self.results_page.reset_filters()  # a filter of the last project could hide all of this one
        self.results_model.set_project(project)
        self.pages.setCurrentIndex(1 if project is not None else 0)
        self.setWindowTitle(f"{Path(project.path).stem} \u2014 {APP_NAME}" if project is not None else APP_NAME)
        self.reload()

    def fetch(self, read: Callable[[], Any], done: Callable[[Any], None]) -> None:
        """Run ``read`` in the project-reader thread; ``done(result)`` runs here after.
        A read of a project closed meanwhile fails quietly (the view moved on)."""
        self._fetch_or_fail(read, done, None)

    def _fetch_or_fail(self, read: Callable[[], Any], done: Callable[[Any], None],
                       failed: Callable[[str], None] | None) -> None:
        self.reader.submit("read", lambda _ctx, _h: read(), quick=True, done=done,
                           failed=failed or (lambda message: log.info("read failed: %s", message)))

    def fetch_image(self, image_id: int, done: Callable[[Any], None]) -> None:
        project = self.project
        if project is None:
            done(None)
            return
        self.fetch(lambda: project.image(image_id), lambda rec: done(self.fresh.patch(rec)))

    # ================================================================ refresh from the project

    def _schedule_grid_refresh(self) -> None:
        if not self._grid_timer.isActive():
            self._grid_timer.start()

    def refresh_results(self) -> None:
        """The light refresh while batches land: grid pages and counts only (classes,
        examples and the detail pane do not change while labeling)."""
        if self.project is None:
            return
        self.results_model.refresh()
        self.state.reload_counts(self.results_model.filters())

    def _show_counts(self, n: dict[str, int]) -> None:
        text, tip = counts_text(n)
        self.counts_label.setText(text)
        self.counts_label.setToolTip(tip)
        self.results_page.show_counts(n, bool(self.classes))

    def reload(self) -> None:
        """Re-read what the project holds (classes, examples, counts, undo text) in the
        reader thread, then refresh the grid, detail pane and review."""
        self.results_model.refresh()
        self.state.reload(self.results_model.filters())

    def _apply_snapshot(self, snap: dict | None) -> None:
        if snap is None:
            self.counts_label.clear()
            self._update_actions()
            return
        self.classes_panel.set_classes(self.classes, snap["examples"])
        self.grid.delegate.classes = {c.id: c for c in self.classes}
        self.results_page.set_classes(self.classes)
        self._update_assign_menu()
        self._update_actions()
        current = self.detail.record
        self._show_detail(current.id if current is not None else None)
        self.reviewing.show_snapshot(snap)
        self.grid.viewport().update()

    def _apply_filter(self, class_id: int | None, status: str | None, flag: str | None,
                      hide_confirmed: bool = False) -> None:
        self.results_model.set_filter(class_id, status, flag, hide_confirmed)
        self.reload()

    def _show_detail(self, image_id: int | None) -> None:
        self._detail_wanted = image_id
        project = self.project
        if image_id is None or project is None:
            self.detail.show_record(None, self.classes)
            return

        def done(result: tuple[Any, list[Any]]) -> None:
            if self._detail_wanted == image_id:  # the selection may have moved on meanwhile
                rec, history = result
                self.detail.show_record(self.fresh.patch(rec), self.classes, history)

        self.fetch(lambda: (project.image(image_id), project.label_history(image_id)), done)

    # ================================================================ labels, review

    def assign_selected(self, class_id: int | None) -> None:
        ids = self.grid.selected_ids()
        if ids:
            self.set_labels(ids, class_id)

    def import_examples(self, folder: str | None = None) -> None:
        """File > Import Examples from Folders: a folder with one sub-folder per class."""
        if self.project is None:
            return
        if folder is None:
            folder = QFileDialog.getExistingDirectory(self, "Folder with one sub-folder of examples per class",
                                                      last_folder(self.settings, "examples"))
            if not folder:
                return
        remember_folder(self.settings, "examples", folder)
        self.edits.import_examples(folder)

    def _auto_model(self) -> bool:
        """May the first examples choose the model? Not once the person chose one for the
        project, nor when a checkpoint or ONNX model of theirs is loaded."""
        return not self._model_chosen and self.model_spec in ("omniglot", "photos")

    def _model_switched(self, info: dict) -> None:
        """The engine chose the model that suits the project's first examples."""
        self._show_model(info["spec"], info)
        self.notify(f"Labeling with the {info['spec']} model, which suits these examples "
                    f"({info['description']}); another can be chosen in the toolbar")

    def in_review(self) -> bool:
        return self.reviewing.in_review()

    def set_review_mode(self, on: bool) -> None:
        self.reviewing.set_review_mode(on)

    def _review_toggled(self, on: bool) -> None:
        self.act_review.setChecked(on)
        self.detail.set_review_mode(on)
        if not on:
            self.grid.setFocus()
            current = self.grid.currentIndex()
            rec = current.data(RecordRole) if current.isValid() else None
            self._show_detail(rec.id if rec is not None else None)

    # ================================================================ export

    def export_labels(self, kind: str, path: str | None = None) -> None:
        export_labels.export_labels(self, kind, path)

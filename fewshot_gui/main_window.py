"""The main window: start page, or a project (classes | results grid or review | detail pane).

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

import hashlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QByteArray, QSettings, QStandardPaths, Qt, QTimer
from PySide6.QtGui import QAction, QActionGroup, QCloseEvent, QKeySequence
from PySide6.QtWidgets import (QComboBox, QFileDialog, QHBoxLayout, QLabel, QMainWindow, QMenu, QMessageBox,
                               QProgressBar, QPushButton, QSplitter, QStackedWidget, QToolBar, QVBoxLayout, QWidget)

from fewshot_gui import export_model, jobs
from fewshot_gui.classes_panel import ClassesPanel
from fewshot_gui.detail_pane import DetailPane
from fewshot_gui.model_picker import ModelPicker
from fewshot_gui.results_model import SORTS, STATUSES, ResultsModel
from fewshot_gui.results_view import ResultsView
from fewshot_gui.review import ReviewPanel
from fewshot_gui.start_page import StartPage
from fewshot_gui.thumbnails import ThumbnailLoader
from fewshot_gui.worker import EngineWorker

log = logging.getLogger(__name__)

APP_NAME = "Few-shot labeler"
PROJECT_FILTER = "Few-shot projects (*.fewshot)"
MAX_RECENT = 8
BUNDLED_MODELS = (("omniglot", "Omniglot characters (Conv4, 28 px)"),
                  ("photos", "Photos (EfficientNet-Lite0, 224 px)"))
# While labeling, the grid re-reads its pages at most this often: often enough that
# tiles visibly fill in, rarely enough that repainting never competes with input.
GRID_REFRESH_MS = 300
EXAMPLE_PATHS_SHOWN = 5  # as many as a class card shows

SHORTCUTS_HELP = """<h3>Keyboard shortcuts</h3>
<table cellpadding=3>
<tr><td><b>Review mode</b></td><td></td></tr>
<tr><td>1 \u2013 9</td><td>assign that class (a correction becomes an example)</td></tr>
<tr><td>Enter</td><td>accept the model's prediction</td></tr>
<tr><td>X</td><td>none of these classes</td></tr>
<tr><td>\u2190 \u2192</td><td>previous / next image</td></tr>
<tr><td>Esc</td><td>leave review mode</td></tr>
<tr><td><b>Grid</b></td><td></td></tr>
<tr><td>1 \u2013 9</td><td>assign that class to every selected image</td></tr>
<tr><td>Ctrl+A</td><td>select all</td></tr>
<tr><td><b>Anywhere</b></td><td></td></tr>
<tr><td>Ctrl+Z / Ctrl+Shift+Z</td><td>undo / redo a label or example</td></tr>
<tr><td>Ctrl+R</td><td>review mode</td></tr>
<tr><td>Ctrl+L</td><td>label the project's images</td></tr>
<tr><td>Ctrl+N / Ctrl+O</td><td>new / open project</td></tr>
</table>"""


def _fmt_eta(seconds: float | None) -> str:
    if seconds is None:
        return "ETA \u2014"
    s = int(round(seconds))
    return f"ETA {s // 60}:{s % 60:02d}"


class ProgressArea(QWidget):
    """Progress bar, rate and ETA, and Cancel, in the status bar while a long job runs."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.bar = QProgressBar()
        self.bar.setFixedWidth(220)
        self.bar.setTextVisible(True)
        self.text = QLabel()
        self.cancel = QPushButton("Cancel")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.text)
        layout.addWidget(self.bar)
        layout.addWidget(self.cancel)
        self.setVisible(False)

    def show_progress(self, stage: str, done: int, total: int, rate: float, eta: float | None) -> None:
        if total == 0:  # a step with nothing to count (preparing onnxruntime): busy, with its name
            self.busy(f"{stage[:1].upper()}{stage[1:]}\u2026")
            return
        self.setVisible(True)
        self.bar.setMaximum(max(total, 1))
        self.bar.setValue(min(done, max(total, 1)))
        self.bar.setFormat(f"{done:,} / {total:,}")
        rate_text = f" \u00b7 {rate:,.0f} images/s \u00b7 {_fmt_eta(eta)}" if rate > 0 else ""
        self.text.setText(f"{stage.capitalize()}{rate_text}")

    def busy(self, name: str) -> None:
        self.setVisible(True)
        self.bar.setMaximum(0)  # an indeterminate bar until the job reports numbers
        self.bar.setFormat("")
        self.text.setText(name)


class MainWindow(QMainWindow):
    def __init__(self, settings: QSettings | None = None, start_engine: bool = True):
        super().__init__()
        self.settings = settings if settings is not None else QSettings()
        self.setWindowTitle(APP_NAME)
        self.project: Any = None  # main-thread reference, for quick reads only
        self.classes: list[Any] = []
        self.model_spec = str(self.settings.value("model", "omniglot"))
        self.engine_ready = False
        self.labeling = False
        self._review_actions: list[int] = []  # review positions of decisions, for undo
        self.worker = EngineWorker()
        self.worker.progressed.connect(self._on_progress)
        self.worker.batch_written.connect(lambda _id: self._schedule_grid_refresh())
        self.worker.started_job.connect(self._on_job_started)
        self.worker.idle.connect(self._on_idle)
        self.reader = EngineWorker("project-reader", background=False)
        self.reader.start()
        self._snapshot_pending = False
        self._snapshot_again = False
        self.undo_text: str | None = None
        self._detail_wanted: int | None = None
        self.redo_text: str | None = None
        self.loader = ThumbnailLoader(self)
        self._grid_timer = QTimer(self, singleShot=True, interval=GRID_REFRESH_MS)
        self._grid_timer.timeout.connect(self.refresh_results)

        self._build_pages()
        self._build_actions()
        self._build_menus()
        self._build_toolbar()
        self._build_status_bar()
        self.model_picker = ModelPicker(self, BUNDLED_MODELS)
        self._restore_settings()
        self._update_actions()
        if start_engine:
            self.start_engine()

    # ================================================================ layout

    def _build_pages(self) -> None:
        self.start_page = StartPage()
        self.start_page.new_requested.connect(self.new_project)
        self.start_page.open_requested.connect(self.open_project)
        self.start_page.folder_requested.connect(self.open_folder)
        self.start_page.recent_requested.connect(self.open_project)

        self.classes_panel = ClassesPanel(self.loader)
        self.classes_panel.add_requested.connect(self.add_class)
        self.classes_panel.rename_requested.connect(self.rename_class)
        self.classes_panel.color_requested.connect(self.set_class_color)
        self.classes_panel.delete_requested.connect(self.delete_class)
        self.classes_panel.reorder_requested.connect(self.reorder_classes)
        self.classes_panel.examples_dropped.connect(self.add_examples)

        self.results_model = ResultsModel(self.fetch, self)
        self.grid = ResultsView(self.loader)
        self.grid.setModel(self.results_model)
        self.grid.current_changed.connect(self._show_detail)
        self.grid.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.grid.customContextMenuRequested.connect(self._grid_menu)
        self.grid.installEventFilter(self)
        self.class_filter = QComboBox()
        self.class_filter.setMinimumWidth(140)
        self.status_filter = QComboBox()
        for label, status in STATUSES:
            self.status_filter.addItem(label, status)
        self.sort_box = QComboBox()
        for i, (label, _key, _desc) in enumerate(SORTS):
            self.sort_box.addItem(label, i)
        self.class_filter.currentIndexChanged.connect(self._apply_filter)
        self.status_filter.currentIndexChanged.connect(self._apply_filter)
        self.sort_box.currentIndexChanged.connect(self._apply_sort)
        self._apply_sort()  # the model starts in the order the box shows
        self.grid_count = QLabel()
        filters = QHBoxLayout()
        filters.addWidget(QLabel("Show"))
        filters.addWidget(self.class_filter)
        filters.addWidget(self.status_filter)
        filters.addSpacing(12)
        filters.addWidget(QLabel("Sort"))
        filters.addWidget(self.sort_box)
        filters.addStretch(1)
        filters.addWidget(self.grid_count)
        self.empty_hint = QLabel()
        self.empty_hint.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty_hint.setWordWrap(True)
        self.empty_hint.setStyleSheet("color: palette(placeholder-text); font-size: 14px; padding: 30px;")
        results = QWidget()
        rl = QVBoxLayout(results)
        rl.setContentsMargins(6, 6, 6, 6)
        rl.addLayout(filters)
        rl.addWidget(self.empty_hint)
        rl.addWidget(self.grid, 1)

        self.review = ReviewPanel(self.loader)
        self.review.fetch_record = self.fetch_image
        self.review.assign.connect(self._review_assign)
        self.review.accept.connect(self._review_accept)
        self.review.none_of_these.connect(self._review_none)
        self.review.undo_requested.connect(self.undo)
        self.review.leave.connect(lambda: self.set_review_mode(False))
        self.review.mode_changed.connect(lambda _m: self._load_review_order())

        self.center = QStackedWidget()
        self.center.addWidget(results)
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

    def _build_actions(self) -> None:
        def action(text: str, slot: Callable, shortcut: Any = None, tip: str = "") -> QAction:
            a = QAction(text, self)
            a.triggered.connect(lambda _checked=False: slot())
            if shortcut is not None:
                a.setShortcut(QKeySequence(shortcut))
            if tip:
                a.setStatusTip(tip)
            return a

        self.act_new = action("&New Project\u2026", self.new_project, QKeySequence.StandardKey.New)
        self.act_open = action("&Open Project\u2026", self.open_project, QKeySequence.StandardKey.Open)
        self.act_open_folder = action("Open a &Folder of Images\u2026", self.open_folder)
        self.act_add_folder = action("&Add Folder to Label\u2026", self.add_folder, "Ctrl+Shift+O",
                                     "Add the images of a folder to the project and label them")
        self.act_label = action("&Label Images", self.label, "Ctrl+L",
                                "Adapt the model to the examples and label every image")
        self.act_cancel = action("&Cancel", self.cancel, None, "Stop the running job after its current batch")
        self.act_export_csv = action("Labels as &CSV\u2026", lambda: self.export_labels("csv"))
        self.act_export_json = action("Labels as &JSON\u2026", lambda: self.export_labels("json"))
        self.act_export_folders = action("Labels as Class &Folders\u2026", lambda: self.export_labels("folders"))
        self.act_export_model = action("Export &Model\u2026", lambda: export_model.export_model(self), None,
                                       "Save the model adapted to this project's examples as ONNX, "
                                       "checked against PyTorch")
        self.act_close = action("&Close Project", self.close_project, QKeySequence.StandardKey.Close)
        self.act_quit = action("&Quit", self.close, QKeySequence.StandardKey.Quit)
        self.act_undo = action("&Undo", self.undo, QKeySequence.StandardKey.Undo)
        self.act_redo = action("&Redo", self.redo, QKeySequence.StandardKey.Redo)
        self.act_review = action("&Review Mode", lambda: self.set_review_mode(not self.in_review()), "Ctrl+R",
                                 "Walk the images in review order and confirm or correct them by key")
        self.act_review.setCheckable(True)
        self.act_detail = QAction("&Detail Pane", self, checkable=True, checked=True)
        self.act_detail.toggled.connect(self.detail.setVisible)
        self.act_classes = QAction("&Classes Panel", self, checkable=True, checked=True)
        self.act_classes.toggled.connect(self.classes_panel.setVisible)
        self.act_shortcuts = action("&Keyboard Shortcuts", self.show_shortcuts, QKeySequence.StandardKey.HelpContents)
        self.act_about = action("&About", self.show_about)

    def _build_menus(self) -> None:
        bar = self.menuBar()
        file = bar.addMenu("&File")
        file.addAction(self.act_new)
        file.addAction(self.act_open)
        self.recent_menu = file.addMenu("Open &Recent")
        file.addAction(self.act_open_folder)
        file.addSeparator()
        file.addAction(self.act_add_folder)
        self.export_menu = file.addMenu("&Export")
        self.export_menu.addAction(self.act_export_csv)
        self.export_menu.addAction(self.act_export_json)
        self.export_menu.addAction(self.act_export_folders)
        file.addAction(self.act_export_model)
        file.addSeparator()
        file.addAction(self.act_close)
        file.addAction(self.act_quit)
        edit = bar.addMenu("&Edit")
        edit.addAction(self.act_undo)
        edit.addAction(self.act_redo)
        edit.addSeparator()
        self.assign_menu = edit.addMenu("&Assign Selection To")
        view = bar.addMenu("&View")
        view.addAction(self.act_review)
        view.addSeparator()
        view.addAction(self.act_classes)
        view.addAction(self.act_detail)
        labeling = bar.addMenu("&Labeling")
        labeling.addAction(self.act_label)
        labeling.addAction(self.act_cancel)
        self.model_menu = labeling.addMenu("&Model")
        group = QActionGroup(self)
        for spec, text in BUNDLED_MODELS:
            a = self.model_menu.addAction(text)
            a.setCheckable(True)
            a.setData(spec)
            a.setChecked(spec == self.model_spec)
            group.addAction(a)
            a.triggered.connect(lambda _c=False, s=spec: self.set_model(s))
        self.model_menu.addSeparator()
        self.model_menu.addAction("Checkpoint Folder\u2026", self.choose_checkpoint)
        self.model_group = group
        help_menu = bar.addMenu("&Help")
        help_menu.addAction(self.act_shortcuts)
        help_menu.addAction(self.act_about)

    def _build_toolbar(self) -> None:
        tb = QToolBar("Main")
        tb.setObjectName("main-toolbar")
        tb.setMovable(False)
        tb.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        tb.addAction(self.act_add_folder)
        tb.addAction(self.act_label)
        tb.addAction(self.act_review)
        tb.addSeparator()
        tb.addWidget(QLabel(" Model "))
        self.model_box = QComboBox()
        for spec, text in BUNDLED_MODELS:
            self.model_box.addItem(text, spec)
        if self.model_box.findData(self.model_spec) < 0:
            self.model_box.addItem(Path(self.model_spec).name, self.model_spec)
        self.model_box.setCurrentIndex(self.model_box.findData(self.model_spec))
        self.model_box.activated.connect(lambda i: self.set_model(self.model_box.itemData(i)))
        tb.addWidget(self.model_box)
        self.addToolBar(tb)
        self.toolbar = tb

    def _build_status_bar(self) -> None:
        sb = self.statusBar()
        self.progress = ProgressArea()
        self.progress.cancel.clicked.connect(self.cancel)
        self.counts_label = QLabel()
        self.model_label = QLabel()
        self.device_label = QLabel("Loading the engine\u2026")
        sb.addPermanentWidget(self.progress)
        sb.addPermanentWidget(self.counts_label)
        sb.addPermanentWidget(self.model_label)
        sb.addPermanentWidget(self.device_label)

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
        self._update_recent()

    def recent_projects(self) -> list[str]:
        value = self.settings.value("recent", [])
        if isinstance(value, str):
            value = [value]
        return [str(v) for v in (value or [])]

    def _remember(self, path: str) -> None:
        recent = [path] + [p for p in self.recent_projects() if p != path]
        self.settings.setValue("recent", recent[:MAX_RECENT])
        self._update_recent()

    def _update_recent(self) -> None:
        recent = [p for p in self.recent_projects() if Path(p).exists()]
        self.recent_menu.clear()
        for p in recent:
            self.recent_menu.addAction(p, lambda p=p: self.open_project(p))
        self.recent_menu.setEnabled(bool(recent))
        self.start_page.set_recent(recent)

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt override
        self.settings.setValue("geometry", self.saveGeometry())
        self.settings.setValue("splitter", self.splitter.saveState())
        self.settings.setValue("model", self.model_spec)
        self.settings.sync()
        self.shutdown()
        super().closeEvent(event)

    def shutdown(self) -> None:
        """Stop the worker (it closes the project in its own thread) and the thumbnail threads."""
        self._grid_timer.stop()
        self.project = None
        self.results_model.set_project(None)
        if self.worker.isRunning():
            self.worker.stop()
        if self.reader.isRunning():
            self.reader.stop()
        self.loader.shutdown()

    # ================================================================ jobs

    def submit(self, name: str, fn: Callable, *, quick: bool = False, done: Callable[[Any], None] | None = None,
               failed: Callable[[str], None] | None = None, cancellable: bool = True) -> int:
        return self.worker.submit(name, fn, quick=quick, done=done, failed=failed or self.show_error,
                                  cancellable=cancellable)

    def start_engine(self) -> None:
        if not self.worker.isRunning():
            self.worker.start()
        self.submit("Loading the engine", jobs.start_engine, done=self._engine_started)
        self._load_model(self.model_spec)

    def _engine_started(self, device_text: str) -> None:
        self.engine_ready = True
        self.device_label.setText(device_text)

    def _on_job_started(self, job_id: int, name: str, quick: bool) -> None:
        if not quick:
            self.progress.busy(name)
            # A Cancel that answered "cancelling" and then did nothing would mislead.
            self.progress.cancel.setEnabled(self.worker.cancellable(job_id))
            self.labeling = name.startswith("Labeling")
            self._update_actions()

    def _on_progress(self, _job_id: int, stage: str, done: int, total: int, rate: float, eta: Any) -> None:
        self.progress.show_progress(stage, done, total, rate, eta)

    def _on_idle(self) -> None:
        self.progress.setVisible(False)
        self.progress.cancel.setEnabled(True)
        self.labeling = False
        self._update_actions()

    def cancel(self) -> None:
        self.worker.cancel_current()
        self.statusBar().showMessage("Cancelling after the current batch\u2026", 3000)

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
            self.model_picker.load(spec)  # an ONNX file may need its input size asked first

    def choose_checkpoint(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Checkpoint folder made by 'fewshot train'")
        if folder:
            self._load_model(folder)

    def _load_model(self, spec: str, preprocessing: dict | None = None) -> None:
        self.model_label.setText(f"Model: {Path(spec).name} (loading\u2026)")

        def done(description: str) -> None:
            self.model_spec = spec
            self.settings.setValue("model", spec)
            self.model_label.setText(f"Model: {Path(spec).name}")
            self.model_label.setToolTip(description)
            self.model_picker.model_loaded(spec)  # lists it among the recent models
            self.model_picker.show_current()  # the combo row and the menu tick

        def failed(message: str) -> None:
            self.model_label.setText(f"Model: {Path(self.model_spec).name}")
            self.model_picker.show_current()
            self.show_error(message)

        self.submit(f"Loading model {Path(spec).name}",
                    lambda ctx, h: jobs.load_model(ctx, h, spec, preprocessing), done=done, failed=failed)

    # ================================================================ projects

    def new_project(self, path: str | None = None) -> None:
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "New project", str(Path.home() / "labels.fewshot"),
                                                  PROJECT_FILTER)
            if not path:
                return
            Path(path).unlink(missing_ok=True)  # the dialog already asked before replacing it
        self._open(path, create=True)

    def open_project(self, path: str | None = None) -> None:
        if path is None:
            path, _ = QFileDialog.getOpenFileName(self, "Open project", str(Path.home()), PROJECT_FILTER)
            if not path:
                return
        self._open(path, create=False)

    def open_folder(self, folder: str | None = None) -> None:
        """A project for a folder straight away, kept in the app's data folder so the
        image folder itself is never written to; opening the same folder again reopens it."""
        if folder is None:
            folder = QFileDialog.getExistingDirectory(self, "Folder of images to label")
            if not folder:
                return
        folder = str(Path(folder).resolve())
        base = Path(QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation)) / "projects"
        base.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha1(folder.encode()).hexdigest()[:8]
        path = base / f"{Path(folder).name or 'images'}-{digest}.fewshot"
        self._open(str(path), create=not path.exists(), then=lambda: self.add_folder(folder))

    def _open(self, path: str, create: bool, then: Callable[[], None] | None = None) -> None:
        def done(opened: tuple[Any, str | None]) -> None:
            project, model_spec = opened
            self.set_project(project)
            self._remember(str(project.path))
            if model_spec is not None and model_spec != self.model_spec:
                self._load_model(model_spec)  # label with the model the project was labeled with
            if then is not None:
                then()

        self.submit("Opening project", lambda ctx, h: jobs.open_project(ctx, h, path, create), done=done)

    def close_project(self) -> None:
        if self.project is None:
            return
        self.set_review_mode(False)
        self.set_project(None)
        self.submit("Closing project", jobs.close_project)

    def set_project(self, project: Any) -> None:
        self.project = project
        self.results_model.set_project(project)
        self.pages.setCurrentIndex(1 if project is not None else 0)
        self.setWindowTitle(f"{Path(project.path).stem} \u2014 {APP_NAME}" if project is not None else APP_NAME)
        self.reload()

    def fetch(self, read: Callable[[], Any], done: Callable[[Any], None]) -> None:
        """Run ``read`` in the project-reader thread; ``done(result)`` runs here after.
        A read of a project closed meanwhile fails quietly (the view moved on)."""
        self.reader.submit("read", lambda _ctx, _h: read(), quick=True, done=done,
                           failed=lambda message: log.info("read failed: %s", message))

    def fetch_image(self, image_id: int, done: Callable[[Any], None]) -> None:
        project = self.project
        if project is None:
            done(None)
            return
        self.fetch(lambda: project.image(image_id), done)

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
        project = self.project
        self.fetch(lambda: _counts(project), self._show_counts)

    def _show_counts(self, n: dict[str, int]) -> None:
        self.counts_label.setText(f"{n['total']:,} images \u00b7 {n['confirmed']:,} confirmed \u00b7 "
                                  f"{n['predicted']:,} predicted" + (f" \u00b7 {n['error']:,} unreadable"
                                                                       if n["error"] else ""))
        self.grid_count.setText(f"{n['shown']:,} shown")
        self._update_empty_hint(n["total"])

    def reload(self) -> None:
        """Re-read what the project holds (classes, examples, counts, undo text) in the
        reader thread, then refresh the grid, detail pane and review. Calls made while
        a read is on its way are merged into one more read after it."""
        self.results_model.refresh()
        project = self.project
        if project is None:
            self._apply_snapshot(None)
            return
        if self._snapshot_pending:
            self._snapshot_again = True
            return
        self._snapshot_pending = True
        model = self.results_model
        class_id, status = model.class_id, model.status

        def done(snap: Any) -> None:
            self._snapshot_pending = False
            if project is self.project:
                self._apply_snapshot(snap)
            if self._snapshot_again:
                self._snapshot_again = False
                self.reload()

        def failed(message: str) -> None:
            log.info("reload failed: %s", message)
            done(None)

        self.reader.submit("read", lambda _c, _h: _snapshot(project, class_id, status), quick=True, done=done,
                           failed=failed)

    def _apply_snapshot(self, snap: dict | None) -> None:
        if snap is None:
            self.undo_text = self.redo_text = None
            self.counts_label.clear()
            self._update_actions()
            return
        self.classes = snap["classes"]
        self.undo_text, self.redo_text = snap["undo"], snap["redo"]
        self.classes_panel.set_classes(self.classes, snap["examples"])
        self.grid.delegate.classes = {c.id: c for c in self.classes}
        self._update_class_filter()
        self._update_assign_menu()
        self._update_actions()
        self._show_counts(snap["counts"])
        current = self.detail.record
        self._show_detail(current.id if current is not None else None)
        if self.in_review():
            self.review.set_classes(self.classes)
            self.review.refresh()
        self.grid.viewport().update()

    def _update_empty_hint(self, total: int) -> None:
        if total == 0 and not self.classes:
            text = "Start with the classes: add a class on the left and drop a few example images on it.\n" \
                   "Then use \u201cAdd Folder to Label\u201d to label a whole folder."
        elif total == 0:
            text = "Drop a few example images on each class, then use \u201cAdd Folder to Label\u201d."
        else:
            text = ""
        self.empty_hint.setText(text)
        self.empty_hint.setVisible(bool(text))

    def _update_class_filter(self) -> None:
        current = self.class_filter.currentData()
        self.class_filter.blockSignals(True)
        self.class_filter.clear()
        self.class_filter.addItem("All classes", None)
        for c in self.classes:
            self.class_filter.addItem(c.name, c.id)
        i = self.class_filter.findData(current)
        self.class_filter.setCurrentIndex(max(i, 0))
        self.class_filter.blockSignals(False)
        if i < 0 and current is not None:
            self._apply_filter()

    def _update_assign_menu(self) -> None:
        self.assign_menu.clear()
        for i, c in enumerate(self.classes):
            a = self.assign_menu.addAction(c.name, lambda cid=c.id: self.assign_selected(cid))
            if i < 9:
                a.setShortcut(QKeySequence(str(i + 1)))
                a.setShortcutContext(Qt.ShortcutContext.WidgetShortcut)  # the grid handles digits itself
        self.assign_menu.addSeparator()
        self.assign_menu.addAction("None of These Classes", lambda: self.assign_selected(None))
        self.assign_menu.setEnabled(bool(self.classes) and self.project is not None)

    def _update_actions(self) -> None:
        has = self.project is not None
        for a in (self.act_add_folder, self.act_label, self.act_export_csv, self.act_export_json,
                  self.act_export_folders, self.act_close, self.act_review):
            a.setEnabled(has)
        self.export_menu.setEnabled(has)
        self.act_export_model.setEnabled(export_model.can_export(self))
        self.act_cancel.setEnabled(self.progress.isVisible() and self.progress.cancel.isEnabled())
        undo = self.undo_text if has else None
        redo = self.redo_text if has else None
        self.act_undo.setEnabled(undo is not None)
        self.act_undo.setText(f"&Undo {undo}" if undo else "&Undo")
        self.act_redo.setEnabled(redo is not None)
        self.act_redo.setText(f"&Redo {redo}" if redo else "&Redo")

    def _apply_filter(self) -> None:
        self.results_model.set_filter(self.class_filter.currentData(), self.status_filter.currentData())
        self.reload()

    def _apply_sort(self) -> None:
        _label, key, descending = SORTS[self.sort_box.currentIndex()]
        self.results_model.set_sort(key, descending)

    def _show_detail(self, image_id: int | None) -> None:
        if image_id is None:
            self.detail.show_record(None, self.classes)
            return
        self._detail_wanted = image_id
        project = self.project
        if project is None:
            self.detail.show_record(None, self.classes)
            return

        def done(result: tuple[Any, list[Any]]) -> None:
            if self._detail_wanted == image_id:  # the selection may have moved on meanwhile
                rec, history = result
                self.detail.show_record(rec, self.classes, history)

        self.fetch(lambda: (project.image(image_id), project.label_history(image_id)), done)

    # ================================================================ classes and examples

    def add_class(self, name: str, color: str | None = None) -> None:
        self.submit("Adding class", lambda ctx, h: jobs.project_of(ctx).add_class(name, color), quick=True,
                    done=lambda _id: self.reload())

    def rename_class(self, class_id: int, name: str) -> None:
        self.submit("Renaming class", lambda ctx, h: jobs.project_of(ctx).rename_class(class_id, name), quick=True,
                    done=lambda _r: self.reload())

    def set_class_color(self, class_id: int, color: str) -> None:
        self.submit("Colouring class", lambda ctx, h: jobs.project_of(ctx).set_class_color(class_id, color), quick=True,
                    done=lambda _r: self.reload())

    def reorder_classes(self, class_ids: list[int]) -> None:
        self.submit("Reordering classes", lambda ctx, h: jobs.project_of(ctx).reorder_classes(class_ids), quick=True,
                    done=lambda _r: self.reload())

    def delete_class(self, class_id: int) -> None:
        self.submit("Deleting class", lambda ctx, h: jobs.delete_class(ctx, h, class_id),
                    done=lambda _r: self.reload())

    def add_examples(self, class_id: int, paths: list[str], image_ids: list[int]) -> None:
        """Dropped files, folders or grid tiles become examples; the model re-adapts and
        every prediction refreshes in the same job."""
        name = next((c.name for c in self.classes if c.id == class_id), "the class")

        def done(report: Any) -> None:
            self.reload()
            n = len(report.added)
            text = f"{n} example{'s' if n != 1 else ''} added to {name}"
            problems = [f"{p}: {why}" for p, why in list(report.errors) + list(report.skipped)]
            if report.duplicates:
                text += f"; {len(report.duplicates)} already were examples"
            if problems:
                text += f"; {len(problems)} skipped (see details)"
            self.notify(text, "\n".join(problems))

        self.submit(f"Adding examples to {name}",
                    lambda ctx, h: jobs.add_examples(ctx, h, class_id, list(paths) + list(image_ids)), done=done)

    # ================================================================ images and labeling

    def add_folder(self, folder: str | None = None) -> None:
        if self.project is None:
            return
        if folder is None:
            folder = QFileDialog.getExistingDirectory(self, "Folder of images to label")
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
            self.notify(text, "\n".join(problems[:500]))
            if has_examples:
                self.label()

        self.submit("Adding images", lambda ctx, h: jobs.add_images(ctx, h, folder), done=done)

    def label(self) -> None:
        if self.project is None:
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
            self.notify(text, "\n".join(problems[:500]))

        self.submit("Labeling", jobs.label, done=done)

    # ================================================================ labels, review, undo

    def _after_label_change(self, refresh_predictions: bool) -> None:
        self.reload()
        if refresh_predictions:
            self.submit("Updating predictions", jobs.refresh, done=lambda _r: self.reload())

    def set_labels(self, image_ids: list[int], class_id: int | None) -> None:
        """Confirm images as a class. Those the model predicted otherwise are corrections:
        they become examples (one undo step), and every prediction is refreshed."""
        ids = list(image_ids)
        self.submit("Saving labels", lambda ctx, h: jobs.set_labels(ctx, h, ids, class_id), quick=True,
                    done=self._after_label_change)

    def assign_selected(self, class_id: int | None) -> None:
        ids = self.grid.selected_ids()
        if ids:
            self.set_labels(ids, class_id)

    def undo(self) -> None:
        if self.project is None:
            return

        def done(description: Any) -> None:
            if description:
                self.statusBar().showMessage(f"Undone: {description}", 5000)
                if self.in_review() and self._review_actions:
                    self.review.position = self._review_actions.pop()
            self._after_label_change(bool(description))

        self.submit("Undoing", lambda ctx, h: jobs.project_of(ctx).undo(), quick=True, done=done)

    def redo(self) -> None:
        if self.project is None:
            return

        def done(description: Any) -> None:
            if description:
                self.statusBar().showMessage(f"Redone: {description}", 5000)
            self._after_label_change(bool(description))

        self.submit("Redoing", lambda ctx, h: jobs.project_of(ctx).redo(), quick=True, done=done)

    def in_review(self) -> bool:
        return self.center.currentWidget() is self.review

    def set_review_mode(self, on: bool) -> None:
        if on and self.project is None:
            on = False
        self.act_review.setChecked(on)
        if on == self.in_review():
            return
        self.center.setCurrentWidget(self.review if on else self.center.widget(0))
        if on:
            self._review_actions.clear()
            self.review.start([], self.classes)
            self._load_review_order()
        else:
            self.grid.setFocus()
            self.reload()

    def _load_review_order(self) -> None:
        mode = self.review.mode.currentData()
        self.submit("Ordering for review", lambda ctx, h: jobs.review_order(ctx, h, mode), quick=True,
                    done=lambda order: self.review.start(order, self.classes) if self.in_review() else None)

    def _review_decided(self) -> None:
        self._review_actions.append(self.review.position)

    def _review_assign(self, image_id: int, class_id: int) -> None:
        self._review_decided()
        self.set_labels([image_id], class_id)

    def _review_accept(self, image_id: int) -> None:
        self._review_decided()
        self.submit("Saving label", lambda ctx, h: jobs.accept_prediction(ctx, h, image_id), quick=True,
                    done=lambda _r: self.reload())

    def _review_none(self, image_id: int) -> None:
        self._review_decided()
        self.set_labels([image_id], None)

    # ================================================================ export

    def export_labels(self, kind: str, path: str | None = None) -> None:
        if self.project is None:
            return
        stem = Path(self.project.path).stem
        if path is None:
            if kind == "folders":
                path = QFileDialog.getExistingDirectory(self, "Folder to copy the images into, one folder per class")
            else:
                path, _ = QFileDialog.getSaveFileName(self, f"Export labels as {kind.upper()}",
                                                      str(Path.home() / f"{stem}-labels.{kind}"),
                                                      f"{kind.upper()} (*.{kind})")
            if not path:
                return

        def done(report: Any) -> None:
            self.notify(f"Exported to {path}")
            self.last_export = report

        self.submit(f"Exporting labels ({kind})", lambda ctx, h: jobs.export_labels(ctx, h, kind, path), done=done)

    # ================================================================ grid input

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 - Qt override
        # Digits in the grid assign a class to the selection, as in review mode.
        if obj is self.grid and event.type() == event.Type.KeyPress:
            key = event.key()
            if Qt.Key.Key_1 <= key <= Qt.Key.Key_9 and not (event.modifiers() & ~Qt.KeyboardModifier.KeypadModifier):
                k = key - Qt.Key.Key_1
                if k < len(self.classes):
                    self.assign_selected(self.classes[k].id)
                return True
        return super().eventFilter(obj, event)

    def _grid_menu(self, pos) -> None:
        if not self.grid.selected_ids():
            return
        menu = QMenu(self)
        for c in self.classes:
            menu.addAction(f"Label as {c.name}", lambda cid=c.id: self.assign_selected(cid))
        menu.addAction("None of These Classes", lambda: self.assign_selected(None))
        menu.addSeparator()
        add = menu.addMenu("Make Examples Of")
        for c in self.classes:
            add.addAction(c.name, lambda cid=c.id: self.add_examples(cid, [], self.grid.selected_ids()))
        menu.exec(self.grid.viewport().mapToGlobal(pos))

    # ================================================================ help

    def show_shortcuts(self) -> None:
        QMessageBox.information(self, "Keyboard shortcuts", SHORTCUTS_HELP)

    def show_about(self) -> None:
        QMessageBox.about(self, f"About {APP_NAME}",
                          f"<h3>{APP_NAME}</h3><p>Labels folders of images from a few examples per class with "
                          "meta-learned few-shot models (Prototypical Networks and friends).</p>"
                          "<p>Corrections become examples and the model re-adapts at once.</p>")


def _counts(project: Any, class_id: int | None = None, status: str | None = None) -> dict[str, int]:
    """Runs in the reader thread: the numbers for the status bar and the grid header."""
    n = {s: project.count(status=s) for s in ("predicted", "confirmed", "error")}
    n["total"] = project.count()
    n["shown"] = project.count(class_id=class_id, status=status)
    return n


def _snapshot(project: Any, class_id: int | None, status: str | None) -> dict:
    """Runs in the reader thread: what the panels show besides the grid."""
    examples: dict[int, list[str]] = {}
    for image_id, cid in project.examples():
        paths = examples.setdefault(cid, [])
        # Paths only for the thumbnails shown; the rest are counted.
        paths.append(project.image(image_id).path if len(paths) < EXAMPLE_PATHS_SHOWN else "")
    return {"classes": project.classes(), "examples": examples, "counts": _counts(project, class_id, status),
            "undo": project.undo_text(), "redo": project.redo_text()}

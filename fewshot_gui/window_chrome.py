"""The main window's actions, menus, toolbar and status bar, and which of them are enabled.

A mixin of :class:`fewshot_gui.main_window.MainWindow`: one place that says what each
menu entry and shortcut does; the window's parts do the work.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import QComboBox, QLabel, QMessageBox, QToolBar

from engine.bundled_models import BUNDLED
from fewshot_gui import export_model, training_panel
from fewshot_gui.progress_area import ProgressArea

APP_NAME = "Few-shot labeler"
BUNDLED_MODELS = tuple((name, label) for name, (label, _description) in BUNDLED.items())

SHORTCUTS_HELP = """<h3>Keyboard shortcuts</h3>
<table cellpadding=3>
<tr><td><b>Review mode</b></td><td></td></tr>
<tr><td>1 \u2013 9, 0</td><td>assign the first ten classes (a correction becomes an example)</td></tr>
<tr><td>/ or a letter</td><td>find any class by name, Enter assigns it</td></tr>
<tr><td>Enter</td><td>accept the model's prediction</td></tr>
<tr><td>X</td><td>none of these classes</td></tr>
<tr><td>\u2190 \u2192</td><td>previous / next image</td></tr>
<tr><td>Esc</td><td>leave review mode</td></tr>
<tr><td><b>Grid</b></td><td></td></tr>
<tr><td>1 \u2013 9, 0</td><td>assign that class to every selected image</td></tr>
<tr><td>/ or a letter</td><td>find any class by name for the selection</td></tr>
<tr><td>Ctrl+A</td><td>select all</td></tr>
<tr><td><b>Anywhere</b></td><td></td></tr>
<tr><td>Ctrl+Z / Ctrl+Shift+Z</td><td>undo / redo a label or example</td></tr>
<tr><td>Ctrl+R</td><td>review mode</td></tr>
<tr><td>Ctrl+L</td><td>label the project's images</td></tr>
<tr><td>Ctrl+N / Ctrl+O</td><td>new / open project</td></tr>
</table>"""


class WindowChrome:
    """Actions, menus, toolbar and status bar (mixed into the QMainWindow)."""

    def _action(self, text: str, slot: Callable[[], Any], shortcut: Any = None, tip: str = "") -> QAction:
        a = QAction(text, self)
        a.triggered.connect(lambda _checked=False: slot())
        if shortcut is not None:
            a.setShortcut(QKeySequence(shortcut))
        if tip:
            a.setStatusTip(tip)
        return a

    def _build_actions(self) -> None:
        action = self._action
        self.act_new = action("&New Project\u2026", self.new_project, QKeySequence.StandardKey.New)
        self.act_open = action("&Open Project\u2026", self.open_project, QKeySequence.StandardKey.Open)
        self.act_open_folder = action("Open a &Folder of Images\u2026", self.open_folder)
        self.act_add_folder = action("&Add Folder to Label\u2026", self.add_folder, "Ctrl+Shift+O",
                                     "Add the images of a folder to the project and label them")
        self.act_import_examples = action("&Import Examples from Folders\u2026", self.import_examples, "Ctrl+Shift+I",
                                          "A folder with one sub-folder per class: each becomes a class, its images "
                                          "its examples")
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
        self.act_training = action("&Meta-training\u2026", lambda: training_panel.show_training(self), "Ctrl+Shift+T",
                                   "Meta-train a new model on Omniglot, mini-ImageNet, your folders or unlabeled "
                                   "images")
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
        file.addAction(self.act_import_examples)
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
        view.addSeparator()
        view.addAction(self.act_training)
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
        tb.addWidget(self.model_box)
        tb.addWidget(QLabel(" Method "))
        self.method_box = QComboBox()  # filled by method_picker.py once a model is loaded
        self.method_box.setToolTip("How the model learns from your examples")
        self.method_box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        tb.addWidget(self.method_box)
        self.addToolBar(tb)
        self.toolbar = tb

    def _build_status_bar(self) -> None:
        sb = self.statusBar()
        self.progress = ProgressArea()
        self.counts_label = QLabel()
        self.model_label = QLabel()
        self.device_label = QLabel("Loading the engine\u2026")
        sb.addPermanentWidget(self.progress)
        sb.addPermanentWidget(self.counts_label)
        sb.addPermanentWidget(self.model_label)
        sb.addPermanentWidget(self.device_label)

    def _update_assign_menu(self) -> None:
        self.assign_menu.clear()
        for i, c in enumerate(self.classes):
            a = self.assign_menu.addAction(c.name, lambda cid=c.id: self.assign_selected(cid))
            if i < 10:
                a.setShortcut(QKeySequence(str((i + 1) % 10)))
                a.setShortcutContext(Qt.ShortcutContext.WidgetShortcut)  # the grid handles digits itself
        self.assign_menu.addSeparator()
        self.assign_menu.addAction("None of These Classes", lambda: self.assign_selected(None))
        self.assign_menu.setEnabled(bool(self.classes) and self.project is not None)

    def _update_actions(self) -> None:
        has = self.project is not None
        for a in (self.act_add_folder, self.act_import_examples, self.act_label, self.act_export_csv,
                  self.act_export_json,
                  self.act_export_folders, self.act_close, self.act_review):
            a.setEnabled(has)
        self.export_menu.setEnabled(has)
        self.act_export_model.setEnabled(export_model.can_export(self))
        self.act_cancel.setEnabled(self.labeling_jobs.can_cancel())
        undo = self.state.undo_text if has else None
        redo = self.state.redo_text if has else None
        self.act_undo.setEnabled(undo is not None)
        self.act_undo.setText(f"&Undo {undo}" if undo else "&Undo")
        self.act_redo.setEnabled(redo is not None)
        self.act_redo.setText(f"&Redo {redo}" if redo else "&Redo")

    def show_shortcuts(self) -> None:
        QMessageBox.information(self, "Keyboard shortcuts", SHORTCUTS_HELP)

    def show_about(self) -> None:
        from engine.version import __version__
        QMessageBox.about(self, f"About {APP_NAME}",
                          f"<h3>{APP_NAME} {__version__}</h3><p>Labels folders of images from a few examples per "
                          "class with meta-learned few-shot models (Prototypical Networks and friends).</p>"
                          "<p>Corrections become examples and the model re-adapts at once.</p>")

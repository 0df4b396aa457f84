"""The model choices beyond the bundled ones: checkpoint folders and ONNX feature
extractors, and the models used recently (the method choice is method_picker.py).

Everything that reads a model file runs in the engine worker (``onnx`` and the engine
import torch); this side only shows menus and the input dialog. An ONNX file is asked
about once: the engine remembers its input size and normalisation by content.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Qt
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QFileDialog

from fewshot_gui import jobs
from fewshot_gui.onnx_dialog import OnnxPreprocessingDialog

RECENT_KEY = "recent_models"
MAX_RECENT_MODELS = 6
ONNX_FILTER = "ONNX models (*.onnx)"
# Marks the combo rows that open a chooser rather than name a model.
CHOOSER_ROLE = Qt.ItemDataRole.UserRole + 1


def is_onnx(spec: str) -> bool:
    return spec.lower().endswith(".onnx")


def _label(spec: str) -> str:
    return Path(spec).name if is_onnx(spec) else f"{Path(spec).name} (checkpoint folder)"


class ModelPicker(QObject):
    """Owns the Model menu's and the toolbar combo's entries besides the bundled models."""

    def __init__(self, window: Any, bundled: tuple[tuple[str, str], ...]):
        super().__init__(window)
        self.window = window
        self.bundled = bundled
        self.dialog: OnnxPreprocessingDialog | None = None
        menu = window.model_menu
        menu.setToolTipsVisible(True)
        # Recent models go between the bundled ones and the first separator: one list of
        # models to tick, then the choosers.
        self._recent_anchor = next(a for a in menu.actions() if a.isSeparator())
        self._recent_actions: list[QAction] = []
        self.act_onnx = QAction("ONNX Feature Extractor\u2026", window)
        self.act_onnx.setStatusTip("Use any ONNX image model's features with a ProtoNet head")
        self.act_onnx.triggered.connect(lambda _c=False: self.choose_onnx())
        menu.addAction(self.act_onnx)
        self.act_onnx_input = QAction("ONNX Input Settings\u2026", window)
        self.act_onnx_input.setStatusTip("See or change how images reach the ONNX model in use: size, channels, "
                                         "resizing, mean and std")
        self.act_onnx_input.setEnabled(False)
        self.act_onnx_input.triggered.connect(lambda _c=False: self.edit_onnx_input())
        menu.addAction(self.act_onnx_input)
        menu.addSeparator()  # the Method menu follows (method_picker.py)
        self._choosers = (("Checkpoint folder\u2026", window.choose_checkpoint),
                          ("ONNX feature extractor\u2026", self.choose_onnx))
        window.model_box.activated.connect(self._combo_activated)
        self._rebuild()

    # ------------------------------------------------------------ choosing

    def load(self, spec: str) -> None:
        """A model picked from a menu or the combo: ONNX files may need their input asked first."""
        if is_onnx(spec):
            self.use_onnx(spec)
        else:
            self.window._load_model(spec)

    def choose_onnx(self, path: str | None = None) -> None:
        if path is None:
            start = next((str(Path(s).parent) for s in self.recent() if is_onnx(s)), str(Path.home()))
            path, _ = QFileDialog.getOpenFileName(self.window, "ONNX image model to use as the feature extractor",
                                                  start, f"{ONNX_FILTER};;All files (*)")
            if not path:
                return
        self.use_onnx(path)

    def use_onnx(self, path: str) -> None:
        if self.dialog is not None:  # one question at a time
            self.dialog.raise_()
            return
        if not is_onnx(path):
            self.window.show_error(f"{path} is not an .onnx file; choose an ONNX image model (a file ending in .onnx)")
            self.show_current()
            return
        path = str(Path(path).absolute())

        def done(result: tuple[dict | None, dict | None, list]) -> None:
            remembered, suggested, shape = result
            if remembered is not None:
                self.window._load_model(path)  # the engine reads what it remembered
            else:
                self._ask(path, suggested, shape)

        def failed(message: str) -> None:
            self.show_current()
            self.window.show_error(message)

        # Quick: it runs between the batches of a label run, so the question comes at once.
        self.window.submit(f"Reading {Path(path).name}", lambda ctx, h: jobs.onnx_preprocessing(ctx, h, path),
                           quick=True, done=done, failed=failed)

    def edit_onnx_input(self) -> None:
        """The dialog again for the ONNX model in use, filled with what it remembers: the first
        answer is not final (a wrong size or normalisation only shows in the predictions)."""
        path = self.window.model_spec
        if not is_onnx(path) or self.dialog is not None:
            return

        def done(result: tuple[dict | None, dict | None, list]) -> None:
            remembered, suggested, shape = result
            self._ask(path, remembered or suggested, shape, relabel=True)

        self.window.submit(f"Reading {Path(path).name}", lambda ctx, h: jobs.onnx_preprocessing(ctx, h, path),
                           quick=True, done=done, failed=self.window.show_error)

    def _ask(self, path: str, suggested: dict, shape: list, relabel: bool = False) -> None:
        """``relabel``: the model in use changes its input, so the open project's predictions
        (made with the old one) are made again after the reload (jobs run in order)."""
        dialog = OnnxPreprocessingDialog(path, suggested, shape, self.window)
        self.dialog = dialog

        def finished(result: int) -> None:
            self.dialog = None
            prep = dialog.preprocessing()
            if result and prep is not None:
                self.window._load_model(path, prep)
                if relabel and self.window.project is not None and self.window.classes:
                    self.window.label()
            else:
                self.show_current()
            dialog.deleteLater()

        dialog.finished.connect(finished)
        dialog.open()  # window-modal, without a nested event loop

    def _pick(self, spec: str) -> None:
        if spec == self.window.model_spec:
            self.show_current()  # clicking the ticked model must not untick it
        else:
            self.window.set_model(spec)

    def _combo_activated(self, index: int) -> None:
        """The one handler of the toolbar combo: a model row loads it, a chooser row opens it."""
        chooser = self.window.model_box.itemData(index, CHOOSER_ROLE)
        if chooser is None:
            spec = self.window.model_box.itemData(index)
            if spec:
                self._pick(spec)
            return
        self.show_current()  # the row is an action, not a model to show as chosen
        self._choosers[chooser][1]()

    def show_current(self) -> None:
        """Undo the tick or combo row a person chose when nothing was loaded after all."""
        spec = self.window.model_spec
        box = self.window.model_box
        box.setCurrentIndex(max(0, box.findData(spec)))
        for a in self.window.model_group.actions():
            a.setChecked(a.data() == spec)

    # ------------------------------------------------------------ after a load

    def model_loaded(self, spec: str) -> None:
        """Remember the model among the recent ones."""
        self.act_onnx_input.setEnabled(is_onnx(spec))
        if spec not in {s for s, _ in self.bundled}:
            recent = [spec] + [s for s in self.recent() if s != spec]
            self.window.settings.setValue(RECENT_KEY, recent[:MAX_RECENT_MODELS])
        self._rebuild()

    def recent(self) -> list[str]:
        value = self.window.settings.value(RECENT_KEY, [])
        if isinstance(value, str):
            value = [value]
        return [str(v) for v in (value or [])]

    def _rebuild(self) -> None:
        """Recent models in the menu (ticked like the bundled ones) and in the combo, then
        the choosers at the combo's end; files gone since are left out."""
        window = self.window
        for a in self._recent_actions:
            window.model_group.removeAction(a)
            window.model_menu.removeAction(a)
            a.deleteLater()
        self._recent_actions = []
        current = window.model_spec
        recent = [s for s in self.recent() if Path(s).exists()]
        for spec in recent:
            a = QAction(_label(spec), window, checkable=True)
            a.setData(spec)
            a.setToolTip(spec)
            a.setChecked(spec == current)
            a.triggered.connect(lambda _c=False, s=spec: self._pick(s))
            window.model_group.addAction(a)
            window.model_menu.insertAction(self._recent_anchor, a)
            self._recent_actions.append(a)

        box = window.model_box
        box.blockSignals(True)
        models = list(self.bundled)
        shown = {s for s, _ in models}
        for spec in recent + [current]:
            if spec not in shown:
                models.append((spec, _label(spec)))
                shown.add(spec)
        box.clear()
        for spec, text in models:
            box.addItem(text, spec)
            if spec not in {s for s, _ in self.bundled}:
                box.setItemData(box.count() - 1, spec, Qt.ItemDataRole.ToolTipRole)
        box.insertSeparator(box.count())
        for i, (text, _slot) in enumerate(self._choosers):
            box.addItem(text)
            box.setItemData(box.count() - 1, i, CHOOSER_ROLE)
        box.setCurrentIndex(max(0, box.findData(current)))
        box.blockSignals(False)

"""The method choice: the toolbar's Method box and the Model > Method menu.

Every registered method is listed. Those the loaded model can label with are
enabled: its own, and the heads that need no training (ProtoNet, bayes-proto), which
work on any model's embeddings; the others are greyed out with the reason as their
tooltip (engine.method_choice). Choosing one relabels the project from its cached
embeddings, in the worker.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Qt

from fewshot_gui import jobs


class MethodPicker(QObject):
    def __init__(self, window: Any):
        super().__init__(window)
        self.window = window
        self.menu = window.model_menu.addMenu("Method")
        self.menu.setToolTipsVisible(True)
        self.menu.setEnabled(False)  # filled from the engine once a model is loaded
        self.box = window.method_box
        self.box.setEnabled(False)
        self.box.activated.connect(self._activated)
        self.active: str | None = None
        self.names: dict[str, str] = {}

    def refresh(self, spec: str) -> None:
        """Ask the engine what the loaded model offers, then show it."""
        self.window.submit("Listing methods", jobs.methods, quick=True,
                           done=lambda result: self.show(spec, *result))

    def show(self, spec: str, methods: list[tuple[str, str, str | None]], active: str | None) -> None:
        self.active = active
        self.names = {key: name for key, name, _why in methods}
        menu, box = self.menu, self.box
        menu.clear()
        menu.setEnabled(bool(methods))
        menu.setTitle(f"Method: {self.names.get(active, active)}" if active else "Method")
        box.blockSignals(True)
        box.clear()
        for key, name, why in methods:
            a = menu.addAction(name)
            a.setCheckable(True)
            a.setChecked(key == active)
            a.setEnabled(why is None)
            a.setToolTip(why or self._offered_tip(key, active))
            a.triggered.connect(lambda _c=False, k=key: self.choose(k))
            box.addItem(name, key)
            row = box.count() - 1
            box.setItemData(row, why or self._offered_tip(key, active), Qt.ItemDataRole.ToolTipRole)
            if why is not None:
                box.model().item(row).setEnabled(False)
        box.setCurrentIndex(max(0, box.findData(active)))
        box.setEnabled(bool(methods))
        box.blockSignals(False)
        label = self.window.model_label
        if spec == self.window.model_spec and active and label.text() == f"Model: {Path(spec).name}":
            label.setText(f"Model: {Path(spec).name} \u00b7 {self.names.get(active, active)}")

    @staticmethod
    def _offered_tip(key: str, active: str | None) -> str:
        if key == active:
            return "The method labeling now"
        from engine.method_choice import ANY_BACKBONE
        if key in ANY_BACKBONE:
            return "Works on any model's embeddings, with no training: switching relabels from the cache"
        return "The method this model was meta-trained with"

    def _activated(self, index: int) -> None:
        key = self.box.itemData(index)
        if key:
            self.choose(key)

    def choose(self, key: str) -> None:
        if key == self.active:
            self.box.setCurrentIndex(max(0, self.box.findData(key)))
            for a in self.menu.actions():
                a.setChecked(a.text() == self.names.get(key))
            return
        self.window.use_method(key)

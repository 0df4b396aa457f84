"""The results page: the filter and sort row, the grid of tiles, and what to do when it is empty.

The sort box is built from the uncertainty registry (engine.methods.uncertainty, which
imports no torch): a sort for every score the current model provides, so a score a model
does not give is not offered. The page emits what the person chose; the window decides
what to read.
"""
from __future__ import annotations

import os
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QCheckBox, QComboBox, QHBoxLayout, QLabel, QMenu, QPushButton, QVBoxLayout, QWidget

from engine.methods import uncertainty
from fewshot_gui.class_chooser import ClassChooser, class_for_key, opens_chooser
from fewshot_gui.results_model import STATUSES, ResultsModel
from fewshot_gui.results_view import ResultsView
from fewshot_gui.thumbnails import ThumbnailLoader

# (label, store sort key, descending) around the registry's scores: the most uncertain
# first leads, by name closes.
CONFIDENCE_SORTS = (("Least confident first", "confidence", False), ("Most confident first", "confidence", True))
NAME_SORT = ("Name", "name", False)


def sort_choices(scores: tuple[str, ...] | None) -> list[tuple[str, str, bool]]:
    """The sort box's entries for a model giving ``scores`` (None: the required ones)."""
    given = [s for s in uncertainty.SCORES if s.name in (scores or uncertainty.REQUIRED)]
    lead, rest = given[:1], given[1:]
    return ([(s.sort_label, s.name, s.descending) for s in lead] + list(CONFIDENCE_SORTS)
            + [(s.sort_label, s.name, s.descending) for s in rest] + [NAME_SORT])


class ResultsPage(QWidget):
    """Filters (class, status), sort, the grid and its count."""

    filter_changed = Signal(object, object, object, bool)  # class id, status, flag (a score name), hide confirmed
    sort_changed = Signal(str, bool)  # store sort key, descending
    assign_requested = Signal(object)  # a class id (or None: none of these) for the selected tiles
    examples_requested = Signal(int, list)  # class id, image ids: make the selected tiles its examples
    remove_requested = Signal(list)  # image ids: out of the project (files stay)
    remove_folder_requested = Signal(str)  # a folder: every image of it out of the project

    def __init__(self, results_model: ResultsModel, loader: ThumbnailLoader, parent=None):
        super().__init__(parent)
        self.results_model = results_model
        self.grid = ResultsView(loader)
        self.grid.setModel(results_model)
        self.grid.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.grid.customContextMenuRequested.connect(self._grid_menu)
        self.grid.installEventFilter(self)
        self.classes: list[Any] = []
        self.chooser = ClassChooser(self.grid)
        self.chooser.chosen.connect(lambda class_id: self.assign_requested.emit(class_id))
        self.class_filter = QComboBox()
        self.status_filter = QComboBox()
        for label, status in STATUSES:
            self.status_filter.addItem(label, status)
        self.flag_filter = QComboBox()
        self.hide_confirmed = QCheckBox("Hide confirmed")
        self.hide_confirmed.setToolTip("Leave out the images you labelled, so what is left to check stays together")
        self.hide_confirmed.toggled.connect(self._filter_chosen)
        self.hide_confirmed.clicked.connect(lambda: setattr(self, "_hide_chosen", True))
        self._hide_chosen = False  # the person set the box: picking a sort no longer does
        self.sort_box = QComboBox()
        # Each box asks for its longest entry (the filters' and sort's follow the method's scores:
        # sized to what they hold now, not at first show), and shrinks to these widths before the
        # window has to be wider: on a 1280 px screen the row must fit. The sort box, read whole
        # more often, gives up least.
        for box, narrowest in ((self.status_filter, 95), (self.flag_filter, 105), (self.sort_box, 150)):
            box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
            box.setMinimumWidth(narrowest)
        # Class names can be long: the box holds "All classes" and a name's start; its list shows them whole.
        self.class_filter.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.class_filter.setMinimumContentsLength(10)
        self._sorts: list[tuple[str, str, bool]] = []
        self._flags: list[str | None] = []
        self.set_scores(None)
        self.class_filter.currentIndexChanged.connect(self._filter_chosen)
        self.status_filter.currentIndexChanged.connect(self._filter_chosen)
        self.flag_filter.currentIndexChanged.connect(self._filter_chosen)
        self.sort_box.currentIndexChanged.connect(self._sort_chosen)
        self.sort_box.activated.connect(self._sort_picked)
        self.grid_count = QLabel()
        filters = QHBoxLayout()
        filters.addWidget(QLabel("Show"))
        filters.addWidget(self.class_filter)
        filters.addWidget(self.status_filter)
        filters.addWidget(self.flag_filter)
        filters.addWidget(self.hide_confirmed)
        filters.addSpacing(12)
        filters.addWidget(QLabel("Sort"))
        filters.addWidget(self.sort_box)
        filters.addStretch(1)
        filters.addWidget(self.grid_count)
        self.empty_hint = QLabel()
        self.empty_hint.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty_hint.setWordWrap(True)
        self.empty_hint.setStyleSheet("color: palette(placeholder-text); font-size: 14px; padding: 30px;")
        self.show_all = QPushButton("Show all images")
        self.show_all.clicked.connect(self.reset_filters)
        self.show_all.setVisible(False)
        self.model_note = QLabel()  # which model labels this project, shown while it has no images
        self.model_note.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.model_note.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addLayout(filters)
        layout.addWidget(self.empty_hint)
        layout.addWidget(self.model_note)
        layout.addWidget(self.show_all, 0, Qt.AlignmentFlag.AlignHCenter)
        layout.addWidget(self.grid, 1)

    # ------------------------------------------------------------ what the person chose

    def _filter_chosen(self) -> None:
        self.filter_changed.emit(self.class_filter.currentData(), self.status_filter.currentData(),
                                 self.flag_filter.currentData(), self.hide_confirmed.isChecked())

    def reset_filters(self) -> None:
        """Every image again (a new project, or "Show all images" when a filter hid everything)."""
        for box in (self.class_filter, self.status_filter, self.flag_filter):
            box.blockSignals(True)
            box.setCurrentIndex(0)
            box.blockSignals(False)
        self.hide_confirmed.blockSignals(True)
        self.hide_confirmed.setChecked(False)
        self.hide_confirmed.blockSignals(False)
        self._hide_chosen = False
        self._filter_chosen()

    def set_model_note(self, text: str) -> None:
        self.model_note.setText(text)

    def current_sort(self) -> tuple[str, bool]:
        """(store sort key, descending) of the sort shown."""
        _label, key, descending = self._sorts[max(0, self.sort_box.currentIndex())]
        return key, descending

    def _sort_picked(self, _index: int) -> None:
        """A person picked a sort: a review order (uncertainty, confidence) hides what is
        confirmed already, unless they chose otherwise with the box."""
        if not self._hide_chosen:
            self.hide_confirmed.setChecked(self.current_sort()[0] != "name")

    def _sort_chosen(self) -> None:
        if self._sorts:
            self.sort_changed.emit(*self.current_sort())

    # ------------------------------------------------------------ what the window shows

    def set_scores(self, scores: tuple[str, ...] | None) -> None:
        """Offer the sorts and flags of the scores the current model provides; the chosen
        ones stay when they are still offered."""
        self._set_flags(scores)
        choices = sort_choices(scores)
        if choices == self._sorts:
            return
        current = self._sorts[self.sort_box.currentIndex()][1:] if self._sorts else None
        self._sorts = choices
        self.sort_box.blockSignals(True)
        self.sort_box.clear()
        for label, key, _descending in choices:
            score = uncertainty.BY_NAME.get(key)
            self.sort_box.addItem(label, key)
            if score is not None:
                self.sort_box.setItemData(self.sort_box.count() - 1, score.description, Qt.ItemDataRole.ToolTipRole)
        keys = [c[1:] for c in choices]
        self.sort_box.setCurrentIndex(keys.index(current) if current in keys else 0)
        self.sort_box.blockSignals(False)
        if current is not None and current not in keys:
            self._sort_chosen()

    def _set_flags(self, scores: tuple[str, ...] | None) -> None:
        flags = [None] + [s.name for s in uncertainty.SCORES
                          if s.flag is not None and s.name in (scores or uncertainty.REQUIRED)]
        if flags == self._flags:
            return
        current = self.flag_filter.currentData()
        self._flags = flags
        self.flag_filter.blockSignals(True)
        self.flag_filter.clear()
        for name in flags:
            score = uncertainty.BY_NAME.get(name) if name else None
            self.flag_filter.addItem("Any certainty" if score is None else f"Only {score.flag_label}", name)
            if score is not None:
                self.flag_filter.setItemData(self.flag_filter.count() - 1, f"{score.flag_rule}: {score.description}",
                                             Qt.ItemDataRole.ToolTipRole)
        self.flag_filter.setCurrentIndex(max(0, self.flag_filter.findData(current)))
        self.flag_filter.blockSignals(False)
        if current is not None and current not in flags:
            self._filter_chosen()

    def set_classes(self, classes: list[Any]) -> None:
        """The class filter lists the project's classes; a deleted class falls back to all."""
        self.classes = list(classes)
        current = self.class_filter.currentData()
        self.class_filter.blockSignals(True)
        self.class_filter.clear()
        self.class_filter.addItem("All classes", None)
        for c in classes:
            self.class_filter.addItem(c.name, c.id)
        i = self.class_filter.findData(current)
        self.class_filter.setCurrentIndex(max(i, 0))
        self.class_filter.blockSignals(False)
        if i < 0 and current is not None:
            self._filter_chosen()

    def show_counts(self, counts: dict[str, int], has_classes: bool) -> None:
        self.grid_count.setText(f"{counts['shown']:,} shown" + (f" of {counts['total']:,}"
                                                                  if counts["shown"] != counts["total"] else ""))
        total = counts["total"]
        hidden = total > 0 and counts["shown"] == 0
        if total == 0 and not has_classes:
            text = ("Start with the classes: File > Import Examples from Folders takes a folder with one "
                    "sub-folder per class; or add a class on the left and drop a few example images on it.\n"
                    "Then use \u201cAdd Folder to Label\u201d to label a whole folder.")
        elif total == 0:
            text = "Drop a few example images on each class, then use \u201cAdd Folder to Label\u201d."
        elif hidden:
            text = f"No image matches the filter: it hides all {total:,} images of the project."
        else:
            text = ""
        self.empty_hint.setText(text)
        self.empty_hint.setVisible(bool(text))
        self.model_note.setVisible(total == 0 and bool(self.model_note.text()))
        self.show_all.setVisible(hidden)

    # ------------------------------------------------------------ grid input

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 - Qt override
        # Keys in the grid assign a class to the selection, as in review mode: 1-9 and 0
        # the first ten, / or a letter a search box over every class.
        if obj is self.grid and event.type() == event.Type.KeyPress:
            key = event.key()
            plain = not (event.modifiers() & ~Qt.KeyboardModifier.KeypadModifier)
            if plain and (Qt.Key.Key_0 <= key <= Qt.Key.Key_9):
                cls = class_for_key(key, self.classes)
                if cls is not None and self.grid.selected_ids():
                    self.assign_requested.emit(cls.id)
                return True
            start = opens_chooser(event)
            if start is not None and self.classes and self.grid.selected_ids():
                n = len(self.grid.selected_ids())
                self.chooser.open_for(self.classes, f"{n} selected image{'s' if n != 1 else ''}", start)
                return True
        return super().eventFilter(obj, event)

    def _grid_menu(self, pos) -> None:
        """Only what applies to the selection: unreadable files cannot be labelled or be
        examples, so for them the menu offers what can be done (remove them)."""
        records = self.grid.selected_records()
        if records:
            self.menu_for(records).exec(self.grid.viewport().mapToGlobal(pos))

    def menu_for(self, records: list) -> QMenu:
        usable = [r.id for r in records if r.error is None]
        menu = QMenu(self)
        if usable:
            for c in self.classes:
                menu.addAction(f"Label as {c.name}", lambda cid=c.id: self.assign_requested.emit(cid))
            menu.addAction("None of These Classes", lambda: self.assign_requested.emit(None))
            menu.addSeparator()
            add = menu.addMenu("Make Examples Of")
            for c in self.classes:
                add.addAction(c.name, lambda cid=c.id: self.examples_requested.emit(cid, usable))
            menu.addSeparator()
        n = len(records)
        menu.addAction(f"Remove {'This Image' if n == 1 else f'{n} Images'} from Project",
                       lambda: self.remove_requested.emit([r.id for r in records]))
        folder = os.path.dirname(records[0].path)
        menu.addAction(f"Remove Folder \u201c{os.path.basename(folder) or folder}\u201d from Project",
                       lambda: self.remove_folder_requested.emit(folder))
        return menu

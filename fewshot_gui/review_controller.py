"""Review mode's side of the window: entering and leaving it, the order, and what each key decides.

The review panel (review.py) only says what the person decided; this turns each
decision into a job (a correction becomes an example and every prediction refreshes)
and remembers where each decision was made, so that undo steps back to it.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QStackedWidget, QWidget

from fewshot_gui import jobs
from fewshot_gui.project_state import ProjectState
from fewshot_gui.review import ReviewPanel


class ReviewController(QObject):
    review_toggled = Signal(bool)  # review mode on or off

    def __init__(self, center: QStackedWidget, review: ReviewPanel, grid_page: QWidget, state: ProjectState,
                 submit: Callable[..., int], set_labels: Callable[[list[int], int | None], None],
                 reload: Callable[[], None], parent=None):
        super().__init__(parent)
        self.center, self.review, self.grid_page, self.state = center, review, grid_page, state
        self.submit, self.set_labels, self.reload = submit, set_labels, reload
        self.decided: list[int] = []  # the images decided on in review, in order, for undo
        review.assign.connect(self._assign)
        review.accept.connect(self._accept)
        review.none_of_these.connect(self._none)
        review.leave.connect(lambda: self.set_review_mode(False))
        review.mode_changed.connect(lambda _m: self.load_order())

    def in_review(self) -> bool:
        return self.center.currentWidget() is self.review

    def set_review_mode(self, on: bool) -> None:
        if on and self.state.project is None:
            on = False
        if on == self.in_review():
            self.review_toggled.emit(on)
            return
        self.center.setCurrentWidget(self.review if on else self.grid_page)
        if on:
            self.decided.clear()
            self.review.start([], self.state.classes)
            self.load_order()
        self.review_toggled.emit(on)
        if not on:
            self.reload()

    def load_order(self) -> None:
        mode = self.review.mode.currentData()
        self.submit("Ordering for review", lambda ctx, h: jobs.review_order(ctx, h, mode), quick=True,
                    done=lambda order: self.review.start(order, self.state.classes) if self.in_review() else None)

    def undone(self) -> None:
        """An undo went through: step back to the image whose decision was undone, found by its
        id (the order may have changed since: a saved position would land on another image)."""
        if self.in_review() and self.decided:
            image_id = self.decided.pop()
            if image_id in self.review.order:
                self.review.position = self.review.order.index(image_id)

    def show_snapshot(self, snap: Any) -> None:
        if snap is not None and self.in_review():
            self.review.set_classes(self.state.classes)
            self.review.refresh()

    def _decided(self, image_id: int) -> None:
        self.decided.append(image_id)

    def _assign(self, image_id: int, class_id: int) -> None:
        self._decided(image_id)
        self.set_labels([image_id], class_id)

    def _accept(self, image_id: int) -> None:
        self._decided(image_id)
        self.submit("Saving label", lambda ctx, h: jobs.accept_prediction(ctx, h, image_id), quick=True,
                    done=lambda _r: self.reload())

    def _none(self, image_id: int) -> None:
        self._decided(image_id)
        self.set_labels([image_id], None)

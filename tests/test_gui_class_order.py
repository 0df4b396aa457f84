"""Dragging class cards to reorder the classes: real drag-enter/move/drop events carrying
the card MIME type (QDrag.exec cannot run offscreen), the order saved in the project,
the number keys following it, and card drags never mistaken for example drops."""
from __future__ import annotations

import json

import numpy as np
import pytest
from gui_helpers import WAIT, open_project_window, send_drop, wait_idle
from PIL import Image
from PySide6.QtCore import QMimeData, QPoint, Qt

from engine.labeling import PredictionRow, Project
from fewshot_gui.class_order import CLASS_MIME, class_drag_mime, dragged_class, moved
from fewshot_gui.main_window import MainWindow
from fewshot_gui.results_model import IDS_MIME


def test_moved_puts_the_class_in_the_gap():
    order = [1, 2, 3, 4]
    assert moved(order, 3, 0) == [3, 1, 2, 4]
    assert moved(order, 1, 4) == [2, 3, 4, 1]
    assert moved(order, 1, 2) == [2, 1, 3, 4]  # below the second card
    assert moved(order, 2, 1) == order and moved(order, 2, 2) == order  # either gap beside itself


@pytest.fixture
def window(qtbot, tmp_path) -> MainWindow:
    """A project with classes cat, dog, bird and three images the model calls bird."""
    path = tmp_path / "animals.fewshot"
    files = []
    for k in range(3):
        files.append(tmp_path / "img" / f"a{k}.png")
        files[-1].parent.mkdir(exist_ok=True)
        Image.fromarray(np.full((16, 16, 3), 40 * k, dtype=np.uint8)).save(files[-1])
    with Project.create(path) as p:
        ids = [p.add_class(n) for n in ("cat", "dog", "bird")]
        images = p.add_images(files).added
        model = p.set_model("omniglot", {})  # the window's own model: opening loads nothing
        p.write_predictions(model, [PredictionRow(i, [0.1, 0.2, 0.7], ids, 0.8 - 0.1 * k, 0.5)
                                    for k, i in enumerate(images)])
    w = open_project_window(qtbot, tmp_path, path)
    qtbot.waitUntil(lambda: len(w.classes) == 3, timeout=WAIT)
    wait_idle(qtbot, w)
    return w


def names(window: MainWindow) -> list[str]:
    return [c.name for c in window.project.classes()]  # read from the database, not the panel


def card_point(card, upper: bool) -> QPoint:
    return QPoint(card.width() // 2, card.height() // 4 if upper else card.height() * 3 // 4)


def test_dragging_cards_reorders_the_classes(qtbot, window):
    panel = window.classes_panel
    cat, dog, bird = (c.id for c in window.classes)

    # bird onto the upper half of cat: bird goes first
    entered, dropped = send_drop(panel.cards[cat], class_drag_mime(panel, bird), card_point(panel.cards[cat], True),
                                 Qt.DropAction.MoveAction)
    assert entered and dropped
    wait_idle(qtbot, window)
    assert names(window) == ["bird", "cat", "dog"]
    assert [c.name for c in window.classes] == ["bird", "cat", "dog"]
    assert [panel.cards[c].key.text() for c in (bird, cat, dog)] == ["1", "2", "3"]
    assert [panel.list.itemAt(i).widget() for i in range(3)] == [panel.cards[bird], panel.cards[cat], panel.cards[dog]]

    # cat onto the lower half of dog: cat goes last
    send_drop(panel.cards[dog], class_drag_mime(panel, cat), card_point(panel.cards[dog], False),
              Qt.DropAction.MoveAction)
    wait_idle(qtbot, window)
    assert names(window) == ["bird", "dog", "cat"]

    # onto the empty space below the last card: to the end
    below = QPoint(panel.body.width() // 2, panel.cards[cat].geometry().bottom() + 40)
    assert below.y() < panel.body.height()
    send_drop(panel.body, class_drag_mime(panel, bird), below, Qt.DropAction.MoveAction)
    wait_idle(qtbot, window)
    assert names(window) == ["dog", "cat", "bird"]

    # dropped where it already is: nothing is written
    jobs_before = next(window.worker._ids)
    send_drop(panel.cards[cat], class_drag_mime(panel, cat), card_point(panel.cards[cat], False),
              Qt.DropAction.MoveAction)
    assert next(window.worker._ids) == jobs_before + 1  # no job submitted in between

    # The menu's Move up / Move down still work.
    panel.move(bird, -1)
    wait_idle(qtbot, window)
    assert names(window) == ["dog", "bird", "cat"]
    panel.move(dog, 1)
    wait_idle(qtbot, window)
    assert names(window) == ["bird", "dog", "cat"]

    # Review keys follow the order: 1 is now bird, which the model predicted (an accept).
    window.set_review_mode(True)
    qtbot.waitUntil(lambda: len(window.review.order) == 3, timeout=WAIT)
    assert window.review.keys.itemAtPosition(0, 1).widget().text().endswith("bird")
    first = window.review.order[0]
    qtbot.keyClick(window.review, Qt.Key.Key_1)
    wait_idle(qtbot, window)
    rec = window.project.image(first)
    assert (rec.status, rec.label_class_id) == ("confirmed", bird)
    assert not hasattr(window, "last_error")
    window.close()


def test_card_drags_and_other_drops_do_not_mix(qtbot, window):
    panel = window.classes_panel
    cat, dog, bird = (c.id for c in window.classes)
    card = panel.cards[cat]

    # A card drag from another panel (another window or process) is refused.
    foreign = QMimeData()
    foreign.setData(CLASS_MIME, json.dumps({"pid": 1, "panel": 2, "class": dog}).encode())
    assert dragged_class(foreign, panel) is None
    assert send_drop(card, foreign, card_point(card, True), Qt.DropAction.MoveAction) == (False, False)
    broken = QMimeData()
    broken.setData(CLASS_MIME, b"not json")
    assert send_drop(card, broken) == (False, False)

    # Grid tiles dropped between cards (not on one) are not a reorder either.
    tiles = QMimeData()
    tiles.setData(IDS_MIME, json.dumps([1]).encode())
    assert send_drop(panel.body, tiles, QPoint(panel.body.width() // 2, card.geometry().bottom() + 40)) \
        == (False, False)
    # ... while on a card they still become examples, as before.
    assert send_drop(card, tiles) == (True, True)
    wait_idle(qtbot, window)
    assert window.project.examples() == [(1, cat)]
    assert names(window) == ["cat", "dog", "bird"]
    window.close()


def test_a_pointer_drag_on_a_card_starts_a_card_drag(qtbot, window, monkeypatch):
    """Press and move past the drag distance: the card asks the panel to start a drag of
    itself (QDrag.exec is replaced, since it cannot run offscreen)."""
    from fewshot_gui import classes_panel
    started = []

    class FakeDrag:
        def __init__(self, source):
            self.source = source

        def setMimeData(self, mime):  # noqa: N802 - mirrors QDrag
            self.mime = mime

        def setPixmap(self, pm):  # noqa: N802
            self.pixmap = pm

        def setHotSpot(self, p):  # noqa: N802
            self.hot_spot = p

        def exec(self, action):
            started.append((dragged_class(self.mime, window.classes_panel), action, self.pixmap.isNull()))
            return action

    monkeypatch.setattr(classes_panel, "QDrag", FakeDrag)
    panel = window.classes_panel
    dog = window.classes[1].id
    card = panel.cards[dog]
    qtbot.mousePress(card.name, Qt.MouseButton.LeftButton, pos=QPoint(5, 5))
    qtbot.mouseMove(card.name, QPoint(8, 6))  # under the drag distance: still a click
    assert started == []
    qtbot.mouseMove(card.name, QPoint(40, 30))
    qtbot.mouseRelease(card.name, Qt.MouseButton.LeftButton, pos=QPoint(40, 30))
    assert started == [(dog, Qt.DropAction.MoveAction, False)]
    window.close()

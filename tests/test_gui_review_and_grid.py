"""Working through a project: ten and more classes by key, a detail pane that follows, filters
that never strand a person, removing images, unreadable tiles, plain words. pytest-qt, offscreen."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gui_helpers import WAIT, open_project_window, wait_idle
from labeling_data import make_png
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox

from engine.labeling import PredictionRow, Project

N_CLASSES = 12


@pytest.fixture
def project_path(tmp_path) -> Path:
    """Twelve classes, 30 images with the model's guesses (a few close calls), one unreadable file."""
    path = tmp_path / "many.fewshot"
    folder = tmp_path / "img"
    files = [make_png(folder / f"im{k:02d}.png", k) for k in range(30)]
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with Project.create(path) as p:
        ids = [p.add_class(f"class {k:02d}") for k in range(N_CLASSES)]
        images = p.add_images([folder]).added
        model = p.set_model("omniglot", {})
        rng = np.random.default_rng(0)
        rows = []
        for k, i in enumerate(images):
            probs = 0.2 * rng.dirichlet(np.ones(N_CLASSES) * 0.3)
            probs[k % N_CLASSES] += 0.8  # a clear call, unless it is one of the close ones below
            if k % 5 == 0:  # a close call between the first two classes
                probs = np.full(N_CLASSES, 0.02)
                probs[0], probs[1] = 0.42, 0.38
                probs /= probs.sum()
            top = np.sort(probs)[::-1]
            rows.append(PredictionRow(i, probs, ids, float(-(probs * np.log(probs)).sum()), float(top[0] - top[1])))
        p.write_predictions(model, rows)
    assert len(files) == 30
    return path


@pytest.fixture
def window(qtbot, tmp_path, project_path):
    w = open_project_window(qtbot, tmp_path, project_path, size=(1400, 880))
    wait_idle(qtbot, w)
    yield w
    w.close()


def test_keys_reach_ten_classes_and_the_search_box_any(qtbot, window):
    window.set_review_mode(True)
    review = window.review
    qtbot.waitUntil(lambda: len(review.order) > 5, timeout=WAIT)
    first, second = review.order[:2]
    qtbot.keyClick(review, Qt.Key.Key_0)  # the tenth class
    wait_idle(qtbot, window)
    assert window.project.image(first).label_class_id == window.classes[9].id
    assert review.current_id() == second
    qtbot.keyClick(review, Qt.Key.Key_Slash)
    assert review.chooser.isVisible()
    qtbot.keyClicks(review.chooser.edit, "11")
    assert review.chooser.list.count() == 1 and review.chooser.list.item(0).text() == "class 11"
    qtbot.keyClick(review.chooser.edit, Qt.Key.Key_Return)
    wait_idle(qtbot, window)
    assert window.project.image(second).label_class_id == window.classes[11].id
    assert not review.chooser.isVisible()
    # The key legend says so.
    texts = [review.keys.itemAt(i).widget().text() for i in range(review.keys.count())]
    assert "0" in texts and "/" in texts

    # In the grid: a letter opens the same box for the selection.
    qtbot.keyClick(review, Qt.Key.Key_Escape)
    model = window.results_model
    qtbot.waitUntil(lambda: model.record(3) is not None, timeout=WAIT)
    window.grid.setCurrentIndex(model.index(3))
    target = model.record(3).id
    qtbot.keyClick(window.grid, Qt.Key.Key_C)
    assert window.results_page.chooser.isVisible() and window.results_page.chooser.edit.text() == "c"
    qtbot.keyClicks(window.results_page.chooser.edit, "lass 10")
    qtbot.keyClick(window.results_page.chooser.edit, Qt.Key.Key_Return)
    wait_idle(qtbot, window)
    assert window.project.image(target).label_class_id == window.classes[10].id


def test_the_detail_pane_follows_review_and_is_cleared_with_the_project(qtbot, window, tmp_path):
    window.set_review_mode(True)
    review = window.review
    qtbot.waitUntil(lambda: len(review.order) > 3, timeout=WAIT)
    for _ in range(3):
        qtbot.waitUntil(lambda: window.detail.record is not None and window.detail.record.id == review.current_id(),
                        timeout=WAIT)
        assert not window.detail.bars.isVisibleTo(window.detail)  # the review shows the probabilities
        qtbot.keyClick(review, Qt.Key.Key_Right)
    qtbot.keyClick(review, Qt.Key.Key_Escape)
    assert window.detail.bars.isVisibleTo(window.detail)
    other = tmp_path / "other.fewshot"
    Project.create(other).close()
    window.open_project(str(other))
    qtbot.waitUntil(lambda: window.project is not None and Path(window.project.path) == other, timeout=WAIT)
    assert window.detail.record is None and window.detail.name.text() == ""


def test_filters_reset_with_the_project_and_never_strand_a_person(qtbot, window, tmp_path, project_path):
    window.class_filter.setCurrentIndex(window.class_filter.findData(window.classes[5].id))
    window.status_filter.setCurrentIndex(window.status_filter.findData("confirmed"))
    wait_idle(qtbot, window)
    assert window.results_model.rowCount() == 0
    page = window.results_page
    assert page.show_all.isVisibleTo(page) and "hides all 31 images" in page.empty_hint.text()
    page.show_all.click()
    wait_idle(qtbot, window)
    assert window.results_model.rowCount() == 31 and not page.show_all.isVisibleTo(page)

    window.flag_filter.setCurrentIndex(window.flag_filter.findData("margin"))
    wait_idle(qtbot, window)
    assert window.results_model.rowCount() == 6  # the close calls
    window.close_project()
    wait_idle(qtbot, window)
    window.open_project(str(project_path))
    qtbot.waitUntil(lambda: window.project is not None, timeout=WAIT)
    wait_idle(qtbot, window)
    assert window.flag_filter.currentData() is None and window.results_model.rowCount() == 31


def test_hide_confirmed_and_counts_that_agree(qtbot, window):
    model = window.results_model
    qtbot.waitUntil(lambda: model.record(0) is not None, timeout=WAIT)
    window.grid.setCurrentIndex(model.index(0))
    qtbot.keyClick(window.grid, Qt.Key.Key_1)
    wait_idle(qtbot, window)
    assert window.project.count(status="confirmed") == 1
    window.results_page.hide_confirmed.setChecked(True)
    wait_idle(qtbot, window)
    assert model.rowCount() == 30 == window.project.count() - window.project.count(status="confirmed")
    assert window.grid_count.text() == "30 shown of 31"
    assert "31 images" in window.counts_label.text() and "1 confirmed" in window.counts_label.text()
    # A person picking a review order gets confirmed images out of the way, unless they chose.
    window.results_page.reset_filters()
    window.results_page.sort_box.activated.emit(0)
    assert window.results_page.hide_confirmed.isChecked()


def test_remove_images_and_a_folder_undoably_files_untouched(qtbot, window, tmp_path):
    model = window.results_model
    window.sort_box.setCurrentIndex(window.sort_box.count() - 1)  # by name
    wait_idle(qtbot, window)
    qtbot.waitUntil(lambda: model.record(4) is not None, timeout=WAIT)
    sel = window.grid.selectionModel()
    for r in range(3):
        sel.select(model.index(r), sel.SelectionFlag.Select)
    ids = window.grid.selected_ids()
    paths = [window.project.image(i).path for i in ids]
    offered = [a.text() for a in window.results_page.menu_for(window.grid.selected_records()).actions()]
    assert "Remove 3 Images from Project" in offered and any(t.startswith("Label as") for t in offered)
    window.remove_images(ids, "selected")
    wait_idle(qtbot, window)
    assert window.project.count() == 28 and all(Path(p).is_file() for p in paths)
    assert "Ctrl+Z" in window.statusBar().currentMessage()
    window.undo()
    wait_idle(qtbot, window)
    assert window.project.count() == 31 and {window.project.image(i).path for i in ids} == set(paths)
    window.remove_folder(str(tmp_path / "img"))
    wait_idle(qtbot, window)
    assert window.project.count() == 0
    window.undo()
    wait_idle(qtbot, window)
    assert window.project.count() == 31


def test_unreadable_files_get_only_what_applies_and_say_why(qtbot, window):
    from fewshot_gui.results_view import short_reason
    window.status_filter.setCurrentIndex(window.status_filter.findData("error"))
    wait_idle(qtbot, window)
    model = window.results_model
    qtbot.waitUntil(lambda: model.rowCount() == 1 and model.record(0) is not None, timeout=WAIT)
    rec = model.record(0)
    assert short_reason(rec.error) in ("truncated or corrupt", "not an image", "corrupt")
    window.grid.setCurrentIndex(model.index(0))
    offered = [a.text() for a in window.results_page.menu_for(window.grid.selected_records()).actions()]
    assert not any(t.startswith("Label as") or "Examples" in t for t in offered), offered
    assert "Remove This Image from Project" in offered
    shot = window.grid.grab()
    assert not shot.isNull()


def test_plain_words_first_and_the_numbers_on_request(qtbot, window, monkeypatch):
    model = window.results_model
    window.flag_filter.setCurrentIndex(window.flag_filter.findData("margin"))
    wait_idle(qtbot, window)
    qtbot.waitUntil(lambda: model.record(0) is not None, timeout=WAIT)
    window.grid.setCurrentIndex(model.index(0))
    detail = window.detail
    qtbot.waitUntil(lambda: detail.record is not None, timeout=WAIT)
    assert detail.summary.text() == "Unsure between class 00 and class 01"
    assert not detail.numbers_box.isVisibleTo(detail)
    detail.details.click()
    assert detail.numbers_box.isVisibleTo(detail)
    shown = [detail.numbers.labelForField(detail.score_labels[n]).text() for n in ("entropy", "margin")]
    assert shown == ["Uncertainty", "Margin"]
    # A score this model's predictions lack is not shown at all (no dash).
    assert not detail.score_labels["mutual_info"].isVisibleTo(detail)
    about = []
    monkeypatch.setattr(QMessageBox, "about", lambda parent, title, text: about.append(text))
    window.act_about.trigger()
    from engine.version import __version__
    assert __version__ in about[0]


def test_the_grid_fills_its_width(qtbot, window):
    grid = window.grid
    for width in (1400, 1100, 1700):
        window.resize(width, 880)
        qtbot.wait(50)
        columns = grid.viewport().width() // grid.gridSize().width()
        gutter = grid.viewport().width() - columns * grid.gridSize().width()
        assert 0 <= gutter < columns + 1, (width, gutter)


def test_the_count_line_says_how_many_images_wait_for_a_label_run():
    """After a cancelled run corrections update only what was labeled: the status bar says
    how many images wait, and its tooltip what labels them."""
    from fewshot_gui.plain_words import UNLABELED_TIP, counts_text
    n = {"total": 500, "confirmed": 3, "predicted": 200, "error": 0, "unlabeled": 297, "shown": 500, "provisional": 0}
    text, tip = counts_text(n)
    assert text == "500 images \u00b7 3 confirmed \u00b7 200 predicted \u00b7 297 not labeled yet" and tip == UNLABELED_TIP
    assert "Label Images" in tip
    text, tip = counts_text({**n, "predicted": 497, "unlabeled": 0})
    assert "not labeled" not in text and tip == ""


def test_each_number_in_the_detail_pane_says_what_its_size_means():
    from fewshot_gui.detail_pane import score_text
    assert score_text("aleatoric", 1.03) == "1.030, high (above 0.5)"
    assert score_text("mutual_info", 0.022) == "0.022, low (high above 0.1)"
    assert score_text("entropy", 1.052) == "1.052, high (above 0.693)"
    assert score_text("entropy", 0.692) == "0.692, low (high above 0.693)"
    assert score_text("margin", 0.05) == "0.050, a close call (below 0.2)"
    assert score_text("margin", 0.9) == "0.900, clear (close below 0.2)"


def test_an_image_like_none_of_the_classes_gets_a_badge_at_any_probability():
    """A user trial: a blank 1x1 image read '100%' with no badge while the detail pane said
    'Looks like none of these classes'."""
    from types import SimpleNamespace

    from fewshot_gui.results_view import is_uncertain
    blank = SimpleNamespace(status="predicted", confidence=1.0, scores={"ood_score": 5.0})
    typical = SimpleNamespace(status="predicted", confidence=1.0, scores={"ood_score": 0.9})
    assert is_uncertain(blank) and not is_uncertain(typical)
    assert is_uncertain(SimpleNamespace(status="predicted", confidence=0.4, scores={}))


def test_one_class_with_examples_is_not_called_confident():
    """A user trial: with one class holding examples every image read 'Confident: <it> 100%'."""
    from types import SimpleNamespace

    from fewshot_gui.plain_words import plain_summary
    classes = {1: SimpleNamespace(name="beta"), 2: SimpleNamespace(name="gamma")}
    alone = SimpleNamespace(status="predicted", confidence=1.0, probs={1: 1.0}, scores={"ood_score": 0.8})
    assert plain_summary(alone, classes).startswith("Only beta has examples so far")
    far = SimpleNamespace(status="predicted", confidence=1.0, probs={1: 1.0}, scores={"ood_score": 4.0})
    assert plain_summary(far, classes).startswith("Looks like none of these classes")
    two = SimpleNamespace(status="predicted", confidence=0.97, probs={1: 0.97, 2: 0.03}, scores={"ood_score": 0.8})
    assert plain_summary(two, classes) == "Confident: beta"

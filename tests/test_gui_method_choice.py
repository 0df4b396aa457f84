"""The toolbar's Method box: switching the loaded model to bayes-proto relabels the project
from its cached embeddings, and its epistemic and aleatoric scores reach the sort box,
the filters and the detail pane. pytest-qt, offscreen."""
from __future__ import annotations

from gui_helpers import engine_window, label_characters, wait_idle

SLOW = 120_000


def test_switching_to_bayes_proto_relabels_from_the_cache_and_shows_both_uncertainties(qtbot, tmp_path):
    window = engine_window(qtbot, tmp_path / "gui.ini")
    try:
        label_characters(qtbot, window, tmp_path, "omniglot", 3, per_character=8, skip=30)
        qtbot.waitUntil(lambda: window.method_box.currentData() == "protonet", timeout=SLOW)
        assert window.project.count(status="predicted") == 21
        sorts = [window.results_page.sort_box.itemText(i) for i in range(window.results_page.sort_box.count())]
        assert "Most informative first" not in sorts  # ProtoNet has no epistemic score

        box = window.method_box
        row = box.findData("maml")
        assert not box.model().item(row).isEnabled()  # not trained for it: greyed out, with the reason
        assert "meta-trained" in box.itemData(row, 3)  # Qt.ToolTipRole
        box.activated.emit(box.findData("bayes-proto"))
        qtbot.waitUntil(lambda: window.worker.context.model.meta["method"] == "bayes-proto", timeout=SLOW)
        wait_idle(qtbot, window, timeout=SLOW)
        current = window.project.current_model()
        assert current[2]["method"] == "bayes-proto"
        sorts = [window.results_page.sort_box.itemText(i) for i in range(window.results_page.sort_box.count())]
        assert "Most informative first" in sorts and "Most ambiguous first" in sorts
        predicted = [r for r in window.project.iter_images() if r.label_source == "model"]
        assert len(predicted) == 21 and all(r.mutual_info is not None and r.aleatoric is not None for r in predicted)
        assert "BayesProto" in window.model_label.text()
        window.detail.show_record(predicted[0], window.classes)
        shown = {name: label.text() for name, label in window.detail.score_labels.items()}
        assert shown["mutual_info"] and shown["aleatoric"]
        # Every score and what its size means, without widening the window past a 1280 px screen.
        window.resize(1280, 800)  # a 1280 px screen
        qtbot.wait(100)
        assert window.width() == 1280
        window.detail.details.setChecked(True)
        qtbot.wait(100)
        assert window.width() == 1280 and window.minimumSizeHint().width() <= 1280
        assert all(", " in label.text() for label in window.detail.score_labels.values() if label.text())
        shot = tmp_path / "bayes-proto-window.png"
        window.grab().save(str(shot))
        print(f"the window labeling with bayes-proto: {shot}")
    finally:
        window.close()


def test_a_project_labeled_with_bayes_proto_reopens_with_it(qtbot, tmp_path):
    from export_data import make_project

    from engine.labeling.labeler import label_project
    from engine.labeling.store import Project
    from engine.method_choice import with_method
    from engine.model_store import load_model
    path, _ = make_project(tmp_path, characters=2, per_character=4, label=False)
    with Project.open(path) as project:
        label_project(project, with_method(load_model("omniglot", "cpu"), "bayes-proto"))
    window = engine_window(qtbot, tmp_path / "gui.ini")
    try:
        window.open_project(str(path))
        qtbot.waitUntil(lambda: window.method_box.currentData() == "bayes-proto", timeout=SLOW)
        assert window.worker.context.model.meta["method"] == "bayes-proto"
        assert "BayesProto" in window.model_label.text()
    finally:
        window.close()

"""Labeling > Model > ONNX Feature Extractor…: the file is read in the worker, its input
size and normalisation are asked once in a dialog (filled here as a person would), the
model loads, the status bar and the Method menu show it, it labels real Omniglot images,
next time it is one click in the Model menu, asked about no more, and it exports."""
from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from gui_helpers import WAIT, engine_window, wait_idle
from labeling_data import extract_omniglot
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialogButtonBox, QFileDialog

from data_fixtures import SHARED, require_shared
from fewshot_gui.export_model import export_model
from fewshot_gui.main_window import MainWindow
from fewshot_gui.model_picker import ONNX_FILTER, RECENT_KEY

ONNX = SHARED / "models" / "mobilenetv2-12-int8.onnx"  # FEWSHOT_SHARED, as CI sets it
LOAD_WAIT = 60_000


@pytest.fixture
def window(qtbot, tmp_path, monkeypatch):
    require_shared(ONNX)
    # What the engine remembers about ONNX files, and the rewritten graphs, stay in this test.
    monkeypatch.setenv("FEWSHOT_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("FEWSHOT_CACHE_DIR", str(tmp_path / "cache"))
    w = engine_window(qtbot, tmp_path / "gui.ini")
    yield w
    w.close()


def choose(qtbot, window: MainWindow, monkeypatch, path: Path) -> None:
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(path), ONNX_FILTER))
    window.model_picker.act_onnx.trigger()


def click(qtbot, dialog, which: QDialogButtonBox.StandardButton) -> None:
    qtbot.mouseClick(dialog.buttons.button(which), Qt.MouseButton.LeftButton)


def test_onnx_feature_extractor_is_asked_once_and_labels(qtbot, window, tmp_path, monkeypatch):
    picker = window.model_picker
    # Not a model: the worker's reading fails with the engine's message, nothing changes.
    junk = tmp_path / "notes.onnx"
    junk.write_text("not a model")
    choose(qtbot, window, monkeypatch, junk)
    qtbot.waitUntil(lambda: bool(getattr(window, "last_error", "")), timeout=WAIT)
    assert "is not an ONNX model" in window.last_error and window.model_spec == "omniglot"

    # Cancelling the question loads nothing and leaves the tick on the current model.
    choose(qtbot, window, monkeypatch, ONNX)
    qtbot.waitUntil(lambda: picker.dialog is not None and picker.dialog.isVisible(), timeout=WAIT)
    click(qtbot, picker.dialog, QDialogButtonBox.StandardButton.Cancel)
    wait_idle(qtbot, window)
    assert window.model_spec == "omniglot" and window.model_box.currentData() == "omniglot"

    choose(qtbot, window, monkeypatch, ONNX)
    qtbot.waitUntil(lambda: picker.dialog is not None and picker.dialog.isVisible(), timeout=WAIT)
    dialog = picker.dialog
    # Prefilled from the file's declared input (1x3x224x224) and ImageNet normalisation.
    assert (dialog.height_box.value(), dialog.width_box.value(), dialog.channels.currentData()) == (224, 224, 3)
    assert dialog.mean.text() == "0.485, 0.456, 0.406" and dialog.std.text() == "0.229, 0.224, 0.225"
    assert dialog.resize_rule.currentData() == "shorter_side_center_crop"
    # The file fixes its input at 1x3x224x224: those cannot be changed.
    assert not any(w.isEnabled() for w in (dialog.height_box, dialog.width_box, dialog.channels))
    # A mistake is explained in the dialog, which stays open.
    dialog.mean.setText("123.7, 116.3, 103.5")
    click(qtbot, dialog, QDialogButtonBox.StandardButton.Ok)
    assert dialog.isVisible() and "divide" in dialog.error.text()
    dialog.mean.setText("0.485, 0.456")
    click(qtbot, dialog, QDialogButtonBox.StandardButton.Ok)
    assert dialog.isVisible() and "got 2" in dialog.error.text()
    dialog.mean.setText("0.485, 0.456, 0.406")
    dialog.resize_rule.setCurrentIndex(dialog.resize_rule.findData("stretch"))
    click(qtbot, dialog, QDialogButtonBox.StandardButton.Ok)

    name = ONNX.name
    qtbot.waitUntil(lambda: window.model_label.text() == f"Model: {name} \u00b7 ProtoNet", timeout=LOAD_WAIT)
    assert window.model_spec == str(ONNX) and window.worker.context.model.preprocessing.resize == "stretch"
    assert window.model_box.currentText() == name
    assert window.settings.value(RECENT_KEY) in ([str(ONNX)], str(ONNX))
    assert [a.isChecked() for a in window.model_group.actions() if a.data() == str(ONNX)] == [True]
    methods = window.method_picker
    qtbot.waitUntil(lambda: methods.menu.title() == "Method: ProtoNet", timeout=WAIT)
    # Every registered method is listed, the model's own checked; a feature extractor takes the heads that
    # need no training, and the meta-trained methods are greyed out with the reason.
    from engine.methods.registry import METHODS
    assert [(a.text(), a.isChecked(), a.isEnabled()) for a in methods.menu.actions()] == [
        (cls.__name__, key == "protonet", key in ("protonet", "bayes-proto")) for key, cls in sorted(METHODS.items())]
    maml = next(a for a in methods.menu.actions() if a.text() == "MAML")
    assert "meta-trained" in maml.toolTip()
    assert window.method_box.currentData() == "protonet"
    assert (tmp_path / "config" / "onnx_models.json").is_file()

    # Label a few real Omniglot drawings with it.
    chars = extract_omniglot(tmp_path / "omniglot", 2, per_character=8, skip=10)
    window.new_project(str(tmp_path / "p.fewshot"))
    qtbot.waitUntil(lambda: window.project is not None, timeout=WAIT)
    for key in chars:
        window.add_class(key.replace("/", "_"))
    qtbot.waitUntil(lambda: len(window.classes) == 2, timeout=WAIT)
    truth = {}
    for cls, files in zip(window.classes, chars.values()):
        window.add_examples(cls.id, [str(f) for f in files[:3]], [])
        wait_idle(qtbot, window, timeout=LOAD_WAIT)
        rest = tmp_path / "to_label" / files[0].parent.name
        rest.mkdir(parents=True)
        for f in files[3:]:
            (rest / f.name).write_bytes(f.read_bytes())
            truth[str(rest / f.name)] = cls.id
    window.add_folder(str(tmp_path / "to_label"))
    wait_idle(qtbot, window, timeout=LOAD_WAIT)
    project = window.project
    assert project.count(status="predicted") == 10
    assert project.current_model()[1] == str(ONNX)
    records = [project.image(r.id) for r in project.query(status="predicted", limit=100)]
    right = sum(r.predicted_class_id == truth[r.path] for r in records)
    assert right >= 7, f"{right}/10 right with {name} features"
    assert window.last_notice[0].startswith("10 images added \u00b7 Labeled: ")  # both reports, in order

    # Next time: one click in the Model menu, no question (the engine remembered the input).
    bundled = next(a for a in window.model_group.actions() if a.data() == "omniglot")
    bundled.trigger()
    qtbot.waitUntil(lambda: window.model_label.text() == "Model: omniglot \u00b7 ProtoNet", timeout=LOAD_WAIT)
    recent = next(a for a in window.model_menu.actions() if a.data() == str(ONNX))
    assert recent.text() == name and recent.toolTip() == str(ONNX)
    recent.trigger()
    qtbot.waitUntil(lambda: window.model_label.text() == f"Model: {name} \u00b7 ProtoNet", timeout=LOAD_WAIT)
    assert picker.dialog is None and window.worker.context.model.preprocessing.resize == "stretch"
    assert "stretched" in window.model_box.toolTip() and "0.485, 0.456, 0.406" in window.model_box.toolTip()

    # The first answer is not final: Labeling > Model > ONNX Input Settings asks again, filled
    # with what was remembered, and the model reloads with the new answer (remembered too).
    assert picker.act_onnx_input.isEnabled()
    picker.act_onnx_input.trigger()
    qtbot.waitUntil(lambda: picker.dialog is not None and picker.dialog.isVisible(), timeout=WAIT)
    assert picker.dialog.resize_rule.currentData() == "stretch"
    picker.dialog.resize_rule.setCurrentIndex(picker.dialog.resize_rule.findData("shorter_side_center_crop"))
    click(qtbot, picker.dialog, QDialogButtonBox.StandardButton.Ok)
    qtbot.waitUntil(lambda: window.worker.context.model.preprocessing.resize == "shorter_side_center_crop",
                    timeout=LOAD_WAIT)
    wait_idle(qtbot, window, timeout=LOAD_WAIT)
    assert "centre cropped" in window.model_box.toolTip()
    # The project's predictions were made again with the new input (another embedding cache key).
    backbone_id = window.worker.context.model.backbone_id
    assert len(project.get_embeddings(backbone_id)[0]) == project.count() and project.count(status="predicted") == 10
    next(a for a in window.model_group.actions() if a.data() == "omniglot").trigger()  # the menu was rebuilt
    qtbot.waitUntil(lambda: window.model_label.text() == "Model: omniglot \u00b7 ProtoNet", timeout=LOAD_WAIT)
    assert not picker.act_onnx_input.isEnabled()
    next(a for a in window.model_menu.actions() if a.data() == str(ONNX)).trigger()
    qtbot.waitUntil(lambda: window.model_label.text() == f"Model: {name} \u00b7 ProtoNet", timeout=LOAD_WAIT)
    assert window.worker.context.model.preprocessing.resize == "shorter_side_center_crop"

    # Its export (File > Export Model… with the path given) carries the ONNX extractor's graph.
    export_model(window, str(tmp_path / "chars.onnx"))
    wait_idle(qtbot, window, timeout=LOAD_WAIT)
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "chars.onnx")).metadata_props}
    assert meta["source_model"] == str(ONNX) and json.loads(meta["class_names"]) == [c.name for c in window.classes]
    assert json.loads(meta["preprocessing"])["resize"] == "shorter_side_center_crop"  # as last answered


def test_a_size_the_file_contradicts_is_refused_and_not_remembered(tmp_path, monkeypatch):
    """The worker's own check (the dialog locks fixed sizes; this guards any other caller):
    the engine would remember the size, and every later run would fail in onnxruntime."""
    from engine.errors import FewShotError
    from engine.models.onnx_features import remembered_preprocessing
    from fewshot_gui import jobs
    from fewshot_gui.worker import EngineContext

    monkeypatch.setenv("FEWSHOT_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("FEWSHOT_CACHE_DIR", str(tmp_path / "cache"))
    prep = {"size": [100, 224], "channels": 1, "mean": [0.5], "std": [0.5], "resize": "stretch"}
    with pytest.raises(FewShotError, match=r"fixed shape .* channels 1 \(the file says 3\), height 100"):
        jobs.load_model(EngineContext(device="cpu"), None, str(ONNX), prep)
    assert remembered_preprocessing(ONNX) is None
    with pytest.raises(FewShotError, match="does not know this ONNX model's input size"):
        jobs.load_model(EngineContext(device="cpu"), None, str(ONNX))

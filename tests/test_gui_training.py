"""The training panel, driven as a person would: View > Meta-training, a short real run on
the Omniglot minimal split, curve points arriving, Stop, Resume, Use this model; the
main window answering within 100 ms while the training child runs."""
import os
import time
from pathlib import Path

import pytest
from PySide6.QtCore import QSettings, QTimer

from fewshot_gui.training_panel import TrainingPanel

WAIT = 180_000


@pytest.fixture
def window(qtbot, tmp_path):
    from fewshot_gui.main_window import MainWindow
    w = MainWindow(QSettings(str(tmp_path / "gui.ini"), QSettings.Format.IniFormat), start_engine=False)
    # Not qtbot.addWidget: qtbot closes its widgets before this fixture's teardown, and
    # closing the window while a run goes asks a modal question that nobody answers.
    w.resize(1000, 700)
    w.show()
    w.worker.start()
    yield w
    if w.training_panel is not None and w.training_panel.process.running():
        w.training_panel.process.proc.kill()
        w.training_panel.process.wait(10_000)
    w.close()


def open_panel(qtbot, window, tmp_path) -> TrainingPanel:
    panel = TrainingPanel(window, root=tmp_path / "runs")
    window.training_panel = panel  # owned by the window, closed with it
    panel.show()
    qtbot.waitUntil(lambda: panel.form.method.count() > 5, timeout=WAIT)
    return panel


def test_the_menu_opens_the_panel(qtbot, window):
    action = window.act_training
    assert action.shortcut().toString() == "Ctrl+Shift+T"
    assert action in window.menuBar().actions()[2].menu().actions()  # View
    action.trigger()
    assert window.training_panel is not None and window.training_panel.windowTitle() == "Meta-training"
    qtbot.waitUntil(lambda: window.training_panel.form.method.count() > 5, timeout=WAIT)
    names = [window.training_panel.form.method.itemData(i) for i in range(window.training_panel.form.method.count())]
    assert {"protonet", "maml", "versa", "bmaml", "reptile"} <= set(names)
    window.training_panel.form.method.setCurrentIndex(names.index("maml"))
    options = {e.spec["name"] for e in window.training_panel.form.editors}
    assert {"inner_steps", "inner_lr", "first_order"} <= options
    window.training_panel.close()


def test_a_wrong_layout_is_said_before_start(qtbot, window, tmp_path):
    panel = open_panel(qtbot, window, tmp_path)
    (tmp_path / "empty").mkdir()
    panel.form.root.setText(str(tmp_path / "empty"))
    panel.start()
    qtbot.waitUntil(lambda: "images_background" in panel.status.text(), timeout=WAIT)
    assert not panel.process.running() and "neither is there" in panel.status.text()


def omniglot_run(panel: TrainingPanel, root: Path, val_split: str, episodes: int) -> None:
    """The form filled for a small 5-way run on the small1 alphabets, on the CPU."""
    f = panel.form
    f.root.setText(str(root))
    f.split.setCurrentText("small1")
    f.val_split.setCurrentText(val_split)
    f.way.setValue(5)
    f.query.setValue(2)
    f.episodes.setValue(episodes)
    f.device.setCurrentIndex(f.device.findData("cpu"))


def test_run_stop_resume_and_use_the_model(qtbot, window, tmp_path, omniglot_root):
    panel = open_panel(qtbot, window, tmp_path)
    f = panel.form
    omniglot_run(panel, omniglot_root, "small2", 100_000)
    f.val_every.setValue(20)
    f.val_episodes.setValue(10)
    out = Path(f.out.text())
    assert out.parent == tmp_path / "runs"

    gaps, last = [], [0.0]

    def tick():
        now = time.perf_counter()
        if last[0]:
            gaps.append(now - last[0])
        last[0] = now
    timer = QTimer(interval=5)
    timer.timeout.connect(tick)
    panel.start()
    qtbot.waitUntil(lambda: panel.process.running(), timeout=WAIT)
    timer.start()
    qtbot.waitUntil(lambda: (len(panel.curves.val) >= 2 and len(panel.curves.steps) >= 10)
                    or not panel.process.running(), timeout=WAIT)
    assert panel.process.running(), panel.log_view.toPlainText()[-3000:]
    timer.stop()
    assert max(gaps) < 0.100, f"main thread stalled {1000 * max(gaps):.0f} ms while training"
    assert "steps/s" in panel.status.text() and "left" in panel.status.text()
    # FEWSHOT_SCREENSHOTS=DIR keeps the picture (docs/training-panel.png is made this way).
    shots = Path(os.environ.get("FEWSHOT_SCREENSHOTS", tmp_path))
    assert panel.grab().save(str(shots / "training-panel.png"))
    panel.stop()
    qtbot.waitUntil(lambda: not panel.process.running(), timeout=WAIT)
    assert "stopped" in panel.status.text()
    stopped_at = panel.curves.steps[-1]
    assert panel.btn_resume.isEnabled() and panel.btn_use.isEnabled()

    panel.resume()
    qtbot.waitUntil(lambda: panel.process.running(), timeout=WAIT)
    qtbot.waitUntil(lambda: panel.curves.steps[-1] >= stopped_at + 10, timeout=WAIT)
    panel.stop()
    qtbot.waitUntil(lambda: not panel.process.running(), timeout=WAIT)
    steps = panel.curves.steps
    assert steps == sorted(steps) and len(set(steps)) == len(steps)  # resumed where it stopped

    # The run is listed, and reopening it draws its curves again.
    assert panel.past.topLevelItemCount() == 1
    assert panel.past.topLevelItem(0).text(1) == "protonet" and "%" in panel.past.topLevelItem(0).text(3)
    panel.curves.clear()
    panel.open_run(str(out))
    assert len(panel.curves.steps) == len(steps)

    panel.use_model()
    qtbot.waitUntil(lambda: window.model_spec == str(out), timeout=WAIT)
    assert window.model_box.findData(str(out)) >= 0


def test_a_crashing_child_shows_its_error(qtbot, window, tmp_path, monkeypatch):
    panel = open_panel(qtbot, window, tmp_path)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "images_background_small1.zip").write_bytes(b"not a zip")
    panel._launch(["train", "--dataset", "omniglot", "--data-root", str(tmp_path / "bad"), "--split", "small1",
                   "--out", str(tmp_path / "runs" / "bad"), "--episodes", "3"], str(tmp_path / "runs" / "bad"),
                  fresh=True)
    qtbot.waitUntil(lambda: not panel.process.running() and "failed" in panel.status.text(), timeout=WAIT)
    assert "zip" in panel.status.text().lower()


def test_quitting_while_training_asks_then_stops_the_child(qtbot, window, tmp_path, omniglot_root, monkeypatch):
    from PySide6.QtWidgets import QMessageBox
    panel = open_panel(qtbot, window, tmp_path)
    out = tmp_path / "runs" / "quit"
    panel._launch(["train", "--dataset", "omniglot", "--data-root", str(omniglot_root), "--split", "small1",
                   "--way", "5", "--shot", "1", "--query", "2", "--episodes", "100000", "--device", "cpu",
                   "--log-every", "1", "--out", str(out)], str(out), fresh=True)
    qtbot.waitUntil(lambda: len(panel.curves.steps) >= 2, timeout=WAIT)
    asked = []
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: asked.append(a) or QMessageBox.StandardButton.No)
    window.close()
    assert asked and window.isVisible() and panel.process.running()  # "No": the run goes on
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    window.close()
    assert not panel.process.running() and not window.isVisible()
    assert (out / "resume.pt").is_file()  # stopped cleanly: checkpointed, resumable


def test_the_form_gives_every_setting_to_the_child(qtbot, window, tmp_path):
    """Tasks per step, the outer rate and its schedule, and the images' channels and size
    reach `fewshot train` as the engine's own parser reads them."""
    from engine.cli import build_parser
    panel = open_panel(qtbot, window, tmp_path)
    f = panel.form
    f.dataset.setCurrentIndex(f.dataset.findData("unlabeled"))
    f.root.setText(str(tmp_path / "flat"))
    f.meta_batch.setValue(4)
    f.lr.setValue(0.0005)
    f.schedule.setCurrentIndex(f.schedule.findData("cosine"))
    f.channels.setCurrentIndex(f.channels.findData("1"))
    f.image_size.setValue(28)
    args = build_parser(methods=True).parse_args(f.args())
    assert (args.meta_batch, args.lr, args.lr_schedule, args.channels, args.image_size) == (4, 0.0005, "cosine", 1, 28)
    assert args.dataset == "unlabeled" and args.embedder == "photos"
    f.channels.setCurrentIndex(0)
    f.image_size.setValue(0)  # "dataset's own": neither flag is passed
    args = build_parser(methods=True).parse_args(f.args())
    assert args.channels is None and args.image_size is None


def test_a_new_run_starts_on_empty_curves(qtbot):
    """The validation band kept its last path when its curves emptied: a new run (or a
    past run opened after one) showed the previous run's band and x range."""
    from fewshot_gui.training_curves import TrainingCurves
    curves = TrainingCurves()
    qtbot.addWidget(curves)
    curves.show()
    for step in range(10, 50, 10):
        curves.add({"event": "episode", "episode": step, "loss": 1.0, "acc": 0.5, "lr": 1e-3})
    for step in (20, 40):
        curves.add({"event": "validation", "episode": step, "accuracy": 0.7, "ci95": 0.05, "best": True})
    assert curves.val_band.isVisible() and not curves.val_band.path().isEmpty()
    curves.clear()
    for step in (5, 10, 15):
        curves.add({"event": "episode", "episode": step, "loss": 1.0, "acc": 0.5, "lr": 1e-3})
    qtbot.wait(50)
    assert not curves.val_band.isVisible()
    assert curves.acc_plot.viewRange()[0][1] < 30  # the new run's steps, not the old run's 40


def test_a_finished_run_offers_no_resume_and_start_again_makes_a_new_run(qtbot, window, tmp_path, omniglot_root):
    """A user trial: Resume stayed enabled on a run at its last step, and Start again failed
    with 'already holds files' because the output folder was still the finished run's."""
    panel = open_panel(qtbot, window, tmp_path)
    f = panel.form
    omniglot_run(panel, omniglot_root, "", 4)
    first = f.out.text()
    panel.start()
    qtbot.waitUntil(lambda: panel.process.running(), timeout=WAIT)
    qtbot.waitUntil(lambda: not panel.process.running(), timeout=WAIT)
    assert "finished" in panel.status.text(), panel.log_view.toPlainText()[-2000:]
    assert not panel.btn_resume.isEnabled() and panel.btn_use.isEnabled()
    assert f.out.text() != first and not Path(f.out.text()).exists()
    panel.open_run(first)
    assert not panel.btn_resume.isEnabled()  # reopened, a finished run still has nothing to resume


def test_validation_rows_grey_out_without_a_validation_split(qtbot, window, tmp_path):
    panel = open_panel(qtbot, window, tmp_path)
    f = panel.form
    f.dataset.setCurrentIndex(f.dataset.findData("folder"))
    f.val_split.setCurrentText("")
    assert not f.val_way.parentWidget().isEnabled() and f.val_episodes.isHidden()
    assert f.layout().labelForField(f.val_every.parentWidget()).text() == "Save a checkpoint every"
    f.val_split.setCurrentText("val")
    assert f.val_way.parentWidget().isEnabled() and not f.val_episodes.isHidden()
    assert f.layout().labelForField(f.val_every.parentWidget()).text() == "Validate and save every"


def test_float_options_read_plainly(qtbot):
    from fewshot_gui.training_form import CompactSpinBox
    box = CompactSpinBox()
    qtbot.addWidget(box)
    box.setDecimals(5)
    box.setRange(-1e6, 1e6)
    for value, text in ((0.0, "0"), (3.0, "3"), (0.5, "0.5"), (0.00001, "0.00001")):
        box.setValue(value)
        assert box.text() == text and box.valueFromText(text) == value

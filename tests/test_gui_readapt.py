"""A method that adapts its whole network (the bundled Proto-MAML model) in the app: a
correction shows provisional predictions at once, then the exact ones from a background
re-embedding that a newer correction cancels and replaces. pytest-qt, offscreen."""
from __future__ import annotations

import threading

from gui_helpers import WAIT, engine_window, label_characters, wait_idle

from fewshot_gui.labeling_controller import READAPT
from fewshot_gui.worker import EngineWorker

SLOW = 120_000


def test_a_newer_readaptation_replaces_the_running_and_the_waiting_one(qtbot):
    worker = EngineWorker(background=False)
    worker.start()
    started, results = threading.Event(), []

    def long_job(ctx, h):
        started.set()
        while not h.cancel.cancelled:
            h.report("re-embedding", 0, 1)
            threading.Event().wait(0.01)
        return "cancelled"

    try:
        worker.submit("first", long_job, kind=READAPT, done=results.append)
        assert started.wait(10)
        worker.submit("second", lambda ctx, h: "second", kind=READAPT, done=results.append)
        worker.submit("a label", lambda ctx, h: "label", quick=True, done=results.append)
        worker.supersede(READAPT)
        worker.submit("third", lambda ctx, h: "third", kind=READAPT, done=results.append)
        qtbot.waitUntil(lambda: len(results) == 3, timeout=WAIT)
        # The running one stopped, the waiting one never ran; other jobs are untouched.
        assert results == ["cancelled", "label", "third"]
    finally:
        worker.stop()



def test_a_job_taken_off_the_queue_but_not_yet_started_is_still_superseded(qtbot):
    """The worker makes a job current while it holds the queue's lock, so there is no
    moment when a supersede() finds it neither waiting nor running."""
    worker = EngineWorker(background=False)  # not started: the test plays the worker thread
    worker.submit("taken", lambda ctx, h: None, kind=READAPT)
    with worker._cv:
        handle = worker._handle_for(worker._jobs.popleft())
    worker.supersede(READAPT)
    assert handle.cancelled

def test_a_correction_is_provisional_at_once_then_exact(qtbot, tmp_path, monkeypatch):
    from engine.labeling.labeler import Labeler
    provisional: list[dict] = []
    original = Labeler.provisional_refresh

    def spy(self):
        report = original(self)
        provisional.append(self.project.current_model()[2] if report is not None else {})
        return report
    monkeypatch.setattr(Labeler, "provisional_refresh", spy)
    window = engine_window(qtbot, tmp_path / "gui.ini")
    try:
        chars = label_characters(qtbot, window, tmp_path, "omniglot-maml", 3, per_character=10, skip=20)
        rest = tmp_path / "to_label"
        project = window.project
        assert project.count(status="predicted") == 27

        assert window.model_box.currentText().startswith("Omniglot characters, adapts its network")
        truth = {str(f): cls.id for cls, files in zip(window.classes, chars.values())
                 for f in files for f in (f, rest / f"{f.parent.name}_{f.name}")}
        image = next(r for r in project.iter_images() if r.label_source == "model")
        window.add_examples(truth[image.path], [], [image.id])  # a new example: every prediction is redone
        wait_idle(qtbot, window, timeout=SLOW)
        current = project.current_model()
        assert not current[2].get("provisional"), "the exact run did not finish"
        # Before the exact run, provisional predictions (from the start's cached embeddings) were current.
        assert provisional and provisional[-1].get("provisional") is True
        assert "(provisional)" not in window.counts_label.text()
        n = {"total": 30, "confirmed": 4, "predicted": 26, "error": 0, "unlabeled": 0, "shown": 30, "provisional": 1}
        window._show_counts(n)
        qtbot.wait(50)  # the status bar lays the longer text out
        shot = tmp_path / "provisional-status.png"
        window.grab().save(str(shot))
        print(f"the window with provisional predictions: {shot}")
        assert "(provisional)" in window.counts_label.text() and "approximation" in window.counts_label.toolTip()
        assert project.count(status="predicted") == 26
        model_id = current[0]
        assert len(project.predicted_image_ids(model_id)) == 30  # every image through the adapted network
        predicted = [r for r in project.iter_images() if r.label_source == "model"]
        assert sum(r.label_class_id == truth[r.path] for r in predicted) / len(predicted) >= 0.9
    finally:
        window.close()

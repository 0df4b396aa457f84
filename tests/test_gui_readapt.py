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


def test_after_a_cancelled_run_corrections_refresh_and_the_cancel_holds(tmp_path):
    """A correction (or a new example) after a cancelled label run refreshes what was labeled,
    from the cache; it does not start the rest of the run under "Updating predictions"."""
    from types import SimpleNamespace

    from labeling_data import extract_omniglot

    from engine.labeling.labeler import Labeler
    from engine.labeling.label_results import RefreshReport
    from engine.labeling.progress import CancelToken
    from engine.labeling.store import Project
    from engine.model_store import load_model
    from fewshot_gui import jobs
    from fewshot_gui.worker import EngineContext

    chars = extract_omniglot(tmp_path / "chars", 3, per_character=30)
    project = Project.create(tmp_path / "p.fewshot")
    try:
        for key, files in chars.items():
            project.add_examples(project.add_class(key.replace("/", " ")), files[:1])
        project.add_images([next(iter(chars.values()))[0].parents[1]])
        ctx = EngineContext(project=project, model=load_model("omniglot"))
        cancel = CancelToken()

        def stop_after_a_batch(p):
            if p.stage == "labeling" and p.done >= 16:
                cancel.cancel()
        assert Labeler(project, ctx.model, batch_size=16).label(stop_after_a_batch, cancel).cancelled
        waiting = project.count(status="unlabeled")
        assert waiting > 0

        shown: list = []
        handle = SimpleNamespace(publish=shown.append, batch_done=lambda: None, cancel=CancelToken(),
                                 progress=lambda p: None, report=lambda *a: None)
        wrong = next(r for r in project.iter_images() if r.status == "predicted")
        other = next(c.id for c in project.classes() if c.id != wrong.predicted_class_id)
        assert jobs.set_labels(ctx, handle, [wrong.id], other)  # a correction: an example now
        assert isinstance(jobs.refresh(ctx, handle), RefreshReport) and shown
        assert project.count(status="unlabeled") == waiting

        more = next(r for r in project.iter_images() if r.status == "predicted")
        jobs.add_examples(ctx, handle, more.predicted_class_id, [more.id])
        assert project.count(status="unlabeled") == waiting
    finally:
        project.close()


def test_a_confirmed_label_shows_at_once_while_another_job_runs(qtbot, tmp_path):
    """A correction's re-read waits for its refresh to show predictions, unless the refresh
    itself must wait for another long job: then the label shows at once, not 400 ms later."""
    from gui_helpers import engine_window
    window = engine_window(qtbot, tmp_path / "gui.ini")
    release, started = threading.Event(), threading.Event()

    def other_long_job(ctx, h):
        started.set()
        release.wait(WAIT / 1000)
    try:
        window.submit("Exporting", other_long_job, kind="export")
        assert started.wait(WAIT / 1000)
        shown: list[bool] = []
        window.labeling_jobs.refresh_predictions(shown=lambda: shown.append(True))
        assert shown == [True]
        release.set()
        wait_idle(qtbot, window)
        assert shown == [True]  # once: the refresh ending does not run it again
    finally:
        release.set()
        window.close()

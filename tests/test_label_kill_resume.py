"""SIGKILL in the middle of `fewshot label`: nothing committed is lost, and the next run resumes.

A real `fewshot label` process labels 3,000 Omniglot PNGs; the test watches the
project file (a read-only SQLite connection, as any reader could), kills the
process with SIGKILL once a few batches are committed, and reopens the project.
"""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import engine.data.fast_png as fast_png_mod
from engine.labeling.labeler import Labeler
from engine.labeling.store import Project
from engine.model_store import load_model
from labeling_data import examples_dir, extract_omniglot

CHARACTERS = 150  # x 20 drawings = 3,000 images
BATCH = 32
KILL_AFTER = 4 * BATCH  # predictions committed before the kill


def snapshot(db: Path) -> tuple[dict[int, float], set[str]]:
    """What is committed now: prediction times by image, and the cached embeddings' hashes."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        preds = dict(conn.execute("SELECT image_id, time FROM predictions"))
        hashes = {r[0] for r in conn.execute("SELECT hash FROM embeddings")}
    finally:
        conn.close()
    return preds, hashes


@pytest.mark.slow
def test_sigkill_mid_run_loses_nothing_and_the_next_run_resumes(tmp_path, monkeypatch):
    chars = extract_omniglot(tmp_path / "images", CHARACTERS, per_character=20)
    examples = examples_dir(tmp_path / "examples", dict(list(chars.items())[:5]), per_class=2)
    db = tmp_path / "kill.fewshot"

    # Human labels set before the run, including one "none of these classes".
    with Project.create(db) as project:
        class_ids = [project.add_class(d.name) for d in sorted(examples.iterdir())]
        project.add_images([tmp_path / "images"])
        by_path = {r.path: r.id for r in project.iter_images()}
        some = [by_path[str(files[7])] for files in list(chars.values())[10:16]]
        human = {image_id: class_ids[k % len(class_ids)] for k, image_id in enumerate(some[:-1])}
        human[some[-1]] = None
        for image_id, class_id in human.items():
            project.set_label(image_id, class_id)
    usable = len(by_path)
    assert usable == CHARACTERS * 20

    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "label", "--project", str(db), "--examples", str(examples),
         "--images", str(tmp_path / "images"), "--model", "omniglot", "--batch-size", str(BATCH), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"the run ended before it could be killed: {proc.communicate()[1][-2000:]}"
            assert time.monotonic() < deadline, "no predictions were committed within two minutes"
            preds, hashes = snapshot(db)
            if len(preds) >= KILL_AFTER:
                break
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL

    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    after_preds, after_hashes = snapshot(db)
    assert after_preds.items() >= preds.items(), "a committed prediction was lost or changed"
    assert after_hashes >= hashes, "a committed embedding was lost"
    assert len(after_hashes) < usable, "the run had finished: nothing to resume"

    decoded: list[str] = []
    real_decode = fast_png_mod.decode_rows_fast  # what labeling decodes every file with
    monkeypatch.setattr(fast_png_mod, "decode_rows_fast",
                        lambda paths, prep, buf: (decoded.extend(paths), real_decode(paths, prep, buf))[1])
    with Project.open(db) as project:  # the killed process's lock went with it
        for image_id, class_id in human.items():
            rec = project.image(image_id)
            assert (rec.label_source, rec.label_class_id, rec.status) == ("human", class_id, "confirmed")
        cached_paths = {r.path for r in project.iter_images() if r.hash in after_hashes}

        summary = Labeler(project, load_model("omniglot"), batch_size=256).label()
        assert not summary.cancelled and not summary.failed
        # Resumed: only what was not cached is decoded, only what had no prediction is predicted.
        assert summary.embedded == usable - len(after_hashes)
        assert not cached_paths & set(decoded)
        assert summary.predicted == usable - len(after_preds)
        final = dict(sqlite3.connect(f"file:{db}?mode=ro", uri=True).execute("SELECT image_id, time FROM predictions"))
        assert {i: final[i] for i in after_preds} == after_preds, "a finished batch was predicted again"
        assert project.count(status="unlabeled") == 0 and len(final) == usable
        for image_id, class_id in human.items():
            assert project.image(image_id).label_class_id == class_id

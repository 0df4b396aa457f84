"""SIGKILL while the embedding cache is written and while a model is exported: the project
stays whole, no half-written file takes a real name, and the next run goes on."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest
from labeling_data import make_png
from reliability_helpers import ROOT

from engine.labeling.store import Project

BATCH, DIM = 2000, 1280

WRITE_EMBEDDINGS = f"""
import sys, numpy as np
from engine.labeling.store import Project
p = Project.open(sys.argv[1])
k = 0
while True:  # one transaction per batch of {BATCH} embeddings of {DIM} floats, until killed
    rng = np.random.default_rng(k)
    p.put_embeddings("kill-test", [(f"h{{k}}-{{j}}", rng.random({DIM}, dtype=np.float32)) for j in range({BATCH})])
    k += 1
    if k == 2:
        print("writing", flush=True)
"""


@pytest.mark.slow
def test_sigkill_while_the_embedding_cache_is_written(tmp_path):
    path = tmp_path / "p.fewshot"
    with Project.create(path) as p:
        cat = p.add_class("cat")
        image = p.add_images([make_png(tmp_path / "a.png", 1)]).added[0]
        p.set_label(image, cat)
    proc = subprocess.Popen([sys.executable, "-c", WRITE_EMBEDDINGS, str(path)], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == "writing", proc.stderr.read()
        time.sleep(0.3)  # in the middle of a later batch
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    rows = conn.execute("SELECT dim, length(vector) FROM embeddings").fetchall()
    conn.close()
    assert len(rows) >= 2 * BATCH and len(rows) % BATCH == 0, "a batch was committed in part"
    assert set(rows) == {(DIM, 4 * DIM)}
    with Project.open(path) as p:  # the lock went with the killed process
        hashes, matrix = p.get_embeddings("kill-test")
        assert np.isfinite(matrix).all() and matrix.shape == (len(rows), DIM)
        assert p.image(image).status == "confirmed"


@pytest.mark.slow
def test_sigkill_during_an_export_leaves_no_file_under_its_name_and_the_next_export_works(tmp_path):
    from export_data import make_project
    from reliability_helpers import fewshot
    project, _ = make_project(tmp_path / "p", characters=3, per_character=4, model="photos")
    out = tmp_path / "out"
    out.mkdir()
    target = out / "model.onnx"
    killed_while_writing = False
    for _attempt in range(3):
        proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "export", "--project", str(project),
                                 "--out", str(target)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            while proc.poll() is None and not any(p.name.endswith(".part") for p in out.iterdir()):
                time.sleep(0.001)
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                killed_while_writing = True
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        if killed_while_writing:
            break
        target.unlink(missing_ok=True)  # it finished first: try again
    assert killed_while_writing, "the export always finished before the kill"
    assert not target.exists(), "a half-written export took the real name"
    with Project.open(project) as p:
        assert p.count() == 12
    done = fewshot("export", "--project", project, "--out", target)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx"], "the killed export's part file was left"
    import onnx
    onnx.checker.check_model(str(target))

"""Real processes: a second process opening a project gets a clear error, a holder killed
by SIGKILL frees it, and a kill in the middle of writing loses nothing committed."""
from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.errors import ProjectLockedError
from engine.labeling import Project

ROOT = Path(__file__).resolve().parents[1]

HOLDER = """
import sys
from engine.labeling import Project
p = Project.open(sys.argv[1])
print("open", flush=True)
sys.stdin.readline()
p.close()
print("closed", flush=True)
sys.stdin.readline()
"""

LABEL_THEN_PREDICT = """
import sys
from engine.labeling import PredictionRow, Project
p = Project.open(sys.argv[1])
ids = [r.id for r in p.iter_images()]
a, b = [c.id for c in p.classes()]
for i in ids[:5]:
    p.set_label(i, a)
p.set_label(ids[5], None)
print("labelled", flush=True)
model = p.set_model("m", {})
k = 0
while True:  # one transaction per batch, each batch over every image, until killed
    k += 1
    p.write_predictions(model, [PredictionRow(i, [0.25, 0.75], [a, b], 0.5, 0.5, None, float(k)) for i in ids])
    if k == 3:
        print("writing", flush=True)
"""


def start(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=ROOT, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def expect_line(proc: subprocess.Popen, line: str) -> None:
    got = proc.stdout.readline().strip()
    if got != line:
        proc.kill()
        raise AssertionError(f"child said {got!r}, expected {line!r}; stderr: {proc.stderr.read()}")


@pytest.fixture
def project_path(tmp_path) -> Path:
    path = tmp_path / "shared.fewshot"
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for k in range(40):
        Image.fromarray(rng.integers(0, 255, size=(6, 6), dtype=np.uint8)).save(folder / f"{k:02d}.png")
    with Project.create(path) as p:
        p.add_class("a")
        p.add_class("b")
        p.add_images([folder])
    return path


def test_second_process_gets_a_clear_error_until_the_first_closes(project_path):
    holder = start(HOLDER, str(project_path))
    try:
        expect_line(holder, "open")
        with pytest.raises(ProjectLockedError, match=rf"already open in another window or program \(pid "
                                                     rf"{holder.pid} on .*\); close it there first"):
            Project.open(project_path)
        holder.stdin.write("\n")
        holder.stdin.flush()
        expect_line(holder, "closed")
        with Project.open(project_path) as p:
            assert p.count() == 40
    finally:
        holder.kill()
        holder.wait(timeout=30)


def test_a_killed_holder_frees_the_project(project_path):
    holder = start(HOLDER, str(project_path))
    try:
        expect_line(holder, "open")
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        with Project.open(project_path) as p:
            assert p.count() == 40
    finally:
        holder.kill()


def test_same_process_cannot_open_a_project_twice(project_path):
    with Project.open(project_path):
        with pytest.raises(ProjectLockedError, match=r"pid \d+"):
            Project.open(project_path)
    Project.open(project_path).close()


def test_sigkill_while_writing_loses_nothing_committed(project_path):
    writer = start(LABEL_THEN_PREDICT, str(project_path))
    try:
        expect_line(writer, "labelled")
        expect_line(writer, "writing")
        time.sleep(0.3)  # it is in the middle of some batch now
        writer.send_signal(signal.SIGKILL)
        assert writer.wait(timeout=30) == -signal.SIGKILL
    finally:
        writer.kill()
    with sqlite3.connect(project_path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with Project.open(project_path) as p:
        a = p.class_by_name("a").id
        recs = list(p.iter_images())
        assert [(r.label_class_id, r.label_source, r.status) for r in recs[:6]] == \
            [(a, "human", "confirmed")] * 5 + [(None, "human", "confirmed")]
        # Each batch is all or nothing: every image holds the last committed batch.
        batches = {r.ood_score for r in recs}
        assert len(batches) == 1 and batches.pop() >= 3
        assert p.count(status="predicted") == 34 and p.undo() is not None

"""The uncertainty registry drives every place a score appears; an old project file still opens."""
from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from engine.labeling import schema
from engine.labeling.store import Project
from engine.methods import uncertainty

ROOT = Path(__file__).resolve().parents[1]
V2_PROJECT = ROOT / "tests" / "data" / "project-v2.fewshot"


def test_every_score_is_complete_and_required_ones_are_entropy_and_margin():
    assert uncertainty.REQUIRED == ("entropy", "margin")
    for s in uncertainty.SCORES:
        assert s.name.isidentifier() and s.label and s.description.endswith(".") and s.sort_label
        assert s.uncertain_when in (uncertainty.HIGHER, uncertainty.LOWER)
    assert set(uncertainty.ONNX_OUTPUTS) == {"entropy", "ood_score", "mutual_info", "aleatoric"}
    assert schema.METRIC_COLUMNS == ("confidence", *uncertainty.NAMES)
    with pytest.raises(ValueError, match="must provide"):
        uncertainty.check_provided(("entropy",), "a method without margin")
    with pytest.raises(ValueError, match="unknown scores"):
        uncertainty.check_provided(("entropy", "margin", "vibes"), "a method")


def test_a_score_added_to_the_registry_appears_in_the_store_sorts_filters_exports_and_the_sort_box(tmp_path):
    """One entry, and the store, the exports and the app's sort box have it (run in a fresh
    interpreter: modules read the registry when they are imported)."""
    script = textwrap.dedent(f"""
        import csv, json, sys
        from pathlib import Path
        import numpy as np
        from engine.methods import uncertainty
        uncertainty.add_score(uncertainty.Score(
            "novelty", "Novelty", "How new the image looks.", uncertainty.HIGHER, required=False,
            onnx_output=True, sort_label="Most novel first", flag=0.5, flag_label="novel images"))
        from engine.labeling.store import Project
        from engine.export.labels import export_csv, export_json
        from fewshot_gui.results_page import sort_choices
        sys.path.insert(0, {str(ROOT / "tests")!r})
        from labeling_data import make_png
        tmp = Path({str(tmp_path)!r})
        with Project.create(tmp / "p.fewshot") as p:
            a, b = p.add_class("a"), p.add_class("b")
            ids = p.add_images([make_png(tmp / "img" / f"{{k}}.png", k) for k in range(3)]).added
            m = p.set_model("test", {{"backbone_id": "x"}})
            p.write_prediction_arrays(m, np.array(ids), [a, b], np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]]),
                                      scores={{"entropy": np.array([0.3, 0.6, 0.5]), "novelty": np.array([0.1, 0.9, 0.7])}})
            order = [r.id for r in p.query(sort="novelty", descending=True)]
            flagged = [r.id for r in p.query(flag="novelty")]
            sorted_flagged = [r.id for r in p.query(flag="novelty", sort="entropy")]
            novelty = [r.scores["novelty"] for r in p.iter_images()]
            export_csv(p, tmp / "l.csv")
            export_json(p, tmp / "l.json")
        header = next(csv.reader(open(tmp / "l.csv")))
        first = json.load(open(tmp / "l.json"))["images"][0]
        print(json.dumps({{"order": [ids.index(i) for i in order], "flagged": sorted(ids.index(i) for i in flagged),
                           "sorted_flagged": [ids.index(i) for i in sorted_flagged], "novelty": novelty,
                           "csv": "novelty" in header, "json": first.get("novelty"),
                           "sorts": [c[1] for c in sort_choices(("entropy", "margin", "novelty"))]}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120,
                         env={**__import__("os").environ, "QT_QPA_PLATFORM": "offscreen"})
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["order"] == [1, 2, 0]
    assert got["flagged"] == [1, 2] and got["sorted_flagged"] == [2, 1]
    assert got["novelty"] == pytest.approx([0.1, 0.9, 0.7])
    assert got["csv"] and got["json"] == pytest.approx(0.1)
    assert "novelty" in got["sorts"] and "ood_score" not in got["sorts"]


def test_flag_filters_keep_the_images_past_a_scores_threshold(tmp_path):
    from labeling_data import make_png
    with Project.create(tmp_path / "p.fewshot") as p:
        a, b = p.add_class("a"), p.add_class("b")
        ids = p.add_images([make_png(tmp_path / f"{k}.png", k) for k in range(4)]).added
        m = p.set_model("test", {"backbone_id": "x"})
        probs = np.array([[0.95, 0.05], [0.55, 0.45], [0.3, 0.7], [0.5, 0.5]])
        margin = np.abs(probs[:, 0] - probs[:, 1])
        p.write_prediction_arrays(m, np.array(ids), [a, b], probs, margin=margin,
                                  ood_score=np.array([0.5, 3.0, 1.0, 2.5]))
        assert [r.id for r in p.query(flag="margin")] == [ids[1], ids[3]]  # close calls: margin below 0.2
        assert p.count(flag="margin") == 2
        assert [r.id for r in p.query(flag="ood_score", sort="ood", descending=True)] == [ids[1], ids[3]]
        assert p.count(flag="ood_score", class_id=a) == 2 and p.count(flag="ood_score", class_id=b) == 0
        with pytest.raises(Exception, match="unknown flag"):
            p.query(flag="confidence")


def test_a_project_written_by_the_previous_format_opens_with_everything_in_it(tmp_path):
    """tests/data/project-v2.fewshot was written by main at ef635e7 (format 2)."""
    path = tmp_path / "old.fewshot"
    shutil.copy(V2_PROJECT, path)
    with Project.open(path) as p:
        assert p._conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION
        assert [c.name for c in p.classes()] == ["cat", "dog"]
        assert p.count() == 6 and len(p.examples()) == 2
        assert p.count(status="confirmed") == 4 and p.count(status="predicted") == 2
        records = list(p.iter_images())
        assert all(r.scores["aleatoric"] is None and r.scores["entropy"] is not None for r in records)
        assert [round(r.ood_score, 3) for r in p.query(sort="ood", descending=True)][:2] == [5.9, 4.9]
        hashes, matrix = p.get_embeddings("conv4:test")
        assert len(hashes) == 6 and matrix.shape == (6, 4)
        assert p.undo() == "label img3.png as none of these classes"
        assert p.redo() == "label img3.png as none of these classes"
        columns = {r[1] for r in p._conn.execute("PRAGMA table_info(predictions)")}
        assert set(uncertainty.NAMES) <= columns
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA application_id").fetchone()[0] == schema.APPLICATION_ID
    conn.close()

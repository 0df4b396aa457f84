"""The example method of docs/ARCHITECTURE.md, end to end: registered by this test, it
meta-trains with ``fewshot train --method``, labels a project, exports to ONNX and runs
in ``fewshot predict``, with nothing in the engine knowing it by name."""
from __future__ import annotations

import json

import pytest
from example_method import SoftNeighbours
from export_data import make_project, run_cli

from engine.labeling.store import Project
from engine.methods.registry import register, unregister


@pytest.fixture
def registered():
    register(SoftNeighbours)
    yield
    unregister(SoftNeighbours.name)


def test_a_registered_method_trains_labels_exports_and_predicts(registered, tmp_path, omniglot_root):
    out = tmp_path / "model"
    code, _stdout, stderr = run_cli(
        "train", "--dataset", "omniglot", "--data-root", str(omniglot_root), "--split", "small1",
        "--method", SoftNeighbours.name, "--scale", "0.5", "--way", "5", "--shot", "2", "--query", "3",
        "--episodes", "30", "--lr", "0.003", "--out", str(out))
    assert code == 0, stderr
    meta = json.loads((out / "model.json").read_text())
    assert meta["method"] == SoftNeighbours.name and meta["method_config"] == {"scale": 0.5}

    # --scale is this method's option; protonet has none such.
    code, _, stderr = run_cli("train", "--dataset", "omniglot", "--data-root", str(omniglot_root), "--split",
                              "small1", "--method", "protonet", "--scale", "2", "--out", str(tmp_path / "x"))
    assert code == 2 and "--scale is not an option of --method protonet" in stderr

    project, _chars = make_project(tmp_path / "p", characters=3, per_character=6, model=str(out))
    with Project.open(project) as p:
        assert p.count(status="unlabeled") == 0 and p.count(status="predicted") == 3 * 4
        assert p.current_model()[2]["method"] == SoftNeighbours.name
        assert all(r.entropy is not None and r.ood_score is None for r in p.iter_images())

    onnx_path = tmp_path / "model.onnx"
    code, stdout, stderr = run_cli("export", "--project", str(project), "--out", str(onnx_path), "--json")
    assert code == 0, stderr
    report = json.loads(stdout)
    assert report["method"] == SoftNeighbours.name and report["parity_max_abs_diff"] < 1e-4

    code, stdout, stderr = run_cli("predict", "--model", str(onnx_path), str(tmp_path / "p" / "images"), "--json")
    assert code == 0, stderr
    result = json.loads(stdout)
    assert result["scores"] == ["entropy"] and result["count"] == 3 * 6
    assert all(r["label"] in report["classes"] and "entropy" in r for r in result["images"])

"""A project labeled with bayes-proto exports as bayes-proto (contract 2, with its epistemic
and aleatoric outputs), and `fewshot predict` gives what the app stored; version-1 files
still read."""
from __future__ import annotations

import json

import onnx
import pytest

from engine.labeling.store import Project
from export_data import export_json, run_cli
from labeling_data import extract_omniglot


@pytest.fixture(scope="module")
def bayes_project(tmp_path_factory):
    from engine.labeling.labeler import label_project
    from engine.method_choice import with_method
    from engine.model_store import load_model
    root = tmp_path_factory.mktemp("bayes-export")
    chars = extract_omniglot(root / "images", 3, per_character=8, skip=120)
    path = root / "p.fewshot"
    with Project.create(path) as project:
        for key, files in chars.items():
            project.add_examples(project.add_class(key.replace("/", "_")), files[:2])
        project.add_images([root / "images"])
        label_project(project, with_method(load_model("omniglot", "cpu"), "bayes-proto"))
        names = {c.id: c.name for c in project.classes()}
        stored = {r.path: (names[r.predicted_class_id], r.mutual_info, r.aleatoric)
                  for r in project.iter_images() if r.label_source == "model"}
    return root, path, stored


def test_the_export_keeps_the_head_the_project_was_labeled_with(bayes_project):
    root, path, stored = bayes_project
    out = root / "model.onnx"
    report = export_json(path, out)
    assert report["method"] == "bayes-proto"
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["fewshot_contract"] == "2"
    assert json.loads(meta["outputs"]) == ["probs", "entropy", "ood_score", "mutual_info", "aleatoric"]
    code, stdout, stderr = run_cli("predict", "--model", str(out), str(root / "images"), "--json")
    assert code == 0, stderr
    results = {r["path"]: r for r in json.loads(stdout)["images"]}
    for p, (label, mi, alea) in stored.items():
        got = results[p]
        assert got["label"] == label
        assert got["mutual_info"] == pytest.approx(mi, abs=1e-4)
        assert got["aleatoric"] == pytest.approx(alea, abs=1e-4)


def test_a_version_1_file_still_predicts(bayes_project, tmp_path):
    root, path, _ = bayes_project
    out = tmp_path / "v1.onnx"
    export_json(path, out, "--method", "protonet")  # ProtoNet's outputs only, as version 1 had
    model = onnx.load(str(out))
    for entry in model.metadata_props:
        if entry.key == "fewshot_contract":
            entry.value = "1"
    onnx.save(model, str(out))
    code, stdout, stderr = run_cli("predict", "--model", str(out), str(root / "images"), "--json")
    assert code == 0, stderr
    first = json.loads(stdout)["images"][0]
    assert "entropy" in first and "ood_score" in first and "mutual_info" not in first

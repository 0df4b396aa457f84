"""`fewshot export`: the ONNX graph, its metadata contract, parity with PyTorch, the bundle,
and every way the export refuses bad input. Real Omniglot drawings, the bundled models."""
from __future__ import annotations

import json
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from engine.data.transforms import load_uint8, normalize
from engine.export.bundle import BUNDLE_FILES
from engine.labeling.store import Project
from engine.model_store import load_model
from export_data import class_name, export_json, make_project, run_cli
from labeling_data import extract_omniglot


@pytest.fixture(scope="module")
def labeled(tmp_path_factory) -> tuple[Path, dict[str, list[Path]]]:
    """A project of 4 characters x 6 drawings (2 examples each), labeled with `omniglot`."""
    return make_project(tmp_path_factory.mktemp("export-onnx"), characters=4, per_character=6, skip=120)


@pytest.fixture(scope="module")
def exported(labeled, tmp_path_factory) -> tuple[Path, dict]:
    """The project's current model exported once: (the .onnx path, the --json report)."""
    project, _ = labeled
    out = tmp_path_factory.mktemp("export-out") / "model.onnx"
    return out, export_json(project, out)


def stored_predictions(project_path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """(class names, image paths, probabilities) the labeler stored, in class order."""
    with Project.open(project_path) as project:
        classes = project.classes()
        records = [r for r in project.iter_images() if r.probs]
    probs = np.array([[r.probs[c.id] for c in classes] for r in records])
    return [c.name for c in classes], [r.path for r in records], probs


def test_report_gives_parity_provider_and_classes(labeled, exported):
    _, chars = labeled
    path, report = exported
    assert Path(report["path"]) == path and path.is_file()
    assert report["classes"] == [class_name(k) for k in chars]
    assert report["model"] == "omniglot" and report["method"] == "protonet" and report["bundle"] is False
    assert 0.0 <= report["parity_max_abs_diff"] < 1e-4
    assert report["parity_images"] == 2 * len(chars)
    assert report["provider"] in ("CPUExecutionProvider", "CUDAExecutionProvider")
    assert report["opset"] >= 17 and report["seconds"] > 0
    assert [p.name for p in path.parent.iterdir()] == ["model.onnx"]  # no temp file left


def test_checker_passes_and_graph_has_the_contract_shape(exported):
    path, report = exported
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    (pixels,) = model.graph.input
    assert pixels.name == "pixels" and pixels.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    dims = pixels.type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].HasField("dim_value")  # dynamic batch
    assert [d.dim_value for d in dims[1:]] == [1, 28, 28]
    assert [o.name for o in model.graph.output] == ["probs", "entropy", "ood_score"]


def test_metadata_is_the_documented_contract(labeled, exported):
    project_path, _ = labeled
    path, report = exported
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    for key in ("class_names", "preprocessing", "method", "source_model", "project_version", "exported_at"):
        assert key in meta, key
    assert json.loads(meta["class_names"]) == report["classes"]
    assert json.loads(meta["preprocessing"]) == load_model("omniglot").preprocessing.to_dict()
    assert set(json.loads(meta["preprocessing"])) == {"size", "channels", "mean", "std", "resize", "alpha", "invert"}
    assert meta["method"] == "protonet" and meta["source_model"] == "omniglot"
    with Project.open(project_path) as project:
        _, _, model_meta = project.current_model()
    # The fingerprint of the examples the model adapted on: the same as the labeling run's.
    assert meta["project_version"] == model_meta["adapted_on"]["fingerprint"] == report["project_version"]
    when = datetime.fromisoformat(meta["exported_at"].replace("Z", "+00:00"))
    assert when.utcoffset() == timedelta(0)
    assert abs(datetime.now(timezone.utc) - when) < timedelta(hours=1)


def test_dynamic_batch_and_agreement_with_the_labelers_predictions(labeled, exported):
    project_path, _ = labeled
    path, _ = exported
    names, paths, stored = stored_predictions(project_path)
    prep = load_model("omniglot").preprocessing
    x = normalize(torch.stack([load_uint8(p, prep) for p in paths[:7]]), prep).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    probs7, entropy7, ood7 = session.run(None, {"pixels": x})
    assert probs7.shape == (7, len(names)) and entropy7.shape == (7,) and ood7.shape == (7,)
    singles = [session.run(None, {"pixels": x[k:k + 1]}) for k in range(7)]
    assert all(s[0].shape == (1, len(names)) for s in singles)
    np.testing.assert_allclose(np.concatenate([s[0] for s in singles]), probs7, atol=1e-6)
    np.testing.assert_allclose(np.concatenate([s[2] for s in singles]), ood7, rtol=1e-5)
    np.testing.assert_allclose(probs7.sum(axis=1), 1.0, atol=1e-5)
    # The very numbers the labeler stored for these images (same pixels, same head).
    np.testing.assert_allclose(probs7, stored[:7], atol=1e-4)
    assert (probs7.argmax(axis=1) == stored[:7].argmax(axis=1)).all()


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_head_module_is_the_predictors_math(labeled, distance):
    """as_module() computes what predict() does, for both ProtoNet distances."""
    from engine.methods.protonet import ProtoNet
    _, chars = labeled
    model = load_model("omniglot")
    prep = model.preprocessing
    files = [f for fs in chars.values() for f in fs]
    x = normalize(torch.stack([load_uint8(f, prep) for f in files]), prep)
    y = torch.tensor([k for k, fs in enumerate(chars.values()) for _ in fs])
    learner = ProtoNet(model.learner.backbone, distance=distance).eval()
    head = learner.adapt(x[::3], y[::3])
    with torch.inference_mode():
        expected = head.predict(x)
        probs, entropy, ood = head.as_module()(x)
    torch.testing.assert_close(probs, expected.probs, atol=1e-6, rtol=0)
    torch.testing.assert_close(entropy, expected.entropy, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(ood, expected.ood_score, atol=1e-6, rtol=1e-5)


def test_bundle_zip_holds_model_labels_preprocessing_and_readme(labeled, exported, tmp_path):
    project, _ = labeled
    _, report = exported
    code, stdout, stderr = run_cli("export", "--project", str(project), "--out", str(tmp_path / "cats.onnx"),
                                   "--bundle")
    assert code == 0, stderr
    target = tmp_path / "cats.zip"
    assert [p.name for p in tmp_path.iterdir()] == ["cats.zip"]
    assert str(target) in stdout and "parity" in stdout and "onnxruntime" in stdout
    with zipfile.ZipFile(target) as zf:
        assert sorted(zf.namelist()) == sorted(BUNDLE_FILES)
        labels = json.loads(zf.read("labels.json"))
        prep = json.loads(zf.read("preprocessing.json"))
        readme = zf.read("README.txt").decode()
        inner = onnx.load_from_string(zf.read("model.onnx"))
    assert labels == report["classes"]
    assert prep == load_model("omniglot").preprocessing.to_dict()
    meta = {p.key: p.value for p in inner.metadata_props}
    assert json.loads(meta["class_names"]) == labels and json.loads(meta["preprocessing"]) == prep
    assert "pixels" in readme and "fewshot predict" in readme and "probs" in readme
    onnx.checker.check_model(inner)


def test_refuses_to_overwrite_unless_forced(labeled, tmp_path):
    project, _ = labeled
    target = tmp_path / "model.onnx"
    target.write_text("keep me")
    code, _, stderr = run_cli("export", "--project", str(project), "--out", str(target))
    assert code == 2
    assert "already exists" in stderr and "--force" in stderr
    assert target.read_text() == "keep me"
    report = export_json(project, target, "--force")
    assert report["parity_max_abs_diff"] < 1e-4
    onnx.checker.check_model(onnx.load(str(target)))
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_failed_parity_check_leaves_no_file(labeled, tmp_path, monkeypatch):
    import engine.export.onnx_model as onnx_model
    project, _ = labeled
    monkeypatch.setattr(onnx_model, "PARITY_TOLERANCE", -1.0)  # every difference now "fails"
    code, _, stderr = run_cli("export", "--project", str(project), "--out", str(tmp_path / "model.onnx"))
    assert code == 2
    assert "does not match PyTorch" in stderr and "nothing was written" in stderr
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ bad input

@pytest.fixture(scope="module")
def drawings(tmp_path_factory) -> dict[str, list[Path]]:
    return extract_omniglot(tmp_path_factory.mktemp("export-bad") / "images", 2, per_character=2, skip=140)


def small_project(path: Path, drawings: dict[str, list[Path]], *, classes: int, with_examples: int) -> Path:
    """Unlabeled: ``classes`` classes, the first ``with_examples`` of them with one example."""
    with Project.create(path) as project:
        for k, (key, files) in enumerate(list(drawings.items())[:classes]):
            cid = project.add_class(class_name(key))
            if k < with_examples:
                project.add_examples(cid, files[:1])
    return path


def refused(*argv: str) -> str:
    code, stdout, stderr = run_cli("export", *argv)
    assert code == 2, (stdout, stderr)
    assert stderr.startswith("error: ")
    return stderr


def test_refuses_a_project_that_does_not_exist(tmp_path):
    err = refused("--project", str(tmp_path / "nope.fewshot"), "--out", str(tmp_path / "m.onnx"))
    assert "no project at" in err
    assert not (tmp_path / "nope.fewshot").exists() and not (tmp_path / "m.onnx").exists()


def test_refuses_a_project_without_classes(tmp_path, drawings):
    project = small_project(tmp_path / "p.fewshot", drawings, classes=0, with_examples=0)
    err = refused("--project", str(project), "--out", str(tmp_path / "m.onnx"), "--model", "omniglot")
    assert "no classes" in err


def test_refuses_a_project_without_examples(tmp_path, drawings):
    project = small_project(tmp_path / "p.fewshot", drawings, classes=2, with_examples=0)
    err = refused("--project", str(project), "--out", str(tmp_path / "m.onnx"), "--model", "omniglot")
    assert "no example images" in err


def test_names_the_class_without_examples(tmp_path, drawings):
    project = small_project(tmp_path / "p.fewshot", drawings, classes=2, with_examples=1)
    err = refused("--project", str(project), "--out", str(tmp_path / "m.onnx"), "--model", "omniglot")
    empty = class_name(list(drawings)[1])
    assert repr(empty) in err and "no example images" in err
    assert class_name(list(drawings)[0]) not in err


def test_asks_to_label_first_or_name_a_model(tmp_path, drawings):
    project = small_project(tmp_path / "p.fewshot", drawings, classes=2, with_examples=2)
    err = refused("--project", str(project), "--out", str(tmp_path / "m.onnx"))
    assert "label it first" in err and "--model" in err
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("where", ["missing-folder", "under-a-file", "a-folder"])
def test_refuses_an_unwritable_output_path(tmp_path, drawings, where):
    project = small_project(tmp_path / "p.fewshot", drawings, classes=2, with_examples=2)
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "dir").mkdir()
    out = {"missing-folder": tmp_path / "no" / "such" / "m.onnx", "under-a-file": tmp_path / "file.txt" / "m.onnx",
           "a-folder": tmp_path / "dir"}[where]
    err = refused("--project", str(project), "--out", str(out), "--model", "omniglot")
    expected = {"missing-folder": "does not exist", "under-a-file": "is a file, not a folder",
                "a-folder": "is a folder"}[where]
    assert expected in err
    if where != "a-folder":
        assert "cannot write" in err


def test_refuses_a_model_that_does_not_exist(tmp_path, drawings):
    project = small_project(tmp_path / "p.fewshot", drawings, classes=2, with_examples=2)
    err = refused("--project", str(project), "--out", str(tmp_path / "m.onnx"), "--model", str(tmp_path / "nomodel"))
    assert "model not found" in err


# ------------------------------------------------------------------ the photos model

@pytest.mark.slow
def test_photos_model_exports_with_parity(tmp_path, drawings):
    """EfficientNet-Lite0 (3 x 224 x 224) exports too: 2 classes x 1 example."""
    project = small_project(tmp_path / "p.fewshot", drawings, classes=2, with_examples=2)
    report = export_json(project, tmp_path / "photos.onnx", "--model", "photos")
    assert report["parity_max_abs_diff"] < 1e-4 and report["parity_images"] == 2
    model = onnx.load(str(tmp_path / "photos.onnx"))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims[1:]] == [3, 224, 224]
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["source_model"] == "photos"
    assert json.loads(meta["preprocessing"])["resize"] == "shorter_side_center_crop"

"""ONNX files as feature extractors: where the features are taken, the remembered input
contract, labeling with them, and exporting the adapted head appended to their graph."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from engine.data.preprocessing import Preprocessing
from engine.data.transforms import load_uint8, normalize
from engine.errors import FewShotError, ModelInputError
from engine.labeling.labeler import Labeler
from engine.labeling.runners import OnnxRunner, choose_runner, onnx_backbone_path
from engine.labeling.store import Project
from engine.model_store import describe, load_model
from engine.models.onnx_features import prepare, remembered_preprocessing, suggested_preprocessing
from labeling_data import extract_omniglot

IMAGENET = Preprocessing(size=(224, 224), channels=3, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                         resize="shorter_side_center_crop")


@pytest.fixture(autouse=True)
def config_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("FEWSHOT_CONFIG_DIR", str(tmp_path / "config"))


@pytest.fixture(scope="module")
def mobilenet(shared_dir) -> Path:
    return shared_dir / "models" / "mobilenetv2-12-int8.onnx"


def test_quantized_classifier_gives_its_pooled_features(mobilenet):
    f = prepare(mobilenet)
    assert f.dim == 1280 and "classifier" in f.taken_from and "QLinearMatMul" in f.taken_from
    assert f.input_shape[1:] == [3, 224, 224]
    assert prepare(mobilenet).path == f.path  # cached by content
    assert suggested_preprocessing(mobilenet).size == (224, 224)


def test_a_plain_feature_extractor_gives_its_output(tmp_path):
    conv4 = load_model("omniglot")
    path = onnx_backbone_path(conv4)  # an ONNX file whose output is already the embedding
    f = prepare(path)
    assert f.dim == 64 and "no classifier" in f.taken_from
    x = normalize(torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8), conv4.preprocessing)
    model = load_model(str(path), preprocessing=conv4.preprocessing)
    with torch.no_grad():
        assert torch.allclose(model.learner.backbone(x), conv4.learner.backbone(x), atol=1e-4)


def test_a_spatial_map_is_average_pooled(tmp_path):
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU()).eval()
    path = tmp_path / "fmap.onnx"
    x = torch.randn(2, 3, 16, 16)
    torch.onnx.export(net, (x,), str(path), input_names=["image"], dynamo=True,
                      dynamic_shapes=({0: torch.export.Dim("n", min=1)},))
    f = prepare(path)
    assert f.dim == 8
    model = load_model(str(path), preprocessing=Preprocessing(size=(16, 16), channels=3))
    with torch.no_grad():
        assert torch.allclose(model.learner.backbone(x), net(x).mean(dim=(2, 3)), atol=1e-5)


def test_input_contract_is_asked_once_then_remembered(mobilenet):
    with pytest.raises(FewShotError, match="--onnx-preprocessing.*224"):
        load_model(str(mobilenet))
    model = load_model(str(mobilenet), preprocessing=IMAGENET)
    assert remembered_preprocessing(mobilenet) == IMAGENET
    again = load_model(str(mobilenet))
    assert again.preprocessing == IMAGENET and again.backbone_id == model.backbone_id
    assert isinstance(choose_runner(again), OnnxRunner)
    info = describe(str(mobilenet))
    assert info["feature_dim"] == 1280 and info["preprocessing"]["size"] == [224, 224]


def test_not_an_onnx_file(tmp_path):
    bad = tmp_path / "fake.onnx"
    bad.write_text("hello")
    with pytest.raises(ModelInputError, match="not an ONNX model"):
        load_model(str(bad), preprocessing=IMAGENET)
    with pytest.raises(ModelInputError, match="not found"):
        load_model(str(tmp_path / "missing.onnx"), preprocessing=IMAGENET)


def test_label_export_and_predict_with_onnx_features(mobilenet, tmp_path):
    chars = extract_omniglot(tmp_path / "omniglot", 3, per_character=6)
    model = load_model(str(mobilenet), preprocessing=IMAGENET)
    with Project.create(tmp_path / "p.fewshot") as p:
        for name, files in chars.items():
            p.add_examples(p.add_class(name.replace("/", " ")), files[:2])
        p.add_images([f for fs in chars.values() for f in fs[2:]])
        summary = Labeler(p, model).label()
        assert summary.backend == "onnxruntime" and summary.predicted == 18  # examples too
        # the features equal the extractor run directly on the same pixels
        rec = next(r for r in p.iter_images() if r.predicted_class_id is not None)
        x = normalize(load_uint8(rec.path, IMAGENET)[None], IMAGENET)
        z = model.learner.backbone(x)[0].numpy()
        _, cached = p.get_embeddings(model.backbone_id, [rec.hash])
        assert np.allclose(cached[0], z, atol=1e-5)
        stored = {Path(r.path).name: r.predicted_class_id for r in p.iter_images()}
        names = {c.id: c.name for c in p.classes()}
    out = subprocess.run([sys.executable, "-m", "engine.cli", "export", "--project", str(tmp_path / "p.fewshot"),
                          "--out", str(tmp_path / "m.onnx"), "--json"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["parity_max_abs_diff"] < 1e-4
    images = next(iter(chars.values()))[0].parents[2]
    out = subprocess.run([sys.executable, "-m", "engine.cli", "predict", "--model", str(tmp_path / "m.onnx"),
                          str(images), "--json"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    for row in json.loads(out.stdout)["images"]:
        name = Path(row["path"]).name
        if stored.get(name) is not None:
            assert row["label"] == names[stored[name]], name


def test_settings_the_file_contradicts_are_refused_and_not_remembered(mobilenet):
    wrong = Preprocessing(size=(128, 128), channels=3, mean=IMAGENET.mean, std=IMAGENET.std)
    with pytest.raises(ModelInputError, match="height 128 \\(the file expects 224\\)"):
        load_model(str(mobilenet), preprocessing=wrong)
    assert remembered_preprocessing(mobilenet) is None


def test_other_settings_give_other_cache_rows(mobilenet):
    a = load_model(str(mobilenet), preprocessing=IMAGENET)
    b = load_model(str(mobilenet), preprocessing=Preprocessing(size=(224, 224), channels=3, resize="stretch"))
    assert a.backbone_id != b.backbone_id


def test_a_missing_file_without_settings_says_not_found(tmp_path):
    with pytest.raises(ModelInputError, match="not found"):
        load_model(str(tmp_path / "gone.onnx"))

"""The labeler's onnxruntime backbone: export once, same embeddings as PyTorch, the choice
between the two backends, and a fallback to PyTorch when the export fails."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import engine.labeling.runners.choice as choice
import engine.labeling.runners.onnx_runner as onnx_runner
from engine.labeling.runners import remembered as backend_choice
from engine.data.transforms import load_uint8
from engine.errors import FewShotError
from engine.labeling.labeler import Labeler
from engine.labeling.runners import OnnxRunner, TorchRunner, choose_runner, onnx_backbone_path
from engine.labeling.store import Project
from engine.model_store import load_model
from labeling_data import extract_omniglot

WAY = 4


@pytest.fixture(scope="module")
def model():
    return load_model("omniglot")


@pytest.fixture(scope="module")
def characters(tmp_path_factory) -> dict[str, list[Path]]:
    return extract_omniglot(tmp_path_factory.mktemp("omniglot"), WAY, per_character=12)


def pixels_of(files: list[Path], model) -> torch.Tensor:
    return torch.stack([load_uint8(f, model.preprocessing) for f in files])


def test_export_is_cached_and_matches_pytorch_on_real_images(model, characters):
    path = onnx_backbone_path(model)
    assert path.is_file() and path.suffix == ".onnx"
    mtime = path.stat().st_mtime_ns
    assert onnx_backbone_path(model) == path and path.stat().st_mtime_ns == mtime, "exported twice"
    files = [f for fs in characters.values() for f in fs]
    pixels = pixels_of(files, model)
    ort_z = OnnxRunner(model, path, batch_size=16)(pixels)  # several sub-batches: dynamic batch
    torch_z = TorchRunner(model)(pixels)
    assert ort_z.dtype == torch.float32 and ort_z.shape == torch_z.shape
    scale = torch_z.abs().max().item()
    assert (ort_z - torch_z).abs().max().item() <= 1e-4 * scale
    one = OnnxRunner(model, path)(pixels[:1])  # batch of one
    assert torch.allclose(one, ort_z[:1], atol=1e-4 * scale)


def test_threads_follow_the_plan(model):
    runner = OnnxRunner(model, onnx_backbone_path(model))
    pixels = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8)
    runner.set_threads(1)
    a = runner(pixels)
    runner.set_threads(2)
    b = runner(pixels)
    assert sorted(runner._sessions) == [1, 2]
    assert torch.allclose(a, b, atol=1e-5)
    assert runner.images == 16 and runner.cpu_s > 0


def test_choose_runner(model, monkeypatch):
    assert isinstance(choose_runner(model, backend="torch"), TorchRunner)
    assert isinstance(choose_runner(model, backend="onnxruntime"), OnnxRunner)
    with pytest.raises(FewShotError, match="unknown backend"):
        choose_runner(model, backend="tensorrt")
    # auto measures both once per machine and backbone, and keeps the faster
    stored = backend_choice.choice_file(onnx_backbone_path(model))
    stored.unlink(missing_ok=True)
    monkeypatch.setattr(choice, "_choices", {})
    speeds = {"torch": 100.0, "onnxruntime": 300.0}
    measured = []

    def throughput(runner, _pixels, repeats=2):
        measured.append(runner.backend)
        return speeds[runner.backend]

    monkeypatch.setattr(choice, "_throughput", throughput)
    assert isinstance(choose_runner(model), OnnxRunner)
    assert sorted(measured) == ["onnxruntime", "torch"]
    speeds["onnxruntime"] = 10.0
    assert isinstance(choose_runner(model), OnnxRunner), "the choice is measured once per process"
    monkeypatch.setattr(choice, "_choices", {})  # a new process on the same machine: read from disk
    assert isinstance(choose_runner(model), OnnxRunner) and len(measured) == 2
    entry = next(iter(json.loads(stored.read_text()).values()))
    assert entry["backend"] == "onnxruntime" and entry["images_per_s"] == {"torch": 100.0, "onnxruntime": 300.0}

    # Another machine (or other library versions) measures again.
    monkeypatch.setattr(choice, "_choices", {})
    monkeypatch.setattr(backend_choice, "machine_fingerprint", lambda: "another machine")
    speeds["onnxruntime"] = 102.0  # within timing noise: PyTorch stays
    assert isinstance(choose_runner(model), TorchRunner) and len(measured) == 4
    assert len(json.loads(stored.read_text())) == 2, "each machine keeps its own answer"

    # A damaged file is ignored and rewritten.
    stored.write_text("{not json")
    monkeypatch.setattr(choice, "_choices", {})
    assert isinstance(choose_runner(model), TorchRunner) and len(measured) == 6
    assert json.loads(stored.read_text())["another machine|" + f"{torch.get_num_threads()} threads|batch 256"]
    stored.unlink()  # the speeds above are made up: later tests measure the real ones


def test_a_failed_export_falls_back_to_pytorch(model, monkeypatch, tmp_path):
    monkeypatch.setenv("FEWSHOT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(choice, "_choices", {})

    def broken(*_args, **_kwargs):
        raise RuntimeError("exporter exploded")
    monkeypatch.setattr(onnx_runner, "_export", broken)
    assert isinstance(choose_runner(model), TorchRunner)
    with pytest.raises(FewShotError, match="exporter exploded.*--backend torch"):
        choose_runner(model, backend="onnxruntime")
    assert not list((tmp_path / "cache" / "onnx").glob("*")), "a failed export leaves no file behind"


def test_a_wrong_export_is_refused(model, monkeypatch, tmp_path):
    monkeypatch.setenv("FEWSHOT_CACHE_DIR", str(tmp_path / "cache"))
    real_export = onnx_runner._export

    def export_other_network(backbone, x, path):
        other = load_model("omniglot").learner.backbone.cpu().eval()
        with torch.no_grad():
            for p in other.parameters():
                p.mul_(1.5)
        other.to(memory_format=torch.contiguous_format)
        real_export(other, x, path)
    monkeypatch.setattr(onnx_runner, "_export", export_other_network)
    with pytest.raises(FewShotError, match="differs from PyTorch"):
        onnx_backbone_path(model)
    assert not list((tmp_path / "cache" / "onnx").glob("*.onnx"))


def test_both_backends_label_a_project_alike(model, characters, tmp_path):
    predictions = {}
    for backend in ("torch", "onnxruntime"):
        with Project.create(tmp_path / f"{backend}.fewshot") as p:
            for name, files in characters.items():
                p.add_examples(p.add_class(name.replace("/", " ")), files[:1])
            p.add_images([f for fs in characters.values() for f in fs[1:]])
            summary = Labeler(p, model, backend=backend).label()
            assert summary.backend == backend and summary.predicted >= WAY * 11
            predictions[backend] = {r.path: (r.predicted_class_id, r.confidence) for r in p.iter_images()}
    assert predictions["torch"].keys() == predictions["onnxruntime"].keys()
    for path, (cls, conf) in predictions["torch"].items():
        other_cls, other_conf = predictions["onnxruntime"][path]
        assert cls == other_cls and abs(conf - other_conf) < 1e-4, path


def test_pytorch_keeps_one_thread_while_onnxruntime_runs_the_backbone(model, characters, tmp_path, monkeypatch):
    # PyTorch only scores batches then; its idle threads would spin on the cores the
    # forward streams use. Its thread count comes back after the run.
    seen = []
    call = OnnxRunner.__call__

    def recording(self, pixels):
        seen.append(torch.get_num_threads())
        return call(self, pixels)

    monkeypatch.setattr(OnnxRunner, "__call__", recording)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with Project.create(tmp_path / "p.fewshot") as p:
            for name, files in characters.items():
                p.add_examples(p.add_class(name.replace("/", " ")), files[:1])
            p.add_images([f for fs in characters.values() for f in fs[1:]])
            Labeler(p, model, backend="onnxruntime").label()
        assert seen and set(seen) == {1}
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_first_time_preparation_is_announced_as_a_stage(model, characters, tmp_path, monkeypatch):
    monkeypatch.setenv("FEWSHOT_CACHE_DIR", str(tmp_path / "fresh-cache"))  # nothing exported or timed yet
    monkeypatch.setattr(choice, "_choices", {})
    stages = []
    with Project.create(tmp_path / "p.fewshot") as p:
        for name, files in characters.items():
            p.add_examples(p.add_class(name.replace("/", " ")), files[:1])
        p.add_images([f for fs in characters.values() for f in fs[1:]])
        summary = Labeler(p, model).label(progress=lambda pr: stages.append((pr.stage, pr.total, pr.busy)))
    assert summary.backend in ("torch", "onnxruntime")
    busy = [s for s, total, is_busy in stages if is_busy]
    assert busy == ["preparing onnxruntime: exporting the backbone (once per model)",
                    "preparing onnxruntime: timing it against PyTorch (once per machine)"]
    assert all(total == 0 for s, total, _ in stages if s in busy)
    assert stages.index((busy[-1], 0, True)) < min(i for i, (s, _, _) in enumerate(stages) if s == "labeling")

    # The next process finds both on disk and says nothing about them.
    monkeypatch.setattr(choice, "_choices", {})
    stages.clear()
    with Project.open(tmp_path / "p.fewshot") as p:
        p.clear_predictions()
        Labeler(p, model).label(progress=lambda pr: stages.append((pr.stage, pr.total, pr.busy)))
    assert stages and not [s for s, _, is_busy in stages if is_busy or s.startswith("preparing")]


def test_label_command_reports_the_backend(characters, tmp_path):
    examples = tmp_path / "examples"
    for name, files in characters.items():
        folder = examples / name.replace("/", " ")
        folder.mkdir(parents=True)
        (folder / files[0].name).write_bytes(files[0].read_bytes())
    images = next(iter(characters.values()))[0].parents[2]
    out = subprocess.run([sys.executable, "-m", "engine.cli", "label", "--project", str(tmp_path / "p.fewshot"),
                          "--examples", str(examples), "--images", str(images), "--model", "omniglot",
                          "--backend", "onnxruntime", "--json"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)  # nothing but the JSON on stdout, exporter chatter included
    assert summary["backend"] == "onnxruntime" and summary["embedded"] > 0
    assert np.isfinite(summary["images_per_s"])

"""`fewshot predict`: an exported model on folders of real drawings, with onnxruntime only --
the same labels the labeler gave, CSV/JSON output, bad files, bad models, and no torch."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest

from data_fixtures import SHARED
from engine.errors import ModelInputError
from engine.export.bundle import write_bundle
from engine.labeling.store import Project
from engine.onnx_session import CPU, make_session, read_contract
from export_data import export_json, make_project, run_cli

ROOT = Path(__file__).resolve().parents[1]
PER_CHARACTER = 8
CHARACTERS = 3


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    """A labeled project (3 characters x 8 drawings), its export, and a folder to predict:
    the drawings (in nested folders) plus a truncated PNG and a text file."""
    root = tmp_path_factory.mktemp("predict")
    project, chars = make_project(root, characters=CHARACTERS, per_character=PER_CHARACTER, skip=200)
    model = root / "model.onnx"
    export_json(project, model)
    first = next(iter(chars.values()))[0]
    blob = first.read_bytes()
    (root / "images" / "broken.png").write_bytes(blob[: len(blob) // 2])
    (root / "images" / "notes.txt").write_text("not an image, and not an image name either")
    with Project.open(project) as p:
        names = {c.id: c.name for c in p.classes()}
        stored = {r.path: (names[r.predicted_class_id], {names[k]: v for k, v in r.probs.items()})
                  for r in p.iter_images() if r.probs}
    return {"root": root, "project": project, "model": model, "images": root / "images", "stored": stored,
            "chars": chars, "classes": list(names.values())}


def predict_json(*argv: str) -> tuple[dict, str]:
    code, stdout, stderr = run_cli("predict", *argv, "--json")
    assert code == 0, stderr
    return json.loads(stdout), stderr


def test_json_labels_match_the_labelers_predictions(setup):
    result, stderr = predict_json("--model", str(setup["model"]), str(setup["images"]))
    assert f"onnxruntime provider: {result['provider']}" in stderr
    assert result["provider"] in ("CPUExecutionProvider", "CUDAExecutionProvider")
    assert result["classes"] == setup["classes"]
    assert result["count"] == CHARACTERS * PER_CHARACTER == len(result["images"])
    assert [Path(e["path"]).name for e in result["errors"]] == ["broken.png"]  # notes.txt is not an image name
    assert "truncated" in result["errors"][0]["reason"]
    stored = setup["stored"]
    assert {r["path"] for r in result["images"]} == set(stored)
    for r in result["images"]:
        label, probs = stored[r["path"]]
        assert r["label"] == label, r["path"]
        assert max(abs(r["probs"][n] - probs[n]) for n in setup["classes"]) < 1e-4
        assert r["confidence"] == max(r["probs"].values())
        assert r["entropy"] >= 0 and r["ood_score"] >= 0
    # The model works, not just the plumbing: drawings land in their own character's class.
    right = sum(r["label"] == "_".join(Path(r["path"]).parts[-3:-1]) for r in result["images"])
    assert right >= 0.9 * len(result["images"])


def test_csv_has_a_row_per_image_with_every_class_probability(setup, tmp_path):
    out = tmp_path / "pred.csv"
    code, stdout, stderr = run_cli("predict", "--model", str(setup["model"]), str(setup["images"]), "--csv", str(out))
    assert code == 0, stderr
    assert str(out) in stdout and "broken.png" in stdout and "could not be read" in stdout
    with open(out, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    header = list(rows[0].keys())
    assert header == ["path", "label", "confidence", "entropy", "ood_score", "error",
                      *(f"p_{n}" for n in setup["classes"])]
    good = [r for r in rows if not r["error"]]
    bad = [r for r in rows if r["error"]]
    assert len(good) == CHARACTERS * PER_CHARACTER
    assert [Path(r["path"]).name for r in bad] == ["broken.png"] and bad[0]["label"] == ""
    for r in good:
        probs = [float(r[f"p_{n}"]) for n in setup["classes"]]
        assert abs(sum(probs) - 1) < 1e-5
        assert r["label"] == setup["stored"][r["path"]][0]
        assert float(r["confidence"]) == pytest.approx(max(probs), abs=1e-7)
    # The CSV target is never overwritten.
    code, _, stderr = run_cli("predict", "--model", str(setup["model"]), str(setup["images"]), "--csv", str(out))
    assert code == 2 and "already exists" in stderr


def test_batches_files_and_bundles_give_the_same_answers(setup, tmp_path):
    whole, _ = predict_json("--model", str(setup["model"]), str(setup["images"]))
    by_path = {r["path"]: r for r in whole["images"]}
    # Odd batch size (a remainder batch), files named directly, a folder named twice.
    files = sorted(by_path)[:5]
    small, _ = predict_json("--model", str(setup["model"]), *files, str(setup["images"]), "--batch-size", "7")
    assert [r["path"] for r in small["images"]][:5] == files
    assert len(small["images"]) == len(whole["images"])  # nothing twice
    for r in small["images"]:
        assert r["label"] == by_path[r["path"]]["label"]
        assert max(abs(r["probs"][n] - by_path[r["path"]]["probs"][n]) for n in r["probs"]) < 1e-6
    # The --bundle zip works as --model too.
    blob = setup["model"].read_bytes()
    contract = read_contract(onnx.load_from_string(blob))
    bundle = tmp_path / "model.zip"
    write_bundle(bundle, blob, contract["class_names"], contract["preprocessing"], {})
    zipped, _ = predict_json("--model", str(bundle), *files)
    assert [r["label"] for r in zipped["images"]] == [by_path[f]["label"] for f in files]


def test_torch_is_never_imported(setup):
    code = ("import sys, json\n"
            "from engine.cli import main\n"
            f"status = main(['predict', '--model', {str(setup['model'])!r}, {str(setup['images'])!r}, '--json'])\n"
            "loaded = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
            "print(json.dumps({'status': status, 'torch': loaded}), file=sys.stderr)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    last = json.loads(proc.stderr.strip().splitlines()[-1])
    assert last == {"status": 0, "torch": []}
    assert json.loads(proc.stdout)["count"] == CHARACTERS * PER_CHARACTER


def refused(*argv: str) -> str:
    code, stdout, stderr = run_cli("predict", *argv)
    assert code == 2, (stdout, stderr)
    assert stderr.startswith("error: ")
    return stderr


def test_refuses_a_file_that_is_not_onnx(setup):
    image = next(iter(setup["chars"].values()))[0]
    err = refused("--model", str(image), str(setup["images"]))
    assert "is not an ONNX model" in err and "fewshot export" in err


def test_refuses_an_onnx_model_not_made_by_fewshot_export(setup):
    foreign = SHARED / "models" / "mobilenetv2-12-int8.onnx"
    assert foreign.is_file(), f"shared model missing: {foreign}"
    err = refused("--model", str(foreign), str(setup["images"]))
    assert "not exported by fewshot export" in err


def test_refuses_a_missing_model(setup, tmp_path):
    err = refused("--model", str(tmp_path / "missing.onnx"), str(setup["images"]))
    assert "does not exist" in err


def test_missing_image_among_others_is_listed_not_fatal(setup, tmp_path):
    image = next(iter(setup["chars"].values()))[0]
    result, _ = predict_json("--model", str(setup["model"]), str(tmp_path / "gone.png"), str(image))
    assert result["count"] == 1
    assert result["errors"][0]["path"] == str(tmp_path / "gone.png")
    assert "not found" in result["errors"][0]["reason"]


def test_nothing_to_predict_is_an_error(setup, tmp_path):
    """A typo'd folder, or folders without images: one error line and exit 2, not a run
    that predicts nothing and exits 0."""
    err = refused("--model", str(setup["model"]), str(tmp_path / "typo"))
    assert "typo does not exist" in err
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "notes.txt").write_text("no images here")
    err = refused("--model", str(setup["model"]), str(tmp_path / "empty"), str(tmp_path / "typo"))
    assert "no image files in" in err and "empty" in err


def test_make_session_falls_back_to_the_cpu_quietly(setup, capfd):
    session, provider = make_session(setup["model"])
    assert provider == session.get_providers()[0]
    assert provider in ("CPUExecutionProvider", "CUDAExecutionProvider")
    cpu, cpu_provider = make_session(setup["model"].read_bytes(), prefer_gpu=False, threads=1)
    assert cpu_provider == CPU and cpu.get_providers() == [CPU]
    err = capfd.readouterr().err
    assert "Failed to create CUDAExecutionProvider" not in err and "[E:onnxruntime" not in err
    x = np.zeros((2, 1, 28, 28), dtype=np.float32)
    np.testing.assert_allclose(session.run(["probs"], {"pixels": x})[0], cpu.run(["probs"], {"pixels": x})[0],
                               atol=1e-5)


def test_read_contract_reads_sessions_protos_and_paths(setup):
    session, _ = make_session(setup["model"], prefer_gpu=False)
    from_session = read_contract(session)
    from_path = read_contract(setup["model"])
    from_proto = read_contract(onnx.load(str(setup["model"])))
    assert from_session == from_path == from_proto
    assert from_session["class_names"] == setup["classes"]
    assert from_session["preprocessing"]["size"] == [28, 28]
    with pytest.raises(ModelInputError, match="not exported by fewshot export"):
        read_contract(SHARED / "models" / "mobilenetv2-12-int8.onnx")
    with zipfile.ZipFile(setup["root"] / "x.zip", "w") as zf:
        zf.writestr("readme.txt", "no model here")
    err = refused("--model", str(setup["root"] / "x.zip"), str(setup["images"]))
    assert "without model.onnx" in err


def test_info_describes_an_exported_model_by_its_contract(setup):
    code, stdout, stderr = run_cli("info", str(setup["model"]))
    assert code == 0, stderr
    assert f"classes:      {', '.join(setup['classes'])}" in stdout
    assert "adapted and exported" in stdout and "fewshot predict" in stdout and "None" not in stdout

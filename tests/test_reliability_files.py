"""Hostile and broken files given to the commands: model folders, ONNX files, bundles, FIFOs,
formula-like names, a disk that fills during an export, a damaged cache. Each answers with
one `error:` line (exit 2) or a listed reason, never a traceback or a hang."""
from __future__ import annotations

import csv
import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from labeling_data import make_png
from onnx import TensorProto, helper, numpy_helper
from reliability_helpers import assert_user_error, fewshot, fill, small_disk

from engine.model_store import ASSETS

PREP = {"size": [8, 8], "channels": 1, "mean": [0.0], "std": [1.0], "resize": "stretch", "alpha": "white",
        "invert": False}


def model_folder(tmp_path: Path, edit) -> Path:
    """A copy of the bundled omniglot model with model.json changed by ``edit(text) -> text``."""
    folder = tmp_path / "model"
    shutil.copytree(ASSETS / "omniglot", folder)
    meta = folder / "model.json"
    meta.write_text(edit(meta.read_text()))
    return folder


@pytest.mark.parametrize("edit, phrase", [
    (lambda t: "[" * 100_000 + "]" * 100_000, "nested too deeply"),
    (lambda t: t.replace('"temperature": 1.0', '"temperature": 1e400'), "out of range"),
    (lambda t: t.replace('"temperature": 1.0', '"temperature": 1.0, "exec": "rm -rf /"'), "unknown method options"),
    (lambda t: t.replace('"image_size": 28', '"image_size": 1000000000'), "inputs"),
    (lambda t: t.replace('"channels": 1', '"channels": 7'), "channels"),
])
def test_hostile_model_json_is_one_line(tmp_path, edit, phrase):
    folder = model_folder(tmp_path, edit)
    assert_user_error(fewshot("info", folder), phrase) if phrase == "nested too deeply" else None
    make_png(tmp_path / "ex" / "a" / "1.png", 1)
    done = fewshot("label", "--project", tmp_path / "p.fewshot", "--examples", tmp_path / "ex",
                   "--images", tmp_path / "ex", "--model", folder)
    assert_user_error(done, phrase)
    assert not (tmp_path / "p.fewshot").exists(), "a bad model left an empty project behind"


def test_nan_weights_are_refused_when_the_model_loads(tmp_path):
    from safetensors.torch import load_file, save_file
    folder = model_folder(tmp_path, lambda t: t)
    weights = load_file(str(folder / "model.safetensors"))
    first = next(k for k, v in weights.items() if v.is_floating_point())
    weights[first][0] = float("nan")
    save_file(weights, str(folder / "model.safetensors"))
    make_png(tmp_path / "ex" / "a" / "1.png", 1)
    done = fewshot("label", "--project", tmp_path / "p.fewshot", "--examples", tmp_path / "ex",
                   "--images", tmp_path / "ex", "--model", folder)
    assert_user_error(done, "NaN or infinite")


def export_like(outputs: list[tuple[str, list]], class_names: list[str], nodes: list, inits: list | None = None,
                path: Path | None = None) -> onnx.ModelProto:
    """A graph taking 'pixels' (N, 1, 8, 8) with fewshot's metadata contract."""
    graph = helper.make_graph(nodes, "crafted",
                              [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["N", 1, 8, 8])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
                              inits or [])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    for key, value in (("class_names", json.dumps(class_names)), ("preprocessing", json.dumps(PREP))):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    if path is not None:
        path.write_bytes(model.SerializeToString())
    return model


def probs_nodes(width: int) -> list:
    """pixels -> probs (N, width): flatten, take the first ``width`` columns, softmax."""
    return [helper.make_node("Flatten", ["pixels"], ["flat"]),
            helper.make_node("Slice", ["flat", "start", "stop", "axis"], ["cut"]),
            helper.make_node("Softmax", ["cut"], ["probs"], axis=1)]


def slice_inits(width: int) -> list:
    return [numpy_helper.from_array(np.array([0]), "start"), numpy_helper.from_array(np.array([width]), "stop"),
            numpy_helper.from_array(np.array([1]), "axis")]


def test_crafted_onnx_models_for_predict_are_one_line(tmp_path):
    images = tmp_path / "images"
    make_png(images / "a.png", 1)
    no_probs = tmp_path / "no-probs.onnx"
    export_like([("scores", ["N", 3])], ["a", "b", "c"],
                [helper.make_node("Flatten", ["pixels"], ["scores"])], path=no_probs)
    assert_user_error(fewshot("predict", "--model", no_probs, images), "no 'probs' output")

    too_wide = tmp_path / "wide.onnx"  # 5 probabilities for 3 class names: was silently cut to 3
    export_like([("probs", ["N", "K"])], ["a", "b", "c"], probs_nodes(5), slice_inits(5), path=too_wide)
    assert_user_error(fewshot("predict", "--model", too_wide, images), "3 classes")

    bomb = tmp_path / "bomb.onnx"  # a declared 400 GB initializer: refused before anything is allocated
    huge = TensorProto(name="huge", data_type=TensorProto.FLOAT, dims=[100_000, 1_000_000])
    export_like([("probs", ["N", 3])], ["a", "b", "c"], probs_nodes(3), slice_inits(3) + [huge], path=bomb)
    assert_user_error(fewshot("predict", "--model", bomb, images), "GiB")

    not_onnx = tmp_path / "notes.onnx"
    not_onnx.write_text("not a model")
    assert_user_error(fewshot("predict", "--model", not_onnx, images))


def test_a_bundle_whose_model_points_at_outside_data_is_refused(tmp_path):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.full(3, 7.0, np.float32).tobytes())
    weights = numpy_helper.from_array(np.zeros(3, np.float32), "w")
    weights.ClearField("raw_data")
    weights.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "secret.bin"), ("offset", "0"), ("length", "12")):
        entry = weights.external_data.add()
        entry.key, entry.value = key, value
    model = export_like([("probs", ["N", 3])], ["a", "b", "c"],
                        probs_nodes(3)[:2] + [helper.make_node("Add", ["cut", "w"], ["sum"]),
                                              helper.make_node("Softmax", ["sum"], ["probs"], axis=1)],
                        slice_inits(3) + [weights])
    bundle = tmp_path / "bundle.zip"
    with zipfile.ZipFile(bundle, "w") as zf:
        zf.writestr("model.onnx", model.SerializeToString())
    make_png(tmp_path / "images" / "a.png", 1)
    # Run where the secret file is: the model's relative path would resolve to it.
    assert_user_error(fewshot("predict", "--model", bundle, tmp_path / "images", cwd=tmp_path), "external files")


def test_a_fifo_named_like_an_image_is_skipped_with_its_reason(tmp_path):
    from export_data import export_json, make_project
    project, _ = make_project(tmp_path / "p", characters=2, per_character=3)
    model = tmp_path / "m.onnx"
    export_json(project, model)
    folder = tmp_path / "to-predict"
    make_png(folder / "real.png", 4, (28, 28))
    os.mkfifo(folder / "pipe.png")
    done = fewshot("predict", "--model", model, folder, "--json", timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["count"] == 1
    assert [(Path(e["path"]).name, "not a regular file" in e["reason"]) for e in result["errors"]] == [("pipe.png", True)]


def test_formula_like_names_are_neutralized_in_csv(tmp_path):
    from engine.export.labels import export_csv
    from engine.labeling.store import Project
    with Project.create(tmp_path / "p.fewshot") as p:
        evil = p.add_class('=HYPERLINK("http://x","click")')
        image = p.add_images([make_png(tmp_path / "+cmd.png", 1)]).added[0]
        p.set_label(image, evil)
        export_csv(p, tmp_path / "labels.csv")
    rows = list(csv.reader(open(tmp_path / "labels.csv", encoding="utf-8")))
    assert rows[1][1] == "'=HYPERLINK(\"http://x\",\"click\")"
    assert rows[0][-1] == 'p_=HYPERLINK("http://x","click")'  # starts with p: a spreadsheet reads it as text
    cells = [c for r in rows for c in r]
    assert not any(c[:1] in "=+-@\t\r" for c in cells if c and not _number(c))


def _number(cell: str) -> bool:
    try:
        float(cell)
        return True
    except ValueError:
        return False


def test_a_folder_export_that_fills_the_disk_fails_and_says_what_was_written(tmp_path):
    from engine.export.labels import ExportIncompleteError, export_folders
    from engine.labeling.store import Project
    with Project.create(tmp_path / "p.fewshot") as p:
        cat = p.add_class("cat")
        files = [make_png(tmp_path / "img" / f"{k}.png", k, (200, 200)) for k in range(40)]
        for image in p.add_images(files).added:
            p.set_label(image, cat)
        with small_disk(tmp_path / "disk", "1m") as disk:
            fill(disk, leave=600_000)
            with pytest.raises(ExportIncompleteError, match="disk is full") as info:
                export_folders(p, disk / "out")
            report = info.value.report
            assert report.failed and report.written == len(report.files) > 0
            assert report.written + len(report.failed) == 40
            assert sorted(os.listdir(disk / "out" / "cat")) == sorted(Path(f).name for f in report.files)


def test_the_cached_backbone_export_is_one_file_and_is_rebuilt_when_damaged(tmp_path, monkeypatch):
    from engine.labeling.runners import choose_runner, onnx_backbone_path
    from engine.model_store import load_model
    monkeypatch.setenv("FEWSHOT_CACHE_DIR", str(tmp_path / "cache"))
    model = load_model("omniglot")
    path = onnx_backbone_path(model)
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name], "the export kept files beside it"
    onnx.checker.check_model(str(path))
    path.write_bytes(path.read_bytes()[:1000])  # truncated, as a full disk or a kill could leave it
    import engine.labeling.runners.onnx_runner as onnx_runner
    monkeypatch.setattr(onnx_runner, "_sessions", {})
    runner = choose_runner(model, backend="onnxruntime")
    assert runner.backend == "onnxruntime" and path.stat().st_size > 100_000


def test_fewshot_predict_csv_neutralizes_formula_like_cells(tmp_path):
    import io

    from engine.predict_command import PredictedImage, PredictResult, write_csv
    result = PredictResult("m.onnx", "CPU", ["@SUM(A1)", "plain"], ("entropy",))
    result.images.append(PredictedImage("-evil.png", "@SUM(A1)", 0.9, np.array([0.9, 0.1]), {"entropy": 0.3}))
    result.errors.append(("=bad.png", "+reason"))
    out = io.StringIO()
    write_csv(out, result)
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert rows[0] == ["path", "label", "confidence", "entropy", "error", "'p_@SUM(A1)"[1:], "p_plain"]
    assert rows[1][:2] == ["'-evil.png", "'@SUM(A1)"] and rows[2][0] == "'=bad.png" and rows[2][4] == "'+reason"

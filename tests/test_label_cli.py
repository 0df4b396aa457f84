"""`fewshot label` the way a person runs it: summaries, exports, resumed runs and bad input."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from engine.cli import main
from engine.labeling.store import Project
from labeling_data import examples_dir, extract_omniglot

WAY = 4


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path, dict[str, list[Path]]]:
    """(examples dir, images dir, characters): 4 characters x 12 drawings, 2 examples each,
    plus one truncated PNG and one text file among the images to label."""
    root = tmp_path_factory.mktemp("label-cli")
    chars = extract_omniglot(root / "images", WAY, per_character=12, skip=40)
    examples = examples_dir(root / "examples", chars, per_class=2)
    first = next(iter(chars.values()))[0]
    data = first.read_bytes()
    (root / "images" / "broken.png").write_bytes(data[: len(data) * 2 // 3])
    (root / "images" / "notes.txt").write_text("not an image")
    return examples, root / "images", chars


def label(*args: str) -> int:
    return main(["label", "--model", "omniglot", *args])


def test_json_summary_counts_classes_and_lists_bad_files(data, tmp_path, capsys):
    examples, images, chars = data
    project = tmp_path / "run.fewshot"
    out_csv = tmp_path / "labels.csv"
    tree = tmp_path / "tree"
    code = label("--project", str(project), "--examples", str(examples), "--images", str(images), "--json",
                 "--export-csv", str(out_csv), "--export-folder", str(tree), "--link", "symlink")
    captured = capsys.readouterr()
    assert code == 0, captured.err
    summary = json.loads(captured.out)
    assert summary["finished"] is True
    names = sorted(k.replace("/", "_") for k in chars)
    assert sorted(summary["classes"]) == names
    assert sum(c["total"] for c in summary["classes"].values()) == WAY * 12
    assert all(c["confirmed"] == 2 for c in summary["classes"].values())
    assert summary["labeled"] == WAY * 12 and summary["images"] == WAY * 12 + 1
    assert [Path(e["path"]).name for e in summary["errors"]] == ["broken.png"]
    assert "truncated" in summary["errors"][0]["reason"]
    assert any(Path(s["path"]).name == "notes.txt" and "not an image" in s["reason"] for s in summary["skipped"])
    assert summary["embedded"] == WAY * 12 and summary["images_per_s"] > 0

    with open(out_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == WAY * 12 + 1
    assert sum(r["source"] == "model" for r in rows) == WAY * 10
    linked = [p for p in tree.rglob("*.png")]
    assert len(linked) == WAY * 12 and all(p.is_symlink() for p in linked)
    # Most drawings land in their own character's folder (the model works, not just the plumbing).
    def truth(link: Path) -> str:  # examples sit in examples/<class>/, drawings in <alphabet>/<character>/
        src = link.resolve()
        return src.parent.name if src.is_relative_to(examples) else "_".join(src.parts[-3:-1])
    right = sum(p.parent.name == truth(p) for p in linked)
    assert right >= 0.9 * len(linked)


def test_second_run_adds_to_the_project_and_decodes_nothing_again(data, tmp_path, capsys):
    examples, images, _ = data
    project = tmp_path / "again.fewshot"
    args = ("--project", str(project), "--examples", str(examples), "--images", str(images), "--json")
    assert label(*args) == 0
    capsys.readouterr()
    assert label(*args) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["embedded"] == 0 and second["predicted"] == 0 and second["images_added"] == 0
    assert second["labeled"] == WAY * 12
    assert all(v == 0 for v in second["examples_added"].values())


def test_text_summary_names_bad_files_with_reasons(data, tmp_path, capsys):
    examples, images, _ = data
    assert label("--project", str(tmp_path / "t.fewshot"), "--examples", str(examples), "--images", str(images)) == 0
    out = capsys.readouterr().out
    assert "1 unreadable file (not labeled)" in out and "broken.png: the file is truncated" in out
    assert f"{WAY * 12} of {WAY * 12 + 1} images labeled" in out


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_missing_folders_are_user_errors(data, tmp_path, capsys):
    examples, images, _ = data
    p = str(tmp_path / "x.fewshot")
    assert label("--project", p, "--examples", str(tmp_path / "nope"), "--images", str(images)) == 2
    assert "--examples" in _error_line(capsys)
    assert label("--project", p, "--examples", str(examples), "--images", str(tmp_path / "nope")) == 2
    assert "--images" in _error_line(capsys)
    assert not Path(p).exists()  # nothing is created for a run that cannot start


def test_examples_folder_without_class_subfolders_is_a_user_error(data, tmp_path, capsys):
    _, images, chars = data
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "one.png").write_bytes(next(iter(chars.values()))[0].read_bytes())
    assert label("--project", str(tmp_path / "f.fewshot"), "--examples", str(flat), "--images", str(images)) == 2
    assert "no class sub-folders" in _error_line(capsys)


def test_locked_project_is_a_user_error(data, tmp_path, capsys):
    examples, images, _ = data
    path = tmp_path / "locked.fewshot"
    with Project.create(path):
        code = label("--project", str(path), "--examples", str(examples), "--images", str(images))
    assert code == 2
    assert "already open" in _error_line(capsys)


def test_existing_export_file_is_refused_before_labeling(data, tmp_path, capsys):
    examples, images, _ = data
    taken = tmp_path / "taken.csv"
    taken.write_text("keep me")
    p = tmp_path / "e.fewshot"
    assert label("--project", str(p), "--examples", str(examples), "--images", str(images),
                 "--export-csv", str(taken)) == 2
    assert "already exists" in _error_line(capsys)
    assert taken.read_text() == "keep me" and not p.exists()
    assert label("--project", str(p), "--examples", str(examples), "--images", str(images), "--link", "copy") == 2
    assert "--export-folder" in _error_line(capsys)


def test_progress_bars_print_a_busy_step_once_and_nothing_for_an_empty_stage(capsys):
    from engine.label_command import ProgressBars
    from engine.labeling.progress import Progress
    bars = ProgressBars(enabled=True)
    bars.label(Progress("predicting from cache", 0, 0, 0.0, None, 0.0))  # no work at all: silent
    step = "preparing onnxruntime: timing it against PyTorch (once per machine)"
    bars.label(Progress(step, 0, 0, 0.0, None, 0.0, busy=True))
    bars.label(Progress(step, 0, 0, 0.0, None, 0.0, busy=True))
    bars.close()
    err = capsys.readouterr().err
    assert err == step + "\u2026\n"


def test_method_bayes_proto_adds_epistemic_and_aleatoric_columns_and_switching_reuses_the_cache(
        data, tmp_path, capsys):
    examples, images, chars = data
    project, out_csv = tmp_path / "bayes.fewshot", tmp_path / "bayes.csv"
    code = label("--project", str(project), "--examples", str(examples), "--images", str(images), "--json",
                 "--method", "bayes-proto", "--export-csv", str(out_csv))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    summary = json.loads(captured.out)
    assert summary["method"] == "bayes-proto" and summary["embedded"] == WAY * 12
    predicted = summary["predicted"]
    with open(out_csv, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["source"] == "model"]
    assert len(rows) == WAY * 10
    assert all(float(r["mutual_info"]) >= 0 and float(r["aleatoric"]) >= 0 for r in rows)
    truth = {p.name: name.replace("/", "_") for name, paths in chars.items() for p in paths}
    right = sum(truth[Path(r["path"]).name] == r["label"] for r in rows)
    assert right >= 0.8 * len(rows)  # 4-way 2-shot Omniglot characters
    # Back to ProtoNet on the same project: every image is predicted again, from the cached embeddings.
    code = label("--project", str(project), "--examples", str(examples), "--images", str(images), "--json",
                 "--method", "protonet")
    summary = json.loads(capsys.readouterr().out)
    assert code == 0 and summary["method"] == "protonet"
    assert summary["embedded"] == 0 and summary["predicted"] == predicted > 0


def test_a_method_the_model_was_not_trained_with_is_refused_with_the_reason(data, tmp_path, capsys):
    examples, images, _ = data
    code = label("--project", str(tmp_path / "m.fewshot"), "--examples", str(examples), "--images", str(images),
                 "--method", "maml")
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error:") and "meta-trained" in err and "protonet" in err and "Traceback" not in err
    assert not (tmp_path / "m.fewshot").exists()

"""Every `fewshot` command, the way a person runs it, including its errors."""
import json
import subprocess
import sys

import pytest

from engine.cli import main
from data_fixtures import build_lake_runs_fixture, build_miniimagenet_fixture


@pytest.fixture(scope="module")
def tiny_model(omniglot_root, tmp_path_factory):
    """A model trained for a few episodes: enough to exercise every command."""
    out = tmp_path_factory.mktemp("tiny-model")
    code = main(["train", "--dataset", "omniglot", "--data-root", str(omniglot_root), "--split", "small1",
                 "--way", "5", "--shot", "1", "--query", "2", "--episodes", "4", "--out", str(out),
                 "--val-split", "small2", "--val-episodes", "5", "--val-every", "2", "--events", str(out / "ev.jsonl")])
    assert code == 0
    return out


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True, timeout=300)


def test_train_writes_events_and_a_model(tiny_model):
    events = [json.loads(line) for line in (tiny_model / "ev.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events if e["event"] in ("start", "done")] == ["start", "done"]
    assert sum(e["event"] == "validation" for e in events) == 2
    assert (tiny_model / "model.safetensors").is_file() and (tiny_model / "resume.pt").is_file()


def test_train_events_to_stdout_are_json_lines(omniglot_root, tmp_path, capsys):
    code = main(["train", "--dataset", "omniglot", "--data-root", str(omniglot_root), "--split", "small1",
                 "--way", "3", "--shot", "1", "--query", "1", "--episodes", "2", "--out", str(tmp_path), "--events", "-"])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["event"] for line in lines][-1] == "done"


def test_info_prints_what_the_model_is(tiny_model, capsys):
    assert main(["info", str(tiny_model)]) == 0
    out = capsys.readouterr().out
    assert "protonet" in out and "conv4" in out and "validation" in out
    assert main(["info", str(tiny_model), "--json"]) == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta["backbone"] == "conv4" and meta["parameters"] > 100_000


def test_info_on_bundled_photos_model(capsys):
    assert main(["info", "photos"]) == 0
    assert "lite0" in capsys.readouterr().out


def test_evaluate_episodes_json(tiny_model, omniglot_root, capsys):
    code = main(["evaluate", "--model", str(tiny_model), "--dataset", "omniglot", "--data-root", str(omniglot_root),
                 "--split", "evaluation", "--way", "5", "--shot", "1", "--query", "3", "--episodes", "20", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert 0 <= result["accuracy"] <= 1 and result["ci95"] > 0 and result["episodes"] == 20
    for metric in ("ece", "nll", "brier"):
        assert result[metric] >= 0 and result[f"{metric}_ci95"] > 0
    assert main(["evaluate", "--model", str(tiny_model), "--dataset", "omniglot", "--data-root", str(omniglot_root),
                 "--split", "evaluation", "--episodes", "10", "--query", "3"]) == 0
    assert "calibration: ECE" in capsys.readouterr().out


def test_evaluate_lake_runs(tiny_model, omniglot_root, tmp_path, capsys):
    runs = build_lake_runs_fixture(omniglot_root, tmp_path / "runs", runs=3)
    assert main(["evaluate", "--model", str(tiny_model), "--lake-runs", str(runs), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["runs"]) == 3 and result["items"] == 60
    assert result["error_rate"] == pytest.approx(sum(r["errors"] for r in result["runs"]) / 60)
    assert main(["evaluate", "--model", str(tiny_model), "--lake-runs", str(runs)]) == 0
    assert "overall error rate" in capsys.readouterr().out


def test_evaluate_on_generated_miniimagenet(tmp_path, capsys):
    root = build_miniimagenet_fixture(tmp_path / "mini", splits=("test",), classes=5, per_class=6)
    model_dir = tmp_path / "m"
    assert main(["train", "--dataset", "miniimagenet", "--data-root", str(root), "--split", "test", "--way", "5",
                 "--shot", "1", "--query", "2", "--episodes", "2", "--out", str(model_dir)]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--model", str(model_dir), "--dataset", "miniimagenet", "--data-root", str(root),
                 "--split", "test", "--way", "5", "--shot", "1", "--query", "2", "--episodes", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["episodes"] == 3


@pytest.mark.parametrize("args, message", [
    (["train", "--dataset", "omniglot", "--data-root", "/no/such/folder", "--split", "background", "--out", "x"],
     "does not exist"),
    (["evaluate", "--model", "/no/such/model", "--lake-runs", "/tmp"], "model not found"),
    (["info", "/no/such/model"], "model not found"),
])
def test_bad_input_exits_non_zero_with_one_line(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0]


def test_wrong_layout_says_what_was_expected(tmp_path, capsys):
    (tmp_path / "stuff").mkdir()
    code = main(["train", "--dataset", "omniglot", "--data-root", str(tmp_path), "--split", "background",
                 "--episodes", "1", "--out", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err
    assert "images_background" in err


def test_too_few_classes_for_the_way(omniglot_root, tmp_path, capsys):
    code = main(["train", "--dataset", "omniglot", "--data-root", str(omniglot_root), "--split", "small1",
                 "--way", "5000", "--episodes", "1", "--out", str(tmp_path)])
    assert code == 2
    assert "lower the way" in capsys.readouterr().err


def test_lake_runs_folder_with_wrong_layout(tiny_model, tmp_path, capsys):
    (tmp_path / "run01").mkdir()
    assert main(["evaluate", "--model", str(tiny_model), "--lake-runs", str(tmp_path)]) == 2
    assert "error:" in capsys.readouterr().err


def test_entry_point_help_and_usage_errors():
    for cmd in ([], ["train"], ["evaluate"], ["info"]):
        out = run_cli(*cmd, "--help")
        assert out.returncode == 0 and "usage:" in out.stdout
    out = run_cli("train", "--dataset", "nope")
    assert out.returncode == 2 and "invalid choice" in out.stderr


def test_without_pytorch_commands_that_need_it_say_so_in_one_line(capsys):
    """An installation without PyTorch (the `predict` build, or a pip install missing it):
    the torch-free commands still answer, the others say what is missing before any
    argument check."""
    assert main(["label", "--project", "p.fewshot"], torch_available=False) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: 'fewshot label' needs PyTorch")
    assert "predict, check" in err[0]
    with pytest.raises(SystemExit) as e:
        main(["check", "--help"], torch_available=False)
    assert e.value.code == 0 and "--project" in capsys.readouterr().out


def test_a_model_that_is_a_file_is_named_as_such(tmp_path, capsys):
    junk = tmp_path / "model.pt"
    junk.write_bytes(b"\x00not a model")
    assert main(["info", str(junk)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {junk} is a file, not a model folder") and "not found" not in err


def test_tasks_that_score_nothing_are_refused_before_any_work(capsys, tmp_path):
    """A user trial: --query 0 printed NaN figures and trained on a NaN loss, --way 1 reported
    100% ± 0; and an oversized validation way did not say it was the validation's."""
    from data_fixtures import OMNIGLOT_ROOT, require_shared
    root = str(require_shared(OMNIGLOT_ROOT))
    for extra in (["--query", "0"], ["--way", "1"]):
        assert main(["evaluate", "--model", "omniglot", "--dataset", "omniglot", "--data-root", root,
                     "--split", "small2", "--episodes", "2", *extra]) == 2
        assert "need way >= 2, shot >= 1 and query >= 1" in capsys.readouterr().err
    assert main(["evaluate", "--model", "omniglot", "--dataset", "omniglot", "--data-root", root, "--split",
                 "small2", "--episodes", "2", "--reliability-plot", str(tmp_path / "r.jpg")]) == 2
    assert "ending in .png" in capsys.readouterr().err
    assert main(["train", "--dataset", "omniglot", "--data-root", root, "--split", "small1", "--episodes", "2",
                 "--val-split", "small2", "--val-way", "1000", "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err.startswith("error: validation on small2: 1000-way episodes")

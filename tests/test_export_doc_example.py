"""The onnxruntime + Pillow + NumPy example in docs/EXPORT.md runs as written and agrees with
`fewshot predict` on a freshly exported model (same labels, probabilities within 1e-4)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from export_data import export_json, make_project, run_cli

DOC = Path(__file__).resolve().parents[1] / "docs" / "EXPORT.md"


def example_code() -> str:
    blocks = re.findall(r"^```python\n(.*?)^```", DOC.read_text(encoding="utf-8"), flags=re.S | re.M)
    assert len(blocks) == 1, f"docs/EXPORT.md should hold exactly one ```python block, found {len(blocks)}"
    return blocks[0]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, list[Path]]:
    """An unlabeled project of 3 characters (1 example each) exported with --model omniglot;
    the drawings to classify."""
    root = tmp_path_factory.mktemp("doc-example")
    project, chars = make_project(root, characters=3, per_character=4, examples=1, skip=300, label=False)
    model = root / "model.onnx"
    export_json(project, model, "--model", "omniglot")
    return model, [f for files in chars.values() for f in files]


def test_example_uses_no_engine_code():
    code = example_code()
    assert not re.search(r"^\s*(import|from)\s+(engine|fewshot_gui|torch)\b", code, flags=re.M)
    compile(code, "classify.py", "exec")


def test_example_matches_fewshot_predict(exported, tmp_path):
    model, images = exported
    script = tmp_path / "classify.py"
    script.write_text(example_code(), encoding="utf-8")
    proc = subprocess.run([sys.executable, str(script), str(model), *map(str, images)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    theirs = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    code, stdout, stderr = run_cli("predict", "--model", str(model), *map(str, images), "--json", "--cpu")
    assert code == 0, stderr
    ours = json.loads(stdout)["images"]
    assert [r["path"] for r in theirs] == [r["path"] for r in ours] == [str(p) for p in images]
    for t, o in zip(theirs, ours):
        assert t["label"] == o["label"], t["path"]
        assert set(t["probs"]) == set(o["probs"])
        assert max(abs(t["probs"][n] - o["probs"][n]) for n in o["probs"]) < 1e-4
        assert t["entropy"] == pytest.approx(o["entropy"], abs=1e-4)
        assert t["ood_score"] == pytest.approx(o["ood_score"], rel=1e-4, abs=1e-4)

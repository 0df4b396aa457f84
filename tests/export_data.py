"""Small real projects for the ONNX export tests: Omniglot drawings from ../shared, labeled
with the bundled ``omniglot`` model, and the export / predict commands run in-process."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

from engine.cli import main
from labeling_data import extract_omniglot


def class_name(key: str) -> str:
    return key.replace("/", "_")


def make_project(root: Path, *, characters: int = 3, per_character: int = 8, examples: int = 2, skip: int = 100,
                 label: bool = True, model: str = "omniglot") -> tuple[Path, dict[str, list[Path]]]:
    """``root/p.fewshot``: one class per character (named ``<alphabet>_<character>``) with its
    first ``examples`` drawings as examples, every drawing of ``root/images`` added, and (with
    ``label``) labeled by ``model``, which makes it the project's current model."""
    from engine.labeling.labeler import label_project
    from engine.labeling.store import Project
    from engine.model_store import load_model

    chars = extract_omniglot(root / "images", characters, per_character=per_character, skip=skip)
    path = root / "p.fewshot"
    with Project.create(path) as project:
        for key, files in chars.items():
            project.add_examples(project.add_class(class_name(key)), files[:examples])
        project.add_images([root / "images"])
        if label:
            label_project(project, load_model(model, "cpu"))
    return path, chars


def run_cli(*argv: str) -> tuple[int, str, str]:
    """``fewshot ARGV`` in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def export_json(project: Path, out: Path, *extra: str) -> dict:
    code, stdout, stderr = run_cli("export", "--project", str(project), "--out", str(out), "--json", *extra)
    assert code == 0, stderr
    return json.loads(stdout)

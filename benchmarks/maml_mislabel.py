"""What one example does to omniglot-maml: a correct one, and a mislabelled one.

Three Omniglot characters, one example each, 27 drawings to label; then one drawing is
made an example of its true class (``--correct``) or of another class (default), and the
project is labeled again: provisional (a prototype head on cached embeddings) and exact
(the adapted network). Prints the share of right labels. docs/RESULTS.md quotes it.

    .venv/bin/python benchmarks/maml_mislabel.py [--correct] [--inner-lr 1e-4]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from labeling_data import extract_omniglot  # noqa: E402

from engine.labeling import Project  # noqa: E402
from engine.labeling.labeler import Labeler, label_project  # noqa: E402
from engine.model_store import load_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--correct", action="store_true", help="the new example has its true class")
    ap.add_argument("--inner-lr", type=float, help="adapt with this inner rate instead of the model's")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    chars = extract_omniglot(tmp / "omniglot", 3, per_character=10, skip=20)
    model = load_model("omniglot-maml")
    if args.inner_lr:
        model.learner.config.inner_lr = args.inner_lr
    with Project.create(tmp / "p.fewshot") as p:
        ids = [p.add_class(k) for k in chars]
        for cid, files in zip(ids, chars.values()):
            p.add_examples(cid, [files[0]])
        p.add_images([f for files in chars.values() for f in files[1:]])
        truth = {str(f): cid for cid, files in zip(ids, chars.values()) for f in files}

        def right() -> str:
            rows = [r for r in p.iter_images() if r.label_source == "model"]
            return f"{sum(truth[r.path] == r.label_class_id for r in rows)}/{len(rows)}"
        label_project(p, model)
        print("one example per class:", right())
        r = next(r for r in p.iter_images() if r.label_source == "model")
        cls = truth[r.path] if args.correct else next(c for c in ids if c != truth[r.path])
        p.add_examples(cls, [r.id])
        Labeler(p, model).provisional_refresh()
        print(f"after a {'correct' if args.correct else 'mislabelled'} example, provisional:", right())
        label_project(p, model)
        print("exact:", right())


if __name__ == "__main__":
    main()

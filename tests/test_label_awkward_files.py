"""A folder of awkward files is labeled without a crash; every bad file is recorded with its reason."""
from __future__ import annotations

import io
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

import engine.data.decode as decode_mod
import engine.labeling.scan as scan_mod
from engine.cli import main
from engine.labeling.store import Project


def noise(w: int, h: int, seed: int = 0, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode)


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels, with a sliver of data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def encoded(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def build_good(folder: Path) -> list[Path]:
    """Files that are odd but valid: each must end up with a prediction."""
    files: dict[str, bytes] = {}
    files["one_pixel.png"] = encoded(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG")
    files["cmyk.jpg"] = encoded(Image.new("CMYK", (64, 48), (0, 255, 255, 0)), "JPEG", quality=90)
    files["deep16.png"] = encoded(Image.fromarray(np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)),
                                  "PNG")
    pal = Image.new("P", (32, 32), 0)
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pal.paste(1, (0, 0, 16, 32))
    files["palette_transparent.png"] = encoded(pal, "PNG", transparency=0)
    files["transparent.png"] = encoded(Image.new("RGBA", (40, 40), (0, 0, 0, 0)), "PNG")
    frames = [Image.new("RGB", (30, 30), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    files["animated.gif"] = buf.getvalue()
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    files["rotated.jpg"] = encoded(noise(80, 40, 1), "JPEG", exif=exif.tobytes(), quality=90)
    files["bitmap.bmp"] = encoded(noise(50, 30, 2), "BMP")
    files["photo.webp"] = encoded(noise(60, 40, 3), "WEBP", quality=80)
    files["UPPER.JPG"] = encoded(noise(64, 64, 4), "JPEG")
    files["SCAN.PNG"] = encoded(noise(64, 64, 5, "L"), "PNG")
    files["my holiday photo.jpg"] = encoded(noise(90, 60, 6), "JPEG")
    files["café ☕ 写真.png"] = encoded(noise(48, 48, 7), "PNG")
    files["nested/a/b/c/deep.jpg"] = encoded(noise(64, 48, 8), "JPEG")
    out = []
    for name, data in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        out.append(path)
    return out


def build_bad(folder: Path) -> dict[Path, str]:
    """Unusable files -> a phrase their recorded reason must contain."""
    bad: dict[Path, str] = {}
    (folder / "empty.jpg").write_bytes(b"")
    bad[folder / "empty.jpg"] = "empty"
    for name, fmt in (("truncated.jpg", "JPEG"), ("truncated.png", "PNG")):
        data = encoded(noise(256, 256, 9), fmt)
        (folder / name).write_bytes(data[: len(data) // 2])
        bad[folder / name] = "truncated"
    (folder / "notes.jpg").write_text("shopping list\nmilk\n")
    bad[folder / "notes.jpg"] = "text file"
    (folder / "page.png").write_text("<!DOCTYPE html><html><body>404 Not Found</body></html>")
    bad[folder / "page.png"] = "HTML"
    (folder / "huge.png").write_bytes(png_claiming(100_000, 100_000))
    bad[folder / "huge.png"] = "too large"
    (folder / "dangling.png").symlink_to(folder / "gone.png")
    bad[folder / "dangling.png"] = "broken symbolic link"
    secret = folder / "sub dir" / "secret.jpg"
    secret.parent.mkdir()
    secret.write_bytes(encoded(noise(32, 32, 10), "JPEG"))
    secret.chmod(0)
    bad[secret] = "permission denied"
    return bad


def deny_reading(monkeypatch, path: Path) -> None:
    """Root reads any file whatever its mode: make opening this one fail as it would for a user."""
    real_open = open

    def guarded_open(file, *args, **kwargs):
        if os.fspath(file) == str(path):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(file, *args, **kwargs)
    for module in (scan_mod, decode_mod):
        monkeypatch.setattr(module, "open", guarded_open, raising=False)


def test_awkward_corpus_is_labeled_and_every_bad_file_has_its_reason(tmp_path, monkeypatch, capsys):
    examples = tmp_path / "examples"
    for name, color in (("warm", (220, 60, 30)), ("cool", (30, 80, 220))):
        (examples / name).mkdir(parents=True)
        for k in range(2):
            img = Image.new("RGB", (64, 64), tuple(max(0, c - 20 * k) for c in color))
            img.save(examples / name / f"{name}{k}.png")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    good = build_good(corpus)
    bad = build_bad(corpus)
    secret = next(p for p, why in bad.items() if why == "permission denied")
    if os.geteuid() == 0:
        deny_reading(monkeypatch, secret)

    project = tmp_path / "awkward.fewshot"
    try:
        code = main(["label", "--project", str(project), "--examples", str(examples), "--images", str(corpus),
                     "--model", "photos", "--json"])
    finally:
        secret.chmod(0o644)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    summary = json.loads(captured.out)
    assert summary["finished"]

    reasons = {Path(e["path"]): e["reason"] for e in summary["errors"] + summary["skipped"]}
    for path, phrase in bad.items():
        assert path in reasons, f"{path.name} is not reported"
        assert phrase in reasons[path], f"{path.name}: {reasons[path]}"
    assert set(reasons) == set(bad), "a good file was reported as bad"

    with Project.open(project) as p:
        status = {Path(r.path): r.status for r in p.iter_images()}
        for path in good:
            assert status.get(path) == "predicted", f"{path.name}: {status.get(path)}"
        for path in bad:
            if path in status:
                assert status[path] == "error"
        assert p.count(status="error") == len(bad)

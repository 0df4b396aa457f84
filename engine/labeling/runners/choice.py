"""Which runner labels: PyTorch, onnxruntime, or (``auto``) the faster on this machine.

On a CPU, onnxruntime runs some backbones much faster than PyTorch eager (it fuses
batch norm and activations into the convolutions and plans memory once); which one
wins depends on the model and the machine (docs/PERFORMANCE.md), so ``auto``
measures both once per machine and backbone and remembers the answer
(:mod:`remembered`). A model on a GPU keeps PyTorch.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from engine.errors import FewShotError
from engine.labeling.runners import remembered
from engine.labeling.runners.base import model_device
from engine.labeling.runners.onnx_runner import OnnxRunner, exported_backbone_file, onnx_backbone_path
from engine.labeling.runners.torch_runner import TorchRunner

if TYPE_CHECKING:
    from engine.model_store import LoadedModel

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnxruntime")
# onnxruntime is used by "auto" only when it is clearly faster: timing noise must
# not flip the backend between runs.
MIN_SPEEDUP = 1.05

_lock = threading.Lock()
_choices: dict[tuple[str, int, int], str] = {}  # (exported file's stem, threads, batch) -> backend


def _throughput(runner: Any, pixels: Tensor, repeats: int = 2) -> float:
    runner(pixels)  # warm-up: first runs allocate and pick kernels
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        runner(pixels)
        best = min(best, time.perf_counter() - t0)
    return pixels.shape[0] / best


def choose_runner(model: "LoadedModel", batch_size: int | None = None, backend: str = "auto",
                  notify: Callable[[str], None] | None = None) -> Any:
    """The runner labeling uses: PyTorch, onnxruntime, or (``auto``) the faster on this
    machine, measured once per machine and backbone (kept beside the export, see
    :mod:`engine.labeling.runners.remembered`). A GPU model keeps PyTorch.

    ``notify(text)`` is told before each slow first-time step (exporting: seconds
    for a big backbone; timing both backends), so a user is not left waiting in silence."""
    if backend not in BACKENDS:
        raise FewShotError(f"unknown backend '{backend}'; use one of {', '.join(BACKENDS)}")
    from engine.models.onnx_features import OnnxFeatures
    if isinstance(model.learner.backbone, OnnxFeatures):  # an ONNX file already: nothing to export or compare
        return OnnxRunner(model, model.learner.backbone.features.path, batch_size)
    torch_runner = TorchRunner(model, batch_size)
    if backend == "torch" or (backend == "auto" and model_device(model).type != "cpu"):
        return torch_runner
    if model_device(model).type != "cpu":
        raise FewShotError("the onnxruntime backend labels on the CPU; load the model on the CPU or use the torch backend")
    try:
        target = exported_backbone_file(model)
        if notify is not None and not target.exists():
            notify("preparing onnxruntime: exporting the backbone (once per model)")
        ort_runner = OnnxRunner(model, onnx_backbone_path(model, target), batch_size)
    except Exception as e:  # noqa: BLE001 - any export trouble: PyTorch labels as before
        if backend == "onnxruntime":
            raise FewShotError(f"cannot run this model's backbone in onnxruntime ({e}); use --backend torch") from e
        log.warning("onnxruntime backend unavailable for %s (%s); labeling with PyTorch", model.name, e)
        return torch_runner
    if backend == "onnxruntime":
        return ort_runner
    # The file name holds the weights key: hashing the weights again (16 MB for Lite0) is not needed.
    key = (ort_runner.path.stem, torch.get_num_threads(), torch_runner.batch_size)
    stored_key = f"{key[1]} threads|batch {key[2]}"
    with _lock:
        choice = _choices.get(key)
    if choice is None:
        choice = remembered.recall(ort_runner.path, stored_key)
    if choice is None:
        if notify is not None:
            notify("preparing onnxruntime: timing it against PyTorch (once per machine)")
        prep = model.preprocessing
        pixels = torch.randint(0, 256, (torch_runner.batch_size, prep.channels, *prep.size), dtype=torch.uint8)
        speed_torch = _throughput(torch_runner, pixels)
        speed_ort = _throughput(ort_runner, pixels)
        choice = "onnxruntime" if speed_ort > MIN_SPEEDUP * speed_torch else "torch"
        log.info("backbone %s: PyTorch %.0f images/s, onnxruntime %.0f: labeling with %s", model.name,
                 speed_torch, speed_ort, choice)
        remembered.remember(ort_runner.path, stored_key, choice, {"torch": speed_torch, "onnxruntime": speed_ort})
    with _lock:
        _choices[key] = choice
    for r in (torch_runner, ort_runner):
        r.cpu_s, r.images = 0.0, 0
    return ort_runner if choice == "onnxruntime" else torch_runner

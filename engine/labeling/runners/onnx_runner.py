"""The labeler's backbone in onnxruntime.

The backbone is exported once per set of weights to the user cache
(``$FEWSHOT_CACHE_DIR/onnx``) and checked against PyTorch on the way, which keeps
the two runners' embeddings equal to about 1e-5 of their scale.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import logging
import os
import threading
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from engine.data.cache import default_cache_dir
from engine.data.pixels import normalize_array
from engine.errors import FewShotError
from engine.labeling.runners.base import default_batch_size

if TYPE_CHECKING:
    from engine.model_store import LoadedModel

log = logging.getLogger(__name__)

OPSET = 18
# The exported graph may differ from eager PyTorch by rounding only: beyond this
# fraction of the embeddings' scale, something in the export went wrong.
PARITY_TOLERANCE = 1e-4
FORMAT_VERSION = 1  # bump when the export changes, so stale cached files are not reused

_lock = threading.Lock()


class OnnxRunner:
    """Runs an exported backbone on uint8 batches: normalise, run, float32 CPU embeddings.

    Has the interface of :class:`engine.labeling.runners.base.Runner`: callable on a
    uint8 batch, ``batch_size``, ``device``, ``cpu_s``/``images`` and threads that a
    run plan sets. One session per thread count, made when first needed.
    """

    backend = "onnxruntime"
    prefers_streams = True  # measured: a stream per core beat intra-op threads (docs/PERFORMANCE.md)

    def __init__(self, model: "LoadedModel", path: Path, batch_size: int | None = None):
        self.model = model
        self.path = path
        self.prep = model.preprocessing
        self.device = torch.device("cpu")
        self.batch_size = batch_size or default_batch_size(self.prep, self.device)
        self.threads = torch.get_num_threads()
        self.cpu_s = 0.0
        self.images = 0
        self.count_lock = threading.Lock()  # forward streams add to the two counts at once
        self.provider = ""
        self._sessions: dict[int, Any] = {}
        self._input = ""
        self._session_lock = threading.Lock()

    def get_threads(self) -> int:
        return self.threads

    def set_threads(self, n: int) -> None:
        self.threads = max(1, int(n))

    def _session(self) -> Any:
        threads = self.threads
        with self._session_lock:
            session = self._sessions.get(threads)
            if session is None:
                session, self.provider = _shared_session(self.path, threads)
                self._input = session.get_inputs()[0].name
                self._sessions[threads] = session
            return session

    def __call__(self, pixels: Tensor) -> Tensor:
        cpu0 = time.thread_time()
        threads = self.threads
        session = self._session()
        try:
            x = normalize_array(pixels.numpy(), self.prep)
            out = [session.run(None, {self._input: x[k:k + self.batch_size]})[0]
                   for k in range(0, x.shape[0], self.batch_size)]
            z = out[0] if len(out) == 1 else np.concatenate(out)
            return torch.from_numpy(np.ascontiguousarray(z, dtype=np.float32))
        finally:
            # As for PyTorch: the calling thread does one share of each op's work.
            cpu = (time.thread_time() - cpu0) * threads
            with self.count_lock:
                self.cpu_s += cpu
                self.images += pixels.shape[0]


_sessions: dict[tuple[str, int], tuple[Any, str]] = {}


def _shared_session(path: Path, threads: int) -> tuple[Any, str]:
    """One session per (file, threads) in the process: making one optimises the whole
    graph (0.03-0.15 s for Lite0 here), which each labeling run would pay again."""
    key = (str(path), threads)
    with _lock:
        found = _sessions.get(key)
    if found is None:
        from engine.onnx_session import make_session
        # Labeling on the CPU: the GPU case runs PyTorch (choose_runner).
        found = make_session(path, threads=threads, prefer_gpu=False)
        with _lock:
            found = _sessions.setdefault(key, found)
    return found


def weights_key(model: "LoadedModel") -> str:
    """Identifies the backbone's function: weights, preprocessing, torch and export format."""
    h = hashlib.sha256()
    h.update(json.dumps({"backbone_id": model.backbone_id, "meta_backbone": model.meta.get("backbone"),
                         "preprocessing": model.preprocessing.to_dict(), "torch": torch.__version__,
                         "format": FORMAT_VERSION, "opset": OPSET}, sort_keys=True).encode())
    for name, t in sorted(model.learner.backbone.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:32]


def exported_backbone_file(model: "LoadedModel") -> Path:
    """Where the backbone's export lives in the user cache (it may not exist yet)."""
    return default_cache_dir() / "onnx" / f"backbone-{weights_key(model)}.onnx"


def onnx_backbone_path(model: "LoadedModel", path: Path | None = None) -> Path:
    """The exported backbone in the user cache, exported now if it is not there yet
    (``path``: :func:`exported_backbone_file`, when the caller has it already)."""
    path = path or exported_backbone_file(model)
    if path.exists():
        try:
            from engine.onnx_session import check_self_contained
            check_self_contained(path, str(path))
            _shared_session(path, 1)
            return path
        except FewShotError as e:  # damaged, truncated, or an older export that kept its weights apart
            log.warning("the cached backbone export %s cannot be used (%s); exporting it again", path, e)
            path.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    export_backbone(model, path)
    return path


def export_backbone(model: "LoadedModel", path: Path) -> None:
    """Export the backbone (dynamic batch) and check it against PyTorch before keeping it."""
    prep = model.preprocessing
    # A copy in the default layout: the model itself stays channels-last for PyTorch.
    backbone = copy.deepcopy(model.learner.backbone).cpu().float().eval()
    backbone.to(memory_format=torch.contiguous_format)
    gen = torch.Generator().manual_seed(0)
    example = torch.randint(0, 256, (3, prep.channels, *prep.size), dtype=torch.uint8, generator=gen)
    x = torch.from_numpy(normalize_array(example.numpy(), prep))
    # Named as what it is; one a killed export left behind is removed by the next export.
    for stale in path.parent.glob(f"{path.name}.*.partial"):
        with contextlib.suppress(OSError):
            if time.time() - stale.stat().st_mtime > 600:
                stale.unlink()
    tmp = path.with_name(f"{path.name}.{os.getpid()}.partial")
    t0 = time.perf_counter()
    try:
        with torch.no_grad():
            reference = backbone(x).numpy()
            _export(backbone, x, tmp)
        from engine.onnx_session import make_session
        session, _ = make_session(tmp, threads=1, prefer_gpu=False)
        got = session.run(None, {session.get_inputs()[0].name: x[:2].numpy()})[0]
        scale = max(1.0, float(np.abs(reference).max()))
        diff = float(np.abs(got - reference[:2]).max()) if got.shape == reference[:2].shape else float("inf")
        if diff > PARITY_TOLERANCE * scale:
            raise FewShotError(f"the ONNX export of this backbone differs from PyTorch by {diff:.3g} "
                               f"(scale {scale:.3g}); labeling uses PyTorch")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("exported the %s backbone to %s in %.1f s (max diff %.2g)", model.name, path,
             time.perf_counter() - t0, diff)


def _export(backbone: torch.nn.Module, x: Tensor, path: Path) -> None:
    """Export to one self-contained file: the weights inside it, never in a side file
    (which looked like litter, and whose deletion broke the cache)."""
    # The exporter prints its progress to stdout (which `fewshot label --json` owns) and
    # logs every optimisation pass at INFO: neither is for our users.
    loggers = [logging.getLogger(n) for n in ("onnxscript", "onnx_ir", "torch.onnx", "torch.export")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")  # tracing warnings about shapes the export fixes anyway
            program = torch.onnx.export(backbone, (x,), None, input_names=["pixels"], output_names=["embedding"],
                                        dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
                                        opset_version=OPSET, dynamo=True, verbose=False)
        with open(path, "xb") as fh:
            fh.write(program.model_proto.SerializeToString())
            fh.flush()
            os.fsync(fh.fileno())
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)

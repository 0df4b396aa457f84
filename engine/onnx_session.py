"""onnxruntime sessions and the contract of models made by ``fewshot export`` (no torch here).

:func:`make_session` opens any ONNX model on the best provider that really works:
CUDA when onnxruntime offers it *and* a session actually gets it, else the CPU.
onnxruntime-gpu lists ``CUDAExecutionProvider`` even on machines without a GPU
or without the CUDA libraries, and then logs loud errors and falls back; here
that case is detected quietly and never becomes an error (DESIGN.md: never fail
for lack of a GPU).

:func:`read_contract` reads what ``fewshot export`` writes into the model's
``metadata_props``: the class names in output order and the preprocessing that
turns an image into the ``pixels`` input.
"""
from __future__ import annotations

import contextlib
import ctypes
import io
import json
import logging
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import ModelInputError

if TYPE_CHECKING:
    import onnxruntime

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"

#: onnxruntime log levels: 0 verbose, 1 info, 2 warning, 3 error, 4 fatal.
SESSION_LOG_SEVERITY = 3
DEFAULT_LOGGER_SEVERITY = 2  # onnxruntime's own default for its process-wide logger

#: Metadata keys ``fewshot export`` writes (all values are strings; JSON where structured).
CONTRACT_KEYS = ("class_names", "preprocessing", "method", "source_model", "project_version", "exported_at")
PREPROCESSING_KEYS = ("size", "channels", "mean", "std", "resize", "alpha", "invert")

_cuda_lock = threading.Lock()
_cuda_ready: bool | None = None  # None: not probed yet


def _cuda_driver_present() -> bool:
    """True when the NVIDIA driver library loads; without it CUDA cannot work, and asking
    onnxruntime for CUDA would only print errors."""
    if sys.platform.startswith("linux"):
        names = ("libcuda.so.1", "libcuda.so")
    elif sys.platform == "win32":
        names = ("nvcuda.dll",)
    else:
        return False  # macOS: no CUDA
    for name in names:
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    return False


def _prepare_cuda(ort: Any) -> bool:
    """Once per process: is a CUDA session worth trying? Preloads the CUDA/cuDNN libraries
    that pip wheels (nvidia-*) ship, so onnxruntime finds them without a system CUDA."""
    global _cuda_ready
    with _cuda_lock:
        if _cuda_ready is None:
            _cuda_ready = CUDA in ort.get_available_providers() and _cuda_driver_present()
            preload = getattr(ort, "preload_dlls", None)
            if _cuda_ready and preload is not None:
                # preload_dlls prints its failures; they only mean CUDA may not work,
                # which the session attempt below finds out anyway.
                with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(Exception):
                    preload()
        return _cuda_ready


def _session_options(ort: Any, threads: int | None) -> "onnxruntime.SessionOptions":
    so = ort.SessionOptions()
    so.log_severity_level = SESSION_LOG_SEVERITY
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1 (got {threads})")
        so.intra_op_num_threads = threads
    return so


def _describe(model: str | bytes | Path) -> str:
    return "<model bytes>" if isinstance(model, (bytes, bytearray, memoryview)) else str(model)


#: Declared tensor bytes past which a file is no image model of ours but an allocation bomb.
MAX_MODEL_BYTES = 4 << 30


def check_self_contained(model: bytes | Path, name: str) -> None:
    """Refuse a model that is not one self-contained file: tensors whose data lives in
    external files (onnxruntime would read them relative to the current folder when the
    model comes as bytes, and anywhere a crafted path points), and declared tensor sizes
    that add up past :data:`MAX_MODEL_BYTES`. Exports of this program are always one file."""
    import onnx
    from onnx import external_data_helper, helper

    try:
        proto = (onnx.load_model_from_string(bytes(model)) if isinstance(model, (bytes, bytearray, memoryview))
                 else onnx.load(str(model), load_external_data=False))
    except Exception as e:  # noqa: BLE001 - protobuf raises DecodeError and friends
        raise ModelInputError(f"{name} is not an ONNX model ({type(e).__name__}); give a .onnx file made by "
                              "'fewshot export'") from None
    total = 0
    for tensor in external_data_helper._get_all_tensors(proto):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            raise ModelInputError(f"{name} keeps tensor data in external files; exported models are one "
                                  "self-contained file and this one is not, so it was refused (its data could be "
                                  "read from anywhere). Export the model again")
        count = 1
        for d in tensor.dims:
            count *= max(int(d), 0)
        try:
            itemsize = helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
        except (KeyError, TypeError, ValueError):
            itemsize = 8
        total += count * itemsize
        if total > MAX_MODEL_BYTES:
            raise ModelInputError(f"{name} declares tensors of more than {MAX_MODEL_BYTES >> 30} GiB; it is no "
                                  "model of this program and was refused before anything was allocated")


def make_session(model: str | bytes | Path, *, threads: int | None = None, prefer_gpu: bool = True,
                 self_contained: bool = False) -> tuple["onnxruntime.InferenceSession", str]:
    """Open ``model`` (a path or the file's bytes); returns ``(session, provider)``.

    ``provider`` is the one the session really runs on: ``CUDAExecutionProvider`` when
    ``prefer_gpu``, onnxruntime offers CUDA and a session gets it (with TF32 off, so
    results match the CPU's float32 ones); else ``CPUExecutionProvider``. ``threads``:
    intra-op threads (None: onnxruntime's default, one per physical core).

    ``self_contained``: first refuse a file with external data or absurd tensor sizes
    (:func:`check_self_contained`): for models from outside, such as ``fewshot predict``'s.

    Raises :class:`ModelInputError` when the file is missing or not a model onnxruntime
    can load.
    """
    import onnxruntime as ort

    source: str | bytes
    if isinstance(model, (bytes, bytearray, memoryview)):
        source = bytes(model)
    else:
        path = Path(model)
        if not path.exists():
            raise ModelInputError(f"model file {path} does not exist; check the path")
        if path.is_dir():
            raise ModelInputError(f"{path} is a folder; give the .onnx file")
        source = str(path)
    if self_contained:
        check_self_contained(source if isinstance(source, bytes) else Path(source), _describe(model))

    if prefer_gpu and _prepare_cuda(ort):
        ort.set_default_logger_severity(4)  # the "cannot load CUDA" errors are expected here
        try:
            session = ort.InferenceSession(source, _session_options(ort, threads),
                                           providers=[(CUDA, {"use_tf32": "0"}), CPU])
            if session.get_providers()[0] == CUDA:
                return session, CUDA
            log.info("onnxruntime could not use CUDA for %s; using the CPU", _describe(model))
        except Exception as e:  # noqa: BLE001 - a broken CUDA setup must never stop a CPU run
            log.info("onnxruntime CUDA session failed for %s (%s); trying the CPU", _describe(model), e)
        finally:
            ort.set_default_logger_severity(DEFAULT_LOGGER_SEVERITY)
    try:
        session = ort.InferenceSession(source, _session_options(ort, threads), providers=[CPU])
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types (InvalidProtobuf, Fail ...)
        msg = str(e).split("\n")[0]
        raise ModelInputError(f"{_describe(model)} is not an ONNX model onnxruntime can load ({msg}); "
                              "give a .onnx file made by 'fewshot export'") from None
    return session, CPU


def _metadata(source: Any) -> dict[str, str]:
    if hasattr(source, "get_modelmeta"):  # an InferenceSession
        return dict(source.get_modelmeta().custom_metadata_map)
    if hasattr(source, "metadata_props"):  # an onnx.ModelProto
        return {p.key: p.value for p in source.metadata_props}
    session, _ = make_session(source, prefer_gpu=False)
    return dict(session.get_modelmeta().custom_metadata_map)


def read_contract(session_or_model: Any) -> dict[str, Any]:
    """The contract ``fewshot export`` writes into a model: every ``metadata_props`` entry,
    with ``class_names`` (list, in output order) and ``preprocessing`` (dict, as
    ``Preprocessing.to_dict()``) parsed from JSON and checked.

    Accepts an ``InferenceSession``, an ``onnx.ModelProto``, a path or the model's bytes.
    Raises :class:`ModelInputError` when the entries are missing or unreadable.
    """
    meta = _metadata(session_or_model)
    name = _describe(session_or_model) if isinstance(session_or_model, (str, bytes, Path)) else "this ONNX model"
    missing = [k for k in ("class_names", "preprocessing") if k not in meta]
    if missing:
        raise ModelInputError(f"this ONNX file was not exported by fewshot export; {name} lacks the "
                              f"{' and '.join(missing)} metadata, so its classes and input format are unknown. "
                              "Export a model with 'fewshot export --project P.fewshot --out model.onnx'")
    contract: dict[str, Any] = dict(meta)
    try:
        names = json.loads(meta["class_names"])
        prep = json.loads(meta["preprocessing"])
    except json.JSONDecodeError as e:
        raise ModelInputError(f"{name} has unreadable fewshot metadata ({e}); export the model again") from None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ModelInputError(f"{name}: class_names must be a non-empty JSON list of names; export the model again")
    if not isinstance(prep, dict) or any(k not in prep for k in ("size", "channels", "mean", "std")):
        raise ModelInputError(f"{name}: preprocessing must be a JSON object with size, channels, mean and std; "
                              "export the model again")
    contract["class_names"] = names
    contract["preprocessing"] = prep
    return contract


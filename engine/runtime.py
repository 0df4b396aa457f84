"""Where the engine runs: device choice, its description for the GUI, and CPU-speed settings."""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

import torch

from engine.errors import FewShotError

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda", "mps")

# glibc <malloc.h> mallopt() parameters.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# See benchmarks/bench_allocator.py: with glibc's defaults, every large tensor
# PyTorch frees goes back to the kernel (munmap, or a heap trim) and the next
# one faults its pages in again; eager CPU inference spends much of its time
# there. Keeping up to this much freed memory in the heap removes those faults.
# mallopt takes a C int, so neither value may exceed 2**31 - 1.
MMAP_THRESHOLD = 1 << 30
TRIM_THRESHOLD = (1 << 31) - 1
DISABLE_ENV = "FEWSHOT_NO_MALLOC_TUNING"


class DeviceUnavailableError(FewShotError):
    """The device a user asked for does not exist on this machine."""


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def pick_device(preference: str = "auto") -> torch.device:
    """``auto``: CUDA, else Apple MPS, else CPU. ``cpu``, ``cuda``, ``cuda:N``, ``mps``: exactly that."""
    pref = preference.strip().lower()
    if pref == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if pref == "cpu":
        return torch.device("cpu")
    if pref == "cuda" or pref.startswith("cuda:"):
        if not torch.cuda.is_available():
            why = ("this PyTorch build has no CUDA support" if torch.version.cuda is None
                   else "no NVIDIA GPU with a working driver was found")
            raise DeviceUnavailableError(f"device '{preference}' was asked for, but {why}: use 'auto' or 'cpu'")
        try:
            device = torch.device(pref)
        except RuntimeError as e:
            raise DeviceUnavailableError(f"'{preference}' is not a device name: use 'cuda' or 'cuda:N'") from e
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise DeviceUnavailableError(
                f"device '{preference}' was asked for, but this machine has {count} CUDA GPU(s), "
                f"numbered 0 to {count - 1}")
        return device
    if pref == "mps":
        if not _mps_available():
            raise DeviceUnavailableError(
                "device 'mps' was asked for, but Apple Metal (MPS) is not available here: use 'auto' or 'cpu'")
        return torch.device("mps")
    raise DeviceUnavailableError(f"unknown device '{preference}'; choose one of: {', '.join(DEVICES)} (or cuda:N)")


def describe_device(device: torch.device | str) -> str:
    """A short label for the status bar, e.g. 'CPU (8 threads)' or 'CUDA: NVIDIA H100'."""
    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"CUDA: {torch.cuda.get_device_name(index)}"
    if device.type == "mps":
        return "Apple MPS"
    if device.type == "cpu":
        return f"CPU ({torch.get_num_threads()} threads)"
    return str(device)


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    # musl and other libcs have no gnu_get_libc_version, and may lack mallopt.
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return None
    return libc


def tune_cpu_allocator(mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Stop glibc from returning freed tensor memory to the kernel after every op.

    Call once, early (before the first large tensors). Returns True when the
    settings were applied; off glibc, or with FEWSHOT_NO_MALLOC_TUNING=1 in
    the environment, it changes nothing and returns False. The cost is that
    the process keeps up to about ``trim_threshold`` bytes of freed memory.
    """
    if os.environ.get(DISABLE_ENV, "") not in ("", "0"):
        log.info("malloc tuning disabled by %s", DISABLE_ENV)
        return False
    libc = _glibc()
    if libc is None:
        return False
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    libc.mallopt.restype = ctypes.c_int
    ok = bool(libc.mallopt(M_MMAP_THRESHOLD, mmap_threshold)) and bool(libc.mallopt(M_TRIM_THRESHOLD, trim_threshold))
    if ok:
        log.debug("glibc mallopt: mmap threshold %d, trim threshold %d", mmap_threshold, trim_threshold)
    else:
        log.warning("glibc refused the malloc settings; CPU inference may be slower")
    return ok

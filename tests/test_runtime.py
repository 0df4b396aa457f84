"""Device choice and the glibc allocator setting."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine import runtime
from engine.errors import FewShotError
from engine.runtime import DeviceUnavailableError, describe_device, pick_device

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_accelerators(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(runtime, "_mps_available", lambda: False)


def test_auto_falls_back_to_cpu(no_accelerators):
    assert pick_device() == torch.device("cpu")
    assert pick_device("auto") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_auto_is_cpu_on_this_machine_and_cuda_request_is_refused():
    if not runtime._mps_available():
        assert pick_device("auto").type == "cpu"
    with pytest.raises(DeviceUnavailableError, match="cuda.*'auto' or 'cpu'"):
        pick_device("cuda")


def test_auto_prefers_cuda_then_mps(monkeypatch):
    monkeypatch.setattr(runtime, "_mps_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto") == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto") == torch.device("mps")


def test_explicit_devices_that_are_missing_raise_clear_errors(no_accelerators, monkeypatch):
    assert pick_device(" CPU ") == torch.device("cpu")
    with pytest.raises(DeviceUnavailableError, match="'cuda'"):
        pick_device("cuda")
    with pytest.raises(DeviceUnavailableError, match="MPS"):
        pick_device("mps")
    with pytest.raises(DeviceUnavailableError, match="auto, cpu, cuda, mps"):
        pick_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(DeviceUnavailableError, match="1 CUDA GPU"):
        pick_device("cuda:3")
    assert pick_device("cuda:0") == torch.device("cuda:0")
    assert issubclass(DeviceUnavailableError, FewShotError)


def test_describe_device():
    assert re.fullmatch(r"CPU \(\d+ threads?\)", describe_device(torch.device("cpu")))
    assert describe_device("cpu") == f"CPU ({torch.get_num_threads()} threads)"
    assert describe_device("mps") == "Apple MPS"


# Counts the page faults of allocating and freeing a 64 MiB tensor again and
# again: with glibc's defaults each one is a fresh mmap whose pages all fault.
# Tuned, the heap needs a few rounds to settle (PyTorch's 64-byte-aligned
# allocations fragment it at first), then memory is reused.
_FAULTS_SCRIPT = """
import json, resource, sys
from engine import runtime
applied = runtime.tune_cpu_allocator() if sys.argv[1] == "tune" else False
import torch
for _ in range(30):
    torch.ones(16 << 20)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    torch.ones(16 << 20)
print(json.dumps({"applied": applied,
                  "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def _faults(mode: str) -> dict:
    full_env = {k: v for k, v in os.environ.items() if k != runtime.DISABLE_ENV}
    full_env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run([sys.executable, "-c", _FAULTS_SCRIPT, mode], check=True,
                         capture_output=True, text=True, env=full_env, timeout=120).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.skipif(runtime._glibc() is None, reason="the allocator setting is for glibc only")
def test_tune_cpu_allocator_stops_refaulting_freed_tensors():
    default, tuned = _faults("plain"), _faults("tune")
    assert tuned["applied"] is True
    # 10 x 64 MiB = 163,840 pages faulted in by default; tuned, the memory is reused.
    assert default["faults"] > 100_000
    assert tuned["faults"] < default["faults"] / 10


def test_tune_cpu_allocator_can_be_switched_off(monkeypatch):
    monkeypatch.setenv(runtime.DISABLE_ENV, "1")
    assert runtime.tune_cpu_allocator() is False


def test_tune_cpu_allocator_runs_in_process():
    enabled = os.environ.get(runtime.DISABLE_ENV, "") in ("", "0")
    assert runtime.tune_cpu_allocator() is (runtime._glibc() is not None and enabled)

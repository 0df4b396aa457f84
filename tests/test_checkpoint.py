"""Checkpoints round-trip, and a file that would run code when loaded is refused before it runs."""
import json
import pickle

import pytest
import torch

from engine.errors import CheckpointError, UnsafeCheckpointError
from engine.training.checkpoint import (load_resume, load_weights, read_meta, safe_torch_load, save_model,
                                        save_resume)

PLANTED = "planted-code-ran"


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os
        return (os.system, (f"touch {self.marker}",))


def test_model_round_trip(tmp_path):
    state = {"a.weight": torch.randn(3, 4), "a.bias": torch.arange(3.0)}
    save_model(tmp_path, state, {"method": "protonet", "backbone": "conv4", "preprocessing": {"size": [28, 28], "channels": 1}})
    loaded = load_weights(tmp_path)
    assert set(loaded) == set(state) and all(torch.equal(loaded[k], state[k]) for k in state)
    meta = read_meta(tmp_path)
    assert meta["method"] == "protonet" and meta["format"] == 1
    assert not list(tmp_path.glob("*.tmp")), "atomic writes leave no temp files"


def test_resume_round_trip(tmp_path):
    state = {"model": {"w": torch.ones(2)}, "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]},
             "episode": 7, "best": {"accuracy": 0.5}, "history": [{"episode": 5}]}
    save_resume(tmp_path, state)
    back = load_resume(tmp_path)
    assert back["episode"] == 7 and torch.equal(back["model"]["w"], torch.ones(2))


def test_unsafe_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / PLANTED
    with open(tmp_path / "resume.pt", "wb") as f:
        pickle.dump({"episode": _Exploit(marker)}, f)
    with pytest.raises(UnsafeCheckpointError, match="refused"):
        load_resume(tmp_path)
    assert not marker.exists(), "the planted code must not have run"
    # The same through torch.save's zip container.
    torch.save({"episode": _Exploit(marker)}, tmp_path / "zipped.pt")
    with pytest.raises(UnsafeCheckpointError):
        safe_torch_load(tmp_path / "zipped.pt")
    assert not marker.exists()


def test_damaged_or_foreign_folders(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        read_meta(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="no model.json"):
        read_meta(tmp_path)
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="damaged"):
        read_meta(tmp_path)
    (tmp_path / "model.json").write_text(json.dumps({"method": "protonet"}))
    with pytest.raises(CheckpointError, match="lacks 'backbone'"):
        read_meta(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="damaged"):
        load_weights(tmp_path)
    with pytest.raises(CheckpointError, match="resume"):
        load_resume(tmp_path)

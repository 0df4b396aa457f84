"""torchrun data-parallel meta-training: 2 gloo ranks take the same steps as one process
running the whole meta-batch, and a stop on one rank stops both."""
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.slow


def train_args(omniglot_root, out, method, meta_batch, episodes=3):
    args = ["-m", "engine.cli", "train", "--dataset", "omniglot", "--data-root", str(omniglot_root),
            "--split", "small1", "--method", method, "--way", "5", "--shot", "1", "--query", "2",
            "--episodes", str(episodes), "--meta-batch", str(meta_batch), "--lr-step", "1", "--device", "cpu",
            "--seed", "3", "--out", str(out)]
    if method == "maml":
        args += ["--inner-steps", "1", "--first-order"]
    return args


def run(cmd, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def torchrun(nproc, *args):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]


def signal_mask(omniglot_root, method):
    """Per parameter, the elements whose gradient on the run's first meta-batch is not rounding
    noise. A conv bias in front of batch norm, or a last-layer shift that cancels in every distance,
    has a true gradient of zero; Adam turns its noise into full-size steps, which no two reduction
    orders share, so those elements are left out of the comparison."""
    from engine.data.sampler import EpisodeSampler
    from engine.methods.registry import build_method
    from engine.models.registry import build_backbone, default_preprocessing
    from engine.training.datasets import open_dataset
    prep = default_preprocessing("conv4", channels=1, image_size=28)
    sampler = EpisodeSampler(open_dataset("omniglot", str(omniglot_root), "small1", prep), 5, 1, 2, seed=3)
    config = {"inner_steps": 1, "first_order": True} if method == "maml" else {}
    torch.manual_seed(3)
    learner = build_method(method, build_backbone("conv4", channels=1, image_size=28), config)
    for i in range(4):
        loss, _ = learner.meta_loss(sampler[i])
        (loss / 4).backward()
    grads = {n: p.grad.abs() for n, p in learner.named_parameters() if p.grad is not None}
    top = max(float(g.max()) for g in grads.values())
    return {n: g > 1e-4 * top for n, g in grads.items()}


def parameters(folder):
    meta = json.loads((folder / "model.json").read_text())
    weights = load_file(folder / "model.safetensors")
    return meta, weights


@pytest.mark.parametrize("method", ["protonet", "maml"])
def test_two_ranks_equal_one_process_with_the_whole_meta_batch(omniglot_root, tmp_path, method):
    run([sys.executable, *train_args(omniglot_root, tmp_path / "one", method, meta_batch=4)])
    run(torchrun(2, *train_args(omniglot_root, tmp_path / "two", method, meta_batch=2)))
    meta1, w1 = parameters(tmp_path / "one")
    meta2, w2 = parameters(tmp_path / "two")
    assert meta1["world_size"] == 1 and meta2["world_size"] == 2
    masks = signal_mask(omniglot_root, method)
    learned = [k for k in w1 if k in masks]
    assert len(learned) >= 8 and set(w1) == set(w2)
    assert sum(int(masks[k].sum()) for k in learned) > 0.9 * sum(masks[k].numel() for k in learned)
    for k in learned:
        torch.testing.assert_close(w2[k][masks[k]], w1[k][masks[k]], rtol=1e-4, atol=1e-5, msg=f"{k} differs")
    # The weights moved: the comparison is not between two untouched initializations.
    run([sys.executable, *train_args(omniglot_root, tmp_path / "zero", method, meta_batch=4, episodes=1)])
    _, w0 = parameters(tmp_path / "zero")
    assert any(not torch.allclose(w0[k], w1[k]) for k in learned)
    # Only rank 0 reported: one start, one done.
    events = [json.loads(line) for line in (tmp_path / "two" / "events.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events if e["event"] in ("start", "done")] == ["start", "done"]


def test_a_stop_on_one_rank_stops_every_rank(omniglot_root, tmp_path):
    # SIGTERM to rank 1 alone (torchrun forwards nothing here): both ranks must stop after the same step.
    script = (
        "import os, signal, sys, threading\n"
        "from engine.cli import main\n"
        "if os.environ.get('RANK') == '1':\n"
        "    threading.Timer(4.0, lambda: os.kill(os.getpid(), signal.SIGTERM)).start()\n"
        "sys.exit(main(sys.argv[1:]))\n")
    args = train_args(omniglot_root, tmp_path / "run", "protonet", meta_batch=1, episodes=100_000)[2:]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(torchrun(2, "--no-python", sys.executable, "-c", script, *args), capture_output=True,
                          text=True, timeout=300, env=env)
    events = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    assert events[-1]["event"] == "stopped", done.stderr[-3000:]
    assert 0 < events[-1]["episode"] < 100_000

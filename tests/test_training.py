"""Meta-training end to end on real Omniglot: learning, resume, checkpoints, events."""
import json

import pytest
import torch

from engine.data.sampler import EpisodeSampler
from engine.model_store import load_model
from engine.training.checkpoint import load_resume, load_weights, read_meta
from engine.training.config import TrainConfig
from engine.training.datasets import open_dataset
from engine.training.evaluate import evaluate_episodes
from engine.training.trainer import Trainer, train


def small_config(omniglot_root, out, **kw):
    base = dict(dataset="omniglot", data_root=str(omniglot_root), split="small1", out=str(out),
                way=5, shot=1, query=3, episodes=12, val_split="small2", val_way=5, val_shot=1,
                val_query=3, val_episodes=10, val_every=6, log_every=3, seed=3)
    base.update(kw)
    return TrainConfig(**base)


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(omniglot_root, tmp_path):
    train(small_config(omniglot_root, tmp_path / "straight"))
    train(small_config(omniglot_root, tmp_path / "split", episodes=6))
    assert load_resume(tmp_path / "split")["episode"] == 6
    train(small_config(omniglot_root, tmp_path / "split"), resume_from=tmp_path / "split")
    a = load_resume(tmp_path / "straight")["model"]
    b = load_resume(tmp_path / "split")["model"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_a_meta_batch_resumes_exactly_and_learns_its_temperature(omniglot_root, tmp_path):
    """Two episodes per outer step, a cosine head with its temperature learned: resumed
    half-way, the weights (temperature included) equal an uninterrupted run's."""
    kw = dict(meta_batch=2, method_config={"distance": "cosine"})
    train(small_config(omniglot_root, tmp_path / "straight", **kw))
    train(small_config(omniglot_root, tmp_path / "split", episodes=6, **kw))
    train(small_config(omniglot_root, tmp_path / "split", **kw), resume_from=tmp_path / "split")
    a = load_resume(tmp_path / "straight")["model"]
    b = load_resume(tmp_path / "split")["model"]
    assert "log_temperature" in a
    for k in a:
        assert torch.equal(a[k], b[k]), k
    meta = read_meta(tmp_path / "straight")
    assert meta["method_config"]["learn_temperature"] is True
    assert meta["method_config"]["temperature"] != 10.0  # learned (the best checkpoint's), not the start value
    assert meta["training"]["meta_batch"] == 2


def test_stop_request_saves_a_resumable_checkpoint(omniglot_root, tmp_path):
    events = []
    trainer = Trainer(small_config(omniglot_root, tmp_path, val_split=None), events.append)

    def stop_after_three(event):
        events.append(event)
        if event["event"] == "episode" and event["episode"] >= 3:
            trainer.request_stop()
    trainer.events = stop_after_three
    result = trainer.run()
    assert result["event"] == "stopped" and result["episode"] == 3
    assert load_resume(tmp_path)["episode"] == 3
    assert (tmp_path / "model.safetensors").is_file(), "a stopped run still leaves a usable model"


def test_events_checkpoint_and_metadata(omniglot_root, tmp_path):
    events = []
    result = train(small_config(omniglot_root, tmp_path), events.append)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done"
    assert kinds.count("validation") == 2 and kinds.count("episode") == 4
    json.dumps(events)  # every event is JSON-serialisable
    val = [e for e in events if e["event"] == "validation"]
    assert all(0 <= e["accuracy"] <= 1 and e["ci95"] >= 0 and e["episodes"] == 10 for e in val)
    meta = read_meta(tmp_path)
    assert meta["validation"]["accuracy"] == result["best"]["accuracy"] == max(e["accuracy"] for e in val)
    assert meta["training"]["way"] == 5 and meta["preprocessing"]["size"] == [28, 28]
    assert meta["project_version"]
    model = load_model(str(tmp_path))
    assert model.learner.name == "protonet"
    assert set(load_weights(tmp_path)) == set(model.learner.state_dict())


@pytest.mark.slow
def test_short_training_is_far_above_chance_on_evaluation_alphabets(omniglot_root, tmp_path):
    # 100 episodes of 20-way 5-shot on the background alphabets.
    # Measured: 0.886 on these 100 5-way 1-shot evaluation episodes (chance is 0.2); the bound keeps a wide margin.
    cfg = small_config(omniglot_root, tmp_path, split="background", way=20, shot=5, query=5,
                       episodes=100, val_split=None, seed=0)
    train(cfg)
    model = load_model(str(tmp_path))
    test_set = open_dataset("omniglot", str(omniglot_root), "evaluation", model.preprocessing)
    score = evaluate_episodes(model.learner, EpisodeSampler(test_set, 5, 1, 5, seed=1), 100, torch.device("cpu"))
    print(f"short training: {score}")
    assert score.accuracy > 0.65, score

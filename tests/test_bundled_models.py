"""The bundled models are real, loadable and as good as docs/RESULTS.md says."""
import torch

from engine.data.sampler import EpisodeSampler
from engine.model_store import describe, load_model
from engine.training.datasets import open_dataset
from engine.training.evaluate import evaluate_episodes


def test_bundled_omniglot_model_never_saw_the_evaluation_alphabets():
    meta = describe("omniglot")
    assert meta["training"]["dataset"] == "omniglot" and meta["training"]["split"] == "background"
    assert meta["backbone"] == "conv4" and meta["method"] == "protonet"


def test_bundled_omniglot_model_one_shot_accuracy(omniglot_root):
    # docs/RESULTS.md: 97.7% +- 0.3 on 600 5-way 1-shot episodes; 150 other episodes here, with margin.
    model = load_model("omniglot")
    data = open_dataset("omniglot", str(omniglot_root), "evaluation", model.preprocessing)
    score = evaluate_episodes(model.learner, EpisodeSampler(data, 5, 1, 15, seed=123), 150, torch.device("cpu"))
    assert score.accuracy > 0.95, score


def test_bundled_maml_model_adapts_its_network_and_reaches_its_one_shot_figure(omniglot_root):
    # docs/RESULTS.md: 98.1% +- 0.3 on 600 5-way 1-shot episodes (non-transductive); 100 others here.
    meta = describe("omniglot-maml")
    assert meta["method"] == "protomaml" and meta["training"]["split"] == "background"
    assert meta["method_config"]["batch_norm"] != "transductive"
    model = load_model("omniglot-maml")
    assert model.learner.adapts_backbone
    data = open_dataset("omniglot", str(omniglot_root), "evaluation", model.preprocessing)
    score = evaluate_episodes(model.learner, EpisodeSampler(data, 5, 1, 15, seed=123), 100, torch.device("cpu"))
    assert score.accuracy > 0.95 and score.ece < 0.05, score


def test_photos_model_separates_real_photo_classes():
    skimage_data = __import__("skimage.data", fromlist=["data"])
    model = load_model("photos")
    from PIL import Image

    from engine.data.transforms import image_to_uint8, normalize
    photos = [skimage_data.chelsea(), skimage_data.coffee(), skimage_data.rocket()]
    flipped = [p[:, ::-1].copy() for p in photos]
    batch = normalize(torch.stack([image_to_uint8(Image.fromarray(p), model.preprocessing) for p in photos + flipped]),
                      model.preprocessing)
    head = model.learner.adapt(batch[:3], torch.arange(3))
    pred = head.predict(batch[3:])
    assert torch.equal(pred.labels, torch.arange(3)), "a mirrored photo is nearest its own original"

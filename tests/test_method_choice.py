"""Which methods a model offers (engine/method_choice.py), and a model relabeled with another head."""
from __future__ import annotations

import pytest

from engine.errors import FewShotError
from engine.method_choice import offered_methods, with_method
from engine.model_store import load_model


def test_every_model_offers_the_heads_that_need_no_training_and_its_own_method_only():
    model = load_model("omniglot-maml")
    offered = offered_methods(model)
    assert {n for n, why in offered.items() if why is None} == {"protomaml", "protonet", "bayes-proto"}
    assert "trained with protomaml" in offered["maml"] and "fewshot train --method maml" in offered["maml"]


def test_a_head_on_another_model_keeps_its_backbone_and_geometry():
    model = load_model("omniglot")
    bayes = with_method(model, "bayes-proto")
    assert bayes.learner.backbone is model.learner.backbone and bayes.backbone_id == model.backbone_id
    assert bayes.meta["method"] == "bayes-proto" and bayes.meta["method_of_model"] == "protonet"
    assert bayes.learner.config.distance == model.learner.config.distance
    assert with_method(model, None) is model and with_method(model, "protonet") is model
    with pytest.raises(FewShotError, match="meta-trained"):
        with_method(model, "anil")
    with pytest.raises(FewShotError, match="unknown method"):
        with_method(model, "bayes-net")

"""Which methods can label with a model, and the model with another method.

A model is a backbone plus the method it was meta-trained with. Heads that need no
meta-training (:data:`ANY_BACKBONE`: ProtoNet and bayes-proto) work on any backbone's
embeddings, so every model offers them; a meta-trained method (MAML, ANIL, ...) needs
weights trained with it, so a model offers only its own. Switching between head-only
methods keeps the backbone, so cached embeddings are reused: a project relabels from
its cache in milliseconds.
"""
from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from engine.errors import FewShotError

if TYPE_CHECKING:
    from engine.model_store import LoadedModel

ANY_BACKBONE = ("protonet", "bayes-proto")


def offered_methods(model: "LoadedModel") -> dict[str, str | None]:
    """Every registered method -> None when it can label with ``model``, else why not (a
    sentence for the person choosing)."""
    from engine.methods.registry import METHODS
    own = str(model.meta["method"])
    out: dict[str, str | None] = {}
    for name in sorted(METHODS):
        if name == own or name in ANY_BACKBONE:
            out[name] = None
        else:
            out[name] = (f"{name} needs a model meta-trained with it; this model was trained with {own} "
                         f"(train one in the training panel or with 'fewshot train --method {name}')")
    return out


def head_options(model: "LoadedModel") -> dict[str, Any]:
    """Options for a head on ``model``'s backbone: the geometry a ProtoNet backbone was
    trained (or chosen) for and its temperature; other backbones get the defaults
    (euclidean; the scale rule and each task's examples choose the temperature)."""
    if model.meta["method"] != "protonet":
        return {}
    config = model.meta.get("method_config") or {}
    options: dict[str, Any] = {"distance": config.get("distance", "euclidean")}
    if config.get("temperature") is not None:
        options["temperature"] = float(config["temperature"])
    return options


def with_method(model: "LoadedModel", name: str | None) -> "LoadedModel":
    """``model`` (as loaded) labeling with method ``name`` (None or its own: ``model``
    itself); a FewShotError says why a method is not offered."""
    from engine.methods.registry import build_method, method_class
    if name is None or name == model.meta["method"]:
        return model
    method_class(name)  # an unknown name is a FewShotError listing the known ones
    reason = offered_methods(model).get(name)
    if reason is not None:
        raise FewShotError(reason)
    learner = build_method(name, model.learner.backbone, head_options(model), who=f"the {name} head")
    learner.to(next((p.device for p in model.learner.parameters()), "cpu")).eval()
    meta = dict(model.meta)
    meta.update(method=name, method_config=learner.saved_config().to_dict(), method_of_model=model.meta["method"])
    return replace(model, learner=learner, meta=meta)

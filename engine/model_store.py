"""Find and build models: checkpoint folders and the bundled names.

Bundled models: ``omniglot`` (a Conv4 ProtoNet this project meta-trained on the
Omniglot background set, in ``assets/models/omniglot``; ``make models``
reproduces it) and ``photos`` (pretrained EfficientNet-Lite0 features with a
ProtoNet head; nothing to train, the head is the examples themselves).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engine.data.preprocessing import Preprocessing
from engine.errors import CheckpointError, FewShotError
from engine.methods.base import MetaLearner
from engine.methods.registry import build_method
from engine import bundled_models
from engine.models.onnx_features import is_onnx_spec
from engine.training.checkpoint import load_weights, read_meta

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "models"
BUNDLED = {name: description for name, (_label, description) in bundled_models.BUNDLED.items()}


@dataclass
class LoadedModel:
    name: str
    learner: MetaLearner
    preprocessing: Preprocessing
    meta: dict[str, Any]

    @property
    def backbone_id(self) -> str:
        """Identifies the embedding function, so cached embeddings are reused only for the same one."""
        return str(self.meta.get("backbone_id") or f"{self.meta['backbone']}:{self.name}")


def photos_meta() -> dict[str, Any]:
    from engine.models.registry import default_preprocessing
    prep = default_preprocessing("lite0", channels=3, image_size=224)
    # No temperature and none learned: nothing trained this head, so the scale rule and
    # each task's own examples choose it (engine.methods.calibration).
    return {"method": "protonet", "method_config": {"distance": "cosine", "learn_temperature": False},
            "backbone": "lite0", "channels": 3, "image_size": 224, "preprocessing": prep.to_dict(),
            "backbone_id": "lite0:imagenet", "description": BUNDLED["photos"]}


def build_learner(meta: dict[str, Any]) -> MetaLearner:
    from engine.models.registry import build_backbone
    channels, size = _checked_shape(meta)
    if not isinstance(meta.get("method"), str) or not isinstance(meta.get("backbone"), str):
        raise CheckpointError("the model's model.json names its method and backbone with something other than text; "
                              "it was not written by this program")
    if meta.get("method_config") is not None and not isinstance(meta["method_config"], dict):
        raise CheckpointError("the model's model.json has a method_config that is not an object")
    backbone = build_backbone(meta["backbone"], channels=channels, image_size=size)
    return build_method(meta["method"], backbone, meta.get("method_config"), who="the model's model.json")


def _checked_shape(meta: dict[str, Any]) -> tuple[int, int]:
    """(channels, image size) from model.json, refusing what no image model has."""
    from engine.data.pixels import MAX_INPUT_SIDE
    channels, size = meta.get("channels"), meta.get("image_size")
    if isinstance(size, list) and len(size) == 2 and size[0] == size[1]:
        size = size[0]
    if not (isinstance(channels, int) and channels in (1, 3)):
        raise CheckpointError(f"the model's model.json says {channels!r} image channels; only 1 or 3 exist")
    if not (isinstance(size, int) and not isinstance(size, bool) and 1 <= size <= MAX_INPUT_SIDE):
        raise CheckpointError(f"the model's model.json asks for {size!r}-pixel inputs; image models take 1 to "
                              f"{MAX_INPUT_SIDE}: the file is damaged or not this program's")
    return channels, size


def weights_digest(learner: MetaLearner, prep: Preprocessing) -> str:
    """Identifies what the backbone computes: its weights' content and the preprocessing
    in front of it. Cached embeddings are keyed by it, so weights changed in place (a
    model folder trained again) are never served embeddings of the old ones."""
    import hashlib
    import json
    h = hashlib.sha256(json.dumps(prep.to_dict(), sort_keys=True).encode())
    for name, t in sorted(learner.backbone.state_dict().items()):
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:24]


def check_finite(learner: MetaLearner, where: str) -> None:
    bad = [name for name, t in learner.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise CheckpointError(f"the weights in {where} hold NaN or infinite values ({', '.join(bad[:3])}"
                              f"{' ...' if len(bad) > 3 else ''}): the model is damaged; train it again or copy it "
                              "from where it came from")


def model_folder(spec: str) -> Path | None:
    """The checkpoint folder behind a spec; None for models built in code (photos)."""
    if spec == "photos":
        return None
    if spec in BUNDLED:
        return ASSETS / spec
    return Path(spec)


def load_model(spec: str, device: torch.device | str = "cpu", preprocessing: Preprocessing | None = None
               ) -> LoadedModel:
    """Load a bundled model by name, a checkpoint folder made by ``fewshot train``, or an
    ONNX image model used as a feature extractor (``preprocessing``: its input size and
    normalisation, remembered for the file; needed the first time)."""
    if is_onnx_spec(spec):
        return load_onnx_model(spec, preprocessing)
    folder = model_folder(spec)
    if folder is None:
        meta = photos_meta()
        learner = build_learner(meta)
    else:
        if spec not in BUNDLED and not folder.exists():
            raise CheckpointError(
                f"model not found: {spec} (give a folder made by 'fewshot train' or one of: {', '.join(BUNDLED)})")
        meta = read_meta(folder)
        learner = build_learner(meta)
        state = load_weights(folder)
        try:
            learner.load_state_dict(state)
        except RuntimeError as e:
            raise CheckpointError(f"the weights in {folder} do not fit a {meta['method']}/{meta['backbone']} model: "
                                  f"{str(e).splitlines()[0]}") from None
        check_finite(learner, str(folder))
    try:
        prep = Preprocessing.from_dict(meta["preprocessing"])
        from engine.data.pixels import check_preprocessing
        check_preprocessing(prep)
        if prep.channels != int(meta["channels"]):
            raise ValueError(f"{prep.channels} channels for a {meta['channels']}-channel backbone")
    except (KeyError, TypeError, ValueError, IndexError, FewShotError) as e:
        raise CheckpointError(f"model {spec} has an unusable preprocessing entry ({e}); the model file is damaged "
                              "or not this program's") from None
    # What the backbone computes, by content (path names say nothing about retrained weights).
    meta["backbone_id"] = f"{meta['backbone']}:{weights_digest(learner, prep)}"
    learner.to(device).eval()
    if torch.device(device).type == "cpu":
        # oneDNN convolutions are faster on channels-last weights (docs/PERFORMANCE.md).
        learner.to(memory_format=torch.channels_last)
    return LoadedModel(spec, learner, prep, meta)


def load_onnx_model(spec: str, preprocessing: Preprocessing | None = None) -> LoadedModel:
    """A ProtoNet head (cosine) on an ONNX model's features, run by onnxruntime on the CPU."""
    from engine.methods.protonet import ProtoNet
    from engine.models.onnx_features import (OnnxFeatures, check_against_file, onnx_meta, prepare,
                                             preprocessing_for, remember_preprocessing)
    prep = preprocessing_for(spec, preprocessing)
    features = prepare(spec)
    check_against_file(prep, features)
    if preprocessing is not None:
        remember_preprocessing(spec, preprocessing)
    learner = ProtoNet(OnnxFeatures(features, prep), distance="cosine", learn_temperature=False).eval()
    return LoadedModel(spec, learner, prep, onnx_meta(features, prep))


def describe_export(path: str) -> dict[str, Any] | None:
    """What ``fewshot info`` prints for a model written by ``fewshot export`` (its contract,
    engine/export/onnx_model.py), or None for any other ONNX file."""
    from engine.errors import ModelInputError
    from engine.onnx_session import read_contract
    if not Path(path).is_file():
        return None
    try:
        contract = read_contract(path)
    except ModelInputError:
        return None  # another ONNX model: described as a feature extractor
    prep = contract["preprocessing"]
    try:
        config, outputs = json.loads(contract.get("method_config", "{}")), json.loads(contract.get("outputs", "[]"))
    except json.JSONDecodeError:
        config, outputs = {}, []
    return {"backbone": f"{contract.get('backbone') or 'unknown'}, adapted and exported",
            "method": contract.get("method", ""), "method_config": config, "channels": prep["channels"], "image_size": prep["size"], "preprocessing": prep,
            "classes": contract["class_names"], "outputs": outputs, "exported_from": contract.get("source_model"),
            "exported_at": contract.get("exported_at"), "contract": contract.get("fewshot_contract"),
            "description": f"an adapted model written by fewshot export ({len(contract['class_names'])} classes): "
                           "run it with 'fewshot predict'"}


def describe(spec: str) -> dict[str, Any]:
    """What ``fewshot info`` prints: the model's metadata without building it."""
    if is_onnx_spec(spec):
        from engine.models.onnx_features import prepare, remembered_preprocessing
        exported = describe_export(spec)
        if exported is not None:
            return exported
        features = prepare(spec)
        prep = remembered_preprocessing(spec)
        return {"backbone": "onnx", "method": "protonet",
                "method_config": {"distance": "cosine", "learn_temperature": False},
                "channels": prep.channels if prep else None, "image_size": list(prep.size) if prep else None,
                "description": f"ProtoNet head on {features.source.name} features", "onnx_file": str(features.source),
                "input": features.input_name, "input_shape": features.input_shape, "feature_dim": features.dim,
                "features_from": features.taken_from,
                "preprocessing": prep.to_dict() if prep else "not set yet (give --onnx-preprocessing once)"}
    folder = model_folder(spec)
    if folder is None:
        return photos_meta()
    if spec not in BUNDLED and not folder.exists():
        raise FewShotError(f"model not found: {spec} (give a folder made by 'fewshot train' or one of: {', '.join(BUNDLED)})")
    meta = read_meta(folder)
    meta["parameters"] = sum(t.numel() for t in load_weights(folder).values())
    return meta

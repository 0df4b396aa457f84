"""Any ONNX image model as a feature extractor for ProtoNet.

A person brings an ONNX file (say ``mobilenetv2-12-int8.onnx``, an ImageNet
classifier): the embedding is the tensor feeding its classifier (the last
Gemm/MatMul, dequantized when the model is quantized), or the model's own output
when it has no classifier at the end (a feature extractor), flattened and
average-pooled if it is still a spatial map. The rewritten graph, with that
tensor as its only output, is kept in the user cache; onnxruntime runs it.

ONNX files do not say how their pixels were normalised, so the input size and
normalisation are asked once and remembered by file content
(:func:`remember_preprocessing`), in ``$FEWSHOT_CONFIG_DIR`` or the platform's
user config folder.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from engine.data.cache import default_cache_dir
from engine.data.pixels import check_preprocessing
from engine.data.preprocessing import Preprocessing
from engine.errors import FewShotError, ModelInputError
from engine.json_file import read_json_dict, write_json_atomic

CONFIG_ENV = "FEWSHOT_CONFIG_DIR"
FEATURES = "fewshot_features"
FORMAT_VERSION = 1
# Ops that can follow a classifier's matmul before the model's output (bias, softmax, quantization).
_AFTER_CLASSIFIER = {"Add", "QLinearAdd", "DequantizeLinear", "QuantizeLinear", "Softmax", "LogSoftmax",
                     "Identity", "Cast", "Relu", "Sigmoid"}
_CLASSIFIERS = {"Gemm", "MatMul", "QLinearMatMul", "QGemm", "MatMulInteger"}
_QUANTIZED = {"QLinearMatMul", "QGemm"}


@dataclass(frozen=True)
class FeatureModel:
    """What :func:`prepare` found: the rewritten file and how the features were taken."""

    source: Path
    digest: str  # sha256 of the source file
    path: Path  # the rewritten graph, output FEATURES (N, D) float32
    input_name: str
    input_shape: list[Any]  # as declared; strings for dynamic dimensions
    taken_from: str  # the tensor the features are read from, and why
    dim: int


def file_digest(path: Path) -> str:
    """sha256 of the file; loading a model asks for it three times (cache, settings, id)."""
    st = Path(path).stat()
    return _digest(str(Path(path).resolve()), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=64)
def _digest(path: str, _mtime_ns: int, _size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _config_file() -> Path:
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env) / "onnx_models.json"
    from platformdirs import user_config_dir
    return Path(user_config_dir("fewshot-labeler")) / "onnx_models.json"


_config_lock = threading.Lock()


def remember_preprocessing(path: str | Path, prep: Preprocessing) -> None:
    """Store the input size and normalisation of an ONNX file (by its content)."""
    check_preprocessing(prep)
    digest = file_digest(Path(path))
    with _config_lock:
        config = read_json_dict(_config_file())
        config[digest] = {"path": str(Path(path).resolve()), "preprocessing": prep.to_dict()}
        write_json_atomic(_config_file(), config)


def remembered_preprocessing(path: str | Path) -> Preprocessing | None:
    if not Path(path).is_file():
        return None  # the caller's next step (loading the file) says what is wrong with the path
    entry = read_json_dict(_config_file()).get(file_digest(Path(path)))
    return Preprocessing.from_dict(entry["preprocessing"]) if entry else None


def suggested_preprocessing(path: str | Path) -> Preprocessing:
    """A starting point for the question: the input size the file declares (224 when it
    is dynamic), its channels, ImageNet normalisation, and the photo resize rule."""
    import onnx
    model = _load_onnx(Path(path))
    shape = _input_shape(model)
    channels = shape[1] if len(shape) == 4 and shape[1] in (1, 3) else 3
    h = shape[2] if len(shape) == 4 and isinstance(shape[2], int) and shape[2] > 0 else 224
    w = shape[3] if len(shape) == 4 and isinstance(shape[3], int) and shape[3] > 0 else h
    del onnx
    if channels == 1:
        return Preprocessing(size=(h, w), channels=1, mean=(0.5,), std=(0.5,), resize="stretch")
    return Preprocessing(size=(h, w), channels=3, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                         resize="shorter_side_center_crop")


def _load_onnx(path: Path) -> Any:
    import onnx
    if not path.is_file():
        raise ModelInputError(f"ONNX file not found: {path}; check the path")
    try:
        return onnx.load(str(path))
    except Exception as e:  # noqa: BLE001 - onnx raises DecodeError and friends
        raise ModelInputError(f"{path} is not an ONNX model ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                              "choose a .onnx file") from None


def _input_shape(model: Any) -> list[Any]:
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise ModelInputError(f"the ONNX model has {len(inputs)} inputs; a feature extractor takes one image batch")
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
            for d in inputs[0].type.tensor_type.shape.dim]


def _find_features(model: Any) -> tuple[list[Any], str, str]:
    """Nodes to add, the tensor the features are read from, and a description of it."""
    from onnx import helper
    if len(model.graph.output) < 1:
        raise ModelInputError("the ONNX model has no output")
    producer = {out: n for n in model.graph.node for out in n.output}
    name = model.graph.output[0].name
    node = producer.get(name)
    while node is not None and node.op_type in _AFTER_CLASSIFIER:
        node = producer.get(node.input[0])
    nodes = []
    if node is not None and node.op_type in _CLASSIFIERS:
        source = node.input[0]
        what = f"the input of its classifier ({node.op_type} '{node.name or source}')"
        if node.op_type in _QUANTIZED:  # a, a_scale, a_zero_point ...: dequantize a
            nodes.append(helper.make_node("DequantizeLinear", [source, node.input[1], node.input[2]],
                                          [f"{FEATURES}_dequantized"]))
            source = f"{FEATURES}_dequantized"
    else:
        source = name
        what = f"its output '{name}' (no classifier at the end)"
    return nodes, source, what


def prepare(path: str | Path) -> FeatureModel:
    """The feature graph of an ONNX file, made once per file content (user cache)."""
    import onnx
    from onnx import helper

    source = Path(path)
    model = _load_onnx(source)
    digest = file_digest(source)
    target = default_cache_dir() / "onnx" / f"features-{digest[:32]}-v{FORMAT_VERSION}.onnx"
    shape = _input_shape(model)
    initializers = {t.name for t in model.graph.initializer}
    input_name = next(i.name for i in model.graph.input if i.name not in initializers)
    nodes, tensor, what = _find_features(model)
    if not target.exists():
        graph = model.graph
        graph.node.extend(nodes)
        graph.node.append(helper.make_node("Flatten", [tensor], [f"{FEATURES}_flat"], axis=1))
        graph.node.append(helper.make_node("Cast", [f"{FEATURES}_flat"], [FEATURES], to=onnx.TensorProto.FLOAT))
        del graph.output[:]
        graph.output.append(helper.make_tensor_value_info(FEATURES, onnx.TensorProto.FLOAT, None))
        _pool_if_spatial(model, tensor, input_name, shape)  # a spatial map (N, C, H, W) is pooled first
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            onnx.save(model, str(tmp))
            dim = _probe_dim(tmp, input_name, shape)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    else:
        dim = _probe_dim(target, input_name, shape)
    return FeatureModel(source, digest, target, input_name, shape, what, dim)


def _pool_if_spatial(model: Any, tensor: str, input_name: str, shape: list[Any]) -> None:
    """Insert a global average pool before the flatten when ``tensor`` is (N, C, H, W) with
    H or W above 1 (a backbone without a head): decided by running the graph up to it."""
    import onnx
    from onnx import helper
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.append(onnx.ValueInfoProto(name=tensor))
    out = _run_once(probe.SerializeToString(), input_name, shape)
    if out.ndim == 4 and out.shape[2] * out.shape[3] > 1:
        for n in model.graph.node:
            if n.op_type == "Flatten" and n.output[0] == f"{FEATURES}_flat":
                n.input[0] = f"{FEATURES}_pooled"
        model.graph.node.insert(len(model.graph.node) - 2,
                                helper.make_node("GlobalAveragePool", [tensor], [f"{FEATURES}_pooled"]))


def _example_input(shape: list[Any]) -> np.ndarray:
    dims = [d if isinstance(d, int) and d > 0 else (2 if k == 0 else 224) for k, d in enumerate(shape)]
    return np.random.default_rng(0).standard_normal(dims).astype(np.float32)


def _run_once(model: str | bytes | Path, input_name: str, shape: list[Any]) -> np.ndarray:
    from engine.onnx_session import make_session
    session, _ = make_session(model, threads=1, prefer_gpu=False)
    try:
        return np.asarray(session.run(None, {input_name: _example_input(shape)})[0])
    except Exception as e:  # noqa: BLE001 - onnxruntime's own error types
        raise ModelInputError(f"the ONNX model does not run on a test image ({str(e).splitlines()[0]}); "
                              "is it an image model taking (N, C, H, W) floats?") from None


def _probe_dim(path: Path, input_name: str, shape: list[Any]) -> int:
    out = _run_once(path, input_name, shape)
    if out.ndim != 2 or out.shape[1] < 1:
        raise ModelInputError(f"could not find a feature vector in the ONNX model (got shape {out.shape})")
    return int(out.shape[1])


class OnnxFeatures(nn.Module):
    """A feature graph run by onnxruntime behind the ``nn.Module`` interface the methods
    use: float NCHW in, (N, D) float32 embeddings out. No trainable weights: methods that
    adapt the backbone cannot use it."""

    def __init__(self, features: FeatureModel, prep: Preprocessing):
        super().__init__()
        self.features = features
        self.prep = prep
        self.out_dim = features.dim
        self._session: Any = None
        self._lock = threading.Lock()

    def session(self) -> Any:
        with self._lock:
            if self._session is None:
                from engine.onnx_session import make_session
                self._session, _ = make_session(self.features.path, prefer_gpu=False)
            return self._session

    def forward(self, x: Tensor) -> Tensor:
        out = self.session().run(None, {self.features.input_name: x.detach().float().cpu().contiguous().numpy()})[0]
        return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32)).to(x.device)


def is_onnx_spec(spec: str) -> bool:
    return spec.lower().endswith(".onnx")


def onnx_meta(features: FeatureModel, prep: Preprocessing) -> dict[str, Any]:
    return {"method": "protonet", "method_config": {"distance": "cosine", "learn_temperature": False},
            "backbone": "onnx",
            "channels": prep.channels, "image_size": list(prep.size), "preprocessing": prep.to_dict(),
            # The input contract is part of the embedding function: other settings, other cache rows.
            "backbone_id": f"onnx:{features.digest[:24]}:{_prep_digest(prep)}:{features.taken_from}",
            "onnx_file": str(features.source), "feature_dim": features.dim, "features_from": features.taken_from,
            "description": f"ProtoNet head on {features.source.name} features ({features.dim}-d, "
                           f"from {features.taken_from})"}


def _prep_digest(prep: Preprocessing) -> str:
    return hashlib.sha256(json.dumps(prep.to_dict(), sort_keys=True).encode()).hexdigest()[:12]


def check_against_file(prep: Preprocessing, features: FeatureModel) -> None:
    """Refuse a size or channel count the file's declared input contradicts (it would
    fail inside onnxruntime on every image, and must never be remembered)."""
    shape = features.input_shape
    if len(shape) != 4:
        return
    declared = {"channels": shape[1], "height": shape[2], "width": shape[3]}
    given = {"channels": prep.channels, "height": prep.size[0], "width": prep.size[1]}
    wrong = [f"{k} {given[k]} (the file expects {v})" for k, v in declared.items()
             if isinstance(v, int) and v > 0 and v != given[k]]
    if wrong:
        raise ModelInputError(f"{features.source.name}: the input settings do not fit the model: "
                              f"{', '.join(wrong)}; use the sizes the file declares")


def preprocessing_for(spec: str, prep: Preprocessing | None) -> Preprocessing:
    if prep is not None:
        check_preprocessing(prep)
        return prep
    remembered = remembered_preprocessing(spec)
    if remembered is None:
        suggestion = suggested_preprocessing(spec)
        raise FewShotError(
            f"{spec}: the app does not know this ONNX model's input size and normalisation yet. Tell it once: "
            "in the app, Labeling > Model > ONNX Feature Extractor...; on the command line, "
            f"fewshot label ... --model {spec} --onnx-preprocessing '{json.dumps(suggestion.to_dict())}' "
            "(the suggestion is the input size the file declares with ImageNet normalisation; check your model's "
            "documentation)")
    return remembered

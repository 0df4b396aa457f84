"""An adapted ProtoNet head written straight into an ONNX feature graph.

For models whose backbone is already an ONNX file (engine.models.onnx_features)
there is no PyTorch module to trace: the head is appended to the feature graph
in that graph's own opset, with the math of
:meth:`engine.methods.protonet.ProtoHead.predict_embeddings` (the export's
parity check compares the two on the project's examples).
"""
from __future__ import annotations

from typing import Any

import numpy as np

EPS_NORM = 1e-12  # torch.nn.functional.normalize's eps
EPS_LOG = 1e-12  # engine.methods.base.entropy_of's clamp


def _opset(model: Any) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


class _Graph:
    """Adds nodes and constants with unique names, in the model's opset."""

    def __init__(self, model: Any, prefix: str):
        self.model = model
        self.graph = model.graph
        self.opset = _opset(model)
        self.prefix = prefix
        self.count = 0

    def name(self, what: str) -> str:
        self.count += 1
        return f"{self.prefix}{what}_{self.count}"

    def const(self, value: np.ndarray | float, what: str = "const") -> str:
        from onnx import numpy_helper
        name = self.name(what)
        self.graph.initializer.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), name))
        return name

    def node(self, op: str, inputs: list[str], **attrs: Any) -> str:
        from onnx import helper
        out = self.name(op.lower())
        self.graph.node.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def reduce(self, op: str, x: str, keepdims: bool) -> str:
        """Reduce over axis 1: axes became an input in opset 13 (ReduceSum) and 18 (the rest)."""
        from onnx import numpy_helper
        moved = 13 if op == "ReduceSum" else 18
        if self.opset >= moved:
            axes = self.name("axes")
            self.graph.initializer.append(numpy_helper.from_array(np.array([1], dtype=np.int64), axes))
            return self.node(op, [x, axes], keepdims=int(keepdims))
        return self.node(op, [x], axes=[1], keepdims=int(keepdims))


def append_protonet_head(model: Any, features: str, prototypes: np.ndarray, spread: float, distance: str,
                         temperature: float, outputs: tuple[str, str, str]) -> None:
    """Append the head after tensor ``features`` (N, D) and make ``outputs`` (probs,
    entropy, ood score) the graph's only outputs."""
    import onnx
    from onnx import helper

    g = _Graph(model, "fewshot_head_")
    protos = np.asarray(prototypes, dtype=np.float32)
    if distance == "cosine":
        norm = g.node("Sqrt", [g.reduce("ReduceSum", g.node("Mul", [features, features]), keepdims=True)])
        z = g.node("Div", [features, g.node("Max", [norm, g.const(EPS_NORM, "eps")])])
        unit = protos / np.maximum(np.linalg.norm(protos, axis=1, keepdims=True), EPS_NORM)
        sim = g.node("MatMul", [z, g.const(unit.T, "prototypes_t")])
        d = g.node("Sub", [g.const(1.0, "one"), sim])
    elif distance == "euclidean":
        zz = g.reduce("ReduceSum", g.node("Mul", [features, features]), keepdims=True)
        cross = g.node("MatMul", [features, g.const(-2.0 * protos.T, "prototypes_t")])
        d = g.node("Add", [g.node("Add", [zz, cross]), g.const((protos * protos).sum(1), "prototype_sq")])
        d = g.node("Max", [d, g.const(0.0, "zero")])
    else:
        raise ValueError(f"unknown distance {distance}")
    probs = g.node("Softmax", [g.node("Mul", [d, g.const(-float(temperature), "neg_temperature")])], axis=1)
    logp = g.node("Log", [g.node("Max", [probs, g.const(EPS_LOG, "eps_log")])])
    entropy = g.node("Neg", [g.reduce("ReduceSum", g.node("Mul", [probs, logp]), keepdims=False)])
    ood = g.node("Div", [g.reduce("ReduceMin", d, keepdims=False), g.const(float(spread), "spread")])
    for src, dst in zip((probs, entropy, ood), outputs):
        model.graph.node.append(helper.make_node("Identity", [src], [dst]))
    del model.graph.output[:]
    model.graph.output.extend([
        helper.make_tensor_value_info(outputs[0], onnx.TensorProto.FLOAT, ["batch", int(protos.shape[0])]),
        helper.make_tensor_value_info(outputs[1], onnx.TensorProto.FLOAT, ["batch"]),
        helper.make_tensor_value_info(outputs[2], onnx.TensorProto.FLOAT, ["batch"]),
    ])


def rename_input(model: Any, old: str, new: str) -> None:
    """Rename graph input ``old`` to ``new`` everywhere it is read."""
    for inp in model.graph.input:
        if inp.name == old:
            inp.name = new
    for node in model.graph.node:
        for k, name in enumerate(node.input):
            if name == old:
                node.input[k] = new

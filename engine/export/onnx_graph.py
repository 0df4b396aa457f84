"""Putting an adapted head behind an ONNX feature extractor's graph.

For models whose backbone is already an ONNX file (engine.models.onnx_features)
there is no PyTorch module to trace end to end. The head is traced on its own
(``Predictor.head_module``: the very math the labeler predicts with), the feature
graph is brought to the head's opset when it is older, and the two graphs are
joined at the feature tensor (``onnx.compose``). The export's parity check then
compares the joined graph with PyTorch on the project's examples.
"""
from __future__ import annotations

from typing import Any

from engine.errors import ExportError


def opset_of(model: Any) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def rename_tensor(model: Any, old: str, new: str) -> None:
    """Rename tensor ``old`` to ``new`` everywhere: graph inputs and outputs, and every
    node that reads or writes it."""
    for value in list(model.graph.input) + list(model.graph.output) + list(model.graph.value_info):
        if value.name == old:
            value.name = new
    for node in model.graph.node:
        for k, name in enumerate(node.input):
            if name == old:
                node.input[k] = new
        for k, name in enumerate(node.output):
            if name == old:
                node.output[k] = new


def attach_head(features: Any, feature_output: str, head: Any, head_input: str, outputs: tuple[str, ...],
                prefix: str = "fewshot_head_") -> Any:
    """``features`` (a ModelProto with output ``feature_output``) followed by ``head``
    (a ModelProto reading ``head_input``), with the head's outputs named ``outputs``."""
    from onnx import compose, version_converter

    target = opset_of(head)
    if opset_of(features) < target:
        try:
            features = version_converter.convert_version(features, target)
        except Exception as e:  # noqa: BLE001 - the converter raises many kinds; all mean "cannot upgrade"
            raise ExportError(f"the feature extractor's ONNX opset {opset_of(features)} cannot be converted to "
                              f"opset {target} for the export ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                              f"export your feature extractor at opset {target} or newer and load that file") from None
    features.ir_version = head.ir_version = max(features.ir_version, head.ir_version)
    try:
        merged = compose.merge_models(features, head, io_map=[(feature_output, head_input)], prefix2=prefix)
    except Exception as e:  # noqa: BLE001
        raise ExportError(f"cannot join the head to the feature extractor's graph ({type(e).__name__}: "
                          f"{str(e).splitlines()[0][:200]}); please report it") from None
    for name in outputs:
        rename_tensor(merged, prefix + name, name)
    return merged


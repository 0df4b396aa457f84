"""Backbone runners: the backbone in PyTorch or onnxruntime, behind one protocol.

``base`` (the :class:`Runner` protocol, batch sizing), ``torch_runner``,
``onnx_runner`` (with the cached backbone export), ``choice`` (which one labels) and
``remembered`` (the measured choice, kept on disk). The embedder depends on this
package, never the other way round.
"""
from engine.labeling.runners.base import Runner, default_batch_size, model_device
from engine.labeling.runners.choice import BACKENDS, choose_runner
from engine.labeling.runners.onnx_runner import OnnxRunner, onnx_backbone_path
from engine.labeling.runners.torch_runner import TorchRunner

__all__ = ["BACKENDS", "OnnxRunner", "Runner", "TorchRunner", "choose_runner", "default_batch_size",
           "model_device", "onnx_backbone_path"]

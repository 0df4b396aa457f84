"""Method names -> classes, so the CLI, trainer and GUI never special-case one."""
from __future__ import annotations

from torch import nn

from engine.errors import FewShotError
from engine.methods.base import MetaLearner
from engine.methods.protonet import ProtoNet

METHODS: dict[str, type[MetaLearner]] = {"protonet": ProtoNet}


def build_method(name: str, backbone: nn.Module, **config) -> MetaLearner:
    try:
        cls = METHODS[name]
    except KeyError:
        raise FewShotError(f"unknown method '{name}'; available: {', '.join(sorted(METHODS))}") from None
    return cls(backbone, **config)

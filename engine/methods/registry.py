"""Method names -> classes, so the CLI, trainer, labeler and GUI never special-case one.

A method is one file in this package with a :class:`MetaLearner` subclass; adding it
to :data:`METHODS` (or calling :func:`register`, as tests do for a throwaway method)
gives it ``fewshot train --method``, its options on the command line, labeling,
export and the shared method test suite (tests/test_methods.py).
"""
from __future__ import annotations

from typing import Any

from torch import nn

from engine.errors import FewShotError
from engine.methods.abml import ABML
from engine.methods.anil import ANIL
from engine.methods.base import MetaLearner
from engine.methods.bayes_proto import BayesProto
from engine.methods.bmaml import BMAML
from engine.methods.emaml import EMAML
from engine.methods.maml import MAML
from engine.methods.metasgd import MetaSGD
from engine.methods.protomaml import ProtoMAML
from engine.methods.protonet import ProtoNet
from engine.methods.reptile import Reptile
from engine.methods.uncertainty import check_provided
from engine.methods.versa import Versa

METHODS: dict[str, type[MetaLearner]] = {}


def register(cls: type[MetaLearner]) -> type[MetaLearner]:
    """Add a method (usable as a class decorator); its scores are checked against the registry."""
    check_provided(cls.scores, cls.__name__)
    METHODS[cls.name] = cls
    return cls


def unregister(name: str) -> None:
    METHODS.pop(name, None)


def method_class(name: str) -> type[MetaLearner]:
    try:
        return METHODS[name]
    except KeyError:
        raise FewShotError(f"unknown method '{name}'; available: {', '.join(sorted(METHODS))}") from None


def build_method(name: str, backbone: nn.Module, config: dict[str, Any] | None = None, *,
                 who: str = "the model") -> MetaLearner:
    """A method around ``backbone`` with options ``config`` (model.json's method_config),
    checked: unknown options or values of the wrong type are a FewShotError naming ``who``."""
    cls = method_class(name)
    return cls(backbone, cls.Config.from_dict(config, who))


for _cls in (ProtoNet, BayesProto, Versa, MAML, MetaSGD, ANIL, Reptile, ProtoMAML, ABML, EMAML, BMAML):
    register(_cls)

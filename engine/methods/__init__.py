"""Meta-learning methods, all behind the protocol in engine.methods.base.

Attributes load on first use, so that torch-free code (the store, ``fewshot
predict``) can import :mod:`engine.methods.uncertainty` without loading torch.
"""
from __future__ import annotations

import importlib
from typing import Any

_LAZY = {"MetaLearner": "base", "MethodConfig": "base", "Prediction": "base", "Predictor": "base",
         "METHODS": "registry", "build_method": "registry", "register": "registry"}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"engine.methods.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'engine.methods' has no attribute {name!r}")

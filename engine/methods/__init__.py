"""Meta-learning methods, all behind the protocol in engine.methods.base."""
from engine.methods.base import MetaLearner, Prediction, Predictor
from engine.methods.registry import METHODS, build_method

__all__ = ["MetaLearner", "Prediction", "Predictor", "METHODS", "build_method"]

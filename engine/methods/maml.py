"""MAML (Finn, Abbeel & Levine 2017): a meta-learned initialization of the whole
network, adapted to a task by a few gradient steps on its examples; the outer loss
differentiates through those steps (second order), or not (``--first-order``: FOMAML).
MAML++ options (Antoniou et al. 2019): ``--learn-inner-lr``, ``--multi-step-loss``,
and the trainer's ``--lr-schedule cosine``. The shared machinery is in
:mod:`engine.methods.gradient_base`."""
from __future__ import annotations

from engine.methods.gradient_base import GradientLearner


class MAML(GradientLearner):
    name = "maml"
    description = ("MAML: a meta-learned start for the whole network, adapted by gradient steps on the examples "
                   "(Finn et al. 2017); --first-order gives FOMAML, --learn-inner-lr and --multi-step-loss MAML++")

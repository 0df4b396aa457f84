"""What the particle methods share (``emaml``, ``bmaml``): M meta-learned starts of the
whole network, each adapted to a task, their predictions averaged.

Particle 0 is the learner's own backbone and head; particles 1..M-1 are copies held as
parameters of their own, started from it plus a little noise (identical particles would
stay identical). Each particle runs the MAML family's inner loop (engine.methods.
gradient_base) with its own start. The ensemble's predictions are the average of the
particles' probabilities, and its uncertainty decomposes as any posterior's
(engine.methods.draws): ``mutual_info`` is how much the adapted particles disagree.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.errors import ExportError, FewShotError
from engine.methods.adaptation import adapt_weights
from engine.methods.base import Prediction, Predictor, check_support
from engine.methods.draws import average_draws
from engine.methods.gradient_base import AdaptedNetwork, BakedNetwork, GradientConfig, GradientLearner
from engine.methods.inner_loop import Weights, training_mode
from engine.methods.prototypes import ood_scale, pairwise_distance, prototypes_of

START_NOISE = 0.01  # relative to each weight's own spread


@dataclass
class ParticleConfig(GradientConfig):
    particles: int = field(default=4, metadata={"help": "how many meta-learned starts (particles) to keep"})
    proto_start: bool = field(default=False, metadata={
        "help": "each particle's head starts from the examples' prototypes under its weights (as Proto-MAML's), "
                "instead of its learned row"})

    def validate(self) -> None:
        super().validate()
        if not (2 <= self.particles <= 64):
            raise FewShotError(f"particles must be between 2 and 64, not {self.particles}")


class ParticleLearner(GradientLearner):
    Config = ParticleConfig
    scores = ("entropy", "margin", "ood_score", "mutual_info", "aleatoric")

    def __init__(self, backbone: nn.Module, config: ParticleConfig | None = None, **options):
        super().__init__(backbone, config, **options)
        if self.config.per_step_bn or self.config.learn_inner_lr:
            raise FewShotError(f"{self.name} keeps one start per particle; --per-step-bn and --learn-inner-lr "
                               "are not offered for it")
        if self.config.multi_step_loss or self.config.batch_norm == "transductive":
            # Its ensemble has no per-step loss to weigh, and a transductive ensemble would label each image
            # by the batch it came in.
            raise FewShotError(f"{self.name}: --multi-step-loss and --batch-norm transductive are not offered")
        self.extra = nn.ParameterDict()
        for key, value in self._copies().items():
            self.extra[key] = nn.Parameter(value)
        self._particle = 0

    def _copies(self) -> dict[str, Tensor]:
        """Particles 1..M-1: particle 0's weights plus a little seeded noise."""
        g = torch.Generator().manual_seed(0)
        out = {}
        for m in range(1, self.config.particles):
            for name, value in self._own_weights().items():
                spread = float(value.detach().std()) if value.numel() > 1 else 0.0
                noise = torch.randn(value.shape, generator=g) * START_NOISE * (spread or 1.0)
                out[self._key(m, name)] = value.detach().clone() + noise.to(value.device, value.dtype)
        return out

    @torch.no_grad()
    def backbone_replaced(self) -> None:
        for key, value in self._copies().items():
            self.extra[key].copy_(value)

    @staticmethod
    def _key(m: int, name: str) -> str:
        return f"p{m}__" + name.replace(".", "__")

    def _own_weights(self) -> Weights:
        return {**self.net.backbone_weights(), "head.weight": self.head_weight, "head.bias": self.head_bias}

    def particle_weights(self, m: int) -> Weights:
        """Particle ``m``'s start: backbone weights and its head row (and bias)."""
        if m == 0:
            return self._own_weights()
        return {name: self.extra[self._key(m, name)] for name in self._own_weights()}

    @contextmanager
    def particle(self, m: int) -> Iterator[None]:
        """Run the inner loop (which reads :meth:`initial_weights`) from particle ``m``."""
        self._particle = m
        try:
            yield
        finally:
            self._particle = 0

    def initial_weights(self, support_x: Tensor, support_y: Tensor, way: int, chunk: int | None = None) -> Weights:
        weights = dict(self.particle_weights(self._particle))
        if self.config.proto_start:
            z = torch.cat([self.support_embed(weights, part)[0] for part in support_x.split(chunk or len(support_x))])
            protos = prototypes_of(z, support_y, way)
            weights["head.weight"], weights["head.bias"] = 2 * protos, -(protos * protos).sum(dim=1)
            return weights
        weights["head.weight"] = weights["head.weight"].unsqueeze(0).expand(way, -1)
        weights["head.bias"] = weights["head.bias"].expand(way)
        return weights

    def ensemble_loss(self, logits: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """The ensemble's query NLL (the log of the particles' average probability) and its
        log-probabilities."""
        log_avg = torch.logsumexp(torch.log_softmax(logits, dim=2), dim=0) - torch.log(
            torch.tensor(float(logits.shape[0])))
        return F.nll_loss(log_avg, y), log_avg

    def adapt(self, support_x: Tensor, support_y: Tensor, n_classes: int | None = None) -> Predictor:
        n = check_support(support_y, n_classes, support_x.shape[0])
        steps = self.config.test_inner_steps or self.config.inner_steps
        members = []
        with training_mode(self, False):
            for m in range(self.config.particles):
                with self.particle(m):
                    weights, stats = adapt_weights(self, support_x, support_y, n, steps)
                members.append(AdaptedNetwork(self.net, weights, stats, float(self.log_scale.detach().exp()), n,
                                              self.config.batch_norm))
        return EnsembleNetwork.of(members, support_x, support_y)


class EnsembleNetwork(Predictor):
    """Adapted networks; predictions are their average (engine.methods.draws). The OOD
    score is ProtoNet's on the first member's embeddings: the distance to the nearest
    class's mean over the classes' spread, both from the examples under its weights."""

    scores = ("entropy", "margin", "ood_score", "mutual_info", "aleatoric")

    def __init__(self, members: list[AdaptedNetwork], protos: Tensor, spread: Tensor):
        self.members, self.protos, self.spread = members, protos, spread
        self.class_count = members[0].class_count

    @classmethod
    def of(cls, members: list[AdaptedNetwork], support_x: Tensor, support_y: Tensor) -> "EnsembleNetwork":
        z = members[0].embed(support_x)
        protos = prototypes_of(z, support_y, members[0].class_count)
        return cls(members, protos, ood_scale(z, support_y, protos, "euclidean"))

    def predict(self, x: Tensor) -> Prediction:
        logits = torch.stack([m.logits(x) for m in self.members]).float()
        probs, entropy, aleatoric, mutual_info = average_draws(logits)
        ood = pairwise_distance(self.members[0].embed(x).float(), self.protos, "euclidean").amin(1) / self.spread
        return Prediction.from_probs(probs, entropy=entropy, ood_score=ood, mutual_info=mutual_info,
                                     aleatoric=aleatoric)

    def as_module(self, backbone: nn.Module | None = None) -> nn.Module:
        if any(m.batch_norm == "transductive" for m in self.members):
            raise ExportError("a model adapted with transductive batch norm cannot be exported; adapt with the "
                              "default --batch-norm support")
        return BakedEnsemble([m.as_module() for m in self.members], self.protos, self.spread).eval()


class BakedEnsemble(nn.Module):
    output_names = ("probs", "entropy", "ood_score", "mutual_info", "aleatoric")

    def __init__(self, members: list[BakedNetwork], protos: Tensor, spread: Tensor):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.register_buffer("protos", protos.detach().clone())
        self.register_buffer("spread", spread.detach().clone().reshape(()))

    def forward(self, pixels: Tensor) -> tuple[Tensor, ...]:
        logits = torch.stack([m.logits(pixels) for m in self.members])
        probs, entropy, aleatoric, mutual_info = average_draws(logits)
        ood = pairwise_distance(self.members[0].embed(pixels), self.protos, "euclidean").amin(1) / self.spread
        return probs, entropy, ood, mutual_info, aleatoric

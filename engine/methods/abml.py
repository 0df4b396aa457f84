"""ABML, amortized Bayesian meta-learning (Ravi & Beatson 2019): the MAML family's inner
loop on a Gaussian *distribution* over the network's weights instead of a point.

Meta-learned: a prior over every weight, mean ``mu_0`` (the backbone and head) and
standard deviation ``sigma_0`` (one per weight). For a task, the variational posterior
``q = N(mu, sigma^2)`` starts at the prior and takes gradient steps on the negative ELBO
of the examples, ``E_q[cross-entropy] + kl_weight * KL(q || prior) / n`` (one
reparameterised draw per step; the KL's coefficient is capped so that a step cannot
overshoot, :meth:`ABML.kl_coefficient`), so the examples move the weights and narrow them where
they are informative. The outer loss is the query NLL of the average over draws from
the adapted ``q``. Predictions average S draws of the whole network (seeded by the
examples, so the same examples give the same predictions); their disagreement is the
epistemic score (engine.methods.draws). Each draw is an adapted network, so export and
labeling are those of the particle methods (engine.methods.particles).

Batch norm: each draw normalizes queries with the support statistics under its own
weights (``support``), as the family does. Test-time steps are not guarded: the ELBO of
one draw is noisy, and a guard on it would stop at random.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.errors import FewShotError
from engine.methods.base import Predictor, check_support
from engine.methods.draws import canonical
from engine.methods.gradient_base import AdaptedNetwork, GradientConfig, GradientLearner
from engine.methods.inner_loop import Weights, detached_copy, inner_grads, sgd_step, training_mode
from engine.methods.particles import EnsembleNetwork
from engine.methods.prototypes import prototypes_of

STD = "std:"  # fast-weight key prefix of a weight's log standard deviation


@dataclass
class ABMLConfig(GradientConfig):
    samples: int = field(default=8, metadata={"help": "draws of the network that predictions average over"})
    train_samples: int = field(default=2, metadata={"help": "draws per query in meta-training"})
    kl_weight: float = field(default=1.0, metadata={"help": "weight of the KL term of the inner ELBO"})
    prior_std: float = field(default=0.01, metadata={"help": "the prior's starting standard deviation, relative "
                                                             "to each weight tensor's spread"})
    proto_start: bool = field(default=False, metadata={
        "help": "the head's prior mean is the examples' prototypes (as Proto-MAML's start), not a learned row"})

    def validate(self) -> None:
        super().validate()
        if not (1 <= self.samples <= 256 and 1 <= self.train_samples <= 256):
            raise FewShotError("samples and train-samples must be between 1 and 256")
        if not (0 <= self.kl_weight < 1e6 and 0 < self.prior_std < 10):
            raise FewShotError("kl-weight must be >= 0 and prior-std a positive number below 10")


def kl_gaussians(mu: Tensor, log_sd: Tensor, mu0: Tensor, log_sd0: Tensor) -> Tensor:
    """KL(N(mu, sd^2) || N(mu0, sd0^2)) summed over elements."""
    return (log_sd0 - log_sd + (torch.exp(2 * log_sd) + (mu - mu0) ** 2) / (2 * torch.exp(2 * log_sd0)) - 0.5).sum()


class ABML(GradientLearner):
    name = "abml"
    Config = ABMLConfig
    scores = EnsembleNetwork.scores
    description = ("ABML: MAML's inner loop on a Gaussian over the weights, a posterior per task whose draws' "
                   "disagreement is the epistemic uncertainty (Ravi & Beatson 2019)")

    def __init__(self, backbone: nn.Module, config: ABMLConfig | None = None, **options):
        super().__init__(backbone, config, **options)
        if self.config.per_step_bn or self.config.learn_inner_lr:
            raise FewShotError("abml adapts a mean and a spread per weight; --per-step-bn and --learn-inner-lr "
                               "are not offered for it")
        if self.config.multi_step_loss or self.config.batch_norm == "transductive":
            # Its ensemble has no per-step loss to weigh, and a transductive ensemble would label each image
            # by the batch it came in.
            raise FewShotError(f"{self.name}: --multi-step-loss and --batch-norm transductive are not offered")
        self.prior_log_sd = nn.ParameterDict()
        for name, value in self._means().items():
            spread = float(value.detach().std()) if value.numel() > 1 else 1.0
            self.prior_log_sd[name.replace(".", "__")] = nn.Parameter(
                torch.full(value.shape, math.log(self.config.prior_std * (spread or 1.0))))

    def _means(self) -> Weights:
        return {**self.net.backbone_weights(), "head.weight": self.head_weight, "head.bias": self.head_bias}

    def adapted_names(self) -> list[str]:
        return [*self.param_names, *(STD + n for n in self.param_names)]

    def initial_weights(self, support_x: Tensor, support_y: Tensor, way: int, chunk: int | None = None) -> Weights:
        weights = super().initial_weights(support_x, support_y, way, chunk)
        if self.config.proto_start:
            z = torch.cat([self.support_embed(weights, part)[0] for part in support_x.split(chunk or len(support_x))])
            protos = prototypes_of(z, support_y, way)
            weights["head.weight"], weights["head.bias"] = 2 * protos, -(protos * protos).sum(dim=1)
        for n in self.param_names:
            log_sd = self.prior_log_sd[n.replace(".", "__")]
            weights[STD + n] = log_sd.unsqueeze(0).expand(way, -1) if n == "head.weight" else (
                log_sd.expand(way) if n == "head.bias" else log_sd)
        return weights

    def draw(self, weights: Weights, eps: dict[str, Tensor] | None, generator: torch.Generator | None = None
             ) -> Weights:
        """Weights drawn from q: ``mu + sd * eps`` (eps drawn here when None)."""
        out = {}
        for n in self.param_names:
            mu, log_sd = weights[n], weights[STD + n]
            e = eps[n] if eps is not None else torch.randn(mu.shape, generator=generator, dtype=mu.dtype,
                                                           device=mu.device)
            out[n] = mu + log_sd.exp() * e
        return out

    def elbo_loss(self, weights: Weights, prior: Weights, x: Tensor, y: Tensor,
                  generator: torch.Generator | None = None) -> Tensor:
        sample = self.draw(weights, None, generator)
        z, _ = self.support_embed(sample, x)
        nll = F.cross_entropy(self.net.head(sample, z), y)
        kl = sum(kl_gaussians(weights[n], weights[STD + n], prior[n], prior[STD + n]) for n in self.param_names)
        return nll + self.kl_coefficient(prior, x.shape[0]) * kl

    def kl_coefficient(self, prior: Weights, n: int) -> float:
        """``kl_weight / n``, at most ``sd0_min^2 / inner_lr``: the KL's pull on a mean is
        ``(mu - mu0) / sd0^2``, so a larger coefficient makes a plain gradient step overshoot
        and diverge (it did, with the prior's spread at 1% of the weights')."""
        sd0_min = min(float(prior[STD + k].detach().min().exp()) for k in self.param_names)
        return min(self.config.kl_weight / n, sd0_min ** 2 / self.config.inner_lr)

    def posterior(self, x: Tensor, y: Tensor, way: int, steps: int, second_order: bool,
                  generator: torch.Generator | None = None) -> Weights:
        prior = self.start_weights(x, y, way)
        weights, names = prior, self.adapted_names()
        for step in range(steps):
            current = weights if second_order else detached_copy(weights, names)
            loss = self.elbo_loss(current, prior, x, y, generator)
            grads = inner_grads(loss, current, names, second_order)
            weights = sgd_step(weights, names, grads, [self.config.inner_lr] * len(names))
        return weights

    def meta_loss(self, episode) -> tuple[Tensor, dict[str, float]]:
        with torch.enable_grad():
            q = self.posterior(episode.support_x, episode.support_y, episode.way, self.config.inner_steps,
                               not self.config.first_order)
            logits = []
            for _ in range(self.config.train_samples):
                sample = self.draw(q, None)
                _, stats = self.support_embed(sample, episode.support_x)
                logits.append(self.query_logits(sample, stats, episode.query_x))
            log_p = torch.log_softmax(torch.stack(logits), dim=2)
            log_avg = torch.logsumexp(log_p, dim=0) - math.log(len(logits))
            loss = F.nll_loss(log_avg, episode.query_y)
        acc = (log_avg.argmax(1) == episode.query_y).float().mean()
        return loss, {"loss": float(loss.detach()), "acc": float(acc)}

    def adapt(self, support_x: Tensor, support_y: Tensor, n_classes: int | None = None) -> Predictor:
        n = check_support(support_y, n_classes, support_x.shape[0])
        steps = self.config.test_inner_steps or self.config.inner_steps
        _, _, seed = canonical(support_x.flatten(1), support_y)
        generator = torch.Generator(device=support_x.device).manual_seed(seed)
        scale = float(self.log_scale.detach().exp())
        members = []
        with torch.enable_grad(), training_mode(self, False):
            q = {k: v.detach() for k, v in self.posterior(support_x, support_y, n, steps, False, generator).items()}
        with torch.no_grad():
            for _ in range(self.config.samples):
                sample = self.draw(q, None, generator)
                _, stats = self.support_embed(sample, support_x)
                members.append(AdaptedNetwork(self.net, sample, stats, scale, n, self.config.batch_norm))
        return EnsembleNetwork.of(members, support_x, support_y)

"""Bayesian prototypes: a conjugate Gaussian model of each class around its prototype.

A head for any backbone (``photos``, ``omniglot``, ONNX feature extractors), with no
meta-training needed; it adapts on cached embeddings in milliseconds, like ProtoNet.

The model. Class k's embeddings are Gaussian around an unknown mean, with a variance
shared by all classes (or, with ``--per-class-variance``, one per class):
``z | k ~ N(mu_k, sigma^2 I)``, ``mu_k | sigma^2 ~ N(m0, sigma^2 / kappa0 I)`` with ``m0``
the centre of the prototypes, and ``sigma^2 ~ InvGamma(a0, b0)``. The posterior is
closed form (Normal-Inverse-Gamma): each class's mean is known to within
``sigma^2 / kappa_k``, ``kappa_k = kappa0 + n_k``, so a class with fewer examples is
known less well. (Counting an "effective dimension" of the embeddings instead of D, to
allow for correlated dimensions, made the draws far too wide and the probabilities far
less calibrated on photos; tried by hand, not kept.)

Predictions average over the posterior (Bayesian model averaging) with S fixed draws
of the class means and the variance. A draw moves a class's mean by ``eps``, which
changes a query's squared distance by ``-2 (z - mu_k) . eps + |eps|^2``; for one query
the first term is exactly ``N(0, |z - mu_k|^2 sigma^2 / kappa_k)``, so a draw needs one
number per class, not a D-vector (``xi``: S x C standard normals), and costs what a
prototype head costs. The draws come from a generator seeded by the examples
themselves, so the same examples always give the same predictions. Each draw's
probabilities are ``softmax(-beta * d)``, beta chosen as ProtoNet's temperature is
(engine.methods.calibration: fitted on held-out examples when a class has two or more,
else the meta-trained temperature or the scale rule).

Why not the closed-form Student-t predictive: tried by hand on the photos of
benchmarks/bench_ood.py (not kept), it made probabilities less calibrated than
ProtoNet's, and its mutual information (total entropy minus the plug-in's) *fell* on
left-out images. With fitted examples (a class with
two or more), beta is fitted on held-out examples for this averaged predictive itself,
which averaging makes softer than ProtoNet's.

Uncertainty. ``entropy``: of the averaged probabilities (total). ``aleatoric``: the
mean entropy of the draws, what is ambiguous whatever the classes' true means.
``mutual_info`` (BALD, epistemic): total minus aleatoric, how much the draws disagree:
large where it is not yet clear where the boundary between two classes lies, which more
examples settle (tests/test_bayes_proto.py). An image far from every class gets a
confident, agreeing set of draws under a Gaussian model, so "none of these" is left to
``ood_score`` (docs/RESULTS.md measures both). ``ood_score``: ProtoNet's, the distance to
the nearest class over the classes' spread.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.errors import FewShotError
from engine.methods.base import MetaLearner, MethodConfig, Prediction, Predictor, check_support, eval_forward
from engine.methods.calibration import Temperature, choose_temperature, held_out_folds, map_scale, prototype_scale
from engine.methods.draws import antithetic_normals, average_draws, canonical
from engine.methods.prototypes import DISTANCES, ood_scale, prototypes_of, support_spread

OUTPUTS = ("probs", "entropy", "ood_score", "mutual_info", "aleatoric")
A0 = 1.0  # the variance prior's shape: as weak as a proper prior gets


@dataclass
class BayesProtoConfig(MethodConfig):
    distance: str = field(default="euclidean", metadata={
        "help": "the geometry of the embeddings: euclidean, or cosine (embeddings scaled to unit length first)",
        "choices": DISTANCES})
    kappa0: float = field(default=0.1, metadata={
        "help": "how many examples' worth the prior puts at the centre of all classes (shrinks each class's mean "
                "towards it; small: the examples decide)"})
    per_class_variance: bool = field(default=False, metadata={
        "help": "one variance per class instead of one shared by all"})
    samples: int = field(default=32, metadata={
        "help": "draws from the posterior that predictions average over (fixed per set of examples)"})
    temperature: float | None = field(default=None, metadata={
        "help": "softmax temperature per unit of distance; a trained model keeps the one it learned (default: "
                "the scale rule, or fitted on the examples)"})
    calibrate: bool = field(default=True, metadata={
        "help": "fit each task's temperature on its own examples when a class has two or more"})

    def validate(self) -> None:
        if self.distance not in DISTANCES:
            raise FewShotError(f"unknown distance '{self.distance}'; choose one of {', '.join(DISTANCES)}")
        if not (0 < self.kappa0 < 1e6):
            raise FewShotError(f"kappa0 must be a positive number, not {self.kappa0}")
        if not (1 <= self.samples <= 4096):
            raise FewShotError(f"samples must be between 1 and 4096, not {self.samples}")
        if self.temperature is not None and not (0 < self.temperature < 1e6):
            raise FewShotError(f"temperature must be a positive number, not {self.temperature}")


@dataclass
class Posterior:
    """A task's posterior, ready to predict with: the classes' posterior means about their
    centre (C, D) and the centre (D,), the variance of each class's mean (C,), the extra
    squared distance a draw adds on average (C,), and the draws: ``xi`` (S, C) standard
    normals and ``precision`` (S, C), each draw's variance relative to the posterior mean
    (1 / sigma^2_s times sigma-bar^2). ``beta``: the softmax's scale per unit of squared
    distance."""

    centre: Tensor
    means: Tensor
    mean_var: Tensor
    offset: Tensor
    xi: Tensor
    precision: Tensor
    beta: Tensor

    def tensors(self) -> dict[str, Tensor]:
        return {k: getattr(self, k) for k in ("centre", "means", "mean_var", "offset", "xi", "precision", "beta")}


def squared_distances(z: Tensor, means: Tensor) -> Tensor:
    return ((z * z).sum(1, keepdim=True) - 2 * z @ means.T + (means * means).sum(1)).clamp_min(0)


def draw_logits(z: Tensor, post: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """Squared distances (N, C) to the posterior means and each draw's logits (S, N, C)."""
    r2 = squared_distances(z - post["centre"], post["means"])
    r = r2.sqrt()
    # A draw moves class k's mean by eps ~ N(0, mean_var_k I): the squared distance changes by
    # -2 (z - mu_k).eps (exactly N(0, r^2 mean_var_k) for one query) plus |eps|^2 (its mean: offset_k).
    shift = r.unsqueeze(0) * (post["mean_var"].sqrt() * post["xi"]).unsqueeze(1)
    d = r2.unsqueeze(0) - 2 * shift + post["offset"]
    return r2, -post["beta"] * post["precision"].unsqueeze(1) * d


def posterior_outputs(z: Tensor, post: dict[str, Tensor], spread: Tensor, unit: bool
                      ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(probs, entropy, ood_score, mutual_info, aleatoric) of embeddings ``z``: the one
    place the predictor and the exported graph compute them."""
    if unit:
        z = F.normalize(z, dim=1)
    r2, logits = draw_logits(z, post)
    probs, entropy, aleatoric, mutual_info = average_draws(logits)
    d_min = r2.amin(dim=1) / 2 if unit else r2.amin(dim=1)  # ProtoNet's distance: 1 - cos = |a - b|^2 / 2
    return probs, entropy, d_min / spread, mutual_info, aleatoric


class BayesProtoHeadOnly(nn.Module):
    """An adapted task over embeddings, its posterior and draws as buffers:
    (N, D) -> ``(probs, entropy, ood_score, mutual_info, aleatoric)``."""

    output_names = OUTPUTS

    def __init__(self, post: Posterior, spread: Tensor, unit: bool):
        super().__init__()
        self._names = []
        for name, value in post.tensors().items():
            self.register_buffer(name, value.detach().clone())
            self._names.append(name)
        self.register_buffer("spread", spread.detach().clone().reshape(()))
        self.unit = unit

    def forward(self, z: Tensor) -> tuple[Tensor, ...]:
        post = {name: getattr(self, name) for name in self._names}
        return posterior_outputs(z.to(self.means.dtype), post, self.spread, self.unit)


class _WithBackbone(nn.Module):
    output_names = OUTPUTS

    def __init__(self, backbone: nn.Module, head: BayesProtoHeadOnly):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, pixels: Tensor) -> tuple[Tensor, ...]:
        return self.head(self.backbone(pixels))


class BayesProtoHead(Predictor):
    scores = ("entropy", "margin", "ood_score", "mutual_info", "aleatoric")

    def __init__(self, post: Posterior, spread: Tensor, unit: bool, backbone: nn.Module | None,
                 calibration: Temperature):
        self.post, self.spread, self.unit, self.backbone = post, spread, unit, backbone
        self.calibration = calibration
        self.class_count = post.means.shape[0]
        self._tensors = post.tensors()

    @torch.no_grad()
    def predict_embeddings(self, z: Tensor) -> Prediction:
        probs, entropy, ood, mi, alea = posterior_outputs(z.to(self.post.means), self._tensors, self.spread,
                                                          self.unit)
        return Prediction.from_probs(probs, entropy=entropy, ood_score=ood, mutual_info=mi, aleatoric=alea)

    @torch.no_grad()
    def predict(self, x: Tensor) -> Prediction:
        if self.backbone is None:
            raise FewShotError("this predictor was adapted from embeddings only; use predict_embeddings()")
        return self.predict_embeddings(eval_forward(self.backbone, x.to(self.post.means.device)))

    def head_module(self) -> BayesProtoHeadOnly:
        return BayesProtoHeadOnly(self.post, self.spread, self.unit).eval()

    def as_module(self, backbone: nn.Module | None = None) -> nn.Module:
        backbone = backbone if backbone is not None else self.backbone
        if backbone is None:
            raise FewShotError("this predictor was adapted from embeddings only; give the backbone to export with")
        return _WithBackbone(backbone, self.head_module()).eval()


class BayesProto(MetaLearner):
    name = "bayes-proto"
    Config = BayesProtoConfig
    adapts_backbone = False
    scores = BayesProtoHead.scores
    description = ("Bayesian prototypes: a Gaussian model of each class with a posterior over its mean; "
                   "tells ambiguous images from ones unlike the examples (any backbone, no training)")

    def posterior(self, z: Tensor, y: Tensor, n_classes: int, beta: Tensor | float,
                  generator: torch.Generator | None) -> Posterior:
        """The posterior from support embeddings ``z`` (unit length for cosine) and its
        draws; ``generator`` None draws from the global one (meta-training)."""
        counts = torch.bincount(y, minlength=n_classes).to(z.dtype)
        protos = prototypes_of(z, y, n_classes)
        centre = protos.mean(0)
        kappa0 = self.config.kappa0
        kappa = kappa0 + counts
        means = (kappa0 * centre + counts[:, None] * protos) / kappa[:, None]
        if self.config.distance == "cosine":
            # On the unit sphere a class's direction is what it says (ProtoNet's cosine prototypes are the
            # same directions); the mean of unit vectors is shorter for a wider class, which cost a point.
            means = F.normalize(means, dim=1)
        dim = float(z.shape[1])
        within = torch.zeros(n_classes, dtype=z.dtype, device=z.device).index_add_(0, y, ((z - protos[y]) ** 2).sum(1))
        between = kappa0 * counts / kappa * ((protos - centre) ** 2).sum(1)
        # The variance prior's mean: a class member's squared distance to its mean, per dimension.
        b0 = A0 * support_spread(z.detach(), y, protos.detach(), "euclidean") / dim
        if self.config.per_class_variance:
            a, b = A0 + counts * dim / 2, b0 + (within + between) / 2
        else:
            a = (A0 + counts.sum() * dim / 2).expand(n_classes)
            b = (b0 + (within.sum() + between.sum()) / 2).expand(n_classes)
        var = b / (a - 1).clamp_min(1e-3)  # E[sigma^2] per dimension
        mean_var = var / kappa
        s = self.config.samples
        xi = antithetic_normals((s, n_classes), generator, z)  # plain normals cost a point of accuracy
        # sigma^2 ~ InvGamma(a, b): precision relative to its mean ~ Gamma(a, a - 1) / ..., drawn with
        # the Wilson-Hilferty cube of a normal (no gamma sampler takes a generator).
        eta = torch.randn(s, 1 if not self.config.per_class_variance else n_classes, generator=generator,
                          dtype=z.dtype, device=z.device)
        shape = a.unsqueeze(0)
        gamma = shape * (1 - 1 / (9 * shape) + eta * torch.sqrt(1 / (9 * shape))).clamp_min(1e-3) ** 3
        precision = (gamma / (a - 1).clamp_min(1e-3)).expand(s, n_classes)
        # Draws of the variance scale the mean's spread alike.
        offset = dim * mean_var
        beta_t = torch.as_tensor(beta, dtype=z.dtype, device=z.device)
        return Posterior(centre, means - centre, mean_var, offset, xi, precision, beta_t)

    def meta_loss(self, episode) -> tuple[Tensor, dict[str, float]]:
        n = episode.support_x.shape[0]
        z = self.backbone(torch.cat([episode.support_x, episode.query_x]))
        if self.config.distance == "cosine":
            z = F.normalize(z, dim=1)
        beta = self.config.temperature if self.config.temperature is not None else 1.0
        post = self.posterior(z[:n], episode.support_y, episode.way, beta, None)
        _, logits = draw_logits(z[n:], post.tensors())
        # The model average's log-likelihood of the right class.
        log_p = torch.logsumexp(torch.log_softmax(logits, dim=2), dim=0) - math.log(logits.shape[0])
        loss = F.nll_loss(log_p, episode.query_y)
        acc = (log_p.argmax(1) == episode.query_y).float().mean()
        return loss, {"loss": loss.item(), "acc": acc.item()}

    @torch.no_grad()
    def adapt_embeddings(self, support_z: Tensor, support_y: Tensor, n_classes: int | None = None) -> BayesProtoHead:
        n_classes = check_support(support_y, n_classes, support_z.shape[0])
        unit = self.config.distance == "cosine"
        z = F.normalize(support_z.float(), dim=1) if unit else support_z.float()
        z, support_y, seed = canonical(z, support_y.to(z.device))
        temperature = choose_temperature(z, support_y, n_classes, self.config.distance, self.config.temperature,
                                         fit=self.config.calibrate)
        # ProtoNet's logits are -T * distance, with distance = r^2 (euclidean) or r^2 / 2 (cosine).
        beta = temperature.value / 2 if unit else temperature.value
        counts = torch.bincount(support_y, minlength=n_classes)
        if self.config.calibrate and temperature.source == "fitted":
            # Averaging over draws softens the probabilities: fit beta on held-out examples for this
            # predictive itself, starting from ProtoNet's fit.
            beta = self._fitted_beta(z, support_y, n_classes, counts, beta, seed)
        post = self.posterior(z, support_y, n_classes, beta, torch.Generator(device=z.device).manual_seed(seed))
        protos = prototypes_of(z, support_y, n_classes)
        spread = ood_scale(z, support_y, protos, self.config.distance)
        return BayesProtoHead(post, spread, unit, self.backbone, temperature)

    def _fitted_beta(self, z: Tensor, y: Tensor, n_classes: int, counts: Tensor, start: float, seed: int) -> float:
        """beta by maximum a posteriori over the held-out folds of engine.methods.calibration,
        each held-out example predicted by the posterior of the rest of its fold, then carried
        from k-1 to k shots by the prototypes' spread, as ProtoNet's temperature is."""
        logits_at_one, labels, ratios = [], [], []
        full_scale = prototype_scale(prototypes_of(z, y, n_classes), "euclidean")
        for idx in held_out_folds(y, n_classes, counts):
            keep = torch.ones(len(y), dtype=torch.bool, device=z.device)
            keep[idx] = False
            post = self.posterior(z[keep], y[keep], n_classes, 1.0,
                                  torch.Generator(device=z.device).manual_seed(seed))
            logits_at_one.append(draw_logits(z[idx], post.tensors())[1])
            labels.append(y[idx])
            scale = prototype_scale(prototypes_of(z[keep], y[keep], n_classes), "euclidean")
            if scale and full_scale:
                ratios.append(scale / full_scale)
        if not labels:
            return start
        at_one, target = torch.cat(logits_at_one, dim=1).double(), torch.cat(labels)
        rows = torch.arange(len(target))
        s = at_one.shape[0]

        def log_likelihood(beta: float) -> float:
            log_p = torch.logsumexp(torch.log_softmax(at_one * beta, dim=2), dim=0) - math.log(s)
            return float(log_p[rows, target].sum())

        ratio = sum(ratios) / len(ratios) if ratios else 1.0
        return map_scale(log_likelihood, start / ratio) * ratio

"""VERSA (Gordon, Bronskill, Bauer, Nowozin & Turner 2019): amortized inference of a
Gaussian posterior over the last layer's weights, from the support set, in one pass.

For each class, a small network (meta-learned with the backbone) reads the mean of the
class's support embeddings and gives the mean and variance of that class's weight
vector and bias; there is no inner loop. The predictive averages over the weights: a
query's logit for class c is then Gaussian, mean ``z . mu_c + mu_b``, variance
``z^2 . var_c + var_b`` (the local reparameterisation), so a draw is one number per
class (engine.methods.draws: fixed antithetic normals seeded by the examples).
Meta-training maximizes the query log-likelihood of that average, which is what
calibrates the probabilities. Head-only at test time: it adapts on cached embeddings in
milliseconds, like ProtoNet.

Scores: ``entropy``, ``aleatoric`` and ``mutual_info`` (the draws' disagreement about the
weights, which more examples shrink), and ProtoNet's ``ood_score`` on the same
embeddings (distance to the nearest class mean over the classes' spread).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.errors import FewShotError
from engine.methods.base import MetaLearner, MethodConfig, Prediction, Predictor, check_support, eval_forward
from engine.methods.draws import antithetic_normals, average_draws, canonical
from engine.methods.prototypes import ood_scale, prototypes_of

OUTPUTS = ("probs", "entropy", "ood_score", "mutual_info", "aleatoric")


@dataclass
class VersaConfig(MethodConfig):
    hidden: int = field(default=256, metadata={"help": "width of the amortization network's hidden layer"})
    samples: int = field(default=32, metadata={"help": "draws of the weights predictions average over"})
    train_samples: int = field(default=10, metadata={"help": "draws per query in meta-training"})

    def validate(self) -> None:
        if not (1 <= self.samples <= 4096 and 1 <= self.train_samples <= 4096):
            raise FewShotError("samples and train-samples must be between 1 and 4096")
        if not (1 <= self.hidden <= 65536):
            raise FewShotError(f"hidden must be between 1 and 65536, not {self.hidden}")


class Amortizer(nn.Module):
    """Class-pooled support embedding (C, D) and the class's example count (C,) -> weight
    mean and log variance (C, D + 1), the last column the bias. The paper's network sees
    the pooled mean only; with the count as an input too (its log), the variance can shrink
    as a class gets more examples, which is what makes the epistemic score mean "more
    examples would settle this"."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(dim + 1, hidden), nn.ELU(), nn.Linear(hidden, hidden), nn.ELU())
        self.mean = nn.Linear(hidden, dim + 1)
        self.log_var = nn.Linear(hidden, dim + 1)
        # Start as a prototype classifier (weight 2c, bias -|c|^2: ProtoNet's euclidean logits at temperature 1)
        # with small variances; training learns the rest.
        with torch.no_grad():
            self.mean.weight.zero_()
            self.mean.bias.zero_()
            self.log_var.bias.fill_(-6.0)

    def forward(self, pooled: Tensor, counts: Tensor) -> tuple[Tensor, Tensor]:
        h = self.body(torch.cat([pooled, counts.to(pooled.dtype).clamp_min(1).log().unsqueeze(1)], dim=1))
        start = torch.cat([2 * pooled, -(pooled * pooled).sum(1, keepdim=True)], dim=1)
        return self.mean(h) + start, self.log_var(h).clamp(-12, 6)


def logit_moments(z: Tensor, mean: Tensor, log_var: Tensor) -> tuple[Tensor, Tensor]:
    """The mean and standard deviation (N, C) of each query's logits under the weights'
    Gaussian (C, D + 1)."""
    z1 = F.pad(z, (0, 1), value=1.0)
    mu = z1 @ mean.T
    sd = ((z1 * z1) @ log_var.exp().T).clamp_min(1e-12).sqrt()
    return mu, sd


def versa_outputs(z: Tensor, head: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(probs, entropy, ood_score, mutual_info, aleatoric): the predictor's and the
    exported graph's one computation."""
    mu, sd = logit_moments(z, head["mean"], head["log_var"])
    logits = mu.unsqueeze(0) + sd.unsqueeze(0) * head["xi"].unsqueeze(1)
    probs, entropy, aleatoric, mutual_info = average_draws(logits)
    d = ((z * z).sum(1, keepdim=True) - 2 * z @ head["protos"].T + (head["protos"] ** 2).sum(1)).clamp_min(0)
    return probs, entropy, d.amin(1) / head["spread"], mutual_info, aleatoric


class VersaHeadOnly(nn.Module):
    output_names = OUTPUTS

    def __init__(self, head: dict[str, Tensor]):
        super().__init__()
        self._names = list(head)
        for name, value in head.items():
            self.register_buffer(name, value.detach().clone())

    def forward(self, z: Tensor) -> tuple[Tensor, ...]:
        return versa_outputs(z.to(self.mean.dtype), {n: getattr(self, n) for n in self._names})


class _WithBackbone(nn.Module):
    output_names = OUTPUTS

    def __init__(self, backbone: nn.Module, head: VersaHeadOnly):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, pixels: Tensor) -> tuple[Tensor, ...]:
        return self.head(self.backbone(pixels))


class VersaHead(Predictor):
    scores = ("entropy", "margin", "ood_score", "mutual_info", "aleatoric")

    def __init__(self, head: dict[str, Tensor], backbone: nn.Module | None):
        self.head, self.backbone = head, backbone
        self.class_count = head["mean"].shape[0]

    @torch.no_grad()
    def predict_embeddings(self, z: Tensor) -> Prediction:
        probs, entropy, ood, mi, alea = versa_outputs(z.to(self.head["mean"]), self.head)
        return Prediction.from_probs(probs, entropy=entropy, ood_score=ood, mutual_info=mi, aleatoric=alea)

    @torch.no_grad()
    def predict(self, x: Tensor) -> Prediction:
        if self.backbone is None:
            raise FewShotError("this predictor was adapted from embeddings only; use predict_embeddings()")
        return self.predict_embeddings(eval_forward(self.backbone, x.to(self.head["mean"].device)))

    def head_module(self) -> VersaHeadOnly:
        return VersaHeadOnly(self.head).eval()

    def as_module(self, backbone: nn.Module | None = None) -> nn.Module:
        backbone = backbone if backbone is not None else self.backbone
        if backbone is None:
            raise FewShotError("this predictor was adapted from embeddings only; give the backbone to export with")
        return _WithBackbone(backbone, self.head_module()).eval()


class Versa(MetaLearner):
    name = "versa"
    Config = VersaConfig
    adapts_backbone = False
    scores = VersaHead.scores
    description = ("VERSA: a Gaussian posterior over the last layer inferred from the examples in one pass "
                   "(Gordon et al. 2019)")

    def __init__(self, backbone: nn.Module, config: VersaConfig | None = None, **options):
        if config is None:
            config = VersaConfig.from_dict(options, "VERSA")
        elif options:
            raise TypeError("give either a config or options, not both")
        super().__init__(backbone, config)
        self.amortizer = Amortizer(int(getattr(backbone, "out_dim")), config.hidden)

    def optimizer_groups(self, lr: float) -> list[dict]:
        """The amortization network starts from nothing; fine-tuning a trained backbone
        (--init-from, a small rate) must not leave it unable to learn: it gets 1e-3 at least."""
        rest = [p for n, p in self.named_parameters() if not n.startswith("amortizer.")]
        return [{"params": rest, "lr": lr}, {"params": list(self.amortizer.parameters()), "lr": max(lr, 1e-3)}]

    def posterior(self, z: Tensor, y: Tensor, n_classes: int) -> tuple[Tensor, Tensor]:
        return self.amortizer(prototypes_of(z, y, n_classes), torch.bincount(y, minlength=n_classes))

    def meta_loss(self, episode) -> tuple[Tensor, dict[str, float]]:
        """The query log-likelihood of the draws' average. Each class keeps between 1 and
        the episode's shot of its examples (drawn per class), so the network learns what
        one more example does to the posterior."""
        n = episode.support_x.shape[0]
        z = self.backbone(torch.cat([episode.support_x, episode.query_x]))
        sz, sy = z[:n], episode.support_y
        if episode.shot > 1:
            keep_count = torch.randint(1, episode.shot + 1, (episode.way,), device=sy.device)
            rank = (F.one_hot(sy, episode.way).cumsum(0) - 1).gather(1, sy[:, None]).squeeze(1)  # j-th of its class
            kept = rank < keep_count[sy]
            sz, sy = sz[kept], sy[kept]
        mean, log_var = self.posterior(sz, sy, episode.way)
        mu, sd = logit_moments(z[n:], mean, log_var)
        eps = torch.randn(self.config.train_samples, *mu.shape, device=mu.device, dtype=mu.dtype)
        log_p = torch.log_softmax(mu.unsqueeze(0) + sd.unsqueeze(0) * eps, dim=2)
        # The log of the draws' average probability of the right class.
        log_avg = torch.logsumexp(log_p, dim=0) - math.log(self.config.train_samples)
        loss = F.nll_loss(log_avg, episode.query_y)
        acc = (log_avg.argmax(1) == episode.query_y).float().mean()
        return loss, {"loss": loss.item(), "acc": acc.item()}

    @torch.no_grad()
    def adapt_embeddings(self, support_z: Tensor, support_y: Tensor, n_classes: int | None = None) -> VersaHead:
        n_classes = check_support(support_y, n_classes, support_z.shape[0])
        device = self.amortizer.mean.weight.device  # cached embeddings come from the CPU
        z, y, seed = canonical(support_z.float().to(device), support_y.to(device))
        mean, log_var = self.posterior(z, y, n_classes)
        generator = torch.Generator(device=device).manual_seed(seed)
        protos = prototypes_of(z, y, n_classes)
        head = {"mean": mean, "log_var": log_var,
                "xi": antithetic_normals((self.config.samples, n_classes), generator, mean),
                "protos": protos, "spread": ood_scale(z, y, protos, "euclidean").reshape(())}
        return VersaHead(head, self.backbone)

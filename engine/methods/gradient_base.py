"""What the MAML family shares: its options, the inner loop on fast weights, the
predictor of an adapted network and its export module (docs/ARCHITECTURE.md).

The head is way-agnostic: one learned row (and bias) is repeated for every class of
a task (as in Ye & Chao's "unicorn" MAML), so a model meta-trained on 5-way tasks
labels a project of any number of classes, and the order of the classes does not
matter. Proto-MAML replaces that start by the support prototypes.

Calibration: the query logits are multiplied by a learned scale (``exp(log_scale)``)
that only the outer loss sees. The outer loss is the cross-entropy of queries the
inner loop never saw, so the scale is fitted on held-out data, which is what a
temperature needs to be calibrated (docs/CALIBRATION.md).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.errors import ExportError, FewShotError
from engine.methods.adaptation import adapt_weights
from engine.methods.base import MetaLearner, MethodConfig, Prediction, Predictor, check_support
from engine.methods.calibration import SCALE_LR
from engine.methods.inner_loop import (
    BN_MODES,
    FunctionalNet,
    Weights,
    batch_norms,
    detached_copy,
    inner_grads,
    sgd_step,
    training_mode,
)
from engine.methods.oom import halving_on_oom

log = logging.getLogger(__name__)


@dataclass
class GradientConfig(MethodConfig):
    inner_steps: int = field(default=5, metadata={"help": "gradient steps on the examples per task in training"})
    test_inner_steps: int | None = field(default=None, metadata={
        "help": "gradient steps when adapting to a project's examples (default: --inner-steps)"})
    inner_lr: float = field(default=0.4, metadata={"help": "inner-loop learning rate (its start, when learned)"})
    first_order: bool = field(default=False, metadata={
        "help": "first-order meta-gradients (FOMAML): no gradient through the inner loop's gradients"})
    batch_norm: str = field(default="support", metadata={
        "help": "statistics queries are normalized with: the support set's (each image predicted alone) or the "
                "query batch's own (transductive, as in the MAML paper; for comparison only)", "choices": BN_MODES})
    learn_inner_lr: bool = field(default=False, metadata={
        "help": "MAML++: learn one inner learning rate per layer and step"})
    multi_step_loss: bool = field(default=False, metadata={
        "help": "MAML++: the outer loss weighs the query loss after every inner step, annealed towards the last"})
    multi_step_anneal: int = field(default=1000, metadata={
        "help": "outer steps over which the multi-step loss anneals to the last step only"})
    per_step_bn: bool = field(default=False, metadata={
        "help": "MAML++: batch-norm weights and biases learned for each inner step, and not changed by it"})
    log_scale: float = field(default=0.0, metadata={
        "help": "log of the scale on the query logits (learned in meta-training; recorded in the model)"})

    def validate(self) -> None:
        if self.inner_steps < 1 or (self.test_inner_steps is not None and self.test_inner_steps < 1):
            raise FewShotError("inner steps must be at least 1")
        if not (0 < self.inner_lr < 1e3):
            raise FewShotError(f"the inner learning rate must be a positive number, not {self.inner_lr}")
        if self.batch_norm not in BN_MODES:
            raise FewShotError(f"unknown batch-norm mode '{self.batch_norm}'; choose one of {', '.join(BN_MODES)}")
        if self.multi_step_anneal < 1:
            raise FewShotError("--multi-step-anneal must be at least 1")


class GradientLearner(MetaLearner):
    """A meta-learned initialization adapted by gradient steps (MAML and its kin).

    Subclasses choose what the inner loop adapts (:meth:`adapted_names`), its
    learning rates (:meth:`rates`), the head's start (:meth:`initial_weights`) and,
    for Reptile, the outer update."""

    Config = GradientConfig
    adapts_backbone = True
    scores = ("entropy", "margin")

    def __init__(self, backbone: nn.Module, config: GradientConfig | None = None, **options):
        if config is None:
            config = self.Config.from_dict(options, type(self).__name__)
        elif options:
            raise TypeError("give either a config or options, not both")
        super().__init__(backbone, config)
        dim = int(getattr(backbone, "out_dim"))
        self.head_weight = nn.Parameter(torch.zeros(dim))
        self.head_bias = nn.Parameter(torch.zeros(()))
        self.log_scale = nn.Parameter(torch.tensor(float(config.log_scale)))
        self.net = FunctionalNet(backbone)
        names = [n for n, _ in backbone.named_parameters()] + ["head.weight", "head.bias"]
        self.param_names = names
        if config.learn_inner_lr:
            self.inner_lrs = nn.Parameter(torch.full((config.inner_steps, len(names)), float(config.inner_lr)))
        self._bn_affine: dict[str, str] = {}  # backbone BN weight/bias name -> its per-step parameter's key
        if config.per_step_bn:
            self.step_bn = nn.ParameterDict()
            for module_name, bn in batch_norms(backbone).items():
                for kind in ("weight", "bias"):
                    p = getattr(bn, kind, None)
                    if p is not None:
                        key = f"{module_name}.{kind}".replace(".", "__")
                        self.step_bn[key] = nn.Parameter(p.detach().clone().repeat(config.inner_steps + 1, 1))
                        self._bn_affine[f"{module_name}.{kind}"] = key
        # Outer steps taken, for the multi-step loss's annealing; saved, so a resumed run anneals alike.
        self.register_buffer("outer_steps", torch.zeros((), dtype=torch.long))

    def optimizer_groups(self, lr: float) -> list[dict[str, Any]]:
        """The logit scale is one number that calibration hangs on; at a fine-tuning rate
        (1e-4) a few hundred outer steps could not move it, so it learns at SCALE_LR at least."""
        rest = [p for n, p in self.named_parameters() if n != "log_scale"]
        return [{"params": rest, "lr": lr}, {"params": [self.log_scale], "lr": max(lr, SCALE_LR)}]

    # ------------------------------------------------------------ what the inner loop adapts

    def saved_config(self) -> GradientConfig:
        return replace(self.config, log_scale=float(self.log_scale.detach()))

    def adapted_names(self) -> list[str]:
        return [n for n in self.param_names if n not in self._bn_affine]

    def with_step_bn(self, weights: Weights, step: int) -> Weights:
        """``weights`` with the batch norms' weights and biases of inner step ``step``
        (per-step batch norm; steps past those trained use the last)."""
        if not self._bn_affine:
            return weights
        out = dict(weights)
        for name, key in self._bn_affine.items():
            table = self.step_bn[key]
            out[name] = table[min(step, table.shape[0] - 1)]
        return out

    def start_weights(self, support_x: Tensor, support_y: Tensor, way: int, chunk: int | None = None) -> Weights:
        """The fast weights of step 0 (:meth:`initial_weights`, per-step BN applied)."""
        return self.with_step_bn(self.initial_weights(support_x, support_y, way, chunk), 0)

    def rates(self, step: int, names: list[str]) -> list[Tensor | float]:
        if self.config.learn_inner_lr:
            row = self.inner_lrs[min(step, self.inner_lrs.shape[0] - 1)]
            index = {n: k for k, n in enumerate(self.param_names)}
            return [row[index[n]] for n in names]
        return [self.config.inner_lr] * len(names)

    def initial_weights(self, support_x: Tensor, support_y: Tensor, way: int, chunk: int | None = None) -> Weights:
        """The fast weights a task starts from: the backbone's, and the head row repeated
        per class. ``chunk``: examples per forward pass, for a start that embeds them."""
        weights = self.net.backbone_weights()
        weights["head.weight"] = self.head_weight.unsqueeze(0).expand(way, -1)
        weights["head.bias"] = self.head_bias.expand(way)
        return weights

    # ------------------------------------------------------------ the inner loop

    def inner_loop(self, support_x: Tensor, support_y: Tensor, way: int, steps: int,
                   second_order: bool) -> tuple[list[Weights], list[Weights]]:
        """Fast weights after 0..steps steps and the support statistics under each
        (meta-training; adapting to a user's examples is engine.methods.adaptation)."""
        weights = self.start_weights(support_x, support_y, way)
        names = self.adapted_names()
        trail, stats_trail = [], []
        for step in range(steps):
            current = weights if second_order else detached_copy(weights, names)
            z, stats = self.support_embed(current, support_x)
            loss = F.cross_entropy(self.net.head(current, z), support_y)
            trail.append(weights)
            stats_trail.append(stats)
            grads = inner_grads(loss, current, names, second_order)
            weights = self.with_step_bn(sgd_step(weights, names, grads, self.rates(step, names)), step + 1)
        with torch.no_grad():
            _, stats = self.support_embed(weights if second_order else detached_copy(weights, names), support_x)
        trail.append(weights)
        stats_trail.append(stats)
        return trail, stats_trail

    @torch.no_grad()
    def track_start_stats(self, stats: Weights) -> None:
        """Keep the backbone's running statistics at those of the start on training
        support sets (momentum as its batch norms'), so that embeddings cached under the
        start in eval mode (the provisional refresh, engine/labeling) are normalized as
        the start normalizes a task. ``running`` mode keeps them frozen."""
        if not self.training or self.config.batch_norm == "running":
            return
        buffers = dict(self.backbone.named_buffers())
        norms = self.net.recorder.norms
        for key, value in stats.items():
            module = norms.get(key.rsplit(".", 1)[0])
            momentum = module.momentum if module is not None and module.momentum is not None else 0.1
            buffers[key].lerp_(value.to(buffers[key].dtype), momentum)

    def support_embed(self, weights: Weights, x: Tensor) -> tuple[Tensor, Weights]:
        """Support features and the statistics queries are to be normalized with."""
        if self.config.batch_norm == "running":
            stats = self.net.running_stats()
            return self.net.embed(weights, x, stats), stats
        return self.net.embed_recording(weights, x)

    def query_logits(self, weights: Weights, stats: Weights, x: Tensor) -> Tensor:
        use = None if self.config.batch_norm == "transductive" else stats
        return self.net.head(weights, self.net.embed(weights, x, use)) * self.log_scale.exp()

    def step_weights(self, steps: int) -> list[float]:
        """Multi-step loss weights over steps 1..steps (MAML++ Sec. 4): uniform at the
        start, annealed linearly to the last step alone."""
        if not self.config.multi_step_loss or steps == 1:
            return [0.0] * (steps - 1) + [1.0]
        t = min(1.0, float(self.outer_steps) / self.config.multi_step_anneal)
        early = (1.0 - t) / steps
        return [early] * (steps - 1) + [1.0 - early * (steps - 1)]

    def meta_loss(self, episode) -> tuple[Tensor, dict[str, float]]:
        steps = self.config.inner_steps
        second = not self.config.first_order
        with torch.enable_grad():
            trail, stats = self.inner_loop(episode.support_x, episode.support_y, episode.way, steps, second)
            self.track_start_stats(stats[0])
            loss = torch.zeros(())
            logits = None
            for k, w in enumerate(self.step_weights(steps), start=1):
                if w == 0.0:
                    continue
                logits = self.query_logits(trail[k], stats[k], episode.query_x)
                loss = loss + w * F.cross_entropy(logits, episode.query_y)
        assert logits is not None
        acc = (logits.argmax(1) == episode.query_y).float().mean()
        return loss, {"loss": float(loss.detach()), "acc": float(acc)}

    def outer_step(self, episodes: list, optimizer: torch.optim.Optimizer) -> dict[str, float]:
        stats = super().outer_step(episodes, optimizer)
        self.outer_steps += 1
        return stats

    # ------------------------------------------------------------ test time

    def adapt(self, support_x: Tensor, support_y: Tensor, n_classes: int | None = None) -> Predictor:
        n = check_support(support_y, n_classes, support_x.shape[0])
        steps = self.config.test_inner_steps or self.config.inner_steps
        with training_mode(self, False):
            weights, stats = adapt_weights(self, support_x, support_y, n, steps)
        return AdaptedNetwork(self.net, weights, stats, float(self.log_scale.detach().exp()), n,
                              self.config.batch_norm)


class AdaptedNetwork(Predictor):
    """An adapted task: the network under its fast weights, normalizing queries with
    the support statistics (or, transductive, with each batch's own)."""

    scores = ("entropy", "margin")

    def __init__(self, net: FunctionalNet, weights: Weights, stats: Weights, scale: float, class_count: int,
                 batch_norm: str):
        self.net = net
        self.weights = weights
        self.stats = stats
        self.scale = scale
        self.class_count = class_count
        self.batch_norm = batch_norm

    def non_transductive(self) -> "AdaptedNetwork":
        """The same task with queries normalized by the support statistics: each image alone."""
        return AdaptedNetwork(self.net, self.weights, self.stats, self.scale, self.class_count, "support")

    def embed(self, x: Tensor) -> Tensor:
        device = self.weights["head.weight"].device
        use = None if self.batch_norm == "transductive" else self.stats
        with torch.no_grad():
            return self.net.embed(self.weights, x.to(device), use)

    def logits(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return self.net.head(self.weights, self.embed(x)) * self.scale

    def predict(self, x: Tensor) -> Prediction:
        if self.batch_norm != "transductive":
            logits = halving_on_oom(self.logits, x)
        else:
            logits = self.logits(x)  # the batch is the statistics: it cannot be split
        return Prediction.from_probs(logits.float().softmax(dim=1))

    def as_module(self, backbone: nn.Module | None = None) -> nn.Module:
        if self.batch_norm == "transductive":
            raise ExportError("a model adapted with transductive batch norm predicts each batch from its own "
                              "statistics, which an exported model cannot reproduce; adapt with the default "
                              "--batch-norm support to export")
        return BakedNetwork(self.net.backbone, self.weights, self.stats, self.scale).eval()


class BakedNetwork(nn.Module):
    """An adapted network as one plain module (the ONNX export): the fast weights and
    the support statistics as buffers, run through the backbone's own code."""

    output_names = ("probs", "entropy")

    def __init__(self, backbone: nn.Module, weights: Weights, stats: Weights, scale: float):
        super().__init__()
        object.__setattr__(self, "_backbone", backbone)  # not a submodule: its meta-weights are not exported
        self._keys: dict[str, str] = {}
        for k, v in {**dict(backbone.named_buffers()), **stats, **weights}.items():
            safe = k.replace(".", "__")
            self.register_buffer(safe, v.detach().clone())
            self._keys[k] = safe
        self.scale = float(scale)

    def embed(self, pixels: Tensor) -> Tensor:
        from torch.func import functional_call
        own = {k: getattr(self, safe) for k, safe in self._keys.items() if not k.startswith("head.")}
        with training_mode(self._backbone, False):
            return functional_call(self._backbone, own, (pixels,))

    def logits(self, pixels: Tensor) -> Tensor:
        weight, bias = getattr(self, self._keys["head.weight"]), getattr(self, self._keys["head.bias"])
        return F.linear(self.embed(pixels), weight, bias) * self.scale

    def forward(self, pixels: Tensor) -> tuple[Tensor, Tensor]:
        probs = self.logits(pixels).softmax(dim=1)
        return probs, -(probs * probs.clamp_min(1e-12).log()).sum(dim=1)


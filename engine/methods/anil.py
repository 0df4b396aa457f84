"""ANIL (Raghu, Raghu, Bengio & Vinyals 2020): MAML's inner loop on the head alone.
The backbone is meta-learned through the inner loop but never changed by it, so at
test time a task is learned from cached embeddings in milliseconds, like ProtoNet:
every correction re-adapts the whole project at once.

The backbone runs as in ProtoNet (batch statistics in meta-training, its running
statistics when embedding), so an embedding depends on the image alone and can be
cached."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.errors import FewShotError
from engine.methods.base import Prediction, Predictor, check_support, eval_forward
from engine.methods.gradient_base import GradientLearner
from engine.methods.inner_loop import Weights, detached_copy, inner_grads, sgd_step

HEAD = ["head.weight", "head.bias"]


class ANIL(GradientLearner):
    name = "anil"
    adapts_backbone = False
    description = "ANIL: MAML's inner loop on the last layer only; adapts from cached embeddings (Raghu et al. 2020)"

    def __init__(self, backbone: nn.Module, config=None, **options):
        super().__init__(backbone, config, **options)
        if self.config.per_step_bn or self.config.batch_norm != "support":
            raise FewShotError("anil runs its backbone as ProtoNet does (its inner loop is on the head), so "
                               "--per-step-bn and --batch-norm do not apply; drop them")

    def adapted_names(self) -> list[str]:
        return list(HEAD)

    def head_loop(self, z: Tensor, y: Tensor, way: int, steps: int, second_order: bool) -> list[Weights]:
        """Head weights after 0..steps gradient steps on embeddings ``z``."""
        weights: Weights = {"head.weight": self.head_weight.unsqueeze(0).expand(way, -1),
                            "head.bias": self.head_bias.expand(way)}
        trail = [weights]
        for step in range(steps):
            current = weights if second_order else detached_copy(weights, HEAD)
            loss = F.cross_entropy(F.linear(z, current["head.weight"], current["head.bias"]), y)
            grads = inner_grads(loss, current, HEAD, second_order)
            weights = sgd_step(weights, HEAD, grads, self.rates(step, HEAD))
            trail.append(weights)
        return trail

    def meta_loss(self, episode) -> tuple[Tensor, dict[str, float]]:
        n = episode.support_x.shape[0]
        steps = self.config.inner_steps
        z = self.backbone(torch.cat([episode.support_x, episode.query_x]))
        trail = self.head_loop(z[:n], episode.support_y, episode.way, steps, not self.config.first_order)
        loss = torch.zeros(())
        logits = None
        scale = self.log_scale.exp()
        for k, w in enumerate(self.step_weights(steps), start=1):
            if w:
                logits = F.linear(z[n:], trail[k]["head.weight"], trail[k]["head.bias"]) * scale
                loss = loss + w * F.cross_entropy(logits, episode.query_y)
        assert logits is not None
        acc = (logits.argmax(1) == episode.query_y).float().mean()
        return loss, {"loss": float(loss.detach()), "acc": float(acc)}

    def adapt(self, support_x: Tensor, support_y: Tensor, n_classes: int | None = None) -> Predictor:
        head = self.adapt_embeddings(self.embed(support_x), support_y, n_classes)
        head.backbone = self.backbone
        return head

    def adapt_embeddings(self, support_z: Tensor, support_y: Tensor, n_classes: int | None = None) -> "AnilHead":
        n = check_support(support_y, n_classes, support_z.shape[0])
        steps = self.config.test_inner_steps or self.config.inner_steps
        with torch.enable_grad():
            device = self.head_weight.device  # cached embeddings come from the CPU
            trail = self.head_loop(support_z.float().detach().to(device), support_y.to(device), n, steps,
                                   second_order=False)
        w = trail[-1]
        return AnilHead(w["head.weight"].detach(), w["head.bias"].detach(), float(self.log_scale.detach().exp()),
                        self.backbone)


class AnilHeadOnly(nn.Module):
    output_names = ("probs", "entropy")

    def __init__(self, weight: Tensor, bias: Tensor, scale: float):
        super().__init__()
        self.register_buffer("weight", weight.detach().clone())
        self.register_buffer("bias", bias.detach().clone())
        self.scale = float(scale)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        probs = (F.linear(z.to(self.weight.dtype), self.weight, self.bias) * self.scale).softmax(dim=1)
        return probs, -(probs * probs.clamp_min(1e-12).log()).sum(dim=1)


class _WithBackbone(nn.Module):
    output_names = AnilHeadOnly.output_names

    def __init__(self, backbone: nn.Module, head: AnilHeadOnly):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, pixels: Tensor) -> tuple[Tensor, Tensor]:
        return self.head(self.backbone(pixels))


class AnilHead(Predictor):
    """An adapted ANIL task: a linear head over the meta-learned backbone's embeddings."""

    scores = ("entropy", "margin")

    def __init__(self, weight: Tensor, bias: Tensor, scale: float, backbone: nn.Module | None = None):
        self.module = AnilHeadOnly(weight, bias, scale).eval()
        self.backbone = backbone
        self.class_count = weight.shape[0]

    @torch.no_grad()
    def predict_embeddings(self, z: Tensor) -> Prediction:
        probs, entropy = self.module(z.to(self.module.weight.device).float())
        return Prediction.from_probs(probs, entropy=entropy)

    @torch.no_grad()
    def predict(self, x: Tensor) -> Prediction:
        if self.backbone is None:
            raise ValueError("this head was adapted from embeddings only; use predict_embeddings()")
        return self.predict_embeddings(eval_forward(self.backbone, x.to(self.module.weight.device)))

    def head_module(self) -> nn.Module:
        return self.module

    def as_module(self, backbone: nn.Module | None = None) -> nn.Module:
        return _WithBackbone(backbone if backbone is not None else self.backbone, self.module).eval()

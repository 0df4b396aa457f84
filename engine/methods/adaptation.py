"""Adapting a MAML-family start to a user's examples at test time.

Two things differ from the inner loop of meta-training (engine.methods.gradient_base):

- Steps are guarded: a step is taken only if it fits the examples no worse, its rate
  halved up to MAX_HALVINGS times until it does, else adapting ends (non-finite losses
  included). A rate that suited the training tasks can overshoot on a user's examples;
  this keeps adapting from making them fit worse. It does not protect against fitting a
  mislabelled example too well (docs/RESULTS.md).
- Out of device memory, the examples are split into halves (then quarters...) and
  the run continues: the loss is a mean over the examples, so its gradient is the sum
  of the chunks' gradients, each chunk's loss a sum over its rows divided by the whole
  count. With batch norm on the support set's statistics, each chunk is normalized
  with its own (a "ghost batch"), and queries with those statistics pooled over the
  chunks: close to, not the same as, the whole batch's. With ``--batch-norm running``
  chunking is exact.

Steps are first order: a user's task needs no meta-gradient.
"""
from __future__ import annotations

import logging
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from engine.methods.inner_loop import Weights, detached_copy, sgd_step
from engine.methods.oom import is_oom

log = logging.getLogger(__name__)
MAX_HALVINGS = 6  # a guarded step tries its rate, then up to 6 halvings (1/64 of it)


def adapt_weights(learner: Any, x: Tensor, y: Tensor, way: int, steps: int,
                  chunk: int | None = None) -> tuple[Weights, Weights]:
    # learner: a GradientLearner, not imported (gradient_base imports this module).
    """The fast weights after up to ``steps`` guarded steps on examples ``(x, y)`` and
    the support statistics queries are to be normalized with under them. ``chunk``:
    examples per forward pass (default all); halved on out-of-memory."""
    chunk = chunk or x.shape[0]
    while True:
        try:
            return _adapt(learner, x, y, way, steps, chunk)
        except (RuntimeError, torch.cuda.OutOfMemoryError) as e:
            if not is_oom(e) or chunk <= 1:
                raise
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        chunk = (chunk + 1) // 2
        log.warning("out of memory adapting to %d examples; continuing in batches of %d", x.shape[0], chunk)


def _adapt(learner: Any, x: Tensor, y: Tensor, way: int, steps: int,
           chunk: int) -> tuple[Weights, Weights]:
    with torch.no_grad():  # the start needs no graph here: first-order steps start from leaves
        weights = {k: v.detach() for k, v in learner.start_weights(x, y, way, chunk).items()}
    names = learner.adapted_names()
    for step in range(steps):
        loss, grads = _loss_and_grads(learner, weights, names, x, y, chunk)
        taken = _guarded_step(learner, weights, names, grads, learner.rates(step, names), loss, x, y, chunk,
                              step + 1)
        if taken is None:
            log.info("adapting stopped at step %d: no step fitted the examples better", step)
            break
        weights = taken
    with torch.no_grad():
        _, stats = _pass(learner, weights, x, y, chunk)
    return weights, stats


def _loss_and_grads(learner: Any, weights: Weights, names: list[str], x: Tensor, y: Tensor,
                    chunk: int) -> tuple[float, list[Tensor]]:
    """The mean cross-entropy over the examples and its gradient, chunk by chunk."""
    total = 0.0
    grads = [torch.zeros_like(weights[n]) for n in names]
    n = x.shape[0]
    for lo in range(0, n, chunk):
        current = detached_copy(weights, names)
        with torch.enable_grad():
            z, _ = learner.support_embed(current, x[lo:lo + chunk])
            loss = F.cross_entropy(learner.net.head(current, z), y[lo:lo + chunk], reduction="sum") / n
            parts = torch.autograd.grad(loss, [current[k] for k in names], allow_unused=True)
        for g, part in zip(grads, parts):
            if part is not None:
                g += part
        total += float(loss.detach())
    return total, grads


def _pass(learner: Any, weights: Weights, x: Tensor, y: Tensor, chunk: int) -> tuple[float, Weights]:
    """The mean loss under ``weights`` (no graph) and the support statistics pooled
    over the chunks (each chunk's mean and variance, weighted by its size)."""
    n = x.shape[0]
    total = 0.0
    sums: dict[str, list[Tensor]] = {}
    for lo in range(0, n, chunk):
        xc, yc = x[lo:lo + chunk], y[lo:lo + chunk]
        z, stats = learner.support_embed(weights, xc)
        total += float(F.cross_entropy(learner.net.head(weights, z), yc, reduction="sum")) / n
        share = xc.shape[0] / n
        for key, value in stats.items():
            if key.endswith("running_var"):
                mean = stats[key[:-len("running_var")] + "running_mean"]
                value = value + mean * mean  # E[x^2]: variances pool through second moments
            acc = sums.setdefault(key, [torch.zeros_like(value)])
            acc[0] = acc[0] + share * value
    pooled = {k: v[0] for k, v in sums.items()}
    for key in pooled:
        if key.endswith("running_var"):
            mean = pooled[key[:-len("running_var")] + "running_mean"]
            pooled[key] = (pooled[key] - mean * mean).clamp_min(0)
    return total, pooled


def _guarded_step(learner: Any, weights: Weights, names: list[str], grads: list[Tensor],
                  rates: list, loss: float, x: Tensor, y: Tensor, chunk: int, step: int) -> Weights | None:
    scale = 1.0
    for _ in range(MAX_HALVINGS + 1):
        with torch.no_grad():
            candidate = learner.with_step_bn(sgd_step(weights, names, grads, [r * scale for r in rates]), step)
            candidate = {k: v.detach() for k, v in candidate.items()}
            after, _ = _pass(learner, candidate, x, y, chunk)
        if math.isfinite(after) and after <= loss:
            return candidate
        scale /= 2
    return None

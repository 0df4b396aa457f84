"""Bayesian MAML (Kim, Yoon, Dia, Kim, Bengio & Ahn 2018): the inner loop is Stein
variational gradient descent over M particles, so the adapted particles are samples
from an approximate posterior rather than M independent fits.

An SVGD step moves particle m by
``phi_m = 1/M sum_j [ k(theta_j, theta_m) grad log p(D | theta_j) + grad_theta_j k(theta_j, theta_m) ]``:
the first term pulls particles towards networks that fit the examples, kernel-weighted;
the second pushes them apart, which keeps the ensemble from collapsing to one answer.
``k`` is an RBF kernel on the flattened adapted weights with the median bandwidth
(h = median squared distance between particles / log(M + 1)). ``log p(D | theta)`` is minus the mean
cross-entropy on the examples (a tempered likelihood, so ``--inner-lr`` means what it
means for MAML). The outer loss is the query NLL of the particles' average prediction
(the paper's "Bayesian fast adaptation" loss, without its chaser). Inner steps are first
order: each step's gradients are constants, the meta-gradient flows through the
particles' starts. At test time a step is taken only if the particles' mean loss on the
examples does not rise (its rate halved up to six times), as for the MAML family.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from engine.methods.base import Predictor, check_support
from engine.methods.gradient_base import AdaptedNetwork
from engine.methods.inner_loop import Weights, detached_copy, inner_grads, training_mode
from engine.methods.particles import EnsembleNetwork, ParticleLearner

MAX_HALVINGS = 6


def svgd_directions(flat: Tensor, grads: Tensor) -> Tensor:
    """SVGD's update directions (M, P) for particles ``flat`` (M, P) with log-likelihood
    gradients ``grads`` (M, P)."""
    m = flat.shape[0]
    sq = torch.cdist(flat, flat).pow(2)
    off = sq[~torch.eye(m, dtype=torch.bool, device=sq.device)]  # the zero diagonal would pull the median down
    h = (off.median() if off.numel() else sq.new_ones(())).clamp_min(1e-12) / math.log(m + 1)
    k = torch.exp(-sq / h)  # k[j, i] = k(theta_j, theta_i), symmetric
    attract = k @ grads  # sum_j k_ji grad_j
    # grad_{theta_j} k(theta_j, theta_i) = -2 / h (theta_j - theta_i) k_ji, summed over j
    repulse = (2 / h) * (k.sum(0, keepdim=True).T * flat - k @ flat)
    return (attract + repulse) / m


class BMAML(ParticleLearner):
    name = "bmaml"
    description = ("Bayesian MAML: the examples are learned by Stein variational gradient descent over several "
                   "particles, a posterior whose disagreement is the epistemic uncertainty (Kim et al. 2018)")

    def svgd_loop(self, x: Tensor, y: Tensor, way: int, steps: int, guard: bool) -> list[tuple[Weights, Weights]]:
        """Each particle's adapted weights and support statistics after ``steps`` SVGD steps."""
        names = self.adapted_names()
        starts = []
        for m in range(self.config.particles):
            with self.particle(m):
                starts.append(self.start_weights(x, y, way))
        particles = starts
        for step in range(steps):
            losses, grads = [], []
            for w in particles:
                current = detached_copy(w, names)
                z, _ = self.support_embed(current, x)
                loss = F.cross_entropy(self.net.head(current, z), y)
                losses.append(float(loss.detach()))
                grads.append(torch.cat([g.reshape(-1) for g in inner_grads(loss, current, names, False)]))
            flat = torch.stack([torch.cat([w[n].detach().reshape(-1) for n in names]) for w in particles])
            phi = svgd_directions(flat, -torch.stack(grads))  # ascent on the log-likelihood
            rate = self.config.inner_lr
            for _ in range(MAX_HALVINGS + 1 if guard else 1):
                moved = [self._moved(w, names, phi[i] * rate) for i, w in enumerate(particles)]
                if not guard or self._mean_loss(moved, x, y) <= sum(losses) / len(losses):
                    break
                rate /= 2
            else:
                break  # no rate fitted the examples better: stop adapting
            particles = moved
        out = []
        for w in particles:
            with torch.no_grad():
                _, stats = self.support_embed(detached_copy(w, names), x)
            out.append((w, stats))
        return out

    @staticmethod
    def _moved(w: Weights, names: list[str], delta: Tensor) -> Weights:
        new, offset = dict(w), 0
        for n in names:
            size = w[n].numel()
            new[n] = w[n] + delta[offset:offset + size].reshape(w[n].shape)
            offset += size
        return new

    def _mean_loss(self, particles: list[Weights], x: Tensor, y: Tensor) -> float:
        with torch.no_grad():
            total = 0.0
            for w in particles:
                z, _ = self.support_embed(w, x)
                total += float(F.cross_entropy(self.net.head(w, z), y))
        return total / len(particles) if math.isfinite(total) else math.inf

    def meta_loss(self, episode) -> tuple[Tensor, dict[str, float]]:
        with torch.enable_grad():
            ends = self.svgd_loop(episode.support_x, episode.support_y, episode.way, self.config.inner_steps,
                                  guard=False)
            logits = torch.stack([self.query_logits(w, s, episode.query_x) for w, s in ends])
            loss, log_avg = self.ensemble_loss(logits, episode.query_y)
        acc = (log_avg.argmax(1) == episode.query_y).float().mean()
        return loss, {"loss": float(loss.detach()), "acc": float(acc)}

    def adapt(self, support_x: Tensor, support_y: Tensor, n_classes: int | None = None) -> Predictor:
        n = check_support(support_y, n_classes, support_x.shape[0])
        steps = self.config.test_inner_steps or self.config.inner_steps
        with torch.enable_grad(), training_mode(self, False):
            ends = self.svgd_loop(support_x, support_y, n, steps, guard=True)
        scale = float(self.log_scale.detach().exp())
        members = [AdaptedNetwork(self.net, {k: v.detach() for k, v in w.items()}, s, scale, n, self.config.batch_norm)
                   for w, s in ends]
        return EnsembleNetwork.of(members, support_x, support_y)

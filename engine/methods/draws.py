"""What Bayesian heads share: predictions averaged over draws from a posterior, and
draws that the same examples always repeat.

With draws' logits (S, N, C): the probabilities are the draws' average (Bayesian model
averaging); ``entropy`` is the average's (total uncertainty), ``aleatoric`` the draws'
mean entropy (what stays uncertain whichever draw is right), and ``mutual_info`` (BALD,
epistemic) the difference, how much the draws disagree: never negative (Jensen).
"""
from __future__ import annotations

import hashlib

import torch
from torch import Tensor


def average_draws(logits: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(probs (N, C), entropy, aleatoric, mutual_info (N,)) from draws' logits (S, N, C)."""
    log_p = torch.log_softmax(logits, dim=2)
    p = log_p.exp()
    aleatoric = -(p * log_p).sum(2).mean(0)
    probs = p.mean(0)
    entropy = -(probs * probs.clamp_min(1e-30).log()).sum(1)
    return probs, entropy, aleatoric, (entropy - aleatoric).clamp_min(0)  # the clamp removes rounding


def canonical(z: Tensor, y: Tensor) -> tuple[Tensor, Tensor, int]:
    """The examples in a canonical order (by label, then by content) and a seed from
    them, so the same examples give the same draws and the same fitted values in any
    order, across refreshes and resumed runs."""
    rows = [bytes(r) for r in z.detach().float().cpu().numpy()]
    order = sorted(range(len(rows)), key=lambda i: (int(y[i]), rows[i]))
    h = hashlib.sha256()
    for i in order:
        h.update(str(int(y[i])).encode())
        h.update(rows[i])
    perm = torch.tensor(order, dtype=torch.long, device=z.device)
    return z[perm], y[perm], int.from_bytes(h.digest()[:8], "little") & ((1 << 63) - 1)


def antithetic_normals(shape: tuple[int, int], generator: torch.Generator | None, like: Tensor) -> Tensor:
    """(S, C) standard normals in pairs (x, -x): an average over them has no first-order
    noise left, so a finite number of draws does not move which class is most probable."""
    s, c = shape
    half = torch.randn((s + 1) // 2, c, generator=generator, dtype=like.dtype, device=like.device)
    return torch.cat([half, -half])[:s]

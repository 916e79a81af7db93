"""The losses of the conditional GAN of :mod:`models.gan`, and its label-noise helpers.

- :func:`discriminator_loss` / :func:`generator_loss`: the hinge loss of a projection
  discriminator, plus an auxiliary classifier's cross-entropy (``ac_weight``);
- :func:`noisy_labels` passes the labels the generator was asked for through the
  label-noise transition ``T[i, j] = P(observed j | true i)`` before the discriminator
  sees them (the noise-aware arm), :func:`noisy_cross_entropy` is the forward-corrected
  cross-entropy of observed labels under a clean-label classifier, and
  :func:`check_transition` validates ``T``;
- :func:`mode_seeking_loss`: the mode-seeking regulariser.

With ``T`` the identity every term reduces exactly to the plain loss.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "NOISE_MODES",
    "check_transition",
    "discriminator_loss",
    "generator_loss",
    "mode_seeking_loss",
    "noisy_cross_entropy",
    "noisy_labels",
]

#: How the noise-aware loss applies ``T``: sample a noisy label, or project ``T[y]``.
NOISE_MODES = ("sample", "soft")


def mode_seeking_loss(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Mode-seeking regulariser (Mao et al., 2019) for pairs sharing a label.

    The first and second halves of ``x (N, C, H, W)`` were generated from the same labels
    with latents ``z (N, Z)``; returns ``1 / (mean|x1 - x2| / mean|z1 - z2| + 1e-5)``, small
    when different latents give different images.
    """
    half = x.shape[0] // 2
    dx = (x[:half].float() - x[half : 2 * half].float()).abs().mean(dim=(1, 2, 3))
    dz = (z[:half] - z[half : 2 * half]).abs().mean(dim=1)
    return 1.0 / ((dx / dz).mean() + 1e-5)


def check_transition(transition: np.ndarray | torch.Tensor, n_classes: int) -> np.ndarray:
    """Validate a ``(K, K)`` row-stochastic transition matrix and return it as float64."""
    t = np.asarray(transition.cpu() if torch.is_tensor(transition) else transition, dtype=float)
    if t.shape != (n_classes, n_classes):
        raise ValueError(
            f"`transition` must have shape ({n_classes}, {n_classes}). Got {t.shape} instead."
        )
    if not np.all(np.isfinite(t)) or t.min() < 0:
        raise ValueError("`transition` must hold finite, non-negative probabilities.")
    if not np.allclose(t.sum(axis=1), 1.0, atol=1e-3):
        raise ValueError(
            "`transition` rows must sum to 1 (T[i, j] = P(observed j | true i)). "
            f"Got row sums {np.round(t.sum(axis=1), 3).tolist()} instead."
        )
    return t / t.sum(axis=1, keepdims=True)


def noisy_labels(
    y: torch.Tensor,
    transition: torch.Tensor | None,
    *,
    mode: str = "sample",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pass clean labels ``y (N,)`` through ``T (K, K)``.

    ``mode="sample"`` draws ``y' ~ T[y]`` (int64 ``(N,)``) by inverse-CDF sampling on the
    labels' device, with no host synchronisation; ``mode="soft"`` returns the distributions
    ``T[y]`` (float ``(N, K)``). ``transition=None`` returns ``y`` unchanged.
    """
    if transition is None:
        return y
    rows = transition[y]  # (N, K)
    if mode == "soft":
        return rows
    if mode != "sample":
        raise ValueError(f"`mode` must be one of {NOISE_MODES}. Got {mode!r} instead.")
    u = 1.0 - torch.rand(y.shape[0], 1, device=y.device, generator=generator)  # (0, 1]
    cdf = rows.cumsum(dim=1)
    return (cdf < u).sum(dim=1).clamp_(max=transition.shape[0] - 1)


def noisy_cross_entropy(
    logits: torch.Tensor, observed: torch.Tensor, transition: torch.Tensor | None = None
) -> torch.Tensor:
    """Cross-entropy of observed (noisy) labels under a clean-label classifier.

    ``logits (N, K)`` model the clean label; with ``transition (K, K)`` the observed label's
    probability is ``(softmax(logits) @ T)[s]`` (forward loss correction, Patrini et al.,
    2017), computed in log space so that ``T`` = identity gives exactly the plain
    cross-entropy.
    """
    logp = F.log_softmax(logits.float(), dim=1)  # (N, K) clean
    if transition is not None:
        logp = torch.logsumexp(logp[:, :, None] + transition.log()[None], dim=1)  # (N, K) noisy
    return F.nll_loss(logp, observed)


def discriminator_loss(
    disc: nn.Module,
    x_real: torch.Tensor,
    y_real: torch.Tensor,
    x_fake: torch.Tensor,
    y_fake: torch.Tensor,
    *,
    transition: torch.Tensor | None = None,
    mode: str = "sample",
    generator: torch.Generator | None = None,
    ac_weight: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hinge loss of the discriminator; returns ``(loss, mean D(real), mean D(fake))``.

    Real images are scored with their observed labels, fakes with their (clean) labels
    passed through ``transition`` when one is given. With ``ac_weight > 0`` the auxiliary
    classifier also learns the real images' labels, through ``transition``
    (:func:`noisy_cross_entropy`), so that it models the clean labels.
    """
    if ac_weight > 0:
        d_real, logits = disc(x_real, y_real, with_logits=True)
    else:
        d_real = disc(x_real, y_real)
    d_real = d_real.float()
    d_fake = disc(x_fake, noisy_labels(y_fake, transition, mode=mode, generator=generator))
    d_fake = d_fake.float()
    loss = F.relu(1.0 - d_real).mean() + F.relu(1.0 + d_fake).mean()
    if ac_weight > 0:
        loss = loss + ac_weight * noisy_cross_entropy(logits, y_real, transition)
    return loss, d_real.mean(), d_fake.mean()


def generator_loss(
    disc: nn.Module,
    x_fake: torch.Tensor,
    y_fake: torch.Tensor,
    *,
    transition: torch.Tensor | None = None,
    mode: str = "sample",
    generator: torch.Generator | None = None,
    ac_weight: float = 0.0,
) -> torch.Tensor:
    """Hinge loss of the generator, ``-mean D(G(z, y), T(y))``.

    With ``ac_weight > 0``, plus the auxiliary classifier's cross-entropy of the clean
    labels ``y`` (the classifier models clean labels; rAC-GAN, Kaneko et al., 2019).
    """
    y_seen = noisy_labels(y_fake, transition, mode=mode, generator=generator)
    if ac_weight <= 0:
        return -disc(x_fake, y_seen).float().mean()
    scores, logits = disc(x_fake, y_seen, with_logits=True)
    return -scores.float().mean() + ac_weight * noisy_cross_entropy(logits, y_fake)

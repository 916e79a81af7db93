"""The networks of the conditional GAN of :mod:`models.gan`: the generator, the projection
discriminator and the differentiable augmentation the discriminator sees.

The generator maps ``(z, y)`` to an image: a linear layer to a ``(c0, s0h, s0w)`` map, then
``n_up`` stride-2 transposed convolutions with class-conditional batch norm, ``tanh``, and a
centre crop to the data's size (so 28x28 is generated natively as 7 -> 14 -> 28 and, say,
10x10 as 5 -> 10). The depth follows the image size (:func:`layout`, 8 to 64 px a side,
grey, RGB or RGBA: only the last layer's channels differ)::

    8 px      4 -> 8                      n_up 1
    16 px     4 -> 8 -> 16                n_up 2
    28 px     7 -> 14 -> 28               n_up 2
    32 px     4 -> 8 -> 16 -> 32          n_up 3
    64 px     4 -> 8 -> 16 -> 32 -> 64    n_up 4

and the width from :meth:`models.gan.GANConfig.for_data`.

The discriminator mirrors the generator with spectrally normalised stride-2 convolutions,
a minibatch standard-deviation channel and a last 3x3 convolution, sums that map over
space into ``phi(x)`` and scores ``w . phi(x) + <embed(y), phi(x)>`` (projection,
Miyato & Koyama, 2018); an auxiliary linear classifier on ``phi`` (weight ``ac_weight``)
learns the real images' labels and asks the generator for classifiable samples. The loss
is the hinge loss. Small datasets and short budgets are what this model is for, so the
discriminator sees every image through differentiable augmentation (translation), and a
mode-seeking term keeps the generator from ignoring its latent.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

if TYPE_CHECKING:
    from assay.models.gan import GANConfig

__all__ = [
    "AUGMENTATIONS",
    "ConditionalBatchNorm2d",
    "Discriminator",
    "Generator",
    "diff_augment",
    "layout",
    "minibatch_stddev",
]

#: The policies :func:`diff_augment` knows.
AUGMENTATIONS = ("translation", "cutout")


def layout(height: int, width: int) -> tuple[int, int, int]:
    """``(n_up, s0h, s0w)``: upsamplings and the starting map size for an ``H x W`` image.

    ``n_up = floor(log2(min(H, W) / 4))`` (at least 1) and ``s0 = ceil(size / 2**n_up)``, so
    the generated map is at least as large as the image and is centre-cropped to it:
    8 -> (1, 4, 4), 28 -> (2, 7, 7), 32 -> (3, 4, 4), 64 -> (4, 4, 4).
    """
    n_up = max(1, int(math.floor(math.log2(min(height, width) / 4))))
    return n_up, math.ceil(height / 2**n_up), math.ceil(width / 2**n_up)


class ConditionalBatchNorm2d(nn.Module):
    """Batch norm whose scale and shift are looked up per class: ``(N, C, H, W)``, ``(N,)``."""

    def __init__(self, channels: int, n_classes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.embed = nn.Embedding(n_classes, 2 * channels)
        nn.init.zeros_(self.embed.weight)  # starts as plain batch norm (scale 1, shift 0)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.embed(y).chunk(2, dim=1)  # (N, C) each
        return self.bn(x) * (1.0 + gamma[:, :, None, None]) + beta[:, :, None, None]


class Generator(nn.Module):
    """``(z (N, z_dim), y (N,)) -> images (N, C, H, W)`` in ``[-1, 1]``."""

    def __init__(self, config: GANConfig) -> None:
        super().__init__()
        c_img, h, w = config.image_shape
        self.out_hw = (h, w)
        self.n_up, self.s0h, self.s0w = layout(h, w)
        chans = [config.width * 2 ** (self.n_up - 1 - i) for i in range(self.n_up)]
        self.c0 = chans[0]
        self.embed = nn.Embedding(config.n_classes, config.z_dim)
        self.fc = nn.Linear(2 * config.z_dim, self.c0 * self.s0h * self.s0w)
        self.bn0 = ConditionalBatchNorm2d(self.c0, config.n_classes)
        self.ups = nn.ModuleList()
        self.bns = nn.ModuleList()
        for c_in, c_out in zip(chans[:-1], chans[1:], strict=True):
            self.ups.append(nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False))
            self.bns.append(ConditionalBatchNorm2d(c_out, config.n_classes))
        self.to_img = nn.ConvTranspose2d(chans[-1], c_img, 4, 2, 1)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.fc(torch.cat([z, self.embed(y)], dim=1))  # (N, c0 * s0h * s0w)
        h = h.view(-1, self.c0, self.s0h, self.s0w)
        h = F.relu(self.bn0(h, y))
        for up, bn in zip(self.ups, self.bns, strict=True):
            h = F.relu(bn(up(h), y))  # (N, c, 2s, 2s)
        x = torch.tanh(self.to_img(h))  # (N, C, s0h * 2**n_up, s0w * 2**n_up)
        top = (x.shape[2] - self.out_hw[0]) // 2
        left = (x.shape[3] - self.out_hw[1]) // 2
        return x[:, :, top : top + self.out_hw[0], left : left + self.out_hw[1]]


def minibatch_stddev(h: torch.Tensor, group: int = 4) -> torch.Tensor:
    """Append the mean feature standard deviation over groups of samples as one channel.

    ``h (N, C, H, W) -> (N, C + 1, H, W)`` (Karras et al., 2018). A generator that ignores
    its latent produces groups with too little spread, which the discriminator can see.
    The group size is the largest of ``group, 2, 1`` dividing ``N``.
    """
    n = h.shape[0]
    g = next(s for s in (group, 2, 1) if n % s == 0 and s <= n)
    hs = h.float().reshape(g, n // g, *h.shape[1:])
    var = (hs - hs.mean(dim=0)).square().mean(dim=0)  # (N / g, C, H, W); faster than .var
    sd = (var + 1e-8).sqrt().mean(dim=(1, 2, 3))  # (N / g,)
    sd = sd.repeat(g).reshape(n, 1, 1, 1).expand(n, 1, h.shape[2], h.shape[3]).to(h.dtype)
    return torch.cat([h, sd], dim=1)


class Discriminator(nn.Module):
    """Projection discriminator: ``(x (N, C, H, W), y) -> scores (N,)``.

    ``y`` is either class indices ``(N,)`` or label distributions ``(N, K)``; for the
    latter the class embedding is the distribution's expectation ``y @ E``.
    """

    def __init__(self, config: GANConfig) -> None:
        super().__init__()
        c_img, h, w = config.image_shape
        n_down, _, _ = layout(h, w)
        chans = [config.width * 2**i for i in range(n_down)]
        layers: list[nn.Module] = []
        c_in = c_img
        for c_out in chans:
            layers += [spectral_norm(nn.Conv2d(c_in, c_out, 4, 2, 1)), nn.LeakyReLU(0.1)]
            c_in = c_out
        self.body = nn.Sequential(*layers)
        self.mbstd = bool(config.minibatch_std)
        self.last = spectral_norm(nn.Conv2d(c_in + int(self.mbstd), 2 * c_in, 3, 1, 1))
        self.n_features = 2 * c_in
        self.linear = spectral_norm(nn.Linear(self.n_features, 1))
        self.embed = spectral_norm(nn.Embedding(config.n_classes, self.n_features))
        self.classifier = nn.Linear(self.n_features, config.n_classes)  # auxiliary head

    def forward(
        self, x: torch.Tensor, y: torch.Tensor, *, with_logits: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Scores ``(N,)``; with ``with_logits`` also the auxiliary class logits ``(N, K)``."""
        h = self.body(x)  # (N, C', H', W')
        if self.mbstd:
            h = minibatch_stddev(h)
        h = F.leaky_relu(self.last(h), 0.1)  # (N, F, H', W')
        phi = h.sum(dim=(2, 3))  # (N, F)
        if y.dtype.is_floating_point:
            emb = y.to(phi.dtype) @ self.embed.weight.to(phi.dtype)  # (N, K) @ (K, F)
        else:
            emb = self.embed(y)  # (N, F)
        scores = self.linear(phi).squeeze(1) + (emb * phi).sum(dim=1)
        if not with_logits:
            return scores
        return scores, self.classifier(phi / (h.shape[2] * h.shape[3]))


def diff_augment(
    x: torch.Tensor,
    policy: str = "translation,cutout",
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Differentiable augmentation (Zhao et al., 2020) of ``x (N, C, H, W)``.

    ``policy`` is a comma-separated subset of :data:`AUGMENTATIONS`: ``translation`` shifts
    every image by up to 1/8 of its size (filling with -1), ``cutout`` sets one square of
    half its size to 0. Applied to real and fake images alike before the discriminator, so
    it cannot memorise a small training set while the generator still learns the
    un-augmented distribution. Random numbers come from ``generator`` on ``x``'s device
    (no host synchronisation).
    """
    parts = set(filter(None, policy.split(",")))
    n, _, h, w = x.shape
    dev = x.device
    gy = torch.arange(h, device=dev).view(1, h, 1)
    gx = torch.arange(w, device=dev).view(1, 1, w)
    out = x
    if "translation" in parts:
        sh, sw = max(1, h // 8), max(1, w // 8)
        ty = torch.randint(-sh, sh + 1, (n, 1, 1), device=dev, generator=generator)
        tx = torch.randint(-sw, sw + 1, (n, 1, 1), device=dev, generator=generator)
        src_y = (gy - ty).clamp(-1, h) + 1  # (N, H, 1) rows of the padded image
        src_x = (gx - tx).clamp(-1, w) + 1  # (N, 1, W)
        padded = F.pad(out, (1, 1, 1, 1), value=-1.0)  # (N, C, H + 2, W + 2)
        batch = torch.arange(n, device=dev).view(n, 1, 1)
        out = padded.permute(0, 2, 3, 1)[batch, src_y, src_x].permute(0, 3, 1, 2)
    if "cutout" in parts:
        ch, cw = h // 2, w // 2
        cy = torch.randint(0, h - ch + 1, (n, 1, 1), device=dev, generator=generator)
        cx = torch.randint(0, w - cw + 1, (n, 1, 1), device=dev, generator=generator)
        keep = ~(((gy - cy) >= 0) & ((gy - cy) < ch) & ((gx - cx) >= 0) & ((gx - cx) < cw))
        out = out * keep.unsqueeze(1).to(out.dtype)
    if x.is_contiguous(memory_format=torch.channels_last):
        out = out.contiguous(memory_format=torch.channels_last)
    return out

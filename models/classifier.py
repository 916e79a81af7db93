"""A small convolutional classifier, its trainer, and its predictions + embeddings.

The detection stage trains this network once per cross-validation fold to get
out-of-sample predicted probabilities (for cleanlab) and a penultimate-layer embedding
(the feature space of the kNN-based detectors).

Architecture (:class:`SmallCNN`)::

    x (N, C, H, W) in [0, 1]
      -> [conv k x k -> MaxPool 2 -> BatchNorm -> ReLU]  per entry of ``widths``
         (the first conv is 5x5 on images of 16 px and up, 3x3 below; pooling stops
         once the feature map would drop under 4 px; pooling before normalisation and
         activation does the same job on a quarter of the pixels)
      -> flatten -> dropout -> Linear(hidden) -> ReLU       = embedding (N, hidden)
      -> dropout -> Linear(K)                                = logits (N, K)

Training (:func:`fit_classifier`): AdamW with a one-cycle learning rate, label smoothing,
light random affine augmentation (shift, rotation, scale) done on the device with
``affine_grid``/``grid_sample``; the whole training set lives on the device, so there is
no data loader and no per-step host sync. Channels-last memory format everywhere (faster
convolutions and pooling on CPU too); bf16 autocast on CUDA. Everything random draws
from one seeded generator, so the same seed on the same device gives the same network.

Usage::

    config = ClassifierConfig.for_images(images.shape)
    model = fit_classifier(images, labels, n_classes=10, config=config, seed=0)
    probs, embedding = predict_classifier(model, images)   # (N, K), (N, hidden)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from assay.models.device import autocast, pick_device

__all__ = [
    "ClassifierConfig",
    "SmallCNN",
    "fit_classifier",
    "predict_classifier",
    "to_tensor",
]


# ----------------------------------------------------------------------------- config
@dataclass(frozen=True)
class ClassifierConfig:
    """Everything that defines the classifier and how it is trained.

    Parameters
    ----------
    widths : tuple of int
        Output channels of each conv block (one 2x max-pool after each while the map
        stays at least 4 px).
    hidden : int
        Width of the penultimate layer, i.e. the embedding size ``D``.
    dropout : float
        Dropout before the hidden and before the output layer.
    epochs, batch_size : int
        Training length and minibatch size.
    lr, weight_decay : float
        Peak learning rate of the one-cycle schedule and AdamW weight decay.
    label_smoothing : float
        Cross-entropy label smoothing; it also slows memorisation of wrong labels.
    mixup : float
        ``alpha`` of mixup (pairs of images blended with weight ``Beta(alpha, alpha)``,
        their losses likewise); 0 turns it off.
    shift, rotation, scale : float
        Augmentation: maximum translation as a fraction of the image side, maximum
        rotation in degrees, maximum relative zoom. All zero turns augmentation off.
    eval_batch_size : int
        Minibatch size of :func:`predict_classifier`.
    """

    widths: tuple[int, ...] = (16, 32)
    hidden: int = 128
    dropout: float = 0.3
    epochs: int = 12
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    mixup: float = 0.0
    shift: float = 0.08
    rotation: float = 10.0
    scale: float = 0.1
    eval_batch_size: int = 1024

    def __post_init__(self) -> None:
        if not self.widths or any(int(w) < 1 for w in self.widths):
            raise ValueError(f"`widths` must be positive integers. Got {self.widths} instead.")
        for name in ("hidden", "epochs", "batch_size", "eval_batch_size"):
            value = getattr(self, name)
            if int(value) < 1:
                raise ValueError(f"`{name}` must be >= 1. Got {value} instead.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1). Got {self.dropout} instead.")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(
                f"`label_smoothing` must be in [0, 1). Got {self.label_smoothing} instead."
            )
        if self.lr <= 0:
            raise ValueError(f"`lr` must be > 0. Got {self.lr} instead.")

    @classmethod
    def for_images(cls, shape: tuple[int, ...], **overrides: Any) -> ClassifierConfig:
        """Defaults for images of ``shape`` ``(N, H, W[, C])``, then ``overrides``.

        Tiny images (under 16 px) get 3x3 convolutions, shift-only augmentation by one
        pixel and more epochs (an epoch is cheap there).
        """
        side = min(int(shape[1]), int(shape[2]))
        if side < 16:
            base = cls(
                widths=(32, 64),
                hidden=128,
                epochs=30,
                batch_size=64,
                shift=1.0 / side,
                rotation=0.0,
                scale=0.0,
            )
        else:
            base = cls()
        return replace(base, **overrides)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["widths"] = list(self.widths)
        return out


# ----------------------------------------------------------------------------- model
class SeededDropout(nn.Module):
    """Dropout that draws its masks from :attr:`generator` (set by the trainer), not from
    torch's global generator, so several models can train at once in threads and each
    stays reproducible."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = float(p)
        self.generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand(x.shape, device=x.device, generator=self.generator) >= self.p
        return x * keep.to(x.dtype) / (1.0 - self.p)


class SmallCNN(nn.Module):
    """Conv blocks + a two-layer head; :meth:`forward` returns logits and embedding.

    Parameters
    ----------
    in_channels : int
        ``C`` of the input images.
    n_classes : int
        ``K``, the number of outputs.
    image_size : tuple of int
        ``(H, W)`` of the input images.
    config : ClassifierConfig
    """

    def __init__(
        self,
        in_channels: int,
        n_classes: int,
        image_size: tuple[int, int],
        config: ClassifierConfig,
    ) -> None:
        super().__init__()
        h, w = int(image_size[0]), int(image_size[1])
        layers: list[nn.Module] = []
        c_in = in_channels
        for i, width in enumerate(config.widths):
            k = 5 if i == 0 and min(h, w) >= 16 else 3
            layers.append(nn.Conv2d(c_in, width, k, padding=k // 2, bias=False))
            if min(h, w) // 2 >= 4:
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            layers += [nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            c_in = width
        self.features = nn.Sequential(*layers)
        self.embed = nn.Sequential(
            nn.Flatten(),
            SeededDropout(config.dropout),
            nn.Linear(c_in * h * w, config.hidden),
            nn.ReLU(inplace=True),
        )
        self.head = nn.Sequential(
            SeededDropout(config.dropout), nn.Linear(config.hidden, n_classes)
        )

    def reset_parameters(self, generator: torch.Generator) -> SmallCNN:
        """Initialise every weight from ``generator`` (CPU), with PyTorch's default
        distributions for convolutions and linear layers; BatchNorm to identity."""
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, nn.Conv2d | nn.Linear):
                    nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=generator)
                    if m.bias is not None:
                        bound = 1.0 / math.sqrt(max(1, m.weight[0].numel()))
                        nn.init.uniform_(m.bias, -bound, bound, generator=generator)
                elif isinstance(m, nn.BatchNorm2d):
                    m.reset_parameters()
        return self

    def set_dropout_generator(self, generator: torch.Generator | None) -> None:
        for m in self.modules():
            if isinstance(m, SeededDropout):
                m.generator = generator

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` (N, C, H, W) -> (logits (N, K), embedding (N, hidden))."""
        z = self.embed(self.features(x))
        return self.head(z), z


# ----------------------------------------------------------------------------- data
def to_tensor(images: np.ndarray, device: torch.device | str | None = None) -> torch.Tensor:
    """uint8 ``(N, H, W)`` or ``(N, H, W, C)`` -> float32 ``(N, C, H, W)`` in [0, 1].

    The conversion happens on ``device`` (uint8 travels, a quarter of the bytes).
    """
    dev = pick_device(None if device is None else str(device))
    x = torch.from_numpy(np.array(images, dtype=np.uint8, copy=True)).to(dev)
    if x.ndim == 3:
        x = x.unsqueeze(1)
    else:
        x = x.permute(0, 3, 1, 2)
    return x.float().div_(255.0).contiguous(memory_format=torch.channels_last)


def _augment(
    x: torch.Tensor, config: ClassifierConfig, generator: torch.Generator
) -> torch.Tensor:
    """Random affine (shift, rotation, zoom) of a batch ``(B, C, H, W)``; same shape back."""
    if config.shift <= 0 and config.rotation <= 0 and config.scale <= 0:
        return x
    b = x.shape[0]
    u = torch.rand(b, 4, generator=generator).mul_(2).sub_(1).to(x.device)
    angle = u[:, 0] * math.radians(config.rotation)
    zoom = 1.0 + u[:, 1] * config.scale
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack(
        [
            torch.stack([cos, -sin, u[:, 2] * 2 * config.shift], dim=1),
            torch.stack([sin, cos, u[:, 3] * 2 * config.shift], dim=1),
        ],
        dim=1,
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


# ----------------------------------------------------------------------------- training
def fit_classifier(
    images: np.ndarray | torch.Tensor,
    labels: np.ndarray,
    *,
    n_classes: int,
    config: ClassifierConfig | None = None,
    seed: int = 0,
    device: torch.device | str | None = "auto",
    sample_weight: np.ndarray | None = None,
    on_epoch: Callable[[int, float, SmallCNN], None] | None = None,
) -> SmallCNN:
    """Train a :class:`SmallCNN` on ``images`` and ``labels``.

    Parameters
    ----------
    images : ndarray or Tensor
        uint8 ``(N, H, W[, C])``, or a float tensor ``(N, C, H, W)`` in [0, 1] already on
        ``device`` (see :func:`to_tensor`).
    labels : ndarray
        int ``(N,)`` in ``0..n_classes-1``.
    n_classes : int
        ``K``.
    config : ClassifierConfig, optional
        Defaults to :meth:`ClassifierConfig.for_images`.
    seed : int
        Seeds initialisation, shuffling, dropout and augmentation.
    device : str or torch.device
        ``"auto"`` picks CUDA when present.
    sample_weight : ndarray, optional
        float ``(N,)`` per-sample loss weights (default all ones).
    on_epoch : callable, optional
        Called as ``on_epoch(epoch, mean_loss, model)`` after every epoch (the model in
        training mode).

    Returns
    -------
    SmallCNN
        In eval mode, on ``device``.

    Notes
    -----
    The CPU thread count is left as the caller set it (``torch.set_num_threads``); the
    cross-validation in :mod:`pipeline.detect.oof` trains several folds at once in
    threads, one intra-op thread each. On CUDA, cuDNN is switched to its deterministic
    algorithms.
    """
    dev = pick_device(None if device is None else str(device))
    x = images if isinstance(images, torch.Tensor) else to_tensor(images, dev)
    y = torch.as_tensor(np.asarray(labels, dtype=np.int64), device=dev)
    n = x.shape[0]
    if y.shape != (n,):
        raise ValueError(f"`labels` must have shape ({n},). Got {tuple(y.shape)} instead.")
    if config is None:
        config = ClassifierConfig.for_images((n, x.shape[2], x.shape[3]))
    weight = None
    if sample_weight is not None:
        weight = torch.as_tensor(np.asarray(sample_weight, dtype=np.float32), device=dev)

    # All randomness from explicit generators (none from torch's global state), so folds
    # can train concurrently in threads and each stays reproducible.
    generator = torch.Generator().manual_seed(int(seed))
    model = SmallCNN(x.shape[1], n_classes, (x.shape[2], x.shape[3]), config)
    model.reset_parameters(generator)
    model = model.to(dev).to(memory_format=torch.channels_last)
    drop_gen = torch.Generator(device=dev).manual_seed(int(seed) + 1)
    mix_rng = np.random.default_rng(int(seed) + 2)
    model.set_dropout_generator(drop_gen)
    if dev.type == "cuda":
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    batch = max(1, min(config.batch_size, n))
    steps_per_epoch = math.ceil(n / batch)
    # A last batch of one sample would break BatchNorm: fold it into the previous one.
    if n > batch and n % batch == 1:
        steps_per_epoch -= 1
    total = max(1, config.epochs * steps_per_epoch)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=config.lr, total_steps=total, pct_start=0.25
    )
    model.train()
    for epoch in range(config.epochs):
        order = torch.randperm(n, generator=generator).to(dev)
        running = torch.zeros((), device=dev)
        for step in range(steps_per_epoch):
            stop = n if step == steps_per_epoch - 1 else (step + 1) * batch
            idx = order[step * batch : stop]
            if idx.numel() < 2 and n >= 2:
                continue
            xb = _augment(x[idx], config, generator).contiguous(memory_format=torch.channels_last)
            yb = y[idx]
            if config.mixup > 0:
                lam = float(mix_rng.beta(config.mixup, config.mixup))
                partner = torch.randperm(idx.numel(), generator=generator).to(dev)
                xb = lam * xb + (1.0 - lam) * xb[partner]
            with autocast(dev):
                logits, _ = model(xb)
            losses = F.cross_entropy(
                logits.float(), yb, label_smoothing=config.label_smoothing, reduction="none"
            )
            if config.mixup > 0:
                losses = lam * losses + (1.0 - lam) * F.cross_entropy(
                    logits.float(),
                    yb[partner],
                    label_smoothing=config.label_smoothing,
                    reduction="none",
                )
            loss = losses.mean() if weight is None else (losses * weight[idx]).sum() / (
                weight[idx].sum().clamp_min(1e-8)
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running += loss.detach()
        if on_epoch is not None:
            on_epoch(epoch, float(running) / steps_per_epoch, model)
            model.train()
    model.eval()
    model.set_dropout_generator(None)
    return model


@torch.no_grad()
def predict_classifier(
    model: SmallCNN,
    images: np.ndarray | torch.Tensor,
    *,
    batch_size: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities and penultimate embeddings of ``images``.

    Parameters
    ----------
    model : SmallCNN
    images : ndarray or Tensor
        uint8 ``(N, H, W[, C])`` or float ``(N, C, H, W)`` in [0, 1].
    batch_size : int

    Returns
    -------
    probs : ndarray
        float64 ``(N, K)``, rows summing to 1.
    embedding : ndarray
        float32 ``(N, hidden)``.
    """
    dev = next(model.parameters()).device
    x = images if isinstance(images, torch.Tensor) else to_tensor(images, dev)
    model.eval()
    probs, embs = [], []
    for start in range(0, x.shape[0], batch_size):
        with autocast(dev):
            logits, z = model(x[start : start + batch_size])
        probs.append(torch.softmax(logits.float(), dim=1))
        embs.append(z.float())
    p = torch.cat(probs).double().cpu().numpy()
    p /= p.sum(axis=1, keepdims=True)
    return p, torch.cat(embs).cpu().numpy().astype(np.float32)

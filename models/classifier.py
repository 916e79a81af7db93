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

The architecture follows the image size (the shorter side ``s``) and channels ``C``
(:meth:`ClassifierConfig.for_images`); grey and colour images share it, only the first
convolution's input channels differ (``C`` = 1, 3 or 4)::

    s < 16        widths (32, 64), 3x3 convs, one pool    8x8 -> 4x4 map
    16 <= s < 48  widths (16, 32), 5x5 first conv          28 -> 14 -> 7; 32 -> 16 -> 8
    s >= 48       widths (16, 32, 64), 5x5 first conv      64 -> 32 -> 16 -> 8
                  of stride 2, pooling down to 8 px

so the flattened map stays at a few thousand values (the head's size) from 8 px to 64 px
(up to 15x15x64 for sides of 48 to 63 px); tiny images also get shift-only augmentation and
more (cheap) epochs. The stride-2 first convolution on large images (a ResNet-style stem)
sees them at half resolution after one learned 5x5 filter bank; before, a full-resolution
5x5 convolution and a pool made a 64x64x3 fold train at about 1,600 images/s on 2 cores
against 5,300 now (batches of 128). On ``colour64-mixed`` (``benchmarks/detect.py``, 3,000
images, seed 0) the classifier's part of detection went from 112 s to 36 s; label F1 0.927
-> 0.921, ``outlier_score`` AUROC 0.975 -> 0.973 (no clear difference at one seed); a
stem that pooled on down to 4 px was as fast but its kNN-outlier AUROC fell 0.83 -> 0.72
(0.78 with the 8 px map).

Training (:meth:`Classifier.fit`): AdamW with a one-cycle learning rate, label smoothing,
light random affine augmentation (shift, rotation, scale) done on the device with
``affine_grid``/``grid_sample``; the whole training set lives on the device, so there is
no data loader and no per-step host sync. Channels-last memory format everywhere (faster
convolutions and pooling on CPU too); bf16 autocast on CUDA. Everything random draws
from one seeded generator, so the same seed on the same device gives the same network.

Usage::

    clf = Classifier(ClassifierConfig.for_images(images.shape), n_classes=10, seed=0)
    clf.fit(images, labels)
    probs, embedding = clf.predict_with_embedding(images)   # (N, K), (N, hidden)
    clf.save(buffer); Classifier.load(buffer)               # weights only, nothing pickled
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from assay.models.device import autocast, pick_device
from assay.models.tensors import ImageBatches
from assay.models.threads import stop_point

__all__ = ["Classifier", "ClassifierConfig", "SmallCNN"]


# ----------------------------------------------------------------------------- config
@dataclass(frozen=True)
class ClassifierConfig:
    """Everything that defines the classifier and how it is trained.

    Parameters
    ----------
    widths : tuple of int
        Output channels of each conv block (one 2x max-pool after each while the map
        stays at least 4 px).
    stem_stride : int
        Stride of the first convolution (1, or 2 on large images).
    min_map : int
        Smallest side the pooling may bring the feature map down to.
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
        Minibatch size of :meth:`Classifier.predict_with_embedding`.
    """

    widths: tuple[int, ...] = (16, 32)
    stem_stride: int = 1
    min_map: int = 4
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
        names = ("stem_stride", "min_map", "hidden", "epochs", "batch_size", "eval_batch_size")
        for name in names:
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
        pixel and more epochs (an epoch is cheap there); images of 48 px and up a third
        conv block and a stride-2 first convolution (see the module docstring).
        """
        if len(shape) not in (3, 4):
            raise ValueError(f"`shape` must be (N, H, W) or (N, H, W, C). Got {shape} instead.")
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
        elif side < 48:
            base = cls()
        else:
            base = cls(widths=(16, 32, 64), stem_stride=2, min_map=8)
        return replace(base, **overrides)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["widths"] = list(self.widths)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClassifierConfig:
        return cls(**{**d, "widths": tuple(int(w) for w in d["widths"])})


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
            stride = config.stem_stride if i == 0 else 1
            layers.append(nn.Conv2d(c_in, width, k, stride, padding=k // 2, bias=False))
            h, w = (h + stride - 1) // stride, (w + stride - 1) // stride
            if min(h, w) // 2 >= config.min_map:
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


# ----------------------------------------------------------------------------- estimator
class Classifier:
    """The :class:`SmallCNN` as a scikit-learn-style estimator.

    Parameters
    ----------
    config : ClassifierConfig, optional
        ``None`` sizes one from the images at :meth:`fit` (:meth:`ClassifierConfig.for_images`).
    n_classes : int, optional
        ``K``; default ``labels.max() + 1`` at :meth:`fit` (give it when a training subset,
        such as a fold, may miss a class).
    seed : int
        Seeds initialisation, shuffling, dropout and augmentation.
    device : str or torch.device
        ``"auto"`` picks CUDA when present.

    Attributes (after :meth:`fit` or :meth:`load`)
    ----------------------------------------------
    network_ : the trained :class:`SmallCNN` (eval mode, on ``device_``).
    config_ : the config used. n_classes_ : ``K``. device_ : the torch device.
    image_shape_ : ``(C, H, W)`` of the training images.

    Notes
    -----
    The CPU thread count is left as the caller set it (``torch.set_num_threads``); the
    cross-validation in :mod:`assay.pipeline.detect.oof` trains several folds at once in
    threads, one intra-op thread each. On CUDA, cuDNN is switched to its deterministic
    algorithms.
    """

    def __init__(
        self,
        config: ClassifierConfig | None = None,
        *,
        n_classes: int | None = None,
        seed: int = 0,
        device: torch.device | str | None = "auto",
    ) -> None:
        self.config = config
        self.n_classes = n_classes
        self.seed = seed
        self.device = device

    def fit(
        self,
        images: np.ndarray | torch.Tensor | ImageBatches,
        labels: np.ndarray,
        *,
        sample_weight: np.ndarray | None = None,
        on_epoch: Callable[[int, float, SmallCNN], None] | None = None,
    ) -> Classifier:
        """Train on ``images`` and ``labels``; returns ``self``.

        Parameters
        ----------
        images : ndarray, Tensor or ImageBatches
            uint8 ``(N, H, W[, C])`` (on CPU read a mini-batch at a time, so a memory map
            is never copied whole), a float tensor ``(N, C, H, W)`` in [0, 1] already on
            ``device`` (see :func:`assay.models.tensors.to_tensor`), or
            :class:`~assay.models.tensors.ImageBatches` of either.
        labels : ndarray
            int ``(N,)`` in ``0..K-1``.
        sample_weight : ndarray, optional
            float ``(N,)`` per-sample loss weights (default all ones).
        on_epoch : callable, optional
            Called as ``on_epoch(epoch, mean_loss, network)`` after every epoch (the
            network in training mode).
        """
        dev = pick_device(None if self.device is None else str(self.device))
        x = _batches(images, dev)
        y = torch.as_tensor(np.asarray(labels, dtype=np.int64), device=dev)
        n = x.shape[0]
        if y.shape != (n,):
            raise ValueError(f"`labels` must have shape ({n},). Got {tuple(y.shape)} instead.")
        n_classes = int(self.n_classes) if self.n_classes is not None else int(y.max()) + 1
        config = self.config
        if config is None:
            config = ClassifierConfig.for_images((n, x.shape[2], x.shape[3]))
        weight = None
        if sample_weight is not None:
            weight = torch.as_tensor(np.asarray(sample_weight, dtype=np.float32), device=dev)

        # All randomness from explicit generators (none from torch's global state), so folds
        # can train concurrently in threads and each stays reproducible.
        seed = int(self.seed)
        generator = torch.Generator().manual_seed(seed)
        model = SmallCNN(x.shape[1], n_classes, (x.shape[2], x.shape[3]), config)
        model.reset_parameters(generator)
        model = model.to(dev).to(memory_format=torch.channels_last)
        drop_gen = torch.Generator(device=dev).manual_seed(seed + 1)
        mix_rng = np.random.default_rng(seed + 2)
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
        opt = torch.optim.AdamW(
            model.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        # OneCycleLR's warm-up ends at step 0.25 * total - 1; exactly 0 (4 steps in all)
        # divides by zero, so that one case schedules a step more than it takes.
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=config.lr, total_steps=total + int(total == 4), pct_start=0.25
        )
        model.train()
        for epoch in range(config.epochs):
            order = torch.randperm(n, generator=generator).to(dev)
            running = torch.zeros((), device=dev)
            for step in range(steps_per_epoch):
                stop_point()
                stop = n if step == steps_per_epoch - 1 else (step + 1) * batch
                idx = order[step * batch : stop]
                if idx.numel() < 2 and n >= 2:
                    continue
                xb = _augment(x.take(idx), config, generator)
                xb = xb.contiguous(memory_format=torch.channels_last)
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
        self.network_ = model
        self.config_ = config
        self.n_classes_ = n_classes
        self.device_ = dev
        self.image_shape_ = (int(x.shape[1]), int(x.shape[2]), int(x.shape[3]))
        return self

    @torch.no_grad()
    def predict_with_embedding(
        self,
        images: np.ndarray | torch.Tensor | ImageBatches,
        *,
        batch_size: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Class probabilities and penultimate embeddings of ``images``, in one pass.

        Parameters
        ----------
        images : ndarray, Tensor or ImageBatches
            uint8 ``(N, H, W[, C])`` or float ``(N, C, H, W)`` in [0, 1] (as in :meth:`fit`).
        batch_size : int, optional
            Default: the config's ``eval_batch_size``.

        Returns
        -------
        probs : ndarray
            float64 ``(N, K)``, rows summing to 1.
        embedding : ndarray
            float32 ``(N, hidden)``.
        """
        model, dev = self.network_, self.device_
        batch_size = int(batch_size or self.config_.eval_batch_size)
        x = _batches(images, dev)
        model.eval()
        n = len(x)
        # Filled batch by batch (not lists of small results kept between the big batch
        # temporaries, which fragments the heap: memory that grows with N).
        p = np.empty((n, int(self.n_classes_)), dtype=np.float64)
        emb = np.empty((n, int(self.config_.hidden)), dtype=np.float32)
        for start in range(0, n, batch_size):
            with autocast(dev):
                logits, z = model(x.rows(start, start + batch_size))
            stop = start + logits.shape[0]
            p[start:stop] = torch.softmax(logits.float(), dim=1).double().cpu().numpy()
            emb[start:stop] = z.float().cpu().numpy()
        p /= p.sum(axis=1, keepdims=True)
        return p, emb

    def predict_proba(self, images: np.ndarray | torch.Tensor | ImageBatches) -> np.ndarray:
        """Class probabilities ``(N, K)``, float64."""
        return self.predict_with_embedding(images)[0]

    def predict(self, images: np.ndarray | torch.Tensor | ImageBatches) -> np.ndarray:
        """Predicted classes ``(N,)``, int64."""
        return self.predict_proba(images).argmax(axis=1).astype(np.int64)

    def transform(self, images: np.ndarray | torch.Tensor) -> np.ndarray:
        """Penultimate embeddings ``(N, hidden)``, float32."""
        return self.predict_with_embedding(images)[1]

    # ------------------------------------------------------------------ persistence
    def save(self, file: str | Path | IO[bytes]) -> None:
        """Write config and weights (tensors and plain types only) to a path or a binary
        file object; the caller makes it atomic where it needs to."""
        state = {
            "config": self.config_.to_dict(),
            "n_classes": int(self.n_classes_),
            "image_shape": list(self.image_shape_),
            "seed": int(self.seed),
            "state": {k: v.detach().cpu() for k, v in self.network_.state_dict().items()},
        }
        torch.save(state, file)

    @classmethod
    def load(
        cls, file: str | Path | IO[bytes], *, device: torch.device | str | None = "cpu"
    ) -> Classifier:
        """Load a classifier written by :meth:`save` (``weights_only``: nothing is unpickled)."""
        state = torch.load(file, map_location="cpu", weights_only=True)
        config = ClassifierConfig.from_dict(state["config"])
        c, h, w = (int(v) for v in state["image_shape"])
        clf = cls(config, n_classes=int(state["n_classes"]), seed=int(state["seed"]), device=device)
        dev = pick_device(None if device is None else str(device))
        network = SmallCNN(c, clf.n_classes, (h, w), config)
        network.load_state_dict(state["state"])
        clf.network_ = network.to(dev).to(memory_format=torch.channels_last).eval()
        clf.config_, clf.n_classes_, clf.device_ = config, clf.n_classes, dev
        clf.image_shape_ = (c, h, w)
        return clf


def _batches(images: np.ndarray | torch.Tensor | ImageBatches, dev: torch.device) -> ImageBatches:
    """``images`` as channels-last ``[0, 1]`` mini-batches on ``dev``."""
    if isinstance(images, ImageBatches):
        return images
    return ImageBatches(images, scale="unit", device=dev, channels_last=True)

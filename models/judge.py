"""The judge: a small CNN classifier trained on trusted data, used to score generated images.

Its penultimate layer is the feature space of the GAN metrics (FID, KID, precision/recall);
its predictions give the label accuracy of conditional samples (GAN-test). The same
architecture, trained only on generated images, gives the GAN-train / CAS accuracy.

Shapes
------
images    uint8 ``(N, H, W)`` or ``(N, H, W, C)``; inside, float ``(N, C, H, W)`` in [-1, 1]
labels    int64 ``(N,)`` in ``0..K-1``
features  float32 ``(N, feature_dim)``
proba     float32 ``(N, K)``

The network is sized from the image size: VGG-style blocks (two ``conv3x3 -> BN -> ReLU``,
then ``maxpool``) that double the channels while halving the map until it is at most 7
pixels on its shorter side, a last ``conv3x3`` to ``feature_dim`` channels, global average
pooling (the features), and a linear layer to the ``K`` logits: 28x28 -> 14 -> 7,
8x8 -> 4, 32x32 -> 16 -> 8 -> 4. Images of 48 px and up first pass a stride-2
``conv3x3 -> BN -> ReLU`` stem, so that 64x64 -> 32 -> 16 -> 8 -> 4 costs what a 32 px
image does: without it the two full-resolution convolutions and one more block made a
64x64x3 judge about 5x the multiply-adds of a 32 px one, and the judge plus the CAS
classifiers (one per arm and seed) took longer than training the GANs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from assay.models.device import autocast, configure_cpu_threads, pick_device, seeded_global_rng
from assay.models.tensors import to_tensor
from assay.models.threads import stop_point


@dataclass(frozen=True)
class JudgeConfig:
    """Architecture and training budget of a judge.

    Parameters
    ----------
    image_shape : (C, H, W).
    n_classes : ``K``.
    width : channels of the first block (doubling per block).
    stem_stride : 2 puts a stride-2 convolution before the blocks (large images), 1 none.
    feature_dim : size of the feature vector (the metrics' feature space).
    epochs : passes over the training images; raised when needed so that training takes
        at least ``min_steps`` updates (small datasets), but to no more than ``max_epochs``
        passes: a set of a few dozen images is learnt long before that (training accuracy
        1.0), and further passes only spend time. The 240 judge-train images of the
        digits stay below the cap (500 updates are 167 passes).
    min_steps : minimum number of updates.
    max_epochs : the most passes that ``min_steps`` may ask for.
    batch_size, lr, weight_decay : AdamW settings (cosine-decayed learning rate).
    shift : random translation of up to ``shift`` pixels during training (0: off).
    label_smoothing : cross-entropy label smoothing.
    seed : weights, batches and augmentation.
    """

    image_shape: tuple[int, int, int]
    n_classes: int
    width: int = 16
    stem_stride: int = 1
    feature_dim: int = 64
    epochs: int = 15
    min_steps: int = 500
    max_epochs: int = 200
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    shift: int = 2
    label_smoothing: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        shape = tuple(int(s) for s in self.image_shape)
        object.__setattr__(self, "image_shape", shape)
        if len(shape) != 3 or min(shape[1:]) < 4:
            raise ValueError(f"`image_shape` must be (C, H, W) with H, W >= 4. Got {shape}.")
        names = ("n_classes", "width", "stem_stride", "feature_dim", "epochs", "max_epochs",
                 "batch_size")  # fmt: skip
        for name in names:
            value = getattr(self, name)
            if int(value) != value or value < 1:
                raise ValueError(f"`{name}` must be a positive integer. Got {value!r} instead.")
        if self.min_steps < 0:
            raise ValueError(f"`min_steps` must be >= 0. Got {self.min_steps} instead.")
        if self.shift < 0:
            raise ValueError(f"`shift` must be >= 0. Got {self.shift} instead.")

    @classmethod
    def for_data(
        cls, image_shape: tuple[int, ...], n_classes: int, **overrides: Any
    ) -> JudgeConfig:
        """A config for a dataset's ``(H, W)`` or ``(H, W, C)`` image shape."""
        shape = tuple(int(s) for s in image_shape)
        chw = (1, *shape) if len(shape) == 2 else (shape[2], shape[0], shape[1])
        base: dict[str, Any] = {}
        if min(chw[1:]) <= 12:
            base.update(shift=1)
        if min(chw[1:]) >= 32:
            base.update(width=32, feature_dim=128)
        if min(chw[1:]) >= 48:
            base.update(stem_stride=2)
        return cls(image_shape=chw, n_classes=int(n_classes), **{**base, **overrides})

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["image_shape"] = list(self.image_shape)
        return out


class JudgeNet(nn.Module):
    """``x (N, C, H, W) -> logits (N, K)``; :meth:`features` gives ``(N, feature_dim)``."""

    def __init__(self, config: JudgeConfig) -> None:
        super().__init__()
        c, h, w = config.image_shape
        layers: list[nn.Module] = []
        c_in, c_out, size = c, config.width, min(h, w)
        if config.stem_stride > 1:
            layers += [
                nn.Conv2d(c_in, c_out, 3, config.stem_stride, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
            c_in, size = c_out, -(-size // config.stem_stride)
        while size > 7:
            layers += [
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
                nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            c_in, c_out, size = c_out, c_out * 2, size // 2
        layers += [
            nn.Conv2d(c_in, config.feature_dim, 3, padding=1, bias=False),
            nn.BatchNorm2d(config.feature_dim),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        ]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(config.feature_dim, config.n_classes)
        self.num_features = config.feature_dim

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)  # (N, feature_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))  # (N, K)


class JudgeFeatures(nn.Module):
    """The judge's feature extractor as a module for torchmetrics' FID/KID.

    Takes uint8 images ``(N, C, H, W)`` (torchmetrics' convention for custom extractors
    when ``normalize=False``) and returns float32 features ``(N, feature_dim)``. Has
    ``num_features`` so torchmetrics does not need to probe it with a dummy image.
    """

    def __init__(self, net: JudgeNet) -> None:
        super().__init__()
        self.net = net
        self.num_features = net.num_features

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.net.eval()
        x = x.float().div(127.5).sub(1.0)
        return self.net.features(x).float()


def _shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Translate the whole batch by one random offset in ``[-max_shift, max_shift]^2``,
    filling with the background value (-1)."""
    if max_shift <= 0:
        return x
    dy, dx = (torch.randint(-max_shift, max_shift + 1, (2,), generator=gen)).tolist()
    x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
    if dy > 0:
        x[:, :, :dy] = -1.0
    elif dy < 0:
        x[:, :, dy:] = -1.0
    if dx > 0:
        x[:, :, :, :dx] = -1.0
    elif dx < 0:
        x[:, :, :, dx:] = -1.0
    return x


class Judge:
    """A classifier to judge generated images by; sklearn-style.

    Parameters
    ----------
    config : a :class:`JudgeConfig`; ``None`` sizes one from the data at :meth:`fit`.
    device : ``"auto"``, ``"cpu"`` or ``"cuda[:N]"``.
    **overrides : fields of the config built at fit time when ``config`` is ``None``.

    Attributes (after :meth:`fit`)
    -------------------------------
    net_ : the trained :class:`JudgeNet` (eval mode). config_ : the config used.
    seconds_ : training time. train_accuracy_ : accuracy on the training images.
    epochs_, steps_ : passes over the training images and updates made.
    """

    def __init__(
        self,
        config: JudgeConfig | None = None,
        *,
        device: str | torch.device | None = "auto",
        **overrides: Any,
    ) -> None:
        self.config = config
        self.device = device
        self.overrides = overrides

    def _device(self) -> torch.device:
        dev = self.device
        return pick_device(str(dev) if isinstance(dev, torch.device) else dev)

    def fit(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        *,
        on_epoch: Callable[[int, int], None] | None = None,
    ) -> Judge:
        """Train on uint8 ``images (N, H, W[, C])`` and int ``labels (N,)``.

        ``on_epoch(done, epochs)`` is called after every epoch (for progress lines).
        """
        images = np.asarray(images)
        labels = np.asarray(labels, dtype=np.int64)
        if images.dtype != np.uint8 or images.ndim not in (3, 4):
            raise ValueError(
                f"`images` must be uint8 (N, H, W[, C]). Got {images.dtype} {images.shape}."
            )
        if labels.shape != (images.shape[0],):
            raise ValueError(f"`labels` must have shape ({images.shape[0]},). Got {labels.shape}.")
        cfg = self.config
        if cfg is None:
            overrides = dict(self.overrides)
            k = int(overrides.pop("n_classes", labels.max() + 1))
            cfg = JudgeConfig.for_data(images.shape[1:], k, **overrides)
        self.config_ = cfg
        dev = self._device()
        if dev.type == "cpu":
            configure_cpu_threads()
        self.device_ = dev
        gen = torch.Generator().manual_seed(cfg.seed)
        with seeded_global_rng(cfg.seed):
            net = JudgeNet(cfg).to(dev)
        x_all = to_tensor(images, scale="signed")
        y_all = torch.from_numpy(labels)
        n = x_all.shape[0]
        batch = min(cfg.batch_size, n)
        steps_per_epoch = max(1, n // batch)
        epochs = max(cfg.epochs, min(-(-cfg.min_steps // steps_per_epoch), cfg.max_epochs))
        total = epochs * steps_per_epoch
        opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=cfg.lr, total_steps=total, pct_start=0.15
        )
        x_dev, y_dev = x_all.to(dev), y_all.to(dev)
        t0 = time.perf_counter()
        net.train()
        for epoch in range(epochs):
            perm = torch.randperm(n, generator=gen)
            for i in range(steps_per_epoch):
                stop_point()
                idx = perm[i * batch : (i + 1) * batch].to(dev)
                xb = _shift(x_dev[idx], cfg.shift, gen)
                with autocast(dev):
                    logits = net(xb)
                loss = F.cross_entropy(
                    logits.float(), y_dev[idx], label_smoothing=cfg.label_smoothing
                )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
            if on_epoch is not None:
                on_epoch(epoch + 1, epochs)
        net.eval()
        self.net_ = net
        self.seconds_ = time.perf_counter() - t0
        self.epochs_, self.steps_ = epochs, total
        self.train_accuracy_ = self.score(images, labels)
        return self

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def _run(self, images: np.ndarray, what: str, batch_size: int = 1024) -> np.ndarray:
        images = np.asarray(images)
        out = []
        for i in range(0, images.shape[0], batch_size):
            x = to_tensor(images[i : i + batch_size], scale="signed").to(self.device_)
            with autocast(self.device_):
                if what == "features":
                    y = self.net_.features(x)
                else:
                    y = torch.softmax(self.net_(x).float(), dim=1)
            out.append(y.float().cpu().numpy())
        width = self.config_.feature_dim if what == "features" else self.config_.n_classes
        return np.concatenate(out) if out else np.zeros((0, width), dtype=np.float32)

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities ``(N, K)`` for uint8 images."""
        return self._run(images, "proba")

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Predicted classes ``(N,)``."""
        return self.predict_proba(images).argmax(axis=1).astype(np.int64)

    def features(self, images: np.ndarray) -> np.ndarray:
        """Penultimate-layer features ``(N, feature_dim)``."""
        return self._run(images, "features")

    def score(self, images: np.ndarray, labels: np.ndarray) -> float:
        """Accuracy on ``(images, labels)``."""
        return float(np.mean(self.predict(images) == np.asarray(labels)))

    def feature_module(self) -> JudgeFeatures:
        """The feature extractor as an ``nn.Module`` for torchmetrics (see JudgeFeatures)."""
        return JudgeFeatures(self.net_)

    # ------------------------------------------------------------------ persistence
    def save(self, file: str | Path | IO[bytes]) -> None:
        """Write config and weights (tensors and plain types only) to a path or a binary
        file object; the caller makes it atomic where it needs to."""
        torch.save({"config": self.config_.to_dict(), "state": self.net_.state_dict()}, file)

    @classmethod
    def load(
        cls, file: str | Path | IO[bytes], *, device: str | torch.device | None = "cpu"
    ) -> Judge:
        """Load a judge written by :meth:`save` (``weights_only`` unpickling)."""
        state = torch.load(file, map_location="cpu", weights_only=True)
        cfg = dict(state["config"])
        cfg["image_shape"] = tuple(cfg["image_shape"])
        config = JudgeConfig(**cfg)
        judge = cls(config, device=device)
        judge.config_ = config
        judge.device_ = judge._device()
        net = JudgeNet(config)
        net.load_state_dict(state["state"])
        judge.net_ = net.to(judge.device_).eval()
        return judge

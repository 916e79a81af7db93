"""A small variational autoencoder for images, its trainer and its per-sample error.

Two architectures share one config and one interface:

- :class:`ConvVAE` for images of 16 px and up: strided convolutions down to a small
  feature map, a fully connected bottleneck, transposed convolutions back up;
- :class:`MLPVAE` for tiny images (8x8 digits), where convolutions buy nothing.

:meth:`VAEConfig.for_images` picks the architecture from the shorter side ``s`` and the
channels ``C`` (1 grey, 3 colour, 4 with alpha; the model reads and reconstructs all of
them)::

    s < 16        MLP, hidden (max(64, 2d), max(32, d)) with d = H*W*C, latent 8
    16 <= s < 48  conv, widths (16, 32): 28 -> 14 -> 7, 32 -> 16 -> 8, latent 16
    s >= 48       conv, widths (16, 32, 64): 64 -> 32 -> 16 -> 8, latent 16

Sides that are not a multiple of ``2 ** len(widths)`` (e.g. 28, or a 24x40 image) are
zero-padded on the way in and cropped on the way out.

Pixels are scaled to [0, 1] and modelled as independent Bernoulli variables (binary
cross-entropy with logits), the posterior is a diagonal Gaussian and the prior a standard
normal. The per-sample score is the negative ELBO in nats, evaluated at the posterior mean
(``z = mu``) so that it is deterministic:

    error(x) = BCE(x, decoder(mu(x))) + beta * KL(q(z | x) || N(0, I))

Because the Bernoulli likelihood charges grey pixels even when they are reconstructed
exactly, the error also rises for blurred, noisy or washed-out images, not only for images
the decoder cannot reproduce.

Usage::

    vae = VAE(VAEConfig.for_images(images.shape), seed=0, device="auto").fit(images)
    errors = vae.reconstruction_error(images)     # (N,) float64
    vae.save(buffer); vae = VAE.load(buffer)      # weights only, nothing pickled
"""

from __future__ import annotations

import math
import pickle
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from assay.models.device import autocast, configure_cpu_threads, pick_device, seed_everything
from assay.models.tensors import ImageBatches, scale_uint8

__all__ = ["VAE", "VAEConfig", "VAEHistory", "ConvVAE", "MLPVAE", "build_vae"]


# ----------------------------------------------------------------------------- config
@dataclass
class VAEConfig:
    """Everything that defines a VAE and how it is trained.

    Parameters
    ----------
    height, width, channels : int
        Image shape the model accepts, ``(H, W, C)``.
    kind : {"conv", "mlp"}
        Architecture. :meth:`for_images` picks ``"conv"`` from 16 px up, ``"mlp"`` below.
    latent_dim : int
        Size of the Gaussian latent code.
    widths : tuple of int
        Conv: channels of each stride-2 stage (``len(widths)`` halvings).
        MLP: sizes of the hidden layers of the encoder (the decoder mirrors them).
    hidden : int
        Conv only: width of the fully connected layer on each side of the latent.
    beta : float
        Weight of the KL term (1.0 is the plain ELBO).
    epochs, batch_size : int
        Training length and minibatch size.
    lr, weight_decay : float
        AdamW learning rate (cosine-decayed to zero over training) and weight decay.
    """

    height: int = 28
    width: int = 28
    channels: int = 1
    kind: str = "conv"
    latent_dim: int = 16
    widths: tuple[int, ...] = (16, 32)
    hidden: int = 256
    beta: float = 1.0
    epochs: int = 12
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-5

    def __post_init__(self) -> None:
        self.widths = tuple(int(w) for w in self.widths)
        if self.kind not in ("conv", "mlp"):
            raise ValueError(f"`kind` must be 'conv' or 'mlp'. Got {self.kind!r} instead.")
        for name in ("height", "width", "channels", "latent_dim", "epochs", "batch_size"):
            value = getattr(self, name)
            if int(value) != value or value < 1:
                raise ValueError(f"`{name}` must be a positive integer. Got {value!r} instead.")
        if not self.widths or min(self.widths) < 1:
            raise ValueError(f"`widths` must be positive integers. Got {self.widths} instead.")
        if self.beta < 0:
            raise ValueError(f"`beta` must be >= 0. Got {self.beta} instead.")
        if not self.lr > 0:
            raise ValueError(f"`lr` must be > 0. Got {self.lr} instead.")

    @classmethod
    def for_images(cls, shape: tuple[int, ...], **overrides: Any) -> VAEConfig:
        """A config suited to images of ``shape`` ``(N, H, W[, C])``.

        Images of at least 16 px on both sides get a convolutional VAE, smaller ones an MLP.
        The number of epochs shrinks as ``N`` grows so that training costs about the same
        number of sample passes (roughly 120k) whatever the dataset size, within [8, 60].
        ``overrides`` replace any field.
        """
        if len(shape) not in (3, 4):
            raise ValueError(f"`shape` must be (N, H, W) or (N, H, W, C). Got {shape} instead.")
        n, h, w = int(shape[0]), int(shape[1]), int(shape[2])
        c = int(shape[3]) if len(shape) == 4 else 1
        epochs = int(np.clip(round(120_000 / max(n, 1)), 8, 60))
        if min(h, w) >= 16:
            base: dict[str, Any] = dict(
                kind="conv",
                latent_dim=16,
                widths=(16, 32) if min(h, w) < 48 else (16, 32, 64),
                hidden=256,
                batch_size=128,
                lr=2e-3,
            )
        else:
            d = h * w * c
            base = dict(
                kind="mlp",
                latent_dim=8,
                widths=(max(64, 2 * d), max(32, d)),
                hidden=0,
                batch_size=64,
                lr=2e-3,
            )
        base.update(height=h, width=w, channels=c, epochs=epochs)
        base.update(overrides)
        return cls(**base)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["widths"] = list(self.widths)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VAEConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown VAE config field(s) {unknown}; expected {sorted(known)}.")
        return cls(**d)


# ----------------------------------------------------------------------------- models
class MLPVAE(nn.Module):
    """Fully connected VAE for tiny images. Input ``(B, C, H, W)`` in [0, 1]."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        d = config.height * config.width * config.channels
        enc: list[nn.Module] = []
        prev = d
        for w in config.widths:
            enc += [nn.Linear(prev, w), nn.GELU()]
            prev = w
        self.encoder = nn.Sequential(*enc)
        self.to_stats = nn.Linear(prev, 2 * config.latent_dim)
        dec: list[nn.Module] = []
        prev = config.latent_dim
        for w in reversed(config.widths):
            dec += [nn.Linear(prev, w), nn.GELU()]
            prev = w
        dec.append(nn.Linear(prev, d))
        self.decoder = nn.Sequential(*dec)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x.flatten(1))  # (B, widths[-1])
        mu, logvar = self.to_stats(h).chunk(2, dim=1)  # (B, L), (B, L)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        c = self.config
        return self.decoder(z).view(-1, c.channels, c.height, c.width)  # logits (B, C, H, W)

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None):
        mu, logvar = self.encode(x)
        if z is None:
            z = mu
        return self.decode(z), mu, logvar


class ConvVAE(nn.Module):
    """Convolutional VAE. Input ``(B, C, H, W)`` in [0, 1], H and W >= 16.

    Each of the ``len(widths)`` stages halves the resolution (4x4 kernels, stride 2);
    inputs whose sides are not a multiple of ``2 ** len(widths)`` are zero-padded on the
    bottom and right and the output is cropped back.
    """

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        f = 2 ** len(config.widths)
        self.ph = math.ceil(config.height / f) * f  # padded height
        self.pw = math.ceil(config.width / f) * f  # padded width
        self.fh, self.fw = self.ph // f, self.pw // f  # feature map size at the bottleneck
        top = config.widths[-1]
        flat = top * self.fh * self.fw

        enc: list[nn.Module] = []
        prev = config.channels
        for w in config.widths:  # (B, prev, s, s) -> (B, w, s/2, s/2)
            enc += [nn.Conv2d(prev, w, 4, stride=2, padding=1), nn.GELU()]
            prev = w
        self.encoder = nn.Sequential(*enc)
        self.enc_fc = nn.Sequential(nn.Flatten(), nn.Linear(flat, config.hidden), nn.GELU())
        self.to_stats = nn.Linear(config.hidden, 2 * config.latent_dim)

        self.dec_fc = nn.Sequential(
            nn.Linear(config.latent_dim, config.hidden),
            nn.GELU(),
            nn.Linear(config.hidden, flat),
            nn.GELU(),
        )
        dec: list[nn.Module] = []
        outs = list(reversed(config.widths[:-1])) + [config.channels]
        prev = top
        for i, w in enumerate(outs):  # (B, prev, s, s) -> (B, w, 2s, 2s)
            dec.append(nn.ConvTranspose2d(prev, w, 4, stride=2, padding=1))
            if i < len(outs) - 1:
                dec.append(nn.GELU())
            prev = w
        self.decoder = nn.Sequential(*dec)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        if (self.ph, self.pw) != (c.height, c.width):
            x = F.pad(x, (0, self.pw - c.width, 0, self.ph - c.height))  # (B, C, ph, pw)
        h = self.enc_fc(self.encoder(x))  # (B, hidden)
        mu, logvar = self.to_stats(h).chunk(2, dim=1)  # (B, L), (B, L)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        c = self.config
        h = self.dec_fc(z).view(-1, c.widths[-1], self.fh, self.fw)  # (B, top, fh, fw)
        logits = self.decoder(h)  # (B, C, ph, pw)
        return logits[:, :, : c.height, : c.width]  # (B, C, H, W)

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None):
        mu, logvar = self.encode(x)
        if z is None:
            z = mu
        return self.decode(z), mu, logvar


def build_vae(config: VAEConfig) -> ConvVAE | MLPVAE:
    """A freshly initialised model for ``config``."""
    if config.kind == "conv":
        if min(config.height, config.width) < 8:
            raise ValueError(
                "a convolutional VAE needs images of at least 8 px a side. "
                f"Got {config.height}x{config.width} instead; use kind='mlp'."
            )
        return ConvVAE(config)
    return MLPVAE(config)


# ----------------------------------------------------------------------------- helpers
def _as_nchw_uint8(images: np.ndarray, config: VAEConfig, dev: torch.device) -> ImageBatches:
    """uint8 ``(N, H, W[, C])`` numpy -> uint8 ``(N, C, H, W)`` mini-batches on ``dev``
    (resident on CUDA; on CPU gathered from ``images``, a memory map say, batch by batch)."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(f"`images` must be uint8 (0..255). Got {images.dtype} instead.")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[1:] != (config.height, config.width, config.channels):
        want = (config.height, config.width) + ((config.channels,) if config.channels > 1 else ())
        raise ValueError(
            f"`images` must have shape (N, {', '.join(map(str, want))}) for this VAE. "
            f"Got {images.shape} instead."
        )
    if images.shape[0] == 0:
        raise ValueError("`images` is empty; expected at least one image.")
    return ImageBatches(images, scale=None, device=dev)


def _terms(
    model: nn.Module, x: torch.Tensor, z_noise: torch.Tensor | None, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reconstruction cross-entropy and KL per sample, each ``(B,)`` float32.

    ``x`` is ``(B, C, H, W)`` in [0, 1]; ``z_noise`` ``(B, L)`` (``None``: use ``z = mu``).
    """
    with autocast(device):
        mu, logvar = model.encode(x)  # (B, L) each
        mu, logvar = mu.float(), logvar.float().clamp(-12.0, 8.0)
        z = mu if z_noise is None else mu + z_noise * torch.exp(0.5 * logvar)  # (B, L)
        logits = model.decode(z)  # (B, C, H, W)
    rec = F.binary_cross_entropy_with_logits(logits.float(), x, reduction="none")
    rec = rec.flatten(1).sum(1)  # (B,)
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1)  # (B,)
    return rec, kl


def _per_sample_loss(
    model: nn.Module, x: torch.Tensor, beta: float, z_noise: torch.Tensor | None, device
) -> torch.Tensor:
    """Negative ELBO per sample, ``(B,)`` float32. ``x`` is ``(B, C, H, W)`` in [0, 1]."""
    rec, kl = _terms(model, x, z_noise, device)
    return rec + beta * kl


def _bernoulli_entropy(x: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of independent Bernoulli pixels with means ``x``, ``(B,)``."""
    xc = x.float().clamp(1e-6, 1.0 - 1e-6)
    ent = -(xc * xc.log() + (1.0 - xc) * (1.0 - xc).log())  # (B, C, H, W)
    return ent.flatten(1).sum(1)


def _to_model_input(batch_u8: torch.Tensor, device: torch.device) -> torch.Tensor:
    x = scale_uint8(batch_u8, "unit")  # (B, C, H, W) in [0, 1]
    if device.type == "cuda" and x.shape[2] > 1:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


# ----------------------------------------------------------------------------- training
@dataclass
class VAEHistory:
    """Mean training loss (negative ELBO, nats per image) after each epoch, and timings."""

    loss: list[float] = field(default_factory=list)
    seconds: float = 0.0
    n_samples: int = 0
    device: str = "cpu"


def _train(
    model: ConvVAE | MLPVAE | None,
    images: np.ndarray,
    config: VAEConfig,
    *,
    seed: int,
    dev: torch.device,
    progress: bool,
) -> tuple[ConvVAE | MLPVAE, VAEHistory]:
    """Train ``model`` (a new one for ``None``) on ``images`` for ``config.epochs``."""
    threads = torch.get_num_threads()
    if dev.type == "cpu":
        # Tiny MLPs gain nothing from a second thread and lose a lot when cores are busy.
        torch.set_num_threads(1 if config.kind == "mlp" else configure_cpu_threads())
    data = _as_nchw_uint8(images, config, dev)  # (N, C, H, W) uint8 batches
    n = len(data)
    t0 = time.perf_counter()

    seed_everything(seed)
    if model is None:
        model = build_vae(config)
    model = model.to(dev)
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    gen = torch.Generator(device=dev).manual_seed(seed)
    batch = min(config.batch_size, n)
    steps_per_epoch = max(1, n // batch)  # drop the ragged last batch
    total = steps_per_epoch * config.epochs
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    warmup = max(1, min(100, total // 20))

    def lr_factor(step: int) -> float:  # linear warm-up, then cosine decay to zero
        return (
            min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
        )

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)

    history = VAEHistory(n_samples=int(n), device=str(dev))
    cudnn_det = torch.backends.cudnn.deterministic
    torch.backends.cudnn.deterministic = True
    bar = None
    if progress:
        from tqdm.auto import tqdm

        # a bar on a terminal only: in a log file its carriage returns make walls of text
        bar = tqdm(total=config.epochs, desc="vae", unit="epoch", file=sys.stderr, leave=False,
                   disable=not sys.stderr.isatty())  # fmt: skip
    model.train()
    try:
        for _epoch in range(config.epochs):
            perm = torch.randperm(n, device=dev, generator=gen)
            running = torch.zeros((), device=dev)
            for s in range(steps_per_epoch):
                idx = perm[s * batch : (s + 1) * batch]
                x = _to_model_input(data.take(idx), dev)  # (B, C, H, W)
                noise = torch.randn(
                    (x.shape[0], config.latent_dim), device=dev, generator=gen
                )  # (B, L)
                loss = _per_sample_loss(model, x, config.beta, noise, dev).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                running += loss.detach()
            epoch_loss = float(running) / steps_per_epoch  # one host sync per epoch
            history.loss.append(epoch_loss)
            if bar is not None:
                bar.set_postfix(loss=f"{epoch_loss:.2f}")
                bar.update(1)
    finally:
        torch.backends.cudnn.deterministic = cudnn_det
        torch.set_num_threads(threads)
        if bar is not None:
            bar.close()
    model.eval()
    history.seconds = time.perf_counter() - t0
    if progress:
        print(
            f"vae: {config.kind} VAE, {n} images {config.height}x{config.width}x"
            f"{config.channels}, {config.epochs} epochs in {history.seconds:.1f}s on {dev}; "
            f"final loss {history.loss[-1]:.2f} nats/image",
            file=sys.stderr,
        )
    return model, history


# ----------------------------------------------------------------------------- estimator
class VAE:
    """A VAE as a scikit-learn-style estimator: train it, then score images with it.

    Parameters
    ----------
    config : VAEConfig, optional
        ``None`` sizes one from the images at :meth:`fit` (:meth:`VAEConfig.for_images`).
    seed : int
        Seeds initialisation, shuffling and the reparameterisation noise; the same seed
        on the same device gives the same model.
    device : str or torch.device, optional
        ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda[:N]"``.
    progress : bool
        Show a per-epoch progress bar on stderr and end with a one-line summary.

    Attributes (after :meth:`fit` or :meth:`load`)
    ----------------------------------------------
    network_ : the trained :class:`ConvVAE` or :class:`MLPVAE` (eval mode, on ``device_``).
    config_ : the config used (after :meth:`refit`, with its epochs).
    history_ : :class:`VAEHistory` of the last training pass. device_ : the torch device.
    """

    def __init__(
        self,
        config: VAEConfig | None = None,
        *,
        seed: int = 0,
        device: str | torch.device | None = "auto",
        progress: bool = False,
    ) -> None:
        self.config = config
        self.seed = seed
        self.device = device
        self.progress = progress

    def _device(self) -> torch.device:
        dev = self.device
        return pick_device(dev if isinstance(dev, str) or dev is None else str(dev))

    def fit(self, images: np.ndarray) -> VAE:
        """Train a new network on uint8 ``images (N, H, W[, C])``; returns ``self``."""
        config = self.config if self.config is not None else VAEConfig.for_images(np.shape(images))
        dev = self._device()
        self.network_, self.history_ = _train(
            None, images, config, seed=int(self.seed), dev=dev, progress=self.progress
        )
        self.config_, self.device_ = config, dev
        return self

    def refit(self, images: np.ndarray, *, epochs: int, seed: int) -> VAE:
        """Continue training the fitted network on ``images`` for ``epochs`` more epochs
        (a fresh optimiser and schedule, randomness from ``seed``); returns ``self``."""
        config = VAEConfig.from_dict({**self.config_.to_dict(), "epochs": int(epochs)})
        self.network_, self.history_ = _train(
            self.network_, images, config, seed=int(seed), dev=self.device_,
            progress=self.progress,
        )  # fmt: skip
        self.config_ = config
        return self

    @torch.no_grad()
    def error_terms(self, images: np.ndarray, *, batch_size: int = 2048) -> dict[str, np.ndarray]:
        """Per-sample parts of the negative ELBO, evaluated at the posterior mean.

        Parameters
        ----------
        images : ndarray of uint8, shape (N, H, W) or (N, H, W, C)
        batch_size : int, keyword-only

        Returns
        -------
        dict of str to ndarray of float64, each shape (N,)
            ``"nelbo"``: ``recon + beta * kl`` (nats); ``"recon"``: Bernoulli cross-entropy
            of the image under its reconstruction; ``"kl"``: KL divergence of the posterior
            from the prior; ``"entropy"``: entropy of the image's own pixels read as
            Bernoulli means, so ``recon - entropy >= 0`` is the reconstruction divergence,
            zero only for a perfect reconstruction whatever the image's grey levels.
        """
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be >= 1. Got {batch_size} instead.")
        model = self.network_
        config: VAEConfig = model.config
        dev = next(model.parameters()).device
        data = _as_nchw_uint8(images, config, dev)  # (N, C, H, W) uint8 batches
        model.eval()
        n = len(data)
        rec = torch.empty(n, dtype=torch.float32, device=dev)
        kl = torch.empty(n, dtype=torch.float32, device=dev)
        ent = torch.empty(n, dtype=torch.float32, device=dev)
        for i in range(0, n, batch_size):
            x = _to_model_input(data.rows(i, i + batch_size), dev)  # (B, C, H, W)
            rec[i : i + batch_size], kl[i : i + batch_size] = _terms(model, x, None, dev)
            ent[i : i + batch_size] = _bernoulli_entropy(x)
        out = {
            "recon": rec.cpu().numpy().astype(np.float64),
            "kl": kl.cpu().numpy().astype(np.float64),
            "entropy": ent.cpu().numpy().astype(np.float64),
        }
        out["nelbo"] = out["recon"] + config.beta * out["kl"]
        return out

    @torch.no_grad()
    def reconstruct(self, images: np.ndarray, *, batch_size: int = 2048) -> np.ndarray:
        """The decoder's pixel means at the posterior mean, float32 ``(N, H, W, C)`` in
        [0, 1] (``C`` = 1 for greyscale input). Meant for a block of images at a time.

        Parameters
        ----------
        images : ndarray of uint8, shape (N, H, W) or (N, H, W, C)
        batch_size : int, keyword-only
        """
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be >= 1. Got {batch_size} instead.")
        model = self.network_
        dev = next(model.parameters()).device
        data = _as_nchw_uint8(images, model.config, dev)  # (N, C, H, W) uint8 batches
        model.eval()
        out = []
        for i in range(0, len(data), batch_size):
            x = _to_model_input(data.rows(i, i + batch_size), dev)  # (B, C, H, W)
            with autocast(dev):
                mu, _ = model.encode(x)  # (B, L)
                logits = model.decode(mu.float())  # (B, C, H, W)
            out.append(torch.sigmoid(logits.float()).permute(0, 2, 3, 1).cpu().numpy())
        return np.concatenate(out).astype(np.float32, copy=False)  # (N, H, W, C)

    def reconstruction_error(self, images: np.ndarray, *, batch_size: int = 2048) -> np.ndarray:
        """Per-sample negative ELBO (nats) at the posterior mean, float64 ``(N,)``: higher
        means less like the training data. See :meth:`error_terms` for the parts."""
        return self.error_terms(images, batch_size=batch_size)["nelbo"]

    # ------------------------------------------------------------------ persistence
    def save(self, file: str | Path | IO[bytes]) -> None:
        """Write config and weights (tensors and plain types only) to a path or a binary
        file object; the caller makes it atomic where it needs to."""
        state = {k: v.detach().cpu().contiguous() for k, v in self.network_.state_dict().items()}
        torch.save({"config": self.config_.to_dict(), "state": state}, file)

    @classmethod
    def load(
        cls, file: str | Path | IO[bytes], *, device: str | torch.device | None = "cpu"
    ) -> VAE:
        """Load a VAE written by :meth:`save` (``weights_only``: nothing is unpickled)."""
        try:
            state = torch.load(file, map_location="cpu", weights_only=True)
        except (RuntimeError, EOFError, pickle.UnpicklingError) as exc:
            raise ValueError(f"{file}: not a VAE written by VAE.save ({exc}).") from None
        if not isinstance(state, dict) or "config" not in state or "state" not in state:
            raise ValueError(f"{file}: not a VAE written by VAE.save (no config and weights).")
        config = VAEConfig.from_dict(state["config"])
        vae = cls(config, device=device)
        vae.device_ = vae._device()
        network = build_vae(config)
        network.load_state_dict(state["state"])
        vae.network_, vae.config_ = network.to(vae.device_).eval(), config
        return vae

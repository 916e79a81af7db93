"""A small conditional DCGAN with a projection discriminator, and its trainer.

Shapes
------
images      uint8 ``(N, H, W)`` or ``(N, H, W, C)`` on the way in and out; inside, float
            ``(N, C, H, W)`` in ``[-1, 1]``
labels      int64 ``(N,)`` in ``0..K-1``
z           float ``(N, z_dim)``, standard normal
transition  float ``(K, K)``, ``T[i, j] = P(observed label j | true label i)``; rows sum to 1

The generator and the projection discriminator (:mod:`models.gan_networks`) take their
depth from the image size (:func:`~models.gan_networks.layout`: 1 to 4 stride-2 layers for
8 to 64 px a side, grey, RGB or RGBA), and their width, batch and budget from the device
(:meth:`GANConfig.for_data`: ``width`` 32 on CPU, 16 on CPU for images over
:data:`CPU_WIDE_SIDE` px, and 64 on CUDA; ``z_dim`` 64,
32 up to 16 px on CPU, 128 on CUDA; batches of 64 on CPU and 256 on CUDA, for
:data:`DEFAULT_STEPS` steps). At 64x64x3 on 2 cores a width-32 pair trains 186 images/s
and a width-16 pair 504 (a 32x32x3 width-32 pair: 569), so the narrower networks keep a
CPU run on large images within the time of one on 32 px images, for the same steps.

Images up to 16 px on CPU train :data:`SMALL_CPU_STEPS` steps of 128 images at learning
rate 7e-4 instead: there a step costs mostly fixed per-layer overhead (on one core, 25 ms
for 64 images of 8x8, 39 ms for 192), so half the steps on twice the batch see the same
images in 0.6 of the time. On the digits with ``mixed-mild`` dirt (3 arms x 3 seeds) the
arms' label accuracy went 0.944 / 0.975 / 0.975 -> 0.944 / 0.963 / 0.965, judge-FID 0.96 /
0.93 / 0.96 -> 1.04 / 0.98 / 1.07 and recall 0.84 / 0.76 / 0.82 -> 0.81 / 0.75 / 0.76, all
within the seeds' spread (label accuracy ± 0.04 to 0.08, FID ± 1.4), and the generate
stage took 173 s instead of 234 s (``benchmarks/flow.py``, back to back); at learning rate
5e-4 label accuracy fell by 4 to 5 points, at 1e-3 recall fell by 0.05 to 0.06.

The loss is the hinge loss, with an auxiliary classifier's cross-entropy on the
discriminator's features (weight ``ac_weight``) that asks the generator for classifiable
samples. Small datasets and short budgets are what this model is for, so the
discriminator sees every image through differentiable augmentation
(:func:`~models.gan_networks.diff_augment`), and a mode-seeking term keeps the generator
from ignoring its latent.

The noise-aware arm (Thekumparampil et al., NeurIPS 2018; Kaneko et al., CVPR 2019) trains
on data whose observed labels are noisy: the label the generator was asked for is passed
through ``T`` before the discriminator sees it, either by sampling a noisy label from
``T[y]`` (``noise_mode="sample"``) or by projecting the label distribution ``T[y]`` itself
(``noise_mode="soft"``). Real images keep their observed labels. The discriminator then
compares like with like (noisy with noisy), while the generator is conditioned on the clean
label, so it learns the clean class-conditional distribution. The auxiliary classifier is
trained through ``T`` as well (forward loss correction: it models the clean label), and
the generator is asked for samples it classifies as their clean label (rAC-GAN). With
``T`` the identity every term reduces exactly to the plain loss.

On CUDA the trainer keeps the whole dataset on the device, runs under bf16 autocast with
channels-last tensors and draws every random number (batches, latents, labels, label
noise, augmentation) on the device, so a step never waits for the host; losses are summed
on the device and read back only every ``log_every`` steps.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
import torch

from assay.models.device import autocast, configure_cpu_threads, pick_device, seeded_global_rng
from assay.models.gan_losses import (
    NOISE_MODES,
    check_transition,
    discriminator_loss,
    generator_loss,
    mode_seeking_loss,
)
from assay.models.gan_networks import AUGMENTATIONS, Discriminator, Generator, diff_augment
from assay.models.tensors import ImageBatches, to_uint8
from assay.models.threads import stop_point

#: Generator updates per arm when none are asked for (:meth:`GANConfig.for_data`).
DEFAULT_STEPS = 1500
#: ... for images up to :data:`SMALL_SIDE` px on CPU, with batches of 128 (module docstring).
SMALL_CPU_STEPS = 750
#: Largest side of the images that get the small-image CPU budget.
SMALL_SIDE = 16
#: Largest side of the images that get the full CPU width (32); larger ones get 16.
CPU_WIDE_SIDE = 32
MIN_SIZE, MAX_SIZE = 8, 64


# ---------------------------------------------------------------------------- config
@dataclass(frozen=True)
class GANConfig:
    """Everything that fixes a GAN run: architecture, optimiser, budget and seed.

    Parameters
    ----------
    image_shape : (C, H, W) of the data; H and W in 8..64.
    n_classes : number of classes ``K``.
    z_dim : latent size.
    width : base channel count; the generator's first map has ``width * 2**(n_up - 1)``
        channels and every upsampling halves it; the discriminator mirrors this.
    steps : generator updates (the fixed budget); each is preceded by ``n_dis``
        discriminator updates.
    batch_size : images per update.
    lr_g, lr_d, beta1, beta2 : Adam settings.
    n_dis : discriminator updates per generator update.
    ema_decay : decay of the generator's exponential moving average (ramped up from 0 over
        the first steps, so a short run is not dominated by its random start).
    augment : DiffAugment policy applied to every image the discriminator sees, a comma-
        separated subset of ``"translation"`` and ``"cutout"`` (``""``: off); keeps it
        from memorising a few thousand images. Cutout can hide what makes a digit its
        class, so the default translates only.
    minibatch_std : give the discriminator a minibatch standard-deviation channel.
    mode_seeking : weight of the mode-seeking regulariser (0: off); with it, each
        generator batch is made of pairs sharing a label.
    ac_weight : weight of the auxiliary classifier on the discriminator's features (0: a
        pure projection discriminator). It learns the real images' labels (through ``T``
        in the noise-aware arm) and the generator is asked to make its samples
        classifiable as their label. On MNIST with 50% symmetric label noise (1,500 steps)
        the noise-aware arm's label accuracy was 0.875 at weight 1, 0.907 at 3 and 0.885
        at 5 (soft mode); 3 is the default for every arm.
    noise_mode : ``"sample"`` or ``"soft"``; how the noise-aware loss applies ``T``
        (soft: 0.875 against sample's 0.858 in the setting above, with less variance).
    log_every : steps between loss-log rows (the only points where the trainer reads
        values back from the device).
    checkpoint_every : steps between checkpoints when a checkpoint folder is given
        (0: only the final one).
    seed : seeds weights, latents, batches and label noise.
    """

    image_shape: tuple[int, int, int]
    n_classes: int
    z_dim: int = 64
    width: int = 32
    steps: int = 2000
    batch_size: int = 64
    lr_g: float = 5e-4
    lr_d: float = 5e-4
    beta1: float = 0.0
    beta2: float = 0.99
    n_dis: int = 1
    ema_decay: float = 0.999
    augment: str = "translation"
    minibatch_std: bool = True
    mode_seeking: float = 0.1
    ac_weight: float = 3.0
    noise_mode: str = "soft"
    log_every: int = 50
    checkpoint_every: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        shape = tuple(int(s) for s in self.image_shape)
        object.__setattr__(self, "image_shape", shape)
        if len(shape) != 3 or shape[0] not in (1, 3, 4):
            raise ValueError(
                f"`image_shape` must be (C, H, W) with C in (1, 3, 4). Got {shape} instead."
            )
        if not all(MIN_SIZE <= s <= MAX_SIZE for s in shape[1:]):
            raise ValueError(
                f"`image_shape` height and width must be in [{MIN_SIZE}, {MAX_SIZE}]. "
                f"Got {shape[1:]} instead."
            )
        checks = {
            "n_classes": (self.n_classes, 2),
            "z_dim": (self.z_dim, 1),
            "width": (self.width, 1),
            "steps": (self.steps, 1),
            "batch_size": (self.batch_size, 2),
            "n_dis": (self.n_dis, 1),
            "log_every": (self.log_every, 1),
            "checkpoint_every": (self.checkpoint_every, 0),
        }
        for name, (value, low) in checks.items():
            if int(value) != value or value < low:
                raise ValueError(f"`{name}` must be an integer >= {low}. Got {value!r} instead.")
        unknown = set(filter(None, self.augment.split(","))) - set(AUGMENTATIONS)
        if unknown:
            raise ValueError(
                f"`augment` must be a comma-separated subset of {AUGMENTATIONS}. "
                f"Got {self.augment!r} instead."
            )
        if self.mode_seeking < 0:
            raise ValueError(f"`mode_seeking` must be >= 0. Got {self.mode_seeking} instead.")
        if self.ac_weight < 0:
            raise ValueError(f"`ac_weight` must be >= 0. Got {self.ac_weight} instead.")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"`ema_decay` must be in [0, 1). Got {self.ema_decay} instead.")
        if self.noise_mode not in NOISE_MODES:
            raise ValueError(
                f"`noise_mode` must be one of {NOISE_MODES}. Got {self.noise_mode!r} instead."
            )

    @classmethod
    def for_data(
        cls,
        image_shape: tuple[int, ...],
        n_classes: int,
        *,
        device: str | torch.device | None = "cpu",
        **overrides: Any,
    ) -> GANConfig:
        """A config sized for the data and the device.

        ``image_shape`` is a dataset's ``(H, W)`` or ``(H, W, C)``. On CUDA the networks
        are wider and the batches larger; on CPU both are sized for a couple of cores.
        ``overrides`` replace any field.
        """
        shape = tuple(int(s) for s in image_shape)
        if len(shape) == 2:
            chw = (1, shape[0], shape[1])
        elif len(shape) == 3:
            chw = (shape[2], shape[0], shape[1])
        else:
            raise ValueError(f"`image_shape` must be (H, W) or (H, W, C). Got {shape} instead.")
        cuda = torch.device(device).type == "cuda" if device not in (None, "auto") else False
        if device in (None, "auto"):
            cuda = torch.cuda.is_available()
        base: dict[str, Any] = {"steps": DEFAULT_STEPS}
        if cuda:
            base.update(width=64, batch_size=256, z_dim=128)
        elif max(chw[1:]) <= SMALL_SIDE:
            base.update(width=32, z_dim=32, batch_size=128, lr_g=7e-4, lr_d=7e-4,
                        steps=SMALL_CPU_STEPS)  # fmt: skip
        elif max(chw[1:]) > CPU_WIDE_SIDE:
            base.update(width=16)
        return cls(image_shape=chw, n_classes=int(n_classes), **{**base, **overrides})

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["image_shape"] = list(self.image_shape)
        return out


# ---------------------------------------------------------------------------- trainer
LOG_COLUMNS = ("step", "epoch", "images_seen", "seconds", "loss_d", "loss_g", "d_real", "d_fake")


@dataclass
class _Run:
    seconds: float = 0.0
    images_seen: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


class GANTrainer:
    """Train a conditional GAN for a fixed number of steps.

    Parameters
    ----------
    config : the run's :class:`GANConfig`.
    device : ``"auto"``, ``"cpu"`` or ``"cuda[:N]"``.
    progress : print a line per epoch (and at every log point of runs shorter than an
        epoch) to stderr.
    log : where progress lines go instead of stderr.
    name : prefix of the progress lines (e.g. the arm's name).

    Attributes (after :meth:`fit`)
    -------------------------------
    generator_ : the trained generator (train mode).
    generator_ema_ : the moving average of its weights (eval mode); used for sampling.
    discriminator_ : the trained discriminator.
    history_ : loss log, one row per ``log_every`` steps, columns :data:`LOG_COLUMNS`.
    step_ : steps done (during training too, for :meth:`save`).
    seconds_ : training wall time. images_per_second_ : real images the discriminator
        consumed per second of training (``steps * n_dis * batch_size / seconds_``).
    """

    def __init__(
        self,
        config: GANConfig,
        *,
        device: str | torch.device | None = "auto",
        progress: bool = True,
        log: Callable[[str], None] | None = None,
        name: str = "gan",
    ) -> None:
        self.config = config
        self.device = device
        self.progress = progress
        self.log = log
        self.name = name

    # ------------------------------------------------------------------ helpers
    def _say(self, line: str) -> None:
        if not self.progress:
            return
        if self.log is not None:
            self.log(line)
        else:
            print(line, file=sys.stderr, flush=True)

    def _build(self, dev: torch.device) -> None:
        cfg = self.config
        with seeded_global_rng(cfg.seed):
            self.generator_ = Generator(cfg).to(dev)
            self.discriminator_ = Discriminator(cfg).to(dev)
            self.generator_ema_ = Generator(cfg).to(dev)
        self.generator_ema_.load_state_dict(self.generator_.state_dict())
        self.generator_ema_.eval().requires_grad_(False)
        if dev.type == "cuda":
            for net in (self.generator_, self.discriminator_, self.generator_ema_):
                net.to(memory_format=torch.channels_last)
        fused = dev.type == "cuda"
        self.opt_g_ = torch.optim.Adam(
            self.generator_.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, cfg.beta2), fused=fused
        )
        self.opt_d_ = torch.optim.Adam(
            self.discriminator_.parameters(),
            lr=cfg.lr_d,
            betas=(cfg.beta1, cfg.beta2),
            fused=fused,
        )

    @torch.no_grad()
    def _update_ema(self, step: int) -> None:
        decay = min(self.config.ema_decay, (1.0 + step) / (10.0 + step))
        ema = list(self.generator_ema_.parameters())
        cur = list(self.generator_.parameters())
        torch._foreach_lerp_(ema, cur, 1.0 - decay)
        for b_ema, b in zip(self.generator_ema_.buffers(), self.generator_.buffers(), strict=True):
            b_ema.copy_(b)

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        *,
        transition: np.ndarray | None = None,
        on_checkpoint: Callable[[GANTrainer], None] | None = None,
    ) -> GANTrainer:
        """Train on uint8 ``images (N, H, W[, C])`` with int ``labels (N,)``; returns self.

        ``transition (K, K)`` (rows sum to 1) turns on the noise-aware loss.
        ``on_checkpoint(self)`` is called every ``checkpoint_every`` steps and after the
        last one, with :attr:`step_` set (the caller writes :meth:`save` where it wants).
        """
        cfg = self.config
        images = np.asarray(images)
        labels = np.asarray(labels)
        if images.dtype != np.uint8:
            raise ValueError(f"`images` must be uint8. Got {images.dtype} instead.")
        hw = images.shape[1:3]
        c = 1 if images.ndim == 3 else images.shape[3]
        if (c, *hw) != cfg.image_shape:
            raise ValueError(
                f"`images` must have shape (N, {cfg.image_shape[1]}, {cfg.image_shape[2]}"
                f"{'' if cfg.image_shape[0] == 1 else ', ' + str(cfg.image_shape[0])}) "
                f"for this config. Got {images.shape} instead."
            )
        if labels.shape != (images.shape[0],):
            raise ValueError(f"`labels` must have shape ({images.shape[0]},). Got {labels.shape}.")
        if labels.min() < 0 or labels.max() >= cfg.n_classes:
            raise ValueError(f"`labels` must be in 0..{cfg.n_classes - 1}.")
        n = images.shape[0]
        batch = min(cfg.batch_size, n)
        dev = pick_device(self.device if not isinstance(self.device, torch.device) else str(
            self.device
        ))
        if dev.type == "cpu":
            configure_cpu_threads()
        self.device_ = dev
        self._build(dev)
        t_mat = None
        if transition is not None:
            t_np = check_transition(transition, cfg.n_classes)
            seen = np.unique(labels)
            impossible = seen[t_np[:, seen].sum(axis=0) <= 0]
            if impossible.size:
                raise ValueError(
                    f"`transition` gives observed label(s) {impossible.tolist()} probability 0 "
                    "from every true class."
                )
            t_mat = torch.tensor(t_np, dtype=torch.float32).to(dev)
        self.transition_ = t_mat

        # whole dataset resident on CUDA (when it fits); on CPU each batch is gathered from
        # the uint8 array (a memory map, say) and converted when it is drawn
        x_all = ImageBatches(
            images, scale="signed", device=dev, channels_last=dev.type == "cuda"
        )
        y_all = torch.from_numpy(labels.astype(np.int64)).to(dev)

        g_data = torch.Generator(device=dev).manual_seed(cfg.seed + 1)  # batches, z, y_g
        g_noise = torch.Generator(device=dev).manual_seed(cfg.seed + 2)  # label noise only
        g_aug = torch.Generator(device=dev).manual_seed(cfg.seed + 3)  # augmentation only

        def aug(x: torch.Tensor) -> torch.Tensor:
            return diff_augment(x, cfg.augment, generator=g_aug) if cfg.augment else x

        steps_per_epoch = max(1, n // batch)
        perm = torch.randperm(n, device=dev, generator=g_data)
        cursor = 0
        epoch = 0

        def next_real() -> tuple[torch.Tensor, torch.Tensor]:
            nonlocal perm, cursor, epoch
            if cursor + batch > n:
                perm = torch.randperm(n, device=dev, generator=g_data)
                cursor = 0
                epoch += 1
            idx = perm[cursor : cursor + batch]
            cursor += batch
            return x_all.take(idx), y_all[idx]

        def fake_labels(paired: bool = False) -> torch.Tensor:
            # clean labels for the generator, drawn from the observed label marginal;
            # paired: the second half repeats the first (for the mode-seeking term)
            if not paired:
                return y_all[torch.randint(n, (batch,), device=dev, generator=g_data)]
            half = y_all[torch.randint(n, (batch - batch // 2,), device=dev, generator=g_data)]
            return torch.cat([half, half])[:batch]

        acc = torch.zeros(4, device=dev)
        acc_n = 0
        run = _Run()
        mode = cfg.noise_mode
        self._say(
            f"[{self.name}] training {cfg.steps} steps, batch {batch}, {n} images "
            f"({steps_per_epoch} steps/epoch) on {dev}"
            + (" with noise-aware loss" if t_mat is not None else "")
        )
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        last_epoch_logged = -1
        for step in range(cfg.steps):
            stop_point()
            for _ in range(cfg.n_dis):
                x_real, y_real = next_real()
                z = torch.randn(batch, cfg.z_dim, device=dev, generator=g_data)
                y_g = fake_labels()
                with autocast(dev):
                    with torch.no_grad():
                        x_fake = self.generator_(z, y_g)
                    loss_d, d_real, d_fake = discriminator_loss(
                        self.discriminator_,
                        aug(x_real),
                        y_real,
                        aug(x_fake),
                        y_g,
                        transition=t_mat,
                        mode=mode,
                        generator=g_noise,
                        ac_weight=cfg.ac_weight,
                    )
                self.opt_d_.zero_grad(set_to_none=True)
                loss_d.backward()
                self.opt_d_.step()
            z = torch.randn(batch, cfg.z_dim, device=dev, generator=g_data)
            y_g = fake_labels(paired=cfg.mode_seeking > 0)
            with autocast(dev):
                x_gen = self.generator_(z, y_g)
                loss_g = generator_loss(
                    self.discriminator_,
                    aug(x_gen),
                    y_g,
                    transition=t_mat,
                    mode=mode,
                    generator=g_noise,
                    ac_weight=cfg.ac_weight,
                )
                if cfg.mode_seeking > 0:
                    loss_g = loss_g + cfg.mode_seeking * mode_seeking_loss(x_gen, z)
            self.opt_g_.zero_grad(set_to_none=True)
            loss_g.backward()
            self.opt_g_.step()
            self._update_ema(step)
            acc += torch.stack([loss_d.detach(), loss_g.detach(), d_real.detach(), d_fake.detach()])
            acc_n += 1
            done = step + 1
            if done % cfg.log_every == 0 or done == cfg.steps:
                vals = (acc / acc_n).tolist()  # the only host sync of the loop
                acc.zero_()
                acc_n = 0
                elapsed = time.perf_counter() - t0
                row = {
                    "step": done,
                    "epoch": done / steps_per_epoch,
                    "images_seen": done * cfg.n_dis * batch,
                    "seconds": elapsed,
                    "loss_d": vals[0],
                    "loss_g": vals[1],
                    "d_real": vals[2],
                    "d_fake": vals[3],
                }
                run.history.append(row)
                if not all(math.isfinite(v) for v in vals):
                    raise FloatingPointError(
                        f"[{self.name}] losses stopped being finite at step {done}: {vals}"
                    )
                if epoch != last_epoch_logged or steps_per_epoch > cfg.log_every or (
                    done == cfg.steps
                ):
                    last_epoch_logged = epoch
                    self._say(
                        f"[{self.name}] step {done}/{cfg.steps} epoch {row['epoch']:.1f} "
                        f"loss_d {vals[0]:.3f} loss_g {vals[1]:.3f} "
                        f"D(real) {vals[2]:+.2f} D(fake) {vals[3]:+.2f} "
                        f"{row['images_seen'] / max(elapsed, 1e-9):.0f} img/s"
                        + (f", ~{elapsed * (cfg.steps - done) / done:.0f} s left"
                           if done < cfg.steps else "")
                    )
            self.step_ = done
            if on_checkpoint is not None and cfg.checkpoint_every:
                if done % cfg.checkpoint_every == 0 and done != cfg.steps:
                    on_checkpoint(self)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        run.seconds = time.perf_counter() - t0
        run.images_seen = cfg.steps * cfg.n_dis * batch
        self.seconds_ = run.seconds
        self.images_per_second_ = run.images_seen / max(run.seconds, 1e-9)
        self.history_ = pd.DataFrame(run.history, columns=list(LOG_COLUMNS))
        self.steps_ = cfg.steps
        self.batch_size_ = batch
        if on_checkpoint is not None:
            on_checkpoint(self)
        return self

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample(
        self,
        labels: np.ndarray,
        *,
        z: np.ndarray | torch.Tensor | None = None,
        seed: int = 0,
        batch_size: int = 1024,
    ) -> np.ndarray:
        """uint8 images ``(N, H, W[, C])`` from the EMA generator for ``labels (N,)``.

        ``z (N, z_dim)`` fixes the latents (e.g. the same latent per column of a grid);
        otherwise they are drawn from a generator seeded with ``seed``.
        """
        return sample(self.generator_ema_, labels, z=z, seed=seed, batch_size=batch_size)

    # ------------------------------------------------------------------ checkpoints
    def save(self, file: str | Path | IO[bytes]) -> None:
        """Write the networks, optimisers, config and :attr:`step_` (tensors and plain types
        only) to a path or a binary file object; the caller makes it atomic where needed."""
        state = {
            "config": self.config.to_dict(),
            "step": int(self.step_),
            "generator": self.generator_.state_dict(),
            "generator_ema": self.generator_ema_.state_dict(),
            "discriminator": self.discriminator_.state_dict(),
            "opt_g": self.opt_g_.state_dict(),
            "opt_d": self.opt_d_.state_dict(),
            "transition": None if self.transition_ is None else self.transition_.cpu(),
        }
        torch.save(state, file)


@torch.no_grad()
def sample(
    gen: Generator,
    labels: np.ndarray,
    *,
    z: np.ndarray | torch.Tensor | None = None,
    seed: int = 0,
    batch_size: int = 1024,
) -> np.ndarray:
    """uint8 images ``(N, H, W[, C])`` from ``gen`` (put in eval mode) for ``labels (N,)``."""
    gen.eval()
    dev = next(gen.parameters()).device
    y = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    n = y.shape[0]
    z_dim = gen.embed.embedding_dim
    if z is None:
        g = torch.Generator().manual_seed(int(seed))
        z = torch.randn(n, z_dim, generator=g)
    z = torch.as_tensor(z, dtype=torch.float32)
    if z.shape != (n, z_dim):
        raise ValueError(f"`z` must have shape ({n}, {z_dim}). Got {tuple(z.shape)} instead.")
    out = []
    for i in range(0, n, batch_size):
        with autocast(dev):
            x = gen(z[i : i + batch_size].to(dev), y[i : i + batch_size].to(dev))
        out.append(to_uint8(x))
    if not out:
        return np.zeros((0, *gen.out_hw), dtype=np.uint8)
    return np.concatenate(out)


def load_generator(
    path: str | Path, *, device: str | torch.device | None = "cpu", ema: bool = True
) -> tuple[Generator, GANConfig]:
    """Load a checkpoint written by :meth:`GANTrainer.save` (weights only)."""
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    cfg_dict = dict(state["config"])
    cfg_dict["image_shape"] = tuple(cfg_dict["image_shape"])
    config = GANConfig(**cfg_dict)
    gen = Generator(config)
    gen.load_state_dict(state["generator_ema" if ema else "generator"])
    dev = pick_device(device if not isinstance(device, torch.device) else str(device))
    return gen.to(dev).eval(), config


"""The pictures of the generate stage: sample grids, the arms side by side, loss curves.

``grid_image`` tiles generated images (one row per class); ``png_bytes`` encodes a
picture, upscaled so small images stay visible; ``comparison_png`` and
``loss_curves_png`` are the matplotlib figures ``gan/comparison.png`` and
``gan/loss_curves.png`` (:mod:`pipeline.generate`).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["ARM_TITLES", "comparison_png", "grid_image", "loss_curves_png", "png_bytes"]

#: How each arm is named in figures.
ARM_TITLES = {"dirty": "dirty", "clean": "cleaned", "noise_aware": "noise-aware"}


def grid_image(images: np.ndarray, n_rows: int, n_cols: int, *, pad: int = 2) -> np.ndarray:
    """Tile ``images (n_rows * n_cols, H, W[, C])`` row by row into one uint8 picture."""
    h, w = images.shape[1:3]
    c = 1 if images.ndim == 3 else images.shape[3]
    canvas = np.full((n_rows * (h + pad) + pad, n_cols * (w + pad) + pad, c), 96, dtype=np.uint8)
    for i in range(n_rows):
        for j in range(n_cols):
            img = images[i * n_cols + j]
            img = img[:, :, None] if img.ndim == 2 else img
            top, left = pad + i * (h + pad), pad + j * (w + pad)
            canvas[top : top + h, left : left + w] = img
    return canvas[:, :, 0] if c == 1 else canvas


def png_bytes(picture: np.ndarray, *, min_cell: int = 0, cell: int = 0) -> bytes:
    """PNG of a uint8 picture, upscaled (nearest) by ``ceil(min_cell / cell)``."""
    from PIL import Image

    scale = max(1, math.ceil(min_cell / cell)) if min_cell and cell else 1
    img = Image.fromarray(picture)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _figure_bytes(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def comparison_png(
    grids: dict[str, np.ndarray], metrics: dict[str, dict[str, Any]], class_names: Sequence[str]
) -> bytes:
    """The arms' sample grids side by side, titled with label accuracy and FID."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = list(grids)
    fig, axes = plt.subplots(1, len(arms), figsize=(4.2 * len(arms), 4.8), squeeze=False)
    for ax, arm in zip(axes[0], arms, strict=True):
        grid = grids[arm]
        ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=255)
        m = metrics.get(arm, {})
        title = ARM_TITLES.get(arm, arm)
        if "label_accuracy" in m:
            fid = "n/a" if m.get("fid") is None else f"{m['fid']:.2f}"
            title += f"\nlabel acc {m['label_accuracy']:.3f}  FID {fid}"
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        n = len(class_names)
        ax.set_yticks(np.linspace(0, grid.shape[0], n, endpoint=False) + grid.shape[0] / (2 * n))
        ax.set_yticklabels(list(class_names), fontsize=7)
    fig.suptitle("Samples per class (rows); same latent per column across arms", fontsize=10)
    return _figure_bytes(fig)


def loss_curves_png(history: dict[str, pd.DataFrame]) -> bytes:
    """Discriminator and generator loss against step, one line per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for arm, frame in history.items():
        label = ARM_TITLES.get(arm, arm)
        axes[0].plot(frame["step"], frame["loss_d"], label=label)
        axes[1].plot(frame["step"], frame["loss_g"], label=label)
    titles = ("discriminator loss (hinge + classifier)", "generator loss (all terms)")
    for ax, name in zip(axes, titles, strict=True):
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _figure_bytes(fig)

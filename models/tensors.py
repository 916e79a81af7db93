"""The one conversion between uint8 image arrays and the models' tensors.

images  uint8 ``(N, H, W)`` (grey) or ``(N, H, W, C)``, values 0..255 (the data model)
tensor  ``(N, C, H, W)``: uint8 (``scale=None``), float32 in [0, 1] (``"unit"``: the
        classifier and the VAE) or float32 in [-1, 1] (``"signed"``: the GAN and the judge)
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

Scale = Literal["unit", "signed"]
SCALES: tuple[str, ...] = ("unit", "signed")

__all__ = ["SCALES", "Scale", "scale_uint8", "to_tensor", "to_uint8"]


def scale_uint8(x: torch.Tensor, scale: Scale) -> torch.Tensor:
    """uint8 ``(N, C, H, W)`` -> float32 in [0, 1] (``"unit"``) or [-1, 1] (``"signed"``)."""
    if scale == "unit":
        return x.float().div_(255.0)
    if scale == "signed":
        return x.float().div_(127.5).sub_(1.0)
    raise ValueError(f"`scale` must be one of {SCALES}. Got {scale!r} instead.")


def to_tensor(
    images: np.ndarray,
    *,
    scale: Scale | None = "unit",
    device: torch.device | str | None = None,
    channels_last: bool = False,
) -> torch.Tensor:
    """uint8 images ``(N, H, W[, C])`` -> a ``(N, C, H, W)`` tensor on ``device``.

    Parameters
    ----------
    images : ndarray of uint8, shape (N, H, W) or (N, H, W, C)
    scale : {"unit", "signed"} or None, keyword-only
        Float range of the result (see :func:`scale_uint8`); ``None`` keeps uint8 (a
        quarter of the bytes, for data kept resident and scaled per batch).
    device : torch.device or str, optional, keyword-only
        Where the tensor lives (default CPU). The uint8 data travels, then is scaled there.
    channels_last : bool, keyword-only
        Return channels-last memory (faster convolutions); the values are the same.

    Returns
    -------
    Tensor, shape (N, C, H, W)
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise ValueError(
            f"`images` must be uint8 (N, H, W) or (N, H, W, C). "
            f"Got {images.dtype} {images.shape} instead."
        )
    x = torch.from_numpy(np.ascontiguousarray(images))
    if device is not None:
        x = x.to(device)
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)  # (N, C, H, W)
    if scale is not None:
        x = scale_uint8(x, scale)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return x.contiguous(memory_format=fmt)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float ``(N, C, H, W)`` in [-1, 1] -> uint8 ``(N, H, W)`` (C = 1) or ``(N, H, W, C)``."""
    x = ((x.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).cpu()
    if x.shape[1] == 1:
        return x[:, 0].numpy()
    return x.permute(0, 2, 3, 1).contiguous().numpy()

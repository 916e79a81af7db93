"""The one conversion between uint8 image arrays and the models' tensors.

images  uint8 ``(N, H, W)`` (grey) or ``(N, H, W, C)``, values 0..255 (the data model)
tensor  ``(N, C, H, W)``: uint8 (``scale=None``), float32 in [0, 1] (``"unit"``: the
        classifier and the VAE) or float32 in [-1, 1] (``"signed"``: the GAN and the judge)

:class:`ImageBatches` serves mini-batches of such tensors: the whole dataset resident on a
CUDA device, or gathered from the (memory-mapped) uint8 array batch by batch on CPU.
"""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np
import torch

Scale = Literal["unit", "signed"]
SCALES: tuple[str, ...] = ("unit", "signed")

__all__ = ["SCALES", "ImageBatches", "Scale", "scale_uint8", "to_tensor", "to_uint8"]


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
    array = np.ascontiguousarray(images)
    shares = scale is None and (device is None or torch.device(device).type == "cpu")
    if not array.flags.writeable and shares:
        array = array.copy()  # a uint8 CPU tensor would share the read-only memory map
    with warnings.catch_warnings():
        # read-only memory (a memory-mapped dataset) is only read: scaled into a new tensor
        # or copied to the device below
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        x = torch.from_numpy(array)
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


#: Fraction of the free CUDA memory a dataset's float copy may take to be kept resident.
RESIDENT_CUDA_FRACTION = 0.5


class ImageBatches:
    """Images a model reads in mini-batches, as ``(B, C, H, W)`` tensors on ``device``.

    On CUDA the whole dataset is converted once and kept on the device (when its tensor
    takes at most :data:`RESIDENT_CUDA_FRACTION` of the free memory); elsewhere the uint8
    array (often the read-only memory map of the canonical dataset) is kept as it is and
    each mini-batch is gathered and converted when it is asked for, so memory holds one
    batch of floats, not the whole dataset. Both give the same values.

    Parameters
    ----------
    images : ndarray of uint8, shape (N, H, W) or (N, H, W, C), or Tensor (N, C, H, W)
        A tensor is taken as already converted (resident).
    scale : {"unit", "signed"} or None, keyword-only
        As :func:`to_tensor`.
    device : torch.device, keyword-only
    channels_last : bool, keyword-only
        As :func:`to_tensor`.
    resident : bool, optional, keyword-only
        Convert the whole dataset at once (default: on CUDA when it fits, see above).
    """

    def __init__(
        self,
        images: np.ndarray | torch.Tensor,
        *,
        scale: Scale | None = "unit",
        device: torch.device,
        channels_last: bool = False,
        resident: bool | None = None,
        _rows: np.ndarray | None = None,
    ) -> None:
        self.scale, self.device, self.channels_last = scale, torch.device(device), channels_last
        self._rows = _rows  # positions into the source (a subset), or None for all rows
        self._rows_on_device: torch.Tensor | None = None
        if isinstance(images, torch.Tensor):
            self._tensor: torch.Tensor | None = images
            self._array: np.ndarray | None = None
            return
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim not in (3, 4):
            raise ValueError(
                f"`images` must be uint8 (N, H, W) or (N, H, W, C). "
                f"Got {images.dtype} {images.shape} instead."
            )
        if resident is None:
            resident = self.device.type == "cuda" and _fits_on_cuda(images, self.device, scale)
        self._tensor = (
            to_tensor(images, scale=scale, device=self.device, channels_last=channels_last)
            if resident
            else None
        )
        self._array = None if resident else images

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(N, C, H, W)`` of the images this object serves."""
        if self._tensor is not None:
            _, c, h, w = (int(s) for s in self._tensor.shape)
            n = int(self._tensor.shape[0])
        else:
            assert self._array is not None
            n, h, w = (int(s) for s in self._array.shape[:3])
            c = 1 if self._array.ndim == 3 else int(self._array.shape[3])
        return (n if self._rows is None else int(self._rows.size), c, h, w)

    def __len__(self) -> int:
        return self.shape[0]

    def subset(self, rows: np.ndarray) -> ImageBatches:
        """The images at positions ``rows`` (int ``(M,)``), without copying any pixels."""
        rows = np.asarray(rows, dtype=np.int64)
        if self._rows is not None:
            rows = self._rows[rows]
        source = self._tensor if self._tensor is not None else self._array
        assert source is not None
        return ImageBatches(
            source, scale=self.scale, device=self.device, channels_last=self.channels_last,
            resident=self._tensor is not None, _rows=rows,
        )  # fmt: skip

    def take(self, index: torch.Tensor | np.ndarray) -> torch.Tensor:
        """The images at positions ``index`` (int ``(B,)``) as a ``(B, C, H, W)`` tensor."""
        if self._tensor is not None:
            idx = torch.as_tensor(index, device=self._tensor.device)
            if self._rows is not None:
                if self._rows_on_device is None:  # once, not one copy per batch
                    self._rows_on_device = torch.as_tensor(self._rows, device=idx.device)
                idx = self._rows_on_device[idx]
            return self._tensor[idx]
        assert self._array is not None
        rows = index.cpu().numpy() if isinstance(index, torch.Tensor) else np.asarray(index)
        if self._rows is not None:
            rows = self._rows[rows]
        return to_tensor(
            self._array[rows], scale=self.scale, device=self.device,
            channels_last=self.channels_last,
        )  # fmt: skip

    def rows(self, start: int, stop: int) -> torch.Tensor:
        """Images ``start:stop`` as a ``(B, C, H, W)`` tensor."""
        if self._rows is None and self._tensor is not None:
            return self._tensor[start:stop]
        if self._rows is None and self._array is not None:
            return to_tensor(
                self._array[start:stop], scale=self.scale, device=self.device,
                channels_last=self.channels_last,
            )  # fmt: skip
        return self.take(np.arange(start, min(stop, len(self)), dtype=np.int64))


def _fits_on_cuda(images: np.ndarray, device: torch.device, scale: Scale | None) -> bool:
    free, _ = torch.cuda.mem_get_info(device)
    return images.nbytes * (1 if scale is None else 4) <= RESIDENT_CUDA_FRACTION * free

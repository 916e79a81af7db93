"""A broad library of image corruptions, each with a ``severity`` from 1 (mild) to 5.

Families
--------
- the 15 MNIST-C corruptions (Mu & Gilmer 2019): ``shot_noise``, ``impulse_noise``,
  ``glass_blur``, ``motion_blur``, ``shear``, ``scale``, ``rotate``, ``brightness``,
  ``translate``, ``stripe``, ``fog``, ``spatter``, ``dotted_line``, ``zigzag``,
  ``canny_edges``;
- the ImageNet-C corruptions (Hendrycks & Dietterich 2019) that make sense for small
  images: ``gaussian_noise``, ``speckle_noise``, ``gaussian_blur``, ``defocus_blur``,
  ``zoom_blur``, ``contrast``, ``elastic``, ``pixelate``, ``jpeg``, ``saturate``
  (colour only);
- what real scanners, cameras and data pipelines do: ``clipped_exposure`` (over-exposure
  clipped at white), ``gamma`` (a wrong transfer curve), ``channel_swap`` (RGB read as
  BGR, colour only), ``occlusion`` (a sticker, a finger, a scanner lid shadow),
  ``line_drop`` (lost scan lines), ``interlace`` (odd fields shifted), ``row_jitter``
  (line-by-line sensor jitter), ``wrong_crop`` (an off-centre crop resized to full size),
  ``posterize`` (too few bits per pixel) and ``vignette`` (lens fall-off).

Every function works on a uint8 stack ``(N, H, W)`` or ``(N, H, W, C)`` of any size from
8x8 up; lengths (blur radii, shifts, line widths) scale with the image size, with 28
pixels as the reference of the MNIST-C parameters. Computation is vectorised over the
stack (numpy / scipy.ndimage; Pillow only for JPEG encoding). Randomness (directions,
positions, noise) comes from ``seed`` alone, so the same call gives the same images.

>>> out = corrupt(images, "motion_blur", severity=3, seed=0)   # doctest: +SKIP
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["FAMILIES", "Family", "corrupt", "families"]

Float = np.ndarray  # float32 (N, H, W, C) in [0, 1]
Apply = Callable[[Float, int, np.random.Generator], Float]


@dataclass(frozen=True)
class Family:
    """One corruption family: its function, where it comes from and what it needs."""

    name: str
    apply: Apply
    origin: str  # "mnist-c", "imagenet-c" or "pipeline"
    colour_only: bool = False


FAMILIES: dict[str, Family] = {}


def _family(name: str, origin: str, *, colour_only: bool = False):
    def deco(fn: Apply) -> Apply:
        FAMILIES[name] = Family(name, fn, origin, colour_only)
        return fn

    return deco


def families(*, colour: bool = False, origin: str | None = None) -> tuple[str, ...]:
    """Names of the families that apply to greyscale (``colour=False``) or colour images."""
    return tuple(
        f.name
        for f in FAMILIES.values()
        if (colour or not f.colour_only) and (origin is None or f.origin == origin)
    )


def corrupt(
    images: np.ndarray, family: str, *, severity: int = 3, seed: int = 0
) -> np.ndarray:
    """Apply one corruption family to every image of a stack.

    Parameters
    ----------
    images : ndarray
        uint8 ``(N, H, W)`` or ``(N, H, W, C)``; never modified.
    family : str
        A key of :data:`FAMILIES`.
    severity : int, keyword-only
        1 (mild) to 5 (severe).
    seed : int, keyword-only
        Seeds every random choice.

    Returns
    -------
    ndarray
        uint8, the shape of ``images``.
    """
    if family not in FAMILIES:
        raise ValueError(f"`family` must be one of {sorted(FAMILIES)}. Got {family!r} instead.")
    if isinstance(severity, bool) or not isinstance(severity, int | np.integer) or not (
        1 <= severity <= 5
    ):
        raise ValueError(f"`severity` must be an integer in 1..5. Got {severity!r} instead.")
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise ValueError(
            "`images` must be uint8 of shape (N, H, W) or (N, H, W, C). "
            f"Got {images.dtype} {images.shape} instead."
        )
    spec = FAMILIES[family]
    if spec.colour_only and (images.ndim == 3 or images.shape[-1] < 3):
        raise ValueError(f"`{family}` needs colour images (N, H, W, 3). Got {images.shape}.")
    if images.shape[0] == 0:
        return images.copy()
    x = images.astype(np.float32) / 255.0
    if images.ndim == 3:
        x = x[..., None]
    rng = np.random.default_rng(seed)
    out = spec.apply(x, int(severity), rng)
    out = np.clip(np.rint(np.nan_to_num(out) * 255.0), 0, 255).astype(np.uint8)
    return out[..., 0] if images.ndim == 3 else out


# --------------------------------------------------------------------------- helpers
def _scale(x: Float) -> float:
    """Image size relative to the 28-pixel reference of the MNIST-C parameters."""
    return min(x.shape[1], x.shape[2]) / 28.0


def _per_image(values: np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=np.float32).reshape(-1, 1, 1, 1)


def _grey(x: Float) -> Float:
    """``(N, H, W, 1)`` luminance."""
    if x.shape[-1] >= 3:
        return (x[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
    return x.mean(axis=-1, keepdims=True)


def _background(x: Float) -> Float:
    """Per-image, per-channel median of the border pixels ``(N, 1, 1, C)``."""
    border = np.concatenate([x[:, 0], x[:, -1], x[:, :, 0], x[:, :, -1]], axis=1)
    return np.median(border, axis=1)[:, None, None, :]


def _ink(x: Float) -> Float:
    """A contrasting colour for marks drawn on the image ``(N, 1, 1, C)``: the opposite of
    the background."""
    return 1.0 - _background(x)


def _spatial_filter(x: Float, fn: Callable[..., np.ndarray], sigma: float) -> Float:
    return fn(x, sigma=(0, sigma, sigma, 0), mode="nearest")


def _warp(x: Float, matrices: np.ndarray, *, fill: Float | None = None, chunk: int = 1024):
    """Resample each image at ``A @ (y, x) + b`` around its centre (``matrices``
    ``(N, 2, 3)`` map output to input coordinates); outside pixels get ``fill``."""
    n, h, w, c = x.shape
    fill = _background(x) if fill is None else fill
    yy, xx = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32),
                         indexing="ij")  # fmt: skip
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    grid = np.stack([yy - cy, xx - cx, np.ones_like(yy)], axis=0).reshape(3, -1)  # (3, HW)
    out = np.empty_like(x)
    for start in range(0, n, chunk):
        m = matrices[start : start + chunk].astype(np.float32)
        k = len(m)
        src = m @ grid  # (k, 2, HW)
        sy = src[:, 0].reshape(k, h, w) + cy
        sx = src[:, 1].reshape(k, h, w) + cx
        coords = np.empty((4, k, h, w, c), dtype=np.float32)
        coords[0] = np.arange(k, dtype=np.float32)[:, None, None, None]
        coords[1] = sy[..., None]
        coords[2] = sx[..., None]
        coords[3] = np.arange(c, dtype=np.float32)
        block = x[start : start + chunk]
        warped = ndimage.map_coordinates(block, coords, order=1, mode="constant", cval=-1.0)
        outside = ((sy < -0.5) | (sy > h - 0.5) | (sx < -0.5) | (sx > w - 0.5))[..., None]
        f = np.broadcast_to(fill[start : start + chunk], block.shape)
        out[start : start + chunk] = np.where(outside | (warped < 0), f, warped)
    return out


def _affine(n: int, a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """``(N, 2, 3)`` matrices from ``a`` ``(N, 2, 2)`` and offsets ``b`` ``(N, 2)``."""
    m = np.zeros((n, 2, 3), dtype=np.float32)
    m[:, :, :2] = a
    if b is not None:
        m[:, :, 2] = b
    return m


def _signs(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=n)


def _draw_polyline(
    x: Float, points: np.ndarray, *, width: float, dotted: bool, colour: Float
) -> Float:
    """Draw each image's polyline ``points`` ``(N, P, 2)`` (pixel coordinates) into it."""
    n, h, w, _ = x.shape
    mask = np.zeros((n, h, w), dtype=bool)
    rows = np.arange(n)
    for seg in range(points.shape[1] - 1):
        p0, p1 = points[:, seg], points[:, seg + 1]
        length = np.max(np.linalg.norm(p1 - p0, axis=1))
        steps = max(int(np.ceil(length * 2)), 2)
        for t in np.linspace(0.0, 1.0, steps):
            if dotted and int(t * length) % 3:
                continue
            p = p0 + t * (p1 - p0)
            for dy in range(-int(width // 2), int(width // 2) + 1):
                yy = np.clip(np.rint(p[:, 0]).astype(int) + dy, 0, h - 1)
                xx = np.clip(np.rint(p[:, 1]).astype(int), 0, w - 1)
                mask[rows, yy, xx] = True
    m = mask[..., None]
    return np.where(m, colour, x)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> Float:
    """Low-frequency noise ``(N, H, W, 1)`` normalised to [0, 1] per image."""
    z = rng.standard_normal(shape[:3] + (1,), dtype=np.float32)
    z = ndimage.gaussian_filter(z, sigma=(0, sigma, sigma, 0), mode="wrap")
    lo = z.min(axis=(1, 2, 3), keepdims=True)
    hi = z.max(axis=(1, 2, 3), keepdims=True)
    return (z - lo) / np.maximum(hi - lo, 1e-6)


# --------------------------------------------------------------------------- MNIST-C
@_family("shot_noise", "mnist-c")
def _shot_noise(x: Float, s: int, rng: np.random.Generator) -> Float:
    lam = (60.0, 25.0, 12.0, 5.0, 3.0)[s - 1]
    return rng.poisson(x * lam).astype(np.float32) / lam


@_family("impulse_noise", "mnist-c")
def _impulse_noise(x: Float, s: int, rng: np.random.Generator) -> Float:
    amount = (0.03, 0.06, 0.09, 0.17, 0.27)[s - 1]
    u = rng.random(x.shape[:3] + (1,), dtype=np.float32)
    out = np.where(u < amount / 2, 0.0, x)
    return np.where(u > 1 - amount / 2, 1.0, out)


@_family("glass_blur", "mnist-c")
def _glass_blur(x: Float, s: int, rng: np.random.Generator) -> Float:
    sigma, delta, iters = ((0.4, 1, 1), (0.5, 1, 2), (0.6, 1, 3), (0.7, 2, 3), (0.8, 2, 4))[s - 1]
    k = _scale(x)
    out = _spatial_filter(x, ndimage.gaussian_filter, sigma * k)
    n, h, w, _ = x.shape
    d = max(1, int(round(delta * k)))
    rows = np.arange(n)[:, None, None]
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    for _ in range(iters):
        dy = rng.integers(-d, d + 1, size=(n, h, w))
        dx = rng.integers(-d, d + 1, size=(n, h, w))
        out = out[rows, np.clip(yy + dy, 0, h - 1), np.clip(xx + dx, 0, w - 1)]
    return _spatial_filter(out, ndimage.gaussian_filter, sigma * k)


@_family("motion_blur", "mnist-c")
def _motion_blur(x: Float, s: int, rng: np.random.Generator) -> Float:
    half = max(1, int(round((1.0, 2.0, 3.0, 4.0, 5.0)[s - 1] * _scale(x))))
    length = 2 * half + 1  # odd, so the kernel is centred
    angles = rng.integers(0, 8, size=len(x))  # 8 directions, 22.5 degrees apart
    out = np.empty_like(x)
    for a in np.unique(angles):
        theta = np.pi * a / 8
        kernel = np.zeros((length, length), dtype=np.float32)
        c = (length - 1) / 2
        for t in np.linspace(-c, c, 4 * length):
            kernel[int(round(c + t * np.sin(theta))), int(round(c + t * np.cos(theta)))] = 1
        kernel /= kernel.sum()
        sel = angles == a
        out[sel] = ndimage.convolve(x[sel], kernel[None, :, :, None], mode="nearest")
    return out


@_family("shear", "mnist-c")
def _shear(x: Float, s: int, rng: np.random.Generator) -> Float:
    amount = (0.15, 0.3, 0.45, 0.6, 0.8)[s - 1] * _signs(rng, len(x))
    a = np.tile(np.eye(2, dtype=np.float32), (len(x), 1, 1))
    a[:, 1, 0] = amount
    return _warp(x, _affine(len(x), a))


@_family("scale", "mnist-c")
def _scale_family(x: Float, s: int, rng: np.random.Generator) -> Float:
    del rng
    factor = (0.85, 0.75, 0.65, 0.55, 0.45)[s - 1]  # the content shrinks to this size
    a = np.tile(np.eye(2, dtype=np.float32) / factor, (len(x), 1, 1))
    return _warp(x, _affine(len(x), a))


@_family("rotate", "mnist-c")
def _rotate(x: Float, s: int, rng: np.random.Generator) -> Float:
    deg = (15.0, 30.0, 45.0, 60.0, 80.0)[s - 1] * _signs(rng, len(x))
    t = np.deg2rad(deg)
    a = np.stack([np.stack([np.cos(t), -np.sin(t)], -1), np.stack([np.sin(t), np.cos(t)], -1)],
                 axis=1)  # fmt: skip
    return _warp(x, _affine(len(x), a))


@_family("brightness", "mnist-c")
def _brightness(x: Float, s: int, rng: np.random.Generator) -> Float:
    del rng
    return x + (0.1, 0.2, 0.3, 0.4, 0.5)[s - 1]


@_family("translate", "mnist-c")
def _translate(x: Float, s: int, rng: np.random.Generator) -> Float:
    frac = (0.1, 0.16, 0.22, 0.28, 0.34)[s - 1]
    h, w = x.shape[1:3]
    angle = rng.uniform(0, 2 * np.pi, size=len(x))
    b = np.stack([np.sin(angle) * frac * h, np.cos(angle) * frac * w], axis=1)
    a = np.tile(np.eye(2, dtype=np.float32), (len(x), 1, 1))
    return _warp(x, _affine(len(x), a, b))


@_family("stripe", "mnist-c")
def _stripe(x: Float, s: int, rng: np.random.Generator) -> Float:
    """A band of columns (or rows) with inverted intensities, as in MNIST-C."""
    n, h, w, _ = x.shape
    width = max(1, int(round((1, 2, 3, 4, 6)[s - 1] * _scale(x))))
    start = rng.integers(0, max(w - width, 1), size=n)
    vertical = rng.random(n) < 0.5
    idx = np.arange(max(h, w))
    band = (idx[None, :] >= start[:, None]) & (idx[None, :] < (start + width)[:, None])
    mask = np.where(vertical[:, None, None], band[:, None, :w], band[:, :h, None])
    return np.where(mask[..., None], 1.0 - x, x)


@_family("fog", "mnist-c")
def _fog(x: Float, s: int, rng: np.random.Generator) -> Float:
    c = (0.25, 0.35, 0.5, 0.65, 0.8)[s - 1]
    haze = _smooth_noise(rng, x.shape, sigma=3.0 * _scale(x))
    out = x + c * haze
    return out / out.max(axis=(1, 2, 3), keepdims=True).clip(1.0) * (1 + c / 2)


@_family("spatter", "mnist-c")
def _spatter(x: Float, s: int, rng: np.random.Generator) -> Float:
    coverage = (0.03, 0.06, 0.1, 0.15, 0.22)[s - 1]
    blobs = _smooth_noise(rng, x.shape, sigma=1.0 * _scale(x))
    cut = np.quantile(blobs, 1 - coverage, axis=(1, 2, 3), keepdims=True)
    mask = blobs >= cut
    return np.where(mask, 0.5 * x + 0.5 * _ink(x) * 0.8, x)


@_family("dotted_line", "mnist-c")
def _dotted_line(x: Float, s: int, rng: np.random.Generator) -> Float:
    n, h, w, _ = x.shape
    out = x
    for _ in range(s):
        pts = rng.uniform(0, 1, size=(n, 2, 2)) * np.array([h - 1, w - 1], np.float32)
        out = _draw_polyline(out, pts, width=_scale(x), dotted=True, colour=_ink(x))
    return out


@_family("zigzag", "mnist-c")
def _zigzag(x: Float, s: int, rng: np.random.Generator) -> Float:
    n, h, w, _ = x.shape
    out = x
    for _ in range((1, 1, 2, 2, 3)[s - 1]):
        k = (3, 5, 5, 7, 7)[s - 1]
        pts = rng.uniform(0, 1, size=(n, k, 2)) * np.array([h - 1, w - 1], np.float32)
        pts[:, :, 1] = np.sort(pts[:, :, 1], axis=1)
        out = _draw_polyline(out, pts, width=_scale(x), dotted=False, colour=_ink(x))
    return out


@_family("canny_edges", "mnist-c")
def _canny_edges(x: Float, s: int, rng: np.random.Generator) -> Float:
    """The image's edge map (Sobel magnitude above half its maximum), blended in."""
    del rng
    g = _spatial_filter(_grey(x), ndimage.gaussian_filter, 0.5 * _scale(x))
    mag = np.hypot(ndimage.sobel(g, axis=1), ndimage.sobel(g, axis=2))
    edges = (mag > 0.35 * mag.max(axis=(1, 2, 3), keepdims=True)).astype(np.float32)
    a = (0.3, 0.5, 0.7, 0.85, 1.0)[s - 1]
    return (1 - a) * x + a * edges


# --------------------------------------------------------------------------- ImageNet-C
@_family("gaussian_noise", "imagenet-c")
def _gaussian_noise(x: Float, s: int, rng: np.random.Generator) -> Float:
    sigma = (0.08, 0.12, 0.18, 0.26, 0.38)[s - 1]
    return x + sigma * rng.standard_normal(x.shape, dtype=np.float32)


@_family("speckle_noise", "imagenet-c")
def _speckle_noise(x: Float, s: int, rng: np.random.Generator) -> Float:
    c = (0.15, 0.25, 0.35, 0.5, 0.7)[s - 1]
    return x + x * c * rng.standard_normal(x.shape, dtype=np.float32)


@_family("gaussian_blur", "imagenet-c")
def _gaussian_blur(x: Float, s: int, rng: np.random.Generator) -> Float:
    del rng
    return _spatial_filter(x, ndimage.gaussian_filter, (0.6, 0.9, 1.2, 1.6, 2.1)[s - 1] * _scale(x))


@_family("defocus_blur", "imagenet-c")
def _defocus_blur(x: Float, s: int, rng: np.random.Generator) -> Float:
    del rng
    r = (1.2, 1.6, 2.0, 2.5, 3.0)[s - 1] * _scale(x)
    k = int(np.ceil(r + 0.5))
    yy, xx = np.mgrid[-k : k + 1, -k : k + 1]
    disk = np.clip(r + 0.5 - np.hypot(yy, xx), 0.0, 1.0).astype(np.float32)  # anti-aliased
    disk /= disk.sum()
    return ndimage.convolve(x, disk[None, :, :, None], mode="nearest")


@_family("zoom_blur", "imagenet-c")
def _zoom_blur(x: Float, s: int, rng: np.random.Generator) -> Float:
    del rng
    top = (1.08, 1.14, 1.2, 1.28, 1.36)[s - 1]
    acc = x.copy()
    zooms = np.linspace(1.0, top, 6)[1:]
    for z in zooms:
        a = np.tile(np.eye(2, dtype=np.float32) / z, (len(x), 1, 1))
        acc += _warp(x, _affine(len(x), a))
    return acc / (len(zooms) + 1)


@_family("contrast", "imagenet-c")
def _contrast(x: Float, s: int, rng: np.random.Generator) -> Float:
    del rng
    c = (0.5, 0.35, 0.25, 0.15, 0.07)[s - 1]
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    return (x - mean) * c + mean


@_family("elastic", "imagenet-c")
def _elastic(x: Float, s: int, rng: np.random.Generator) -> Float:
    n, h, w, c = x.shape
    alpha = (1.5, 2.5, 3.5, 4.5, 6.0)[s - 1] * _scale(x)  # pixels of displacement
    sigma = 3.0 * _scale(x)
    out = np.empty_like(x)
    yy, xx = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32),
                         indexing="ij")  # fmt: skip
    for start in range(0, n, 1024):
        k = min(1024, n - start)
        d = rng.uniform(-1, 1, size=(2, k, h, w)).astype(np.float32)
        d = ndimage.gaussian_filter(d, sigma=(0, 0, sigma, sigma), mode="reflect")
        d /= np.maximum(np.abs(d).max(axis=(2, 3), keepdims=True), 1e-6)
        coords = np.empty((4, k, h, w, c), dtype=np.float32)
        coords[0] = np.arange(k, dtype=np.float32)[:, None, None, None]
        coords[1] = (yy + alpha * d[0])[..., None]
        coords[2] = (xx + alpha * d[1])[..., None]
        coords[3] = np.arange(c, dtype=np.float32)
        out[start : start + k] = ndimage.map_coordinates(
            x[start : start + k], coords, order=1, mode="nearest"
        )
    return out


@_family("pixelate", "imagenet-c")
def _pixelate(x: Float, s: int, rng: np.random.Generator) -> Float:
    del rng
    f = (0.6, 0.5, 0.4, 0.3, 0.22)[s - 1]
    n, h, w, c = x.shape
    hs, ws = max(2, int(round(h * f))), max(2, int(round(w * f)))
    ry = (np.arange(h) * hs // h).astype(int)
    rx = (np.arange(w) * ws // w).astype(int)
    # Block means: sum the pixels falling into each coarse cell, then look them up.
    sums = np.zeros((n, hs, ws, c), np.float32)
    np.add.at(sums, (slice(None), ry[:, None], rx[None, :]), x)
    counts = np.zeros((hs, ws), np.float32)
    np.add.at(counts, (ry[:, None], rx[None, :]), 1.0)
    small = sums / counts[None, :, :, None]
    return small[:, ry[:, None], rx[None, :]]


@_family("jpeg", "imagenet-c")
def _jpeg(x: Float, s: int, rng: np.random.Generator) -> Float:
    from PIL import Image

    del rng
    quality = (30, 18, 10, 6, 2)[s - 1]
    u8 = np.clip(np.rint(x * 255), 0, 255).astype(np.uint8)
    out = np.empty_like(x)
    mode = "L" if x.shape[-1] == 1 else "RGB"
    for i, img in enumerate(u8):
        buf = io.BytesIO()
        arr = img[..., 0] if mode == "L" else img[..., :3]
        Image.fromarray(arr, mode=mode).save(buf, format="JPEG", quality=quality)
        back = np.asarray(Image.open(buf), dtype=np.float32) / 255.0
        out[i] = back[..., None] if mode == "L" else np.concatenate(
            [back, x[i, ..., 3:]], axis=-1
        )
    return out


@_family("saturate", "imagenet-c", colour_only=True)
def _saturate(x: Float, s: int, rng: np.random.Generator) -> Float:
    del rng
    factor = (1.8, 2.6, 3.5, 5.0, 7.0)[s - 1]
    g = _grey(x)
    return g + (x - g) * factor


# --------------------------------------------------------------------------- pipelines
@_family("clipped_exposure", "pipeline")
def _clipped_exposure(x: Float, s: int, rng: np.random.Generator) -> Float:
    del rng
    gain = (1.6, 2.2, 3.0, 4.0, 6.0)[s - 1]
    return x * gain + 0.08 * (gain - 1)


@_family("gamma", "pipeline")
def _gamma(x: Float, s: int, rng: np.random.Generator) -> Float:
    g = (1.8, 2.5, 3.5, 5.0, 7.0)[s - 1]
    up = rng.random(len(x)) < 0.5  # too dark or too light a transfer curve
    return np.where(_per_image(up) > 0, x ** (1.0 / g), x**g)


@_family("channel_swap", "pipeline", colour_only=True)
def _channel_swap(x: Float, s: int, rng: np.random.Generator) -> Float:
    """RGB read as BGR (or another wrong order), blended in with ``severity``."""
    perms = np.array([[2, 1, 0], [1, 2, 0], [2, 0, 1], [1, 0, 2], [0, 2, 1]])
    p = perms[rng.integers(0, len(perms), size=len(x))]
    swapped = np.take_along_axis(x[..., :3], p[:, None, None, :], axis=-1)
    a = (0.4, 0.6, 0.8, 0.9, 1.0)[s - 1]
    out = x.copy()
    out[..., :3] = (1 - a) * x[..., :3] + a * swapped
    return out


@_family("occlusion", "pipeline")
def _occlusion(x: Float, s: int, rng: np.random.Generator) -> Float:
    n, h, w, _ = x.shape
    frac = (0.25, 0.35, 0.45, 0.55, 0.65)[s - 1]
    bh, bw = max(1, int(round(h * frac))), max(1, int(round(w * frac)))
    y0 = rng.integers(0, h - bh + 1, size=n)
    x0 = rng.integers(0, w - bw + 1, size=n)
    yy, xx = np.arange(h), np.arange(w)
    rows = (yy[None, :] >= y0[:, None]) & (yy[None, :] < (y0 + bh)[:, None])  # (N, H)
    cols = (xx[None, :] >= x0[:, None]) & (xx[None, :] < (x0 + bw)[:, None])  # (N, W)
    mask = rows[:, :, None] & cols[:, None, :]
    fill = 0.5 + 0.5 * _ink(x) - 0.25  # a grey patch leaning away from the paper colour
    return np.where(mask[..., None], fill, x)


@_family("line_drop", "pipeline")
def _line_drop(x: Float, s: int, rng: np.random.Generator) -> Float:
    n, h = x.shape[:2]
    frac = (0.1, 0.2, 0.3, 0.4, 0.5)[s - 1]
    drop = rng.random((n, h)) < frac
    return np.where(drop[:, :, None, None], 0.0, x)  # lost lines read as black


@_family("interlace", "pipeline")
def _interlace(x: Float, s: int, rng: np.random.Generator) -> Float:
    shift = max(1, int(round((1, 2, 3, 4, 5)[s - 1] * _scale(x))))
    direction = np.where(rng.random(len(x)) < 0.5, -1, 1)
    out = x.copy()
    for d in (-1, 1):
        sel = direction == d
        out[sel, 1::2] = np.roll(x[sel, 1::2], d * shift, axis=2)
    return out


@_family("row_jitter", "pipeline")
def _row_jitter(x: Float, s: int, rng: np.random.Generator) -> Float:
    n, h, w, _ = x.shape
    m = max(1, int(round((1, 2, 3, 4, 5)[s - 1] * _scale(x))))
    shifts = rng.integers(-m, m + 1, size=(n, h))
    cols = (np.arange(w)[None, None, :] - shifts[:, :, None]) % w
    return x[np.arange(n)[:, None, None], np.arange(h)[None, :, None], cols]


@_family("wrong_crop", "pipeline")
def _wrong_crop(x: Float, s: int, rng: np.random.Generator) -> Float:
    """An off-centre window, ``frac`` of the side, resized to the full image."""
    frac = (0.8, 0.7, 0.6, 0.5, 0.42)[s - 1]
    n, h, w, _ = x.shape
    room = (1 - frac) / 2
    corner = rng.choice(np.array([-1.0, 1.0], np.float32), size=(n, 2))
    b = corner * room * np.array([h, w], np.float32)
    a = np.tile(np.eye(2, dtype=np.float32) * frac, (n, 1, 1))
    return _warp(x, _affine(n, a, b))


@_family("posterize", "pipeline")
def _posterize(x: Float, s: int, rng: np.random.Generator) -> Float:
    del rng
    levels = (2 ** (5, 4, 3, 2, 1)[s - 1]) - 1
    return np.floor(x * levels + 0.5) / levels


@_family("vignette", "pipeline")
def _vignette(x: Float, s: int, rng: np.random.Generator) -> Float:
    del rng
    h, w = x.shape[1:3]
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    r2 = ((yy**2 + xx**2) / 2).astype(np.float32)
    strength = (0.6, 0.9, 1.2, 1.6, 2.0)[s - 1]
    fall = np.clip(1 - strength * r2, 0, 1)[None, :, :, None]
    return x * fall + (1 - fall) * 0.5

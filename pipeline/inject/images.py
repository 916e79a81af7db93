"""Image-level dirt: corruptions, out-of-distribution images and near duplicates.

Every function takes a stack of images, uint8 ``(n, H, W)`` or ``(n, H, W, C)``, and a
seeded :class:`numpy.random.Generator`, and returns a *new* uint8 stack of the same shape;
the input is never written to. They work for any image size from 2x2 up (the project uses
8x8 to 64x64) and any number of channels.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

Stack = np.ndarray
Corruption = Callable[[Stack, np.random.Generator], Stack]


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _spatial(stack: Stack) -> tuple[int, int]:
    return int(stack.shape[1]), int(stack.shape[2])


def _per_sample(values: np.ndarray, ndim: int) -> np.ndarray:
    """Reshape ``(n,)`` so it broadcasts against an ``ndim``-dimensional stack."""
    return values.reshape((-1,) + (1,) * (ndim - 1))


def _pixel_mask(mask: np.ndarray, stack: Stack) -> np.ndarray:
    """Broadcast an ``(n, H, W)`` mask over the channel axis when there is one."""
    return mask if stack.ndim == 3 else np.broadcast_to(mask[..., None], stack.shape)


def _background(image: np.ndarray) -> np.ndarray | float:
    """Median of the border pixels (per channel): the colour to fill exposed areas with."""
    border = np.concatenate([image[0], image[-1], image[1:-1, 0], image[1:-1, -1]], axis=0).astype(
        np.float64
    )
    return np.median(border, axis=0)


# --------------------------------------------------------------------------- corruptions
def gaussian_noise(stack: Stack, rng: np.random.Generator) -> Stack:
    """Add heavy i.i.d. Gaussian noise, sigma drawn per image from 40..80 grey levels."""
    sigma = _per_sample(rng.uniform(40.0, 80.0, size=len(stack)), stack.ndim)
    noise = rng.standard_normal(stack.shape, dtype=np.float32) * sigma.astype(np.float32)
    return _to_uint8(stack.astype(np.float32) + noise)


def salt_pepper(stack: Stack, rng: np.random.Generator) -> Stack:
    """Set 10..25 % of the pixels (all channels) to 0 or 255 at random."""
    n, h, w = len(stack), *_spatial(stack)
    frac = rng.uniform(0.10, 0.25, size=n)
    k = np.maximum(1, np.rint(frac * h * w)).astype(np.int64)
    ranks = rng.random((n, h * w)).argsort(axis=1).argsort(axis=1)
    hit = (ranks < k[:, None]).reshape(n, h, w)
    salt = rng.random((n, h, w)) < 0.5
    out = stack.copy()
    out[_pixel_mask(hit & salt, stack)] = 255
    out[_pixel_mask(hit & ~salt, stack)] = 0
    return out


def blank(stack: Stack, rng: np.random.Generator) -> Stack:
    """Replace each image by one constant value drawn from 0..255 (all channels)."""
    values = rng.integers(0, 256, size=len(stack), dtype=np.int64)
    flat = stack.reshape(len(stack), -1)
    already = np.all(flat == values[:, None], axis=1)  # was that very constant image
    values = np.where(already, (values + 128) % 256, values).astype(np.uint8)
    return np.broadcast_to(_per_sample(values, stack.ndim), stack.shape).copy()


def inverted(stack: Stack, rng: np.random.Generator) -> Stack:
    """Invert intensities: ``255 - x``."""
    del rng
    return np.subtract(255, stack, dtype=np.uint8)


def blur_sigma(height: int, width: int) -> float:
    """Gaussian blur sigma in pixels used by :func:`blur` for an ``H x W`` image."""
    return max(1.0, min(height, width) / 9.0)


def blur(stack: Stack, rng: np.random.Generator) -> Stack:
    """Strong Gaussian blur, sigma ``max(1, min(H, W) / 9)`` pixels, on the whole stack."""
    del rng
    s = blur_sigma(*_spatial(stack))
    sigma = (0.0, s, s) + ((0.0,) if stack.ndim == 4 else ())
    return _to_uint8(ndimage.gaussian_filter(stack.astype(np.float32), sigma=sigma, mode="nearest"))


def occlusion(stack: Stack, rng: np.random.Generator) -> Stack:
    """Cover a rectangle of 30..50 % of the height and width with a flat patch.

    The patch is white where the covered area is dark on average and black otherwise,
    so it always hides something.
    """
    n, h, w = len(stack), *_spatial(stack)

    def extent(size: int) -> tuple[np.ndarray, np.ndarray]:
        lo = max(1, round(0.30 * size))
        hi = max(lo, round(0.50 * size))
        length = rng.integers(lo, hi + 1, size=n)
        start = rng.integers(0, size - length + 1)
        return start, length

    y0, ph = extent(h)
    x0, pw = extent(w)
    rows = np.arange(h)[None, :]
    cols = np.arange(w)[None, :]
    in_rows = (rows >= y0[:, None]) & (rows < (y0 + ph)[:, None])
    in_cols = (cols >= x0[:, None]) & (cols < (x0 + pw)[:, None])
    mask = in_rows[:, :, None] & in_cols[:, None, :]  # (n, H, W)
    grey = stack.astype(np.float32)
    if stack.ndim == 4:
        grey = grey.mean(axis=3)
    covered = (grey * mask).sum(axis=(1, 2)) / mask.sum(axis=(1, 2))
    fill = np.where(covered < 127.5, 255, 0).astype(np.uint8)
    full_mask = _pixel_mask(mask, stack)
    out = stack.copy()
    out[full_mask] = np.broadcast_to(_per_sample(fill, stack.ndim), stack.shape)[full_mask]
    return out


def rotate_shift(stack: Stack, rng: np.random.Generator) -> Stack:
    """Rotate by 90..180 degrees either way; half of the images are also shifted by
    20..35 % of their size. Exposed areas take the border's median colour."""
    n, h, w = len(stack), *_spatial(stack)
    angles = rng.uniform(90.0, 180.0, size=n) * rng.choice([-1.0, 1.0], size=n)
    do_shift = rng.random(n) < 0.5
    direction = rng.uniform(0.0, 2.0 * np.pi, size=n)
    magnitude = rng.uniform(0.20, 0.35, size=n)
    out = np.empty_like(stack)
    for i in range(n):
        image = stack[i].astype(np.float32)
        bg = _background(stack[i])
        moved = _rotate(image, float(angles[i]), bg)
        if do_shift[i]:
            dy = float(np.sin(direction[i]) * magnitude[i] * h)
            dx = float(np.cos(direction[i]) * magnitude[i] * w)
            moved = _shift(moved, dy, dx, bg)
        out[i] = _to_uint8(moved)
    return out


def _per_channel(image: np.ndarray, bg: np.ndarray | float, fn: Callable) -> np.ndarray:
    if image.ndim == 2:
        return fn(image, float(bg))
    bgs = np.broadcast_to(np.asarray(bg, dtype=np.float64), (image.shape[2],))
    return np.stack([fn(image[..., c], float(bgs[c])) for c in range(image.shape[2])], axis=-1)


def _rotate(image: np.ndarray, angle: float, bg: np.ndarray | float) -> np.ndarray:
    return _per_channel(
        image,
        bg,
        lambda im, cval: ndimage.rotate(
            im, angle, reshape=False, order=1, mode="constant", cval=cval
        ),
    )


def _shift(image: np.ndarray, dy: float, dx: float, bg: np.ndarray | float) -> np.ndarray:
    return _per_channel(
        image,
        bg,
        lambda im, cval: ndimage.shift(im, (dy, dx), order=1, mode="constant", cval=cval),
    )


CORRUPTIONS: dict[str, Corruption] = {
    "gaussian_noise": gaussian_noise,
    "salt_pepper": salt_pepper,
    "blank": blank,
    "inverted": inverted,
    "blur": blur,
    "occlusion": occlusion,
    "rotate_shift": rotate_shift,
}


# --------------------------------------------------------------------------- OOD
OOD_STYLES: tuple[str, ...] = ("strokes", "texture", "blobs", "shapes")


def _normalise(canvas: np.ndarray) -> np.ndarray:
    lo, hi = float(canvas.min()), float(canvas.max())
    if hi - lo < 1e-9:
        return np.zeros_like(canvas)
    return (canvas - lo) / (hi - lo)


def _strokes(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    canvas = np.zeros((h, w), dtype=np.float32)
    steps = 4 * (h + w)
    t = np.linspace(0.0, 1.0, steps)[:, None]
    for _ in range(int(rng.integers(3, 7))):
        p0, p1, p2 = (rng.uniform([0, 0], [h - 1, w - 1]) for _ in range(3))
        pts = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
        ys = np.clip(np.rint(pts[:, 0]).astype(int), 0, h - 1)
        xs = np.clip(np.rint(pts[:, 1]).astype(int), 0, w - 1)
        canvas[ys, xs] = 1.0
    canvas = ndimage.gaussian_filter(canvas, sigma=max(0.5, min(h, w) / 28.0))
    return np.clip(_normalise(canvas) * 1.6, 0.0, 1.0)


def _texture(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    canvas = np.zeros((h, w))
    for _ in range(int(rng.integers(1, 4))):
        cycles = rng.uniform(1.5, max(2.0, min(h, w) / 3.0))
        theta = rng.uniform(0.0, np.pi)
        phase = rng.uniform(0.0, 2 * np.pi)
        u = (np.cos(theta) * xx / w + np.sin(theta) * yy / h) * 2 * np.pi * cycles
        canvas += np.sin(u + phase)
    if rng.random() < 0.5:
        canvas = np.sign(canvas)  # hard-edged stripes / checks
    return _normalise(canvas)


def _blobs(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    noise = rng.standard_normal((h, w))
    smooth = ndimage.gaussian_filter(noise, sigma=rng.uniform(0.08, 0.2) * min(h, w), mode="wrap")
    return _normalise(smooth)


def _shapes(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    canvas = np.full((h, w), rng.uniform(0.0, 0.3))
    for _ in range(int(rng.integers(1, 4))):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(0.15, 0.45) * h, rng.uniform(0.15, 0.45) * w
        value = rng.uniform(0.5, 1.0)
        if rng.random() < 0.5:
            inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
        else:
            inside = (np.abs(yy - cy) <= ry) & (np.abs(xx - cx) <= rx)
        canvas[inside] = value
    return canvas


_OOD_MAKERS: dict[str, Callable[[int, int, np.random.Generator], np.ndarray]] = {
    "strokes": _strokes,
    "texture": _texture,
    "blobs": _blobs,
    "shapes": _shapes,
}


def ood_images(
    n: int, shape: tuple[int, ...], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Make ``n`` images that belong to no class.

    Parameters
    ----------
    n : int
        Number of images.
    shape : tuple
        One image's shape, ``(H, W)`` or ``(H, W, C)``.
    rng : numpy.random.Generator

    Returns
    -------
    images : np.ndarray
        uint8 ``(n, *shape)``; styles cycle through random strokes, sinusoidal or hard
        stripe/check textures, smooth noise blobs and flat geometric shapes. Colour
        images get a random tint per image.
    styles : np.ndarray
        str ``(n,)``, the style of each image (one of :data:`OOD_STYLES`).
    """
    h, w = int(shape[0]), int(shape[1])
    channels = int(shape[2]) if len(shape) == 3 else 0
    styles = rng.choice(np.array(OOD_STYLES), size=n)
    out = np.empty((n, *shape), dtype=np.uint8)
    for i, style in enumerate(styles):
        grey = _OOD_MAKERS[str(style)](h, w, rng)
        if rng.random() < 0.25:
            grey = 1.0 - grey
        if channels:
            tint = rng.uniform(0.4, 1.0, size=channels)
            out[i] = _to_uint8(grey[..., None] * tint * 255.0)
        else:
            out[i] = _to_uint8(grey * 255.0)
    return out, styles.astype(str)


# --------------------------------------------------------------------------- duplicates
def near_duplicates(stack: Stack, rng: np.random.Generator) -> Stack:
    """Slightly altered copies: half shifted by one pixel (edges replicated), half with
    mild Gaussian noise (sigma 2..5 grey levels)."""
    n = len(stack)
    shift = rng.random(n) < 0.5
    moves = np.array([(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)])
    move = moves[rng.integers(0, len(moves), size=n)]
    sigma = rng.uniform(2.0, 5.0, size=n)
    out = stack.copy()
    h, w = _spatial(stack)
    for i in np.flatnonzero(shift):
        dy, dx = (int(v) for v in move[i])
        pad = ((1, 1), (1, 1)) + (((0, 0),) if stack.ndim == 4 else ())
        padded = np.pad(stack[i], pad, mode="edge")
        out[i] = padded[1 - dy : 1 - dy + h, 1 - dx : 1 - dx + w]
    noisy = np.flatnonzero(~shift)
    if noisy.size:
        base = stack[noisy].astype(np.float32)
        noise = rng.standard_normal(base.shape, dtype=np.float32)
        out[noisy] = _to_uint8(base + noise * _per_sample(sigma[noisy], base.ndim))
    return out


def ensure_changed(
    new: Stack, old: Stack, rng: np.random.Generator, *, nudge: bool = False
) -> Stack:
    """Make sure every image of ``new`` differs from its counterpart in ``old``.

    An image that came out unchanged (a constant image blurred or rotated, say) gets one
    random pixel changed: to the far extreme (0 or 255) or, with ``nudge``, by one grey
    level.
    Works in place on ``new`` and returns it.
    """
    same = np.flatnonzero(np.all((new == old).reshape(len(new), -1), axis=1))
    h, w = _spatial(new)
    for i in same:
        y, x = int(rng.integers(0, h)), int(rng.integers(0, w))
        value = new[i, y, x].astype(np.int64)
        if nudge:
            changed = np.where(value < 255, value + 1, value - 1)
        else:
            changed = np.where(value >= 128, 0, 255)
        new[i, y, x] = changed.astype(np.uint8)
    return new

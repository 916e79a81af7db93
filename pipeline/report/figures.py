"""Pictures for the HTML report, each returned as a ``data:`` URI ready for ``<img src=…>``.

Sample images become small PNGs, enlarged with nearest-neighbour resampling so every pixel
stays a crisp square. Plots are drawn with matplotlib's object-oriented API (a bare
:class:`~matplotlib.figure.Figure`, never ``pyplot``), so rendering changes no global state
and needs no display; they are saved as SVG with text kept as text, which keeps them small.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib.colors import PowerNorm
from matplotlib.figure import Figure
from PIL import Image

#: Longest side, in CSS pixels, of a sample thumbnail.
THUMB_SIDE = 84

_FLAG_COLOUR = "#c0392b"
_OK_COLOUR = "#7f8c8d"


def data_uri(payload: bytes, mime: str) -> str:
    """``data:<mime>;base64,…`` for ``payload``."""
    return f"data:{mime};base64,{base64.b64encode(payload).decode('ascii')}"


def to_display_image(image: np.ndarray) -> np.ndarray:
    """One image as uint8 ``(H, W)`` (grey) or ``(H, W, 3|4)`` (colour) for Pillow.

    Parameters
    ----------
    image : ndarray
        ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)``; any numeric dtype.
        Non-uint8 values are clipped to 0..255; non-finite values become 0.

    Returns
    -------
    ndarray
        uint8, ``(H, W)`` or ``(H, W, C)`` with ``C`` in ``{3, 4}``.
    """
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 3 and arr.shape[2] == 2:  # grey + alpha: keep the grey
        arr = arr[:, :, 0]
    if arr.ndim == 3 and arr.shape[2] > 4:
        arr = arr[:, :, :3]
    if arr.ndim not in (2, 3):
        raise ValueError(f"an image must have 2 or 3 dimensions. Got shape {arr.shape} instead.")
    if arr.dtype != np.uint8:
        arr = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


def thumbnail_png(image: np.ndarray, *, side: int = THUMB_SIDE) -> bytes:
    """A PNG of ``image`` whose longest side is about ``side`` pixels.

    Small images are enlarged by a whole factor with nearest-neighbour resampling (each
    source pixel becomes a ``k x k`` block); images larger than ``side`` are reduced with a
    Lanczos filter.

    Parameters
    ----------
    image : ndarray
        ``(H, W)`` or ``(H, W, C)``; see :func:`to_display_image`.
    side : int, keyword-only
        Target longest side in pixels, at least 1.

    Returns
    -------
    bytes
        PNG-encoded image.
    """
    if side < 1:
        raise ValueError(f"`side` must be >= 1. Got {side} instead.")
    pil = Image.fromarray(to_display_image(image))
    longest = max(pil.size)
    if longest < side:
        k = max(1, side // longest)
        pil = pil.resize((pil.width * k, pil.height * k), Image.Resampling.NEAREST)
    elif longest > side:
        pil.thumbnail((side, side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    pil.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def thumbnail_uri(image: np.ndarray, *, side: int = THUMB_SIDE) -> str:
    """:func:`thumbnail_png` as a ``data:image/png`` URI."""
    return data_uri(thumbnail_png(image, side=side), "image/png")


def montage_uri(
    images: np.ndarray, *, rows: int, cols: int, scale: int = 2, gap: int = 1,
    max_tile: int = 48,
) -> str:
    """Tile ``rows * cols`` images (row-major; missing tiles stay blank) into one PNG URI.

    Parameters
    ----------
    images : ndarray
        ``(M, H, W)`` or ``(M, H, W, C)`` with ``M <= rows * cols``.
    rows, cols : int, keyword-only
        Grid shape.
    scale : int, keyword-only
        Nearest-neighbour enlargement of the whole montage.
    gap : int, keyword-only
        White pixels between tiles.
    max_tile : int, keyword-only
        Tiles with a longer side are reduced to it first (Lanczos), so large images still
        give a montage of modest size.
    """
    tiles = [to_display_image(im) for im in images[: rows * cols]]
    if not tiles:
        raise ValueError("`images` must hold at least one image.")
    if max(tiles[0].shape[:2]) > max_tile:
        reduced = []
        for tile in tiles:
            pil = Image.fromarray(tile)
            pil.thumbnail((max_tile, max_tile), Image.Resampling.LANCZOS)
            reduced.append(np.asarray(pil))
        tiles = reduced
    h, w = tiles[0].shape[:2]
    colour = any(t.ndim == 3 for t in tiles)
    shape: tuple[int, ...] = (
        rows * h + (rows - 1) * gap,
        cols * w + (cols - 1) * gap,
    )
    if colour:
        shape = (*shape, 3)
    canvas = np.full(shape, 255, dtype=np.uint8)
    for i, tile in enumerate(tiles):
        if tile.shape[:2] != (h, w):
            continue
        if colour and tile.ndim == 2:
            tile = np.repeat(tile[:, :, None], 3, axis=2)
        elif colour:
            tile = tile[:, :, :3]
        r, c = divmod(i, cols)
        y, x = r * (h + gap), c * (w + gap)
        canvas[y : y + h, x : x + w] = tile
    pil = Image.fromarray(canvas)
    if scale > 1:
        pil = pil.resize((pil.width * scale, pil.height * scale), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    pil.save(buf, format="PNG", optimize=True)
    return data_uri(buf.getvalue(), "image/png")


def png_file_uri(payload: bytes, *, max_side: int = 1024) -> str:
    """A PNG (or any Pillow-readable picture) as a PNG data URI, reduced to ``max_side``.

    Raises
    ------
    ValueError
        When ``payload`` is not a picture Pillow can read.
    """
    try:
        pil = Image.open(io.BytesIO(payload))
        pil.load()
    except Exception as exc:  # Pillow raises several types for bad files
        raise ValueError(f"not a readable image ({exc})") from exc
    if max(pil.size) > max_side:
        pil.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    elif pil.format == "PNG":
        return data_uri(payload, "image/png")
    if pil.mode not in ("L", "RGB", "RGBA", "LA", "P"):
        pil = pil.convert("RGB")
    buf = io.BytesIO()
    pil.save(buf, format="PNG", optimize=True)
    return data_uri(buf.getvalue(), "image/png")


# ---------------------------------------------------------------------------- plots
def plot_text(text: object, *, limit: int = 18) -> str:
    """``text`` made safe for a matplotlib label: ``$`` escaped (no mathtext), shortened."""
    s = str(text)
    if len(s) > limit:
        s = s[: limit - 1] + "…"
    return s.replace("$", r"\$")


def _grid(
    rows: int,
    cols: int,
    *,
    panel: tuple[float, float],
    left: float = 0.6,
    right: float = 0.15,
    bottom: float = 0.45,
    top: float = 0.3,
    wgap: float = 0.6,
    hgap: float = 0.75,
) -> tuple[Figure, np.ndarray]:
    """A ``rows x cols`` grid of axes with fixed margins and gaps in inches.

    Fixed margins draw about twice as fast as constrained layout.

    Returns
    -------
    (Figure, ndarray of Axes with shape (rows, cols))
    """
    width = cols * panel[0]
    height = rows * panel[1]
    fig = Figure(figsize=(width, height))
    axes = fig.subplots(rows, cols, squeeze=False)
    aw = (width - left - right - (cols - 1) * wgap) / cols
    ah = (height - bottom - top - (rows - 1) * hgap) / rows
    fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height,
                        top=1 - top / height, wspace=wgap / aw, hspace=hgap / ah)
    return fig, axes


def figure_uri(fig: Figure) -> str:
    """Save ``fig`` as SVG (text kept as text) and return a ``data:image/svg+xml`` URI."""
    buf = io.BytesIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "assay-report"}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    return data_uri(buf.getvalue(), "image/svg+xml")


def score_histograms_uri(
    scores: Mapping[str, tuple[np.ndarray, np.ndarray]], *, bins: int = 40
) -> str:
    """Small multiples: one histogram per issue type, flagged samples in red.

    Parameters
    ----------
    scores : mapping
        Title -> ``(score (N,), flagged (N,) bool)``. Scores are in [0, 1]; lower means
        more likely an issue.
    bins : int, keyword-only
        Number of bins over [0, 1].
    """
    if not scores:
        raise ValueError("`scores` must hold at least one issue type.")
    n = len(scores)
    cols = min(3, n)
    rows = -(-n // cols)
    fig, axes = _grid(rows, cols, panel=(3.6, 2.4))
    edges = np.linspace(0.0, 1.0, bins + 1)
    for ax, (title, (score, flagged)) in zip(axes.ravel(), scores.items(), strict=False):
        score = np.asarray(score, dtype=float)
        flagged = np.asarray(flagged, dtype=bool)
        ok = np.isfinite(score)
        score, flagged = np.clip(score[ok], 0.0, 1.0), flagged[ok]
        # counts drawn as two step outlines (one artist each, not one patch per bar)
        ok_counts = np.histogram(score[~flagged], bins=edges)[0]
        bad_counts = np.histogram(score[flagged], bins=edges)[0]
        ax.stairs(ok_counts, edges, fill=True, color=_OK_COLOUR, label="not flagged")
        ax.stairs(bad_counts, edges, fill=True, color=_FLAG_COLOUR, alpha=0.85, label="flagged")
        ax.set_yscale("symlog", linthresh=1)
        ax.set_ylim(bottom=0)
        ax.set_title(f"{plot_text(title, limit=30)} ({int(flagged.sum())} flagged)", fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_xlabel("score (lower = more suspicious)", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    axes.ravel()[0].legend(fontsize=7, frameon=False)
    return figure_uri(fig)


def heatmap_uri(
    matrix: np.ndarray,
    *,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    row_title: str,
    col_title: str,
) -> str:
    """A ``(R, C)`` matrix of fractions as an annotated heatmap (values in percent).

    Parameters
    ----------
    matrix : ndarray
        ``(R, C)`` floats, typically in [0, 1].
    row_labels, col_labels : sequence of str, keyword-only
        ``R`` and ``C`` tick labels.
    row_title, col_title : str, keyword-only
        Axis titles.
    """
    m = np.asarray(matrix, dtype=float)
    if m.ndim != 2:
        raise ValueError(f"`matrix` must be 2-D. Got shape {m.shape} instead.")
    r, c = m.shape
    side = min(9.0, max(3.0, 0.3 * max(r, c) + 1.5))
    fig, axes = _grid(1, 1, panel=(side + 1.2, side), left=1.0, right=0.45, bottom=0.95,
                      top=0.1)
    ax = axes[0, 0]
    shown = np.clip(np.nan_to_num(m, nan=0.0), 0.0, None)
    # a power-law colour scale keeps small off-diagonal shares visible next to a ~1 diagonal
    norm = PowerNorm(gamma=0.4, vmin=0.0, vmax=max(1e-9, float(shown.max())))
    im = ax.imshow(shown, cmap="Blues", norm=norm)
    ax.set_xticks(range(c), [plot_text(s, limit=10) for s in col_labels], fontsize=7,
                  rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(r), [plot_text(s, limit=10) for s in row_labels], fontsize=7)
    ax.set_xlabel(plot_text(col_title, limit=60), fontsize=8)
    ax.set_ylabel(plot_text(row_title, limit=60), fontsize=8)
    if max(r, c) <= 20:
        hi = float(shown.max())
        for i in range(r):
            for j in range(c):
                v = shown[i, j]
                if v < 0.005:
                    continue
                ax.text(
                    j, i, f"{100 * v:.0f}", ha="center", va="center", fontsize=6,
                    color="white" if v > 0.3 * hi else "black",
                )
    fig.colorbar(im, ax=ax, shrink=0.8, fraction=0.05, pad=0.03).ax.tick_params(labelsize=7)
    return figure_uri(fig)


def class_counts_uri(counts: Sequence[int], labels: Sequence[str]) -> str:
    """A small bar chart of samples per class."""
    k = len(counts)
    rotate = k > 10 or max((len(str(s)) for s in labels), default=0) > 6
    fig, axes = _grid(1, 1, panel=(max(4.0, 0.35 * k + 1.5), 2.4 if rotate else 2.1),
                      bottom=0.75 if rotate else 0.35, top=0.15)
    ax = axes[0, 0]
    ax.bar(range(k), counts, color="#2471a3")
    ax.set_xticks(range(k), [plot_text(s, limit=10) for s in labels], fontsize=7,
                  rotation=45 if rotate else 0, ha="right" if rotate else "center",
                  rotation_mode="anchor")
    ax.set_ylabel("samples", fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
    return figure_uri(fig)

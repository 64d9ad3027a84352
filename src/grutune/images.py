"""Image arrays as people look at them: tiles of (N, H, W, C) images in [0, 1] laid out as one picture."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["image_grid"]


def image_grid(images: np.ndarray, nrow: int, pad: int = 2) -> np.ndarray:
    """Tile (N, H, W, C) images in [0, 1] into one (rows*(H+pad)+pad, nrow*(W+pad)+pad, C) picture."""
    n, h, w, c = images.shape
    rows = math.ceil(n / nrow)
    grid = np.ones((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), dtype=images.dtype)
    for k, img in enumerate(images):
        r, col = divmod(k, nrow)
        grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + col * (w + pad) : pad + col * (w + pad) + w] = img
    return grid

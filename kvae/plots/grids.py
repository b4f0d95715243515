"""Images and grids: data as images, tiles of images in one array, and PNG files of them.

A grid is a numpy array (height, width, channels) with values in [0, 1]: tiles of one image
each, separated by 1-pixel white lines (``grid_pad``). ``save_grid`` writes one as a PNG whose
size is the grid's size times an integer ``scale`` (so small images stay visible), to a
temporary name in the same folder and then renamed.
"""

import math

import numpy as np

from kvae._files import atomic_path, check_writable
from kvae.errors import ConfigError, DataError

__all__ = ["as_images", "default_scale", "grid_pad", "image_shape", "save_grid", "tile"]


def image_shape(data_shape):
    """(H, W, C) to show one example of ``data_shape`` as an image, or None if it is not one.

    Images are (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); flat data (D,) is shown as a
    square image when D is a perfect square (784 -> 28 x 28)."""
    shape = tuple(int(d) for d in data_shape)
    if len(shape) == 3 and shape[-1] in (1, 3, 4):
        return shape
    if len(shape) == 2:
        return (*shape, 1)
    if len(shape) == 1:
        side = math.isqrt(shape[0])
        if side * side == shape[0] and side > 1:
            return (side, side, 1)
    return None


def as_images(x, data_shape=None):
    """Examples ``x`` (n, *data_shape) as images (n, H, W, C) clipped to [0, 1]."""
    x = np.asarray(x, np.float32)
    data_shape = tuple(data_shape or x.shape[1:])
    shape = image_shape(data_shape)
    if shape is None:
        raise DataError(
            f"Expected image-like data, of shape (H, W), (H, W, C) with C in 1, 3, 4, or (D,) "
            f"with D a square number, to draw it. Received: data shape {data_shape}."
        )
    return np.clip(x.reshape((len(x), *shape)), 0.0, 1.0)


def tile(images, ncols, pad=1, pad_value=1.0):
    """Images (n, H, W, C) as one grid (rows*H + pads, ncols*W + pads, C), row by row."""
    images = np.asarray(images, np.float32)
    n, h, w, c = images.shape
    ncols = max(1, min(int(ncols), n))
    nrows = -(-n // ncols)
    grid = np.full(
        (nrows * h + (nrows + 1) * pad, ncols * w + (ncols + 1) * pad, c), pad_value, np.float32
    )
    for i, image in enumerate(images):
        r, col = divmod(i, ncols)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        grid[top : top + h, left : left + w] = image
    return grid


def default_scale(grid_height_of_one_image):
    """Integer upscaling so that one image is at least 48 pixels tall."""
    return max(1, -(-48 // int(grid_height_of_one_image)))


def grid_pad(image_height, image_width):
    """Pixels between tiles for images of this size: 1 for small images (below 16 pixels:
    without a gap, 8 x 8 digits run into stripes), else 0 (the Keras example's manifold)."""
    return 1 if min(int(image_height), int(image_width)) < 16 else 0


def save_grid(grid, path, scale=1, *, row_labels=None, rows=None, pad=1):
    """Write a grid (H, W, C) in [0, 1] as a PNG of exactly (H * scale, W * scale) pixels.

    ``row_labels``: texts written in a white margin left of the grid, one per row of tiles
    and repeated (``["original", "reconstruction"]`` labels alternate rows); ``rows`` is the
    grid's number of tile rows, made by :func:`tile` with ``pad``. The margin widens the PNG.

    Returns the written (height, width)."""
    from PIL import Image

    path = check_writable(path, suffixes=(".png",), what="image")
    grid = np.clip(np.asarray(grid, np.float32), 0.0, 1.0)
    scale = int(scale)
    if scale < 1:
        raise ConfigError(f"Expected `scale` to be an integer >= 1. Received: scale={scale!r}")
    if row_labels is not None and (rows is None or int(rows) < 1):
        raise ConfigError(f"Expected `rows` >= 1 with `row_labels`. Received: rows={rows!r}")
    if scale > 1:
        grid = np.repeat(np.repeat(grid, scale, axis=0), scale, axis=1)
    pixels = np.round(grid * 255).astype(np.uint8)
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[pixels.shape[-1]]
    image = Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode=mode)
    if row_labels:
        image = _label_rows(image, list(row_labels), int(rows), pad * scale)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return image.height, image.width


def _label_rows(image, labels, rows, pad):
    """``image`` with a white margin on the left holding one label per row of tiles."""
    from PIL import Image, ImageDraw, ImageFont

    tile_h = (image.height - (rows + 1) * pad) / rows
    size = int(np.clip(tile_h * 0.28, 10, 18))
    font = ImageFont.load_default(size=size)
    texts = [labels[r % len(labels)] for r in range(rows)]
    widths = [font.getbbox(t)[2] - font.getbbox(t)[0] for t in texts]
    margin = max(widths) + 2 * max(4, size // 2)
    white = {"L": 255, "RGB": (255,) * 3, "RGBA": (255,) * 4}[image.mode]
    black = {"L": 0, "RGB": (0,) * 3, "RGBA": (0, 0, 0, 255)}[image.mode]
    out = Image.new(image.mode, (image.width + margin, image.height), white)
    out.paste(image, (margin, 0))
    draw = ImageDraw.Draw(out)
    for r, text in enumerate(texts):
        centre = pad + r * (tile_h + pad) + tile_h / 2
        draw.text((margin - max(4, size // 2), centre), text, fill=black, font=font, anchor="rm")
    return out

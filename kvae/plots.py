"""Figures of a trained VAE: image grids (samples, reconstructions, interpolations, latent
traversals, the 2-D manifold) and the latent scatter, as numpy arrays (for TensorBoard) and as
PNG files (for the command line).

    from kvae import plots
    plots.save_grid(plots.samples(model, 64), "samples.png")
    plots.plot_manifold(model, "manifold.png")              # latent_dim == 2
    plots.plot_latent(model, x_test, y_test, "latent.png")

Grids are numpy arrays (height, width, channels) with values in [0, 1]: tiles of one image each,
separated by 1-pixel white lines (the manifold only between images under 16 pixels, see
``grid_pad``). ``save_grid`` writes one as a PNG whose size is the grid's
size times an integer ``scale`` (so small images stay visible); matplotlib figures have a fixed
pixel size (``FIGSIZE`` inches at ``DPI``). Every file is written to a temporary name in the
same folder and then renamed, so a failed write leaves no partial file behind.

The manifold (Kingma & Welling 2014, Fig. 4; the Keras VAE example's first figure) decodes a
grid of codes whose coordinates are the inverse normal CDF of evenly spaced quantiles
``(i + 0.5) / n``: equal prior mass per cell under a standard normal prior. For latent sizes
above 2 it needs ``method="pca"``: the same grid over the first two principal axes of the
posterior means of some data (coordinates scaled by the standard deviation along each axis,
centred on their mean). The latent scatter (the example's second figure) plots posterior
means coloured by label; above 2 dimensions it plots their first two principal components.
"""

import math

import numpy as np

from kvae._files import atomic_path, check_writable
from kvae.errors import ConfigError, DataError

__all__ = [
    "DPI",
    "FIGSIZE",
    "as_images",
    "decode_mean",
    "default_scale",
    "encode_mean",
    "grid_pad",
    "image_shape",
    "interpolations",
    "latent_scatter_data",
    "manifold",
    "manifold_codes",
    "plot_latent",
    "plot_manifold",
    "posterior",
    "reconstructions",
    "samples",
    "save_grid",
    "tile",
    "traversal",
]

FIGSIZE = (8.0, 8.0)  # inches; with DPI: 800 x 800 pixel figures
DPI = 100
MANIFOLD_METHODS = (None, "pca")
_BATCH = 1000


# ----- images and grids -----------------------------------------------------------------------
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


# ----- model pictures (numpy grids) -------------------------------------------------------------
def decode_mean(model, z):
    """The mean of p(x|z) for codes ``z`` (n, latent_dim), numpy, in batches."""
    z = np.asarray(z, np.float32)
    out = []
    for start in range(0, len(z), _BATCH):
        params = model.decoder_params(z[start : start + _BATCH])
        out.append(np.asarray(model.likelihood_head.mean(params)))
    return np.concatenate(out)


def encode_mean(model, x):
    """Posterior means E[q(z|x)] (n, latent_dim), numpy, in batches."""
    from kvae.evaluation import posterior_moments

    return posterior_moments(model, x)[0]


def _data_shape(model):
    return tuple(model.data_shape)


def samples(model, n=64, seed=0, ncols=None, y=None):
    """A grid of ``n`` means of p(x|z) for z drawn from the prior (of class / condition
    ``y`` for a conditional model)."""
    x = model.sample(n, seed=seed) if y is None else model.sample(n, seed=seed, y=y)
    return tile(as_images(x, _data_shape(model)), ncols or math.ceil(math.sqrt(n)))


def class_samples(model, per_class=10, seed=0):
    """A conditional model's samples, one row per class (``condition={"num_classes": C}``)."""
    from kvae.errors import ConfigError

    condition = getattr(model, "condition", None)
    if condition is None or not condition.is_classes:
        raise ConfigError(
            "Expected a conditional model with class labels (trained with --conditional) for "
            f"samples by class. Received: a model with condition={condition!r}."
        )
    c = condition.num_classes
    labels = np.repeat(np.arange(c), per_class)
    x = model.sample(c * per_class, seed=seed, y=labels)
    return tile(as_images(x, _data_shape(model)), per_class)


def reconstructions(model, x, n=16, ncols=8):
    """Inputs beside reconstructions: rows of ``ncols`` inputs, each followed by a row of their
    reconstructions (the mean of p(x | z = E[q(z|x)]))."""
    x = np.asarray(x[:n], np.float32)
    rec = np.asarray(model.predict(x, batch_size=_BATCH, verbose=0))
    shape = _data_shape(model)
    inputs, outputs = as_images(x, shape), as_images(rec, shape)
    rows = []
    for start in range(0, len(x), ncols):
        block_in = inputs[start : start + ncols]
        block_out = outputs[start : start + ncols]
        if len(block_in) < ncols:  # pad the last block with blank tiles
            blank = np.ones((ncols - len(block_in), *inputs.shape[1:]), np.float32)
            block_in = np.concatenate([block_in, blank])
            block_out = np.concatenate([block_out, blank])
        rows.extend([block_in, block_out])
    return tile(np.concatenate(rows), ncols)


def interpolations(model, x, rows=4, steps=10):
    """Each row decodes ``steps`` codes on the line between the posterior means of two
    examples (x[2i] and x[2i+1]); the first and last columns show those two examples."""
    if len(x) < 2:
        raise DataError(f"Expected at least 2 examples to interpolate. Received: {len(x)}.")
    rows = max(1, min(int(rows), len(x) // 2))
    x = np.asarray(x[: 2 * rows], np.float32)
    mu = encode_mean(model, x)
    t = np.linspace(0.0, 1.0, steps, dtype=np.float32)[:, None]
    shape = _data_shape(model)
    images = []
    for i in range(rows):
        a, b = mu[2 * i], mu[2 * i + 1]
        decoded = as_images(decode_mean(model, (1 - t) * a + t * b), shape)
        ends = as_images(x[2 * i : 2 * i + 2], shape)
        images.extend([ends[0], *decoded, ends[1]])
    return tile(np.stack(images), steps + 2)


def traversal(model, x, steps=9, max_dims=10):
    """Latent traversal: row u varies unit u over the inverse normal CDF of evenly spaced
    quantiles (as the manifold), the other units held at the posterior mean of ``x[0]``."""
    mu = encode_mean(model, np.asarray(x[:1], np.float32))[0]
    dims = min(model.latent_dim, int(max_dims))
    values = _quantile_grid(steps)
    codes = np.repeat(mu[None, None, :], dims, axis=0).repeat(steps, axis=1)  # (dims, steps, L)
    for u in range(dims):
        codes[u, :, u] = values
    decoded = decode_mean(model, codes.reshape(-1, model.latent_dim))
    return tile(as_images(decoded, _data_shape(model)), steps)


def _quantile_grid(n):
    from scipy.special import ndtri

    return ndtri((np.arange(n) + 0.5) / n).astype(np.float32)


def manifold_codes(model, n=20, method=None, x=None):
    """``(codes (n, n, latent_dim), axis_values, description)`` of the manifold grid.

    Row i (top to bottom) has the second coordinate decreasing, column j the first
    increasing, as in the Keras example. See the module docstring for ``method``."""
    if method not in MANIFOLD_METHODS:
        raise ConfigError(f"Expected `method` to be None or 'pca'. Received: method={method!r}")
    n = int(n)
    if n < 2:
        raise ConfigError(f"Expected a grid size n >= 2. Received: n={n}")
    values = _quantile_grid(n)
    a, b = np.meshgrid(values, values[::-1])  # a: columns (first axis), b: rows (second)
    latent_dim = model.latent_dim
    if method is None:
        if latent_dim != 2:
            raise ConfigError(
                f"Expected latent_dim=2 for the manifold figure (a grid over the 2-D latent "
                f"space). Received: latent_dim={latent_dim}. Pass method='pca' (--method pca) "
                f"to draw it over the first two principal axes of the posterior means."
            )
        codes = np.stack([a, b], axis=-1)
        description = "z = inverse normal CDF of evenly spaced quantiles (Kingma & Welling)"
        return codes.astype(np.float32), values, description
    if latent_dim < 2:
        raise ConfigError(
            f"Expected latent_dim >= 2 for a manifold figure. Received: latent_dim={latent_dim}."
        )
    if x is None:
        raise ConfigError("Expected data `x` for method='pca' (its posterior means give the axes).")
    center, axes, sds, _ = _pca(encode_mean(model, x), 2)
    codes = center + (a[..., None] * sds[0]) * axes[0] + (b[..., None] * sds[1]) * axes[1]
    description = (
        "PCA: grid over the first two principal axes of the posterior means "
        "(inverse normal CDF quantiles x axis s.d.)"
    )
    return codes.astype(np.float32), values, description


def manifold(model, n=20, method=None, x=None):
    """The decoded manifold as a grid of n x n images (see :func:`manifold_codes`), with a
    gap between small images (:func:`grid_pad`)."""
    codes, _, _ = manifold_codes(model, n, method, x)
    decoded = as_images(decode_mean(model, codes.reshape(-1, model.latent_dim)), _data_shape(model))
    return tile(decoded, n, pad=grid_pad(*decoded.shape[1:3]))


def _pca(points, k):
    points = np.asarray(points, np.float64)
    center = points.mean(axis=0)
    cov = np.cov(points - center, rowvar=False)
    cov = np.atleast_2d(cov)
    eigval, eigvec = np.linalg.eigh(cov)
    order = np.argsort(eigval)[::-1][:k]
    eigval = np.clip(eigval[order], 0.0, None)
    total = float(np.clip(np.trace(cov), 1e-12, None))
    return center, eigvec[:, order].T, np.sqrt(eigval) + 1e-12, eigval / total


def latent_scatter_data(model, x):
    """``(points (n, 2) or (n, 1), description)``: posterior means, projected by PCA above 2-D."""
    mu = encode_mean(model, x)
    if mu.shape[1] <= 2:
        return mu, "posterior means"
    center, axes, _, explained = _pca(mu, 2)
    points = (mu - center) @ axes.T
    return points, (
        f"PCA of the {mu.shape[1]}-D posterior means (explains "
        f"{100 * explained.sum():.0f}% of their variance)"
    )


# ----- matplotlib figures ---------------------------------------------------------------------
def _figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _colormap(name):
    from matplotlib import colormaps

    return colormaps[name]


def _save_figure(fig, path):
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return int(FIGSIZE[1] * DPI), int(FIGSIZE[0] * DPI)


def plot_manifold(model, path, n=20, method=None, x=None):
    """The Keras example's digit manifold as an 800 x 800 PNG at ``path``.

    Returns (height, width) in pixels."""
    path = check_writable(path, suffixes=(".png",), what="figure")
    codes, values, description = manifold_codes(model, n, method, x)
    decoded = as_images(decode_mean(model, codes.reshape(-1, model.latent_dim)), _data_shape(model))
    h, w = decoded.shape[1:3]
    pad = grid_pad(h, w)
    grid = tile(decoded, n, pad=pad)
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    cmap = "Greys_r" if grid.shape[-1] == 1 else None
    ax.imshow(grid[..., 0] if grid.shape[-1] == 1 else grid, cmap=cmap, vmin=0, vmax=1)
    ticks = np.arange(n)
    step = max(1, n // 10)
    # imshow puts pixel i at [i - 0.5, i + 0.5]: tile j spans pad + j * (w + pad) + [0, w).
    ax.set_xticks(pad + ticks[::step] * (w + pad) + w / 2 - 0.5)
    ax.set_xticklabels([f"{v:.2f}" for v in values[::step]], rotation=90)
    ax.set_yticks(pad + ticks[::step] * (h + pad) + h / 2 - 0.5)
    ax.set_yticklabels([f"{v:.2f}" for v in values[::-1][::step]])
    pca = method == "pca"
    ax.set_xlabel("principal axis 1 (s.d. units)" if pca else "z[0]")
    ax.set_ylabel("principal axis 2 (s.d. units)" if pca else "z[1]")
    ax.set_title(f"Decoded latent grid, {n} x {n}\n{description}", fontsize=9)
    fig.tight_layout()
    return _save_figure(fig, path)


def plot_latent(model, x, y, path, max_points=10000):
    """The Keras example's scatter of posterior means coloured by label (800 x 800 PNG).

    Returns (height, width) in pixels."""
    path = check_writable(path, suffixes=(".png",), what="figure")
    return _save_figure(_latent_figure(model, x, y, max_points), path)


def _latent_figure(model, x, y, max_points=10000):
    x = np.asarray(x[:max_points], np.float32)
    points, description = latent_scatter_data(model, x)
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    if points.shape[1] == 1:
        rng = np.random.default_rng(0)
        points = np.concatenate([points, rng.uniform(-0.5, 0.5, (len(points), 1))], axis=1)
        ax.set_ylabel("jitter")
        ax.set_xlabel("z[0]")
    elif "PCA" in description:
        ax.set_xlabel("principal component 1")
        ax.set_ylabel("principal component 2")
    else:
        ax.set_xlabel("z[0]")
        ax.set_ylabel("z[1]")
    if y is not None:
        y = np.asarray(y)[: len(points)]
        classes, index = np.unique(y, return_inverse=True)
        if len(classes) <= 20:
            # One colour block per class, its tick in the middle of the block.
            from matplotlib.colors import BoundaryNorm, ListedColormap

            base = "tab10" if len(classes) <= 10 else "tab20"
            colours = _colormap(base)(np.arange(len(classes)))
            cmap = ListedColormap(colours)
            norm = BoundaryNorm(np.arange(len(classes) + 1) - 0.5, len(classes))
            art = ax.scatter(
                points[:, 0], points[:, 1], c=index, cmap=cmap, norm=norm, s=4, alpha=0.8
            )
            bar = fig.colorbar(art, ax=ax, ticks=np.arange(len(classes)))
            bar.set_ticklabels([str(c) for c in classes])
        else:
            art = ax.scatter(points[:, 0], points[:, 1], c=y, cmap="viridis", s=4, alpha=0.8)
            bar = fig.colorbar(art, ax=ax)
        bar.set_label("label")
        title = f"{description}, coloured by label"
    else:
        ax.scatter(points[:, 0], points[:, 1], s=4, alpha=0.8)
        title = f"{description} (the data has no labels)"
    ax.set_title(f"{title}\n{len(points)} examples", fontsize=9)
    fig.tight_layout()
    return fig


# ----- the true posterior beside q and q* -------------------------------------------------------
def posterior(model, x, path=None, *, n=4, optimise=True, grid=121):
    """For each of the first ``n`` examples of ``x``: the image beside the true posterior
    p(z|x) (filled contours of the normalised density on a grid), with q(z|x) (solid) and q*
    (dashed: the best member of the posterior family for that example, see
    :func:`kvae.evaluation.gaps`) drawn over it as ellipses at 1 and 2 standard deviations
    (contours of their density when they are not Gaussian), titled with log p(x), the ELBO and
    KL(q || p(z|x)).

    For a 2-D latent the plane is the latent space and all three numbers come by quadrature.
    Above 2-D the plane is a slice through q's mean along the two directions where q is
    widest (the panel says so); log p(x) then comes from ``method="auto"`` and the ELBO from
    1000 samples, so KL = log p(x) - ELBO is an estimate.

    Returns (height, width) of the PNG written to ``path``, or with ``path=None`` the figure
    as an RGB numpy array in [0, 1] (for TensorBoard).
    """
    from kvae.evaluation.posterior_figure import draw_posterior

    if path is not None:
        path = check_writable(path, suffixes=(".png",), what="figure")
    n = min(int(n), len(x))
    if n < 1:
        raise DataError(f"Expected at least one example to draw. Received: {len(x)}.")
    x = np.asarray(x[:n], np.float32)
    images = as_images(x, _data_shape(model)) if image_shape(model.data_shape) else None
    fig = draw_posterior(model, x, images, optimise=optimise, grid=grid)
    if path is not None:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=DPI)
        w, h = fig.get_size_inches() * DPI
        return int(round(h)), int(round(w))
    canvas = fig.canvas
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].astype(np.float32) / 255.0

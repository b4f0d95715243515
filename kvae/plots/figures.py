"""matplotlib figures of a model: the decoded manifold with its axes, and the latent
scatter coloured by label, as PNG files of a fixed pixel size (``FIGSIZE`` inches at
``DPI``), each written to a temporary name and then renamed."""

import numpy as np

from kvae._files import atomic_path, check_writable
from kvae.plots.grids import as_images, grid_pad, tile
from kvae.plots.pictures import decode_mean, latent_scatter_data, manifold_codes

__all__ = ["DPI", "FIGSIZE", "new_figure", "plot_latent", "plot_manifold"]

FIGSIZE = (8.0, 8.0)  # inches; with DPI: 800 x 800 pixel figures
DPI = 100


def new_figure():
    """An empty matplotlib Figure of ``FIGSIZE`` at ``DPI`` on an Agg canvas (no display)."""
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


def plot_manifold(model, path, n=20, method=None, x=None, *, y=None, condition=None):
    """The Keras example's digit manifold as an 800 x 800 PNG at ``path``. A conditional
    model decodes every code with ``condition`` (one class, say); ``y`` are the conditions
    of ``x`` (for ``method="pca"``).

    Returns (height, width) in pixels."""
    path = check_writable(path, suffixes=(".png",), what="figure")
    codes, values, description = manifold_codes(model, n, method, x, y)
    decoded = as_images(
        decode_mean(model, codes.reshape(-1, model.latent_dim), condition),
        tuple(model.data_shape),
    )
    h, w = decoded.shape[1:3]
    pad = grid_pad(h, w)
    grid = tile(decoded, n, pad=pad)
    fig = new_figure()
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


def plot_latent(model, x, y, path, max_points=10000, *, condition=None):
    """The Keras example's scatter of posterior means coloured by label ``y`` (800 x 800
    PNG); ``condition``: a conditional model's conditions of ``x`` (often ``y`` itself).

    Returns (height, width) in pixels."""
    path = check_writable(path, suffixes=(".png",), what="figure")
    return _save_figure(_latent_figure(model, x, y, max_points, condition), path)


def _latent_figure(model, x, y, max_points=10000, condition=None):
    x = np.asarray(x[:max_points], np.float32)
    condition = None if condition is None else np.asarray(condition)[:max_points]
    points, description = latent_scatter_data(model, x, condition)
    fig = new_figure()
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

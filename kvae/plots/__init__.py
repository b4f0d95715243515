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

Modules: ``grids`` (images, tiles, PNG files), ``pictures`` (a model's pictures as grids),
``figures`` (the matplotlib manifold and latent scatter), ``posterior_figure`` (the true
posterior with q and q*). Every number a figure shows comes from :mod:`kvae.evaluation`'s
public functions.
"""

from kvae.plots.figures import DPI, FIGSIZE, plot_latent, plot_manifold
from kvae.plots.grids import as_images, default_scale, grid_pad, image_shape, save_grid, tile
from kvae.plots.pictures import (
    MANIFOLD_METHODS,
    class_samples,
    decode_mean,
    encode_mean,
    interpolations,
    latent_scatter_data,
    manifold,
    manifold_codes,
    reconstructions,
    samples,
    traversal,
)
from kvae.plots.posterior_figure import posterior

__all__ = [
    "DPI",
    "FIGSIZE",
    "MANIFOLD_METHODS",
    "as_images",
    "class_samples",
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

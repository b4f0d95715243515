"""Pictures of a model as numpy grids (for TensorBoard and PNG files): samples,
reconstructions, interpolations, latent traversals, the 2-D manifold, and the data of the
latent scatter. Posterior means come from :func:`kvae.evaluation.posterior_moments`."""

import math

import numpy as np

from kvae import evaluation
from kvae.errors import ConfigError, DataError
from kvae.plots.grids import as_images, grid_pad, tile

__all__ = [
    "MANIFOLD_METHODS",
    "class_samples",
    "decode_mean",
    "encode_mean",
    "interpolations",
    "latent_scatter_data",
    "manifold",
    "manifold_codes",
    "reconstructions",
    "samples",
    "traversal",
]

MANIFOLD_METHODS = (None, "pca")
_BATCH = 1000


def _conditional(model):
    return getattr(model, "condition", None) is not None


def decode_mean(model, z, y=None):
    """The mean of p(x|z) for codes ``z`` (n, latent_dim), numpy, in batches. ``y``: a
    conditional model's condition, one for all codes or one per code."""
    z = np.asarray(z, np.float32)
    y = model.condition.repeat(y, len(z)) if _conditional(model) else None
    out = []
    for start in range(0, len(z), _BATCH):
        rows = slice(start, start + _BATCH)
        params = model.decoder_params(z[rows], None if y is None else y[rows])
        out.append(np.asarray(model.likelihood_head.mean(params)))
    return np.concatenate(out)


def encode_mean(model, x, y=None):
    """Posterior means E[q(z|x)] (n, latent_dim), numpy, in batches (``y``: a conditional
    model's conditions of ``x``)."""
    return evaluation.posterior_moments(model, x, y=y if _conditional(model) else None)[0]


def _data_shape(model):
    return tuple(model.data_shape)


def samples(model, n=64, seed=0, ncols=None, y=None):
    """A grid of ``n`` means of p(x|z) for z drawn from the prior (of class / condition
    ``y`` for a conditional model)."""
    x = model.sample(n, seed=seed) if y is None else model.sample(n, seed=seed, y=y)
    return tile(as_images(x, _data_shape(model)), ncols or math.ceil(math.sqrt(n)))


def class_samples(model, per_class=10, seed=0):
    """A conditional model's samples, one row per class (``condition={"num_classes": C}``)."""
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


def reconstructions(model, x, n=16, ncols=8, y=None):
    """Inputs beside reconstructions: rows of ``ncols`` inputs, each followed by a row of their
    reconstructions (the mean of p(x | z = E[q(z|x)]); with a conditional model's conditions
    ``y`` of ``x``, of p(x | z, y) at the mean of q(z|x, y))."""
    x = np.asarray(x[:n], np.float32)
    if _conditional(model):
        y = None if y is None else np.asarray(y)[:n]
        rec = decode_mean(model, encode_mean(model, x, y), y)
    else:
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


def _pairs(model, y, rows, n):
    """Index pairs to interpolate between: (0, 1), (2, 3), ... or, for a model conditioned
    on classes, pairs of examples of the same class (each decoded with that class)."""
    if not (_conditional(model) and model.condition.is_classes):
        return [(2 * i, 2 * i + 1) for i in range(min(rows, n // 2))]
    labels = np.asarray(y).reshape(n, -1).argmax(-1) if np.ndim(y) == 2 else np.asarray(y)
    pairs, waiting = [], {}
    for i, label in enumerate(labels.tolist()):
        if label in waiting:
            pairs.append((waiting.pop(label), i))
            if len(pairs) == rows:
                break
        else:
            waiting[label] = i
    if not pairs:
        raise DataError(
            f"Expected two examples of one class to interpolate between. Received: {n} "
            "examples of distinct classes."
        )
    return pairs


def interpolations(model, x, rows=4, steps=10, y=None):
    """Each row decodes ``steps`` codes on the line between the posterior means of two
    examples (x[2i] and x[2i+1]); the first and last columns show those two examples.

    A conditional model needs ``y``, the conditions of ``x``: with classes, each row joins
    two examples of the same class (the first such pairs in ``x``), decoded with that class;
    with other conditions the condition moves along the line with the code."""
    if len(x) < 2:
        raise DataError(f"Expected at least 2 examples to interpolate. Received: {len(x)}.")
    x = np.asarray(x, np.float32)
    cond = _conditional(model)
    if cond:
        model.condition.check(y, len(x))
        y = np.asarray(y)
    pairs = _pairs(model, y, max(1, int(rows)), len(x))
    used = sorted({i for pair in pairs for i in pair})
    mu = dict(zip(used, encode_mean(model, x[used], None if y is None else y[used]), strict=True))
    t = np.linspace(0.0, 1.0, steps, dtype=np.float32)[:, None]
    shape = _data_shape(model)
    images = []
    for a, b in pairs:
        line = None
        if cond:
            ya, yb = np.asarray(y[a], np.float32), np.asarray(y[b], np.float32)
            same = np.broadcast_to(y[a], (steps, *np.shape(y[a])))
            line = same if model.condition.is_classes else (1 - t) * ya + t * yb
        decoded = as_images(decode_mean(model, (1 - t) * mu[a] + t * mu[b], line), shape)
        ends = as_images(x[[a, b]], shape)
        images.extend([ends[0], *decoded, ends[1]])
    return tile(np.stack(images), steps + 2)


def traversal(model, x, steps=9, max_dims=10, y=None):
    """Latent traversal: row u varies unit u over the inverse normal CDF of evenly spaced
    quantiles (as the manifold), the other units held at the posterior mean of ``x[0]``
    (decoded with its condition ``y[0]`` for a conditional model)."""
    y0 = None if y is None else np.asarray(y)[:1]
    mu = encode_mean(model, np.asarray(x[:1], np.float32), y0)[0]
    dims = min(model.latent_dim, int(max_dims))
    values = _quantile_grid(steps)
    codes = np.repeat(mu[None, None, :], dims, axis=0).repeat(steps, axis=1)  # (dims, steps, L)
    for u in range(dims):
        codes[u, :, u] = values
    y0 = None if y0 is None else y0[0]
    decoded = decode_mean(model, codes.reshape(-1, model.latent_dim), y0)
    return tile(as_images(decoded, _data_shape(model)), steps)


def _quantile_grid(n):
    from scipy.special import ndtri

    return ndtri((np.arange(n) + 0.5) / n).astype(np.float32)


def manifold_codes(model, n=20, method=None, x=None, y=None):
    """``(codes (n, n, latent_dim), axis_values, description)`` of the manifold grid.

    Row i (top to bottom) has the second coordinate decreasing, column j the first
    increasing, as in the Keras example. See the module docstring for ``method`` (``y``:
    a conditional model's conditions of ``x``)."""
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
    center, axes, sds, _ = _pca(encode_mean(model, x, y), 2)
    codes = center + (a[..., None] * sds[0]) * axes[0] + (b[..., None] * sds[1]) * axes[1]
    description = (
        "PCA: grid over the first two principal axes of the posterior means "
        "(inverse normal CDF quantiles x axis s.d.)"
    )
    return codes.astype(np.float32), values, description


def manifold(model, n=20, method=None, x=None, *, y=None, condition=None):
    """The decoded manifold as a grid of n x n images (see :func:`manifold_codes`), with a
    gap between small images (:func:`grid_pad`). A conditional model decodes every code
    with ``condition`` (one class, say); ``y`` are the conditions of ``x``."""
    codes, _, _ = manifold_codes(model, n, method, x, y)
    flat = codes.reshape(-1, model.latent_dim)
    decoded = as_images(decode_mean(model, flat, condition), _data_shape(model))
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


def latent_scatter_data(model, x, y=None):
    """``(points (n, 2) or (n, 1), description)``: posterior means, projected by PCA above 2-D
    (``y``: a conditional model's conditions of ``x``)."""
    mu = encode_mean(model, x, y)
    if mu.shape[1] <= 2:
        return mu, "posterior means"
    center, axes, _, explained = _pca(mu, 2)
    points = (mu - center) @ axes.T
    return points, (
        f"PCA of the {mu.shape[1]}-D posterior means (explains "
        f"{100 * explained.sum():.0f}% of their variance)"
    )

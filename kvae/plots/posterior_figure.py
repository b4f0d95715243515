"""The true posterior p(z|x) on a grid with q(z|x) and q* over it (:func:`posterior`): the
figure of ``kvae plot --kind posterior`` and of TensorBoard's ``posterior`` image.

The numbers come from :mod:`kvae.evaluation`'s public functions: the grid and log p(x) by
quadrature, q's moments, log p(x, z), the per-sample ELBO and q* (the optimised posterior).
"""

import numpy as np
import tensorflow as tf
from scipy.special import logsumexp

from kvae import evaluation
from kvae._files import atomic_path, check_writable
from kvae.errors import ConfigError, DataError
from kvae.plots.figures import DPI, new_figure
from kvae.plots.grids import as_images, image_shape

__all__ = ["draw_posterior", "posterior"]


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
    _check_drawable(model)
    if path is not None:
        path = check_writable(path, suffixes=(".png",), what="figure")
    n = min(int(n), len(x))
    if n < 1:
        raise DataError(f"Expected at least one example to draw. Received: {len(x)}.")
    x = np.asarray(x[:n], np.float32)
    images = as_images(x, tuple(model.data_shape)) if image_shape(model.data_shape) else None
    fig = draw_posterior(model, x, images, optimise=optimise, grid=grid)
    if path is not None:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=DPI)
        w, h = fig.get_size_inches() * DPI
        return int(round(h)), int(round(w))
    canvas = fig.canvas
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].astype(np.float32) / 255.0


def _check_drawable(model):
    if model.latent_dim < 2:
        raise ConfigError(
            "Expected latent_dim >= 2 for the posterior figure (p(z|x) over a plane). "
            f"Received: latent_dim={model.latent_dim}. For log p(x) and the gaps use "
            "kvae evaluate --method quadrature --gaps."
        )
    if getattr(model, "condition", None) is not None:
        raise ConfigError(
            "Expected an unconditional model for the posterior figure (its log p(x) by "
            "quadrature takes no condition). Received: a conditional model "
            f"({model.condition.describe()})."
        )


def _covariance(dist):
    try:
        return np.asarray(dist.covariance(), np.float64)
    except (NotImplementedError, AttributeError):
        return None


def _plane(model, x, q, grid):
    """``(origin [B, L], axes [B, 2, L], a [g], b [g] per example, slice?)``."""
    m, s = evaluation.q_moments(q)
    lat = model.latent_dim
    if lat == 2:
        pg = evaluation.posterior_grid(model, x, q=q)
        centre = pg.mean
        # +-4 posterior sd, widened to show q's 2-sd ellipse when q sits elsewhere.
        half = np.maximum(4 * pg.sd, np.abs(m - centre) + 2.5 * s)
        axes = np.broadcast_to(np.eye(2), (len(x), 2, 2)).copy()
        return centre, axes, half, False
    cov = _covariance(q)
    if cov is None:
        cov = np.stack([np.diag(v**2) for v in s])
    vals, vecs = np.linalg.eigh(cov)  # ascending
    axes = np.transpose(vecs[..., ::-1][..., :2], (0, 2, 1))  # [B, 2, L] widest two
    half = 4 * np.sqrt(np.maximum(vals[..., ::-1][..., :2], 1e-12))
    return m, axes, half, True


def _density(model, x, origin, axes, half, grid):
    b = len(x)
    unit, spacing, _ = evaluation.grid_points(
        np.zeros((b, 2)), half, grid
    )  # [P, B, 2] plane coords
    z = origin[None] + np.einsum("pbk,bkl->pbl", unit, axes)
    lj = evaluation.log_joint(model, x, z)
    log_cell = np.sum(np.log(spacing), axis=1)
    dens = np.exp(lj - (logsumexp(lj, axis=0) + log_cell)[None])  # normalised on the plane
    return unit, z, dens


def _ellipses(ax, centre, cov, style, label):
    from matplotlib.patches import Ellipse

    vals, vecs = np.linalg.eigh(cov)
    angle = np.degrees(np.arctan2(vecs[1, 1], vecs[0, 1]))
    for k, alpha in ((1, 1.0), (2, 0.6)):
        ax.add_patch(
            Ellipse(
                centre,
                2 * k * np.sqrt(max(vals[1], 0)),
                2 * k * np.sqrt(max(vals[0], 0)),
                angle=angle,
                fill=False,
                linestyle=style,
                linewidth=1.4,
                edgecolor="white" if style == "-" else "orange",
                alpha=alpha,
                label=label if k == 1 else None,
            )
        )


def _overlay(ax, dist, origin, axes, unit, z, g, style, label, i):
    cov = _covariance(dist)
    if cov is not None:
        mean = np.asarray(dist.mean(), np.float64)[i]
        centre = axes[i] @ (mean - origin[i])
        _ellipses(ax, centre, axes[i] @ cov[i] @ axes[i].T, style, label)
        return
    lq = evaluation.log_q(dist, z)[:, i].reshape(g, g)
    a = unit[:, i, 0].reshape(g, g)
    b = unit[:, i, 1].reshape(g, g)
    colour = "white" if style == "-" else "orange"
    ax.contour(a, b, np.exp(lq), levels=4, colors=colour, linestyles=style, linewidths=1.0)
    ax.plot([], [], color=colour, linestyle=style, linewidth=1.0, label=label)  # legend entry


def _numbers(model, x, q, sliced):
    if not sliced:
        ll = evaluation.quadrature_log_likelihood(model, x).estimate
        elbo = evaluation.elbo_quadrature(model, x, q)
        return ll, elbo, "quadrature"
    ll = evaluation.log_likelihood(model, x, method="auto")
    params = model.posterior_head(model.encoder(tf.constant(x)))
    w = evaluation.elbo_samples(model, x, params, 1000, (0, 5))
    return ll.estimate, w.mean(0), ll.method


def draw_posterior(model, x, images, *, optimise=True, grid=121):
    """A matplotlib Figure with one row per example (see :func:`posterior`)."""
    xt = tf.constant(x)
    params = model.posterior_head(model.encoder(xt))
    q = model.posterior_head.distribution(params)
    q_star = None
    if optimise:
        p_star, _, _ = evaluation.optimise_posterior(
            model, xt, params, seed=(0, 3), opt_samples=256, tol=1e-4, max_iterations=300
        )
        q_star = model.posterior_head.distribution(p_star)
    origin, axes, half, sliced = _plane(model, x, q, grid)
    unit, z, dens = _density(model, x, origin, axes, half, grid)
    ll, elbo, how = _numbers(model, x, q, sliced)
    n = len(x)
    cols = 2 if images is not None else 1
    fig = new_figure()
    fig.set_size_inches(4.0 * cols, 3.4 * n)
    fig.set_dpi(DPI)
    g = grid
    for i in range(n):
        if images is not None:
            ax_img = fig.add_subplot(n, cols, cols * i + 1)
            img = images[i]
            ax_img.imshow(
                img[..., 0] if img.shape[-1] == 1 else img, cmap="Greys_r", vmin=0, vmax=1
            )
            ax_img.set_axis_off()
            ax_img.set_title(f"example {i}", fontsize=9)
        ax = fig.add_subplot(n, cols, cols * i + cols)
        a = unit[:, i, 0].reshape(g, g)
        b = unit[:, i, 1].reshape(g, g)
        ax.contourf(a, b, dens[:, i].reshape(g, g), levels=14, cmap="viridis")
        _overlay(ax, q, origin, axes, unit, z, g, "-", "q(z|x)", i)
        if q_star is not None:
            _overlay(ax, q_star, origin, axes, unit, z, g, "--", "q*(z|x)", i)
        ax.set_xlim(a.min(), a.max())
        ax.set_ylim(b.min(), b.max())
        if sliced:
            ax.set_xlabel("widest direction of q (slice through q's mean)", fontsize=8)
            ax.set_ylabel("second widest", fontsize=8)
        else:
            ax.set_xlabel("z[0] - posterior mean", fontsize=8)
            ax.set_ylabel("z[1] - posterior mean", fontsize=8)
        kl = ll[i] - elbo[i]
        ax.set_title(
            f"log p(x)={ll[i]:.2f} ({how})  ELBO={elbo[i]:.2f}  KL(q||p(z|x))={kl:.3f}",
            fontsize=8,
        )
        if i == 0:
            ax.legend(loc="upper right", fontsize=7, framealpha=0.4)
    fig.tight_layout()
    return fig

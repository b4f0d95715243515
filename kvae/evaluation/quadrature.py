"""log p(x) = log of the integral of p(x|z) p(z) dz on a grid, for latent_dim <= 3.

Per example the grid is placed where the posterior has its mass, in passes:

1. a coarse grid (``coarse`` points per axis) centred at q(z|x)'s mean, 12 of q's standard
   deviations to each side, widened (doubled) while more than 1e-3 of its mass lies on its
   outermost points;
2. the fine grid (``grid`` points per axis) centred at the posterior mean found by the pass
   before, ``num_sd`` posterior standard deviations to each side or further where that pass
   found more than ``edge_tol / 100`` of the mass at a point, widened (doubled) while more
   than ``edge_tol`` of its mass lies on its outermost points;
3. refined: while the fine grid is more than twice as wide as step 2 asks for (a posterior
   much narrower than q, which the coarse grid saw on one or two points), step 2 again from
   the fine grid (at most ``MAX_REFINE`` times). Without it a posterior 10-20 times
   narrower than q was sampled at about 2 of its standard deviations per point.

The integral is the sum of p(x, z_i) times the cell volume (for a density whose mass is
inside the grid this rule converges faster than any power of the spacing). Reported per
example in ``info``: the mass on the grid's outermost points (``edge_mass``), and
``resolution_error``, the change in log p(x) when every other grid point is dropped (the
error of the full grid is far below it). A batch whose check is above ``resolution_tol``
is evaluated again with twice the points per axis (``MAX_DENSIFY`` times at most; the grid
used per example is ``info["grid_used"]``). The method refuses (ConfigError) instead of
answering when the edge mass stays above ``edge_tol`` after ``max_widen`` doublings
(truncation) or when a resolution check stays above ``resolution_tol`` (a grid too coarse
for the posterior's shape, e.g. narrow modes far apart).
"""

import itertools

import numpy as np
from scipy.special import logsumexp

from kvae._checks import positive_int
from kvae._progress import Progress
from kvae.errors import ConfigError
from kvae.evaluation.joint import log_joint, log_q
from kvae.evaluation.moments import q_moments
from kvae.evaluation.result import LogLikelihood
from kvae.evaluation.structure import require

__all__ = [
    "DEFAULT_GRID",
    "DEFAULT_RESOLUTION_TOL",
    "MAX_DENSIFY",
    "MAX_REFINE",
    "PosteriorGrid",
    "default_batch_size",
    "elbo_quadrature",
    "grid_points",
    "kl_to_posterior",
    "posterior_grid",
    "quadrature_log_likelihood",
]

DEFAULT_GRID = {1: 513, 2: 49, 3: 25}
_COARSE = {1: 65, 2: 25, 3: 13}
_BATCH = {1: 64, 2: 16, 3: 2}


def default_batch_size(model):
    """Examples per batch of :func:`quadrature_log_likelihood` by default (the grid of a
    1-, 2- or 3-D latent times the batch bounds its memory)."""
    return _BATCH[model.latent_dim]


# nats: the largest resolution check (log p(x) on every other point vs all) answered.
DEFAULT_RESOLUTION_TOL = 1e-2
MAX_REFINE = 6
# A batch whose resolution check is above resolution_tol is evaluated again on a grid with
# twice the points per axis (2 g - 1), at most MAX_DENSIFY times and within _BUDGET points
# per example, before the method refuses.
MAX_DENSIFY = 2
_BUDGET = 200_000
# q's mass on elbo_quadrature's grid must be 1 within this (else q reaches past the grid).
Q_MASS_TOL = 1e-3


def grid_points(centre, half, g):
    """A regular grid per example: ``g`` points per axis from ``centre - half`` to
    ``centre + half`` (both ``[B, L]``, numpy).

    Returns ``(z, spacing, index)``: the points ``[g**L, B, L]``, the spacing per axis
    ``[B, L]`` and each point's integer grid coordinates ``[g**L, L]`` (the same order for
    every example)."""
    lat = centre.shape[1]
    ticks = np.linspace(-1.0, 1.0, g)
    idx = np.array(list(itertools.product(range(g), repeat=lat)))  # [P, L]
    unit = ticks[idx]  # [P, L]
    z = centre[None] + unit[:, None, :] * half[None]  # [P, B, L]
    return z, 2.0 * half / (g - 1), idx


class PosteriorGrid:
    """The unnormalised posterior log p(x, z) on each example's grid.

    Attributes: ``z [P, B, L]``, ``log_joint [P, B]``, ``spacing [B, L]``, ``index [P, L]``,
    ``g`` (points per axis), ``log_evidence [B]``, ``edge_mass [B]``.
    """

    def __init__(self, z, lj, spacing, index, g):
        self.z, self.log_joint, self.spacing, self.index, self.g = z, lj, spacing, index, g
        log_cell = np.sum(np.log(spacing), axis=1)
        self.log_evidence = logsumexp(lj, axis=0) + log_cell
        log_w = lj - logsumexp(lj, axis=0)[None]
        self.weights = np.exp(log_w)  # normalised posterior mass per point [P, B]
        edge = np.any((index == 0) | (index == g - 1), axis=1)
        self.edge_mass = self.weights[edge].sum(axis=0)
        self.mean = np.einsum("pb,pbl->bl", self.weights, z)
        var = np.einsum("pb,pbl->bl", self.weights, (z - self.mean[None]) ** 2)
        self.sd = np.sqrt(np.maximum(var, 0.0))

    def coarse_log_evidence(self):
        """log p(x) from every other point (twice the spacing), for the resolution check."""
        keep = np.all(self.index % 2 == 0, axis=1)
        log_cell = np.sum(np.log(2 * self.spacing), axis=1)
        return logsumexp(self.log_joint[keep], axis=0) + log_cell


def _place(model, xb, centre, half, g, edge_tol, max_widen, what):
    """Evaluate on the grid, doubling ``half`` for examples with too much edge mass."""
    for _ in range(max_widen + 1):
        z, spacing, idx = grid_points(centre, half, g)
        grid = PosteriorGrid(z, log_joint(model, xb, z), spacing, idx, g)
        # A non-finite log p(x, z) is reported as a NaN estimate for its example (by index,
        # see LogLikelihood.nan_indices), not widened for.
        bad = (grid.edge_mass > edge_tol) & np.isfinite(grid.log_evidence)
        if not bad.any():
            return grid
        half = np.where(bad[:, None], 2.0 * half, half)
    worst = int(np.argmax(np.where(bad, grid.edge_mass, -np.inf)))
    raise ConfigError(
        f"Expected the {what} quadrature grid to hold the posterior mass. Received: after "
        f"{max_widen} doublings, {grid.edge_mass[worst]:.3g} of the mass (> edge_tol="
        f"{edge_tol:g}) still lies on the grid's edge for an example of this batch "
        f"(log p(x, z) may be NaN or the posterior heavy-tailed). Raise max_widen, or use "
        "method='ais'."
    )


def _needed_half(grid, num_sd, edge_tol):
    """The half-width a grid placed on ``grid``'s posterior needs per example ``[B, L]``:
    ``num_sd`` posterior standard deviations, or further to reach every point holding more
    than ``edge_tol / 100`` of the mass (heavier tails than a Gaussian's, several modes)."""
    # A posterior narrower than the spacing shows sd ~ 0: keep at least half a cell.
    sd = np.maximum(grid.sd, 0.5 * grid.spacing)
    held = grid.weights > 0.01 * edge_tol  # [P, B]
    reach = np.where(held[..., None], np.abs(grid.z - grid.mean[None]), 0.0).max(axis=0)
    return np.maximum(num_sd * sd, reach + grid.spacing)


def posterior_grid(
    model, x, *, grid=None, num_sd=6.0, edge_tol=1e-6, max_widen=6, coarse=None, q=None
):
    """A :class:`PosteriorGrid` for a batch ``x`` (numpy), placed as the module docstring says.
    ``q`` (optional) is the posterior to start from; default ``model.encode(x)``. Its
    ``refinements`` attribute counts the passes of step 3."""
    lat = model.latent_dim
    g = DEFAULT_GRID[lat] if grid is None else grid
    gc = _COARSE[lat] if coarse is None else coarse
    q = model.encode(x) if q is None else q
    m_q, s_q = q_moments(q)
    first = _place(model, x, m_q, 12.0 * s_q, gc, 1e-3, max_widen, "coarse")
    centre, half = first.mean, _needed_half(first, num_sd, edge_tol)
    fine = _place(model, x, centre, half, g, edge_tol, max_widen, "fine")
    refinements = 0
    for _ in range(MAX_REFINE):
        # The grid actually used (after any widening) against what its own posterior needs.
        used = 0.5 * (g - 1) * fine.spacing
        needed = _needed_half(fine, num_sd, edge_tol)
        narrow = np.any(needed < 0.5 * used, axis=1) & np.isfinite(fine.log_evidence)
        if not narrow.any():
            break
        centre = np.where(narrow[:, None], fine.mean, centre)
        half = np.where(narrow[:, None], needed, used)
        fine = _place(model, x, centre, half, g, edge_tol, max_widen, "fine")
        refinements += 1
    fine.refinements = refinements
    return fine


def _check(model, grid, num_sd, edge_tol, max_widen, batch_size, resolution_tol=1.0):
    require(model, "quadrature")
    if grid is not None:
        grid = positive_int("grid", grid)
        if grid < 3:
            raise ConfigError(f"Expected grid >= 3 points per axis. Received: grid={grid}")
        points = grid**model.latent_dim
        if points > 2_000_000:
            raise ConfigError(
                f"Expected at most 2,000,000 grid points per example. Received: grid={grid} "
                f"in {model.latent_dim} dimensions = {points} points. Use a smaller grid."
            )
    if not (isinstance(num_sd, (int, float)) and num_sd > 0):
        raise ConfigError(f"Expected num_sd > 0. Received: num_sd={num_sd!r}")
    if not (isinstance(edge_tol, (int, float)) and 0 < edge_tol < 1):
        raise ConfigError(f"Expected 0 < edge_tol < 1. Received: edge_tol={edge_tol!r}")
    if isinstance(max_widen, bool) or not isinstance(max_widen, int) or max_widen < 0:
        raise ConfigError(f"Expected max_widen to be an integer >= 0. Received: {max_widen!r}")
    if batch_size is not None:
        positive_int("batch_size", batch_size)
    if not (isinstance(resolution_tol, (int, float)) and resolution_tol > 0):
        raise ConfigError(
            f"Expected resolution_tol > 0 nats. Received: resolution_tol={resolution_tol!r}"
        )


def quadrature_log_likelihood(
    model,
    x,
    *,
    grid=None,
    num_sd=6.0,
    edge_tol=1e-6,
    max_widen=6,
    batch_size=None,
    resolution_tol=DEFAULT_RESOLUTION_TOL,
    verbose=0,
):
    """log p(x) per example by quadrature (latent_dim <= 3), a :class:`LogLikelihood`.

    Args:
        grid: points per axis of the fine grid (default: 513 / 49 / 25 for 1 / 2 / 3
            latent dimensions; odd, so the resolution check halves it exactly).
        num_sd: half-width of a grid in standard deviations of the distribution it covers.
        edge_tol: largest posterior mass allowed on the grid's outermost points.
        max_widen: doublings of the grid's width allowed before refusing.
        batch_size: examples per pass (default 64 / 16 / 2).
        resolution_tol: largest resolution check (nats: the change of log p(x) when every
            other grid point is dropped) answered; above it the grid is made finer, then
            the method refuses.
        verbose: 0 silent, 1 a progress bar over the batches, ``"auto"`` a bar on a
            terminal and, without one, a progress line on standard error now and then for a
            run longer than a minute (``kvae._progress``).

    Its ``info`` holds per example ``edge_mass``, ``resolution_error``, ``refinements``
    and ``grid_used`` (see the module docstring), and the tolerances used.

    Raises:
        ConfigError: before any work for options out of range; after the grid's placement
            when its edge holds more than ``edge_tol`` of the mass or a resolution check
            exceeds ``resolution_tol`` (the message names the example and what to do).
    """
    _check(model, grid, num_sd, edge_tol, max_widen, batch_size, resolution_tol)
    x = np.asarray(x, np.float32)
    model.check_data(x)
    bs = batch_size or default_batch_size(model)
    est, edge, res, refined, used = [], [], [], [], []
    progress = Progress(-(-len(x) // bs), verbose, "batch", title="log p(x) by quadrature")
    for start in range(0, len(x), bs):
        xb = x[start : start + bs]
        n = len(xb)
        if n < bs and len(x) > bs:  # pad: one compiled shape for the whole data set
            xb = np.concatenate([xb, np.repeat(xb[-1:], bs - n, axis=0)])
        g = grid or DEFAULT_GRID[model.latent_dim]
        for densified in range(MAX_DENSIFY + 1):
            pg = posterior_grid(
                model, xb, grid=g, num_sd=num_sd, edge_tol=edge_tol, max_widen=max_widen
            )
            r = np.abs(pg.log_evidence - pg.coarse_log_evidence())[:n]
            over = np.isfinite(pg.log_evidence[:n]) & (r > resolution_tol)
            finer = 2 * g - 1  # every point of this grid is a point of the finer one
            if not over.any() or densified == MAX_DENSIFY or finer**model.latent_dim > _BUDGET:
                break
            g = finer
        est.append(pg.log_evidence[:n])
        edge.append(pg.edge_mass[:n])
        res.append(r)
        refined.append(np.full(n, pg.refinements))
        used.append(np.full(n, g))
        progress.advance()
    value = np.concatenate(est)
    resolution = np.concatenate(res)
    grids = np.concatenate(used)
    _refuse_coarse(resolution, value, resolution_tol, int(grids.max()))
    info = {
        "grid": grid or DEFAULT_GRID[model.latent_dim],
        "grid_used": grids,
        "num_sd": num_sd,
        "edge_tol": edge_tol,
        "resolution_tol": resolution_tol,
        "edge_mass": np.concatenate(edge),
        "resolution_error": resolution,
        "refinements": np.concatenate(refined),
    }
    return LogLikelihood(value, np.zeros_like(value), "quadrature", info)


def _refuse_coarse(resolution, value, tol, grid):
    over = np.isfinite(value) & (resolution > tol)
    if over.any():
        worst = int(np.argmax(np.where(over, resolution, -np.inf)))
        raise ConfigError(
            f"Expected the quadrature grid to resolve the posterior: log p(x) within "
            f"resolution_tol={tol:g} nats of its value on every other grid point. Received: "
            f"{int(over.sum())} example(s) above it, the worst (index {worst}) at "
            f"{resolution[worst]:.3g} nats with grid={grid} points per axis. Pass a larger "
            "grid, or use method='ais'."
        )


def kl_to_posterior(model, x, q=None, **options):
    """KL(q(z|x) || p(z|x)) per example, numpy ``(n,)``, by quadrature.

    KL = sum_i q(z_i) dV [log q(z_i) - log p(x, z_i)] + log p(x); ``q`` defaults to the
    encoder's q(z|x). Also returns q's mass on the grid (should be ~1: otherwise q reaches
    where the grid does not reach). The grid covers the posterior's grid (placed as for
    log p(x)) and q's own +-num_sd box, with ``grid`` points per axis (default: twice as fine
    as log p(x)'s), and gives log p(x) too: KL and log p(x) come from one sum."""
    x = np.asarray(x, np.float32)
    q = model.encode(x) if q is None else q
    grid = options.pop("grid", None) or 2 * DEFAULT_GRID[model.latent_dim] - 1
    num_sd = options.get("num_sd", 6.0)
    pg = posterior_grid(model, x, q=q, **options)
    # One box holding both the posterior's grid and q's own +-num_sd box.
    m_q, s_q = q_moments(q)
    lo = np.minimum(pg.z.min(axis=0), m_q - num_sd * s_q)
    hi = np.maximum(pg.z.max(axis=0), m_q + num_sd * s_q)
    z, spacing, _ = grid_points((lo + hi) / 2, (hi - lo) / 2, grid)
    lj = log_joint(model, x, z)
    log_cell = np.sum(np.log(spacing), axis=1)
    log_px = logsumexp(lj, axis=0) + log_cell
    lq = log_q(q, z)
    qw = np.exp(lq + log_cell[None])
    kl = np.sum(qw * (lq - lj), axis=0) + log_px
    return kl, qw.sum(axis=0)


def elbo_quadrature(model, x, q=None, *, grid=None, num_sd=6.0, mass_tol=Q_MASS_TOL):
    """ELBO(q) = E_q[log p(x, z) - log q(z|x)] per example on a grid placed on q itself
    (``num_sd`` of q's standard deviations to each side of its mean).

    The sum is over the grid only, so q's mass on it must be 1: an example whose q-mass on
    the grid differs from 1 by more than ``mass_tol`` (q's tails past +-num_sd, a flow's
    heavy tails, or a grid too coarse for q) is refused (ConfigError) rather than truncated.
    """
    if not (isinstance(mass_tol, (int, float)) and 0 < mass_tol < 1):
        raise ConfigError(f"Expected 0 < mass_tol < 1. Received: mass_tol={mass_tol!r}")
    x = np.asarray(x, np.float32)
    q = model.encode(x) if q is None else q
    lat = model.latent_dim
    g = DEFAULT_GRID[lat] if grid is None else grid
    m, s = q_moments(q)
    z, spacing, _ = grid_points(m, num_sd * s, g)
    lq = log_q(q, z)
    lj = log_joint(model, x, z)
    qw = np.exp(lq + np.sum(np.log(spacing), axis=1)[None])
    mass = qw.sum(axis=0)
    off = np.abs(mass - 1.0) > mass_tol
    if off.any():
        worst = int(np.argmax(np.abs(mass - 1.0)))
        raise ConfigError(
            f"Expected q(z|x) to have mass 1 (within mass_tol={mass_tol:g}) on the ELBO's "
            f"grid of +-{num_sd:g} of its standard deviations. Received: {int(off.sum())} "
            f"example(s) off, the worst (index {worst}) with mass {mass[worst]:.6g} "
            f"(grid={g} points per axis). Pass a larger num_sd (tails) or grid (resolution), "
            "or estimate the ELBO by sampling (kvae.evaluation.elbo_samples)."
        )
    return np.sum(qw * (lj - lq), axis=0)

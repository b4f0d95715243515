"""The answer of every log p(x) method: per-example estimates with their standard errors."""

import dataclasses
import warnings

import numpy as np

__all__ = ["LogLikelihood"]


@dataclasses.dataclass(frozen=True)
class LogLikelihood:
    """Per-example log p(x) estimates (nats) from one method.

    Attributes:
        estimate: numpy ``(n,)``, one estimate per example.
        stderr: numpy ``(n,)``, the Monte Carlo standard error of each estimate (0 for the
            deterministic methods ``exact`` and ``quadrature``, whose numerical error is in
            ``info["resolution_error"]``; for AIS chain noise only, its bias is estimated in
            ``info["bias_indicator"]``).
        method: the method that produced it (``"iwae"``, ``"exact"``, ``"quadrature"``,
            ``"ais"``); with ``method="auto"`` the one auto chose.
        info: method-specific diagnostics (the settings used; for quadrature the mass near the
            grid's edge and a resolution check; for AIS the adapted step sizes and acceptance).

    ``np.asarray(result)`` is ``result.estimate``, so code written for the array that
    ``log_likelihood`` returned before keeps working after ``np.asarray``.
    """

    estimate: np.ndarray
    stderr: np.ndarray
    method: str
    info: dict = dataclasses.field(default_factory=dict)

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.estimate, dtype=dtype)

    def __len__(self):
        return len(self.estimate)

    def head(self, n):
        """The result of the first ``n`` examples (per-example arrays in ``info`` cut too):
        what :func:`kvae.evaluation.gaps` takes as ``log_likelihood_result`` for the first
        ``n`` examples of the data this result covers."""
        count = len(self)
        if not 0 < n <= count:
            raise ValueError(f"Expected 0 < n <= {count}. Received: n={n}.")

        def cut(value):
            per_example = isinstance(value, np.ndarray) and value.shape[:1] == (count,)
            return value[:n] if per_example else value

        info = {k: cut(v) for k, v in self.info.items()}
        return LogLikelihood(self.estimate[:n], self.stderr[:n], self.method, info)

    @property
    def nan_indices(self):
        """Indices of examples whose estimate is not finite (NaN or infinite)."""
        return np.flatnonzero(~np.isfinite(self.estimate)).tolist()

    def mean(self):
        """The mean over examples; NaN (with a warning naming the examples) if any is not
        finite: a bad example is reported, never averaged away."""
        bad = self.nan_indices
        if bad:
            warnings.warn(
                f"log p(x) ({self.method}) is not finite for {len(bad)} example(s), indices "
                f"{bad[:20]}{' ...' if len(bad) > 20 else ''}; the mean is NaN.",
                RuntimeWarning,
                stacklevel=2,
            )
            return float("nan")
        return float(np.mean(self.estimate))

    def mean_stderr(self):
        """Standard error of :meth:`mean` as an estimate of the test-set mean of log p(x).

        It is the spread over examples, std / sqrt(n), which already contains each
        estimate's own Monte Carlo noise; for n = 1 it is that example's own stderr."""
        n = len(self.estimate)
        if n == 1:
            return float(self.stderr[0])
        return float(np.std(self.estimate, ddof=1) / np.sqrt(n))

    def mean_mc_stderr(self):
        """The Monte Carlo standard error of :meth:`mean` for these examples:
        ``sqrt(sum stderr_i^2) / n`` (the estimates' errors are independent). It is the part
        of :meth:`mean_stderr` that more samples per example would shrink; 0 for the
        deterministic methods."""
        return float(np.sqrt(np.sum(np.square(self.stderr))) / len(self.stderr))

    def example_mc_stderr_rms(self):
        """The root mean square of the per-example Monte Carlo standard errors: the typical
        error of one example's estimate (sqrt(n) times :meth:`mean_mc_stderr`), not an
        error of the mean."""
        return float(np.sqrt(np.mean(np.square(self.stderr))))

    def summary(self, prefix="log_likelihood"):
        """A JSON-able dict: ``{prefix}``, ``{prefix}_stderr`` (:meth:`mean_stderr`),
        ``{prefix}_method``, ``{prefix}_mean_mc_stderr`` (:meth:`mean_mc_stderr`, the Monte
        Carlo error of the mean), ``{prefix}_example_mc_stderr_rms``
        (:meth:`example_mc_stderr_rms`, the typical error of one example's estimate) and
        ``{prefix}_nan_examples`` (indices of non-finite estimates); for quadrature also
        ``{prefix}_resolution_error`` (the largest resolution check over the examples, nats:
        its numerical error, which a standard error of 0 does not show) and
        ``{prefix}_resolution_tol`` (the tolerance it was checked against); for AIS with
        its bias check ``{prefix}_bias_indicator`` (the mean over examples of the estimate
        minus the estimate at half the temperatures: about the bias that the standard
        errors, chain noise only, leave out).

        Before, ``{prefix}_mc_stderr`` held the per-example root mean square under a name that
        read as the error of the mean (sqrt(n) times too large for that); the key is gone
        rather than kept with a changed meaning."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = self.mean()
        out = {
            prefix: mean,
            f"{prefix}_stderr": self.mean_stderr(),
            f"{prefix}_method": self.method,
            f"{prefix}_mean_mc_stderr": self.mean_mc_stderr(),
            f"{prefix}_example_mc_stderr_rms": self.example_mc_stderr_rms(),
            f"{prefix}_nan_examples": self.nan_indices,
        }
        if "resolution_error" in self.info:
            res = np.asarray(self.info["resolution_error"], np.float64)
            finite = res[np.isfinite(res)]
            out[f"{prefix}_resolution_error"] = float(finite.max()) if finite.size else None
            out[f"{prefix}_resolution_tol"] = self.info.get("resolution_tol")
        if "bias_indicator" in self.info:
            out[f"{prefix}_bias_indicator"] = float(np.mean(self.info["bias_indicator"]))
        return out

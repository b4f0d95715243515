"""Imputation and anomaly scores of table rows, from a model passed in (duck-typed: it
needs ``encode``, ``decode``, ``prior_distribution`` and a likelihood head with a
``schema``, such as kvae.tables' mixed head). Pure: numbers in, numbers out.

Both rest on the same importance weights (MIWAE, Mattei and Frellsen 2019): for a row x
with observed part x_o, draw z_s ~ q(z|x_o) and weigh w_s = p(x_o|z_s) p(z_s) / q(z_s|x_o).

- log p(x_o) ~ log (1/S) sum_s w_s (the IWAE estimate, a lower bound in expectation), with
  the delta-method standard error sd(w) / (sqrt(S) mean(w));
- per-column contributions sum_s w~_s log p(x_j|z_s) (w~ the normalised weights): the
  posterior-expected log-likelihood of each observed cell, lowest for the cell that makes
  the row unusual; they add up to the weighted log p(x_o|z);
- single imputation: sum_s w~_s E[x_j|z_s] for continuous and count columns (counts
  rounded), the weighted mode argmax_k sum_s w~_s p(x_j = k|z_s) for binary and
  categorical ones;
- multiple imputation: M draws from p(x_m|x_o), by sampling importance resampling: z
  resampled with probabilities w~, then x_m ~ p(x_m|z).
"""

import dataclasses

import numpy as np
import tensorflow as tf

from kvae.errors import ConfigError, DataError

__all__ = ["Scores", "impute", "score", "scores_frame"]

_CONTINUOUS, _COUNT, _BINARY, _CATEGORICAL = range(4)


@dataclasses.dataclass(frozen=True)
class Scores:
    """Per row: ``log_px`` (IWAE estimate of log p(x_obs), nats), its ``stderr``, and
    ``contributions`` [rows, columns] (0 for a missing cell; lower = more unusual)."""

    log_px: np.ndarray
    stderr: np.ndarray
    contributions: np.ndarray
    num_samples: int


def _check(model, x, num_samples):
    _head(model)
    x = np.asarray(x, np.float32)
    model.check_data(x)
    if not (isinstance(num_samples, int) and num_samples >= 2):
        raise ConfigError(f"Expected num_samples >= 2. Received: num_samples={num_samples!r}.")
    return x


def _weights(model, x, num_samples, seed):
    """z [S, B, L], p(x|z) (batch [S, B]), per-column log p [S, B, D], log w [S, B]."""
    x = tf.constant(x)
    q = model.encode(x)
    z = q.sample(num_samples, seed=seed)
    p = model.decode(z)
    columns = p.column_log_prob(x)
    log_w = (
        tf.reduce_sum(columns, axis=-1)
        + tf.cast(model.prior_distribution().log_prob(z), tf.float32)
        - tf.cast(q.log_prob(z), tf.float32)
    )
    return z, p, columns, log_w


def _batches(n, batch_size):
    return [(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]


def _seed(seed, i):
    return tf.constant([int(seed), i], tf.int32)


def _rows(model, data, unknown):
    """(coded rows, text cells) for a table (a DataFrame or a file path), read with the
    model's own schema; (data, None) for coded rows."""
    if isinstance(data, np.ndarray) or tf.is_tensor(data):
        return data, None
    from kvae.tables import read_with_schema

    return read_with_schema(data, _head(model).schema, unknown)


def _head(model):
    head = model.likelihood_head
    if not getattr(head, "handles_missing", False) or not hasattr(head, "schema"):
        raise ConfigError(
            "Expected a model of a table (the 'mixed' likelihood of kvae.tables). Received: "
            f"a model with the {type(head).__name__} likelihood."
        )
    return head


def score(model, data, num_samples=1000, seed=0, batch_size=64, unknown="error"):
    """Anomaly scores of table rows: :class:`Scores` for coded rows (NaN where missing), a
    DataFrame (:func:`scores_frame`) for a table (a DataFrame or a CSV/Parquet path, read
    with the model's schema; ``unknown="missing"`` reads unseen levels as missing)."""
    rows, cells = _rows(model, data, unknown)
    scores = _score_rows(model, rows, num_samples, seed, batch_size)
    return scores if cells is None else scores_frame(scores, _head(model).schema.names)


def scores_frame(scores, names):
    """:class:`Scores` as a DataFrame: ``log_px``, ``stderr``, ``top_column`` (the lowest
    contribution) and one ``contribution:<column>`` per column."""
    from kvae.tables.read import pandas

    contributions = np.where(scores.contributions == 0, np.inf, scores.contributions)
    columns = {
        "log_px": scores.log_px,
        "stderr": scores.stderr,
        "top_column": [names[j] for j in np.argmin(contributions, axis=1)],
    }
    for j, name in enumerate(names):
        columns[f"contribution:{name}"] = scores.contributions[:, j]
    return pandas().DataFrame(columns)


def _score_rows(model, x, num_samples, seed, batch_size):
    x = _check(model, x, num_samples)
    log_px, stderr, contributions = [], [], []
    for i, (a, b) in enumerate(_batches(len(x), batch_size)):
        _, _, columns, log_w = _weights(model, x[a:b], num_samples, _seed(seed, i))
        log_w = np.asarray(log_w, np.float64)
        top = log_w.max(axis=0)
        r = np.exp(log_w - top)
        mean = r.mean(axis=0)
        log_px.append(top + np.log(mean))
        stderr.append(r.std(axis=0, ddof=1) / (np.sqrt(num_samples) * mean))
        w = r / r.sum(axis=0)
        contributions.append(np.einsum("sb,sbd->bd", w, np.asarray(columns, np.float64)))
    return Scores(
        np.concatenate(log_px), np.concatenate(stderr), np.concatenate(contributions), num_samples
    )


def impute(model, data, num_samples=1000, multiple=None, seed=0, batch_size=64, unknown="error"):
    """A table with its missing cells filled (observed cells kept as given).

    ``data``: a table (a DataFrame or a CSV/Parquet path, read with the model's schema;
    ``unknown="missing"`` reads unseen levels as missing) or coded rows [rows, columns]
    (NaN where missing). Returns the MIWAE single imputation, or with ``multiple=M`` M
    draws from p(x_miss|x_obs): for a table a DataFrame (a list of M) with its observed
    cells as they were written and the filled ones in the data's units; for coded rows an
    array [rows, columns] ([M, rows, columns])."""
    rows, cells = _rows(model, data, unknown)
    filled = _impute_rows(model, rows, num_samples, multiple, seed, batch_size)
    if cells is None:
        return filled
    from kvae.tables import filled_frame

    schema = _head(model).schema
    if multiple is None:
        return filled_frame(schema, cells, filled)
    return [filled_frame(schema, cells, f) for f in filled]


def _impute_rows(model, x, num_samples, multiple, seed, batch_size):
    x = _check(model, x, num_samples)
    if multiple is not None and not (isinstance(multiple, int) and multiple >= 1):
        raise ConfigError(f"Expected multiple=None or an int >= 1. Received: {multiple!r}.")
    kinds = np.asarray(model.likelihood_head.kinds)
    out = []
    for i, (a, b) in enumerate(_batches(len(x), batch_size)):
        rows = x[a:b]
        z, p, _, log_w = _weights(model, rows, num_samples, _seed(seed, i))
        if multiple is None:
            filled = _single(p, tf.nn.softmax(log_w, axis=0), kinds)
        else:
            filled = _multiple(model, z, log_w, multiple, _seed(seed + 1, i))
        out.append(np.where(np.isnan(rows), filled, rows))
    return np.concatenate(out, axis=-2)


def _single(p, w, kinds):
    w = np.asarray(w, np.float64)  # [S, B]
    mean = np.einsum("sb,sbd->bd", w, np.asarray(p.mean(), np.float64))
    probs = np.einsum("sb,sbdk->bdk", w, np.asarray(p.probabilities(), np.float64))
    filled = mean.copy()
    filled[:, kinds == _COUNT] = np.round(mean[:, kinds == _COUNT])
    filled[:, kinds == _BINARY] = (mean[:, kinds == _BINARY] > 0.5).astype(np.float64)
    filled[:, kinds == _CATEGORICAL] = np.argmax(probs, axis=-1)[:, kinds == _CATEGORICAL]
    return filled.astype(np.float32)


def _multiple(model, z, log_w, m, seed):
    """M rows per example: z resampled by its weights, then x ~ p(x|z)."""
    seeds = tf.random.split(seed, 2)
    # [B, M] indices into the S samples, drawn with probabilities softmax(log w).
    index = tf.random.stateless_categorical(tf.transpose(log_w), m, seeds[0])
    picked = tf.gather(tf.transpose(z, (1, 0, 2)), index, batch_dims=1)  # [B, M, L]
    picked = tf.transpose(picked, (1, 0, 2))  # [M, B, L]
    draws = model.decode(picked).sample(seed=seeds[1])
    if not np.all(np.isfinite(np.asarray(draws))):
        raise DataError("The model drew non-finite values; it may not be trained.")
    return np.asarray(draws, np.float32)

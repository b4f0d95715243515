"""The mixed likelihood of a table, p(x|z) = prod over observed columns of p(x_j|z).

Each column has its family (its schema kind): Gaussian on a standardised continuous column
(a learned scale per column), Poisson on a count (log-rate), Bernoulli on a binary column
(logit), Categorical on a categorical one (K logits). A table example is one float32 per
column in the schema's coding, NaN where missing; ``log_prob`` sums the observed columns
only (mask = ~isnan(x)): the ELBO and the IWAE bound of MIWAE (Mattei and Frellsen 2019).
"""

import math

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from kvae._checks import positive_float
from kvae.errors import DataError
from kvae.heads.likelihoods import LikelihoodHead, _inverse_softplus
from kvae.tables.schema import TableSchema

tfd = tfp.distributions

# Kind codes, in the order of the per-family terms below.
CONTINUOUS, COUNT, BINARY, CATEGORICAL = range(4)
_CODES = {"continuous": CONTINUOUS, "count": COUNT, "binary": BINARY, "categorical": CATEGORICAL}
_MAX_LOG_RATE = 20.0  # a Poisson rate of e^20 ~ 5e8: beyond any count in a table


def kind_codes(schema):
    return np.array([_CODES[c.kind] for c in schema.columns], np.int32)


class MixedColumns(tfd.Distribution):
    """Independent columns of mixed families; event shape [D], batch shape params[:-2].

    ``params`` [..., D, P]: column j's parameters in its first ``num_params`` entries
    (Gaussian mean, Poisson log-rate, Bernoulli logit, or K logits). Missing entries (NaN)
    of a value count nothing in :meth:`log_prob` and :meth:`column_log_prob`."""

    def __init__(self, params, kinds, num_levels, scale, name="MixedColumns"):
        parameters = dict(locals())
        self._params = tf.convert_to_tensor(params, tf.float32)
        self._kinds = np.asarray(kinds, np.int32)
        self._num_levels = np.asarray(num_levels, np.int32)
        self._scale = tf.convert_to_tensor(scale, tf.float32)
        super().__init__(
            dtype=tf.float32,
            reparameterization_type=tfd.NOT_REPARAMETERIZED,
            validate_args=False,
            allow_nan_stats=True,
            parameters=parameters,
            name=name,
        )

    @classmethod
    def _parameter_properties(cls, dtype, num_classes=None):
        return {}

    # ----- shapes -----
    def _batch_shape(self):
        return self._params.shape[:-2]

    def _batch_shape_tensor(self):
        return tf.shape(self._params)[:-2]

    def _event_shape(self):
        return tf.TensorShape([len(self._kinds)])

    def _event_shape_tensor(self):
        return tf.constant([len(self._kinds)], tf.int32)

    # ----- per-family pieces -----
    def _is(self, code):
        return tf.constant(self._kinds == code)

    def _first(self):
        return self._params[..., 0]

    def log_rate(self):
        return tf.clip_by_value(self._first(), -_MAX_LOG_RATE, _MAX_LOG_RATE)

    def logits(self):
        """Categorical logits [..., D, P], the entries beyond a column's K at -inf."""
        width = self._params.shape[-1]
        valid = np.arange(width)[None, :] < np.maximum(self._num_levels, 1)[:, None]
        return tf.where(tf.constant(valid), self._params, tf.constant(-np.inf, tf.float32))

    def probabilities(self):
        """Categorical probabilities [..., D, P] (rows of other kinds are meaningless)."""
        return tf.nn.softmax(self.logits(), axis=-1)

    def column_log_prob(self, x):
        """log p(x_j|z) per column [..., D], 0 where x_j is missing (NaN)."""
        x = tf.convert_to_tensor(x, tf.float32)
        observed = ~tf.math.is_nan(x)
        value = tf.where(observed, x, 0.0)
        loc = self._first()
        gauss = (
            -0.5 * tf.square((value - loc) / self._scale)
            - tf.math.log(self._scale)
            - 0.5 * math.log(2 * math.pi)
        )
        count = tf.where(self._is(COUNT), tf.maximum(value, 0.0), 0.0)
        rate = self.log_rate()
        poisson = count * rate - tf.exp(rate) - tf.math.lgamma(count + 1.0)
        bernoulli = value * loc - tf.math.softplus(loc)
        width = self._params.shape[-1]
        code = tf.cast(tf.clip_by_value(tf.round(value), 0.0, width - 1.0), tf.int32)
        log_softmax = tf.nn.log_softmax(self.logits(), axis=-1)
        categorical = tf.reduce_sum(
            tf.where(tf.one_hot(code, width) > 0, log_softmax, 0.0), axis=-1
        )
        kinds = tf.constant(self._kinds)
        terms = tf.where(
            kinds == CONTINUOUS,
            gauss,
            tf.where(kinds == COUNT, poisson, tf.where(kinds == BINARY, bernoulli, categorical)),
        )
        return tf.where(observed, terms, 0.0)

    def column_distributions(self):
        """Column j's own TFP distribution (batch shape = this one's), for checks and
        plots: Normal, Poisson, Bernoulli or Categorical, on the schema's coding."""
        out = []
        for j, kind in enumerate(self._kinds):
            first = self._params[..., j, 0]
            if kind == CONTINUOUS:
                out.append(tfd.Normal(first, self._scale[j]))
            elif kind == COUNT:
                out.append(tfd.Poisson(log_rate=self.log_rate()[..., j]))
            elif kind == BINARY:
                out.append(tfd.Bernoulli(logits=first, dtype=tf.float32))
            else:
                logits = self._params[..., j, : self._num_levels[j]]
                out.append(tfd.Categorical(logits=logits, dtype=tf.float32))
        return out

    def _log_prob(self, x):
        return tf.reduce_sum(self.column_log_prob(x), axis=-1)

    def _mean(self):
        """Per column: the Gaussian mean, the Poisson rate, the Bernoulli probability, and
        for a categorical column its most probable level (a code: a mean has no meaning)."""
        loc = self._first()
        mode = tf.cast(tf.argmax(self.logits(), axis=-1), tf.float32)
        return tf.where(
            self._is(CONTINUOUS),
            loc,
            tf.where(
                self._is(COUNT),
                tf.exp(self.log_rate()),
                tf.where(self._is(BINARY), tf.sigmoid(loc), mode),
            ),
        )

    def _sample_n(self, n, seed=None):
        seeds = tfp.random.split_seed(seed, 4)
        shape = tf.concat([[n], tf.shape(self._first())], axis=0)
        loc = self._first()
        gauss = loc + self._scale * tf.random.stateless_normal(shape, seed=seeds[0])
        poisson = tf.random.stateless_poisson(
            shape, seeds[1], tf.exp(self.log_rate()), dtype=tf.float32
        )
        uniform = tf.random.stateless_uniform(shape, seed=seeds[2])
        bernoulli = tf.cast(uniform < tf.sigmoid(loc), tf.float32)
        categorical = tfd.Categorical(logits=self.logits()).sample(n, seed=seeds[3])
        categorical = tf.cast(categorical, tf.float32)
        kinds = tf.constant(self._kinds)
        return tf.where(
            kinds == CONTINUOUS,
            gauss,
            tf.where(kinds == COUNT, poisson, tf.where(kinds == BINARY, bernoulli, categorical)),
        )


@keras.saving.register_keras_serializable(package="kvae")
class MixedLikelihood(LikelihoodHead):
    """p(x|z) over a table's columns, each in its own family (see :class:`MixedColumns`).

    Args:
        data_shape: ``(D,)``, one value per column (the schema's length).
        schema: the table's :class:`~kvae.tables.TableSchema` (or its ``to_dict()``).
        init_scale: the initial scale of the Gaussian columns (they are standardised).
        min_scale: the floor of a learned scale.

    It handles missing values (``handles_missing = True``): data may hold NaN, which
    ``log_prob`` leaves out. A model with this head refuses nothing else in NaN."""

    handles_missing = True

    def __init__(self, data_shape=None, schema=None, init_scale=1.0, min_scale=1e-3, **kwargs):
        if schema is None:
            raise DataError(
                "Expected `schema` for the mixed likelihood: the table's column kinds and "
                "levels (kvae.tables.infer_schema). Received: schema=None."
            )
        self.schema = TableSchema.from_dict(schema)
        self.params_per_dim = max([2] + [c.num_params for c in self.schema.columns])
        super().__init__(data_shape or (len(self.schema),), **kwargs)
        if self.data_shape != (len(self.schema),):
            raise DataError(
                f"Expected data_shape ({len(self.schema)},), one value per column of the "
                f"schema. Received: data_shape={self.data_shape}."
            )
        self.init_scale = positive_float("init_scale", init_scale)
        self.min_scale = positive_float("min_scale", min_scale)
        self.kinds = kind_codes(self.schema)
        self.num_levels = np.array([len(c.levels) for c in self.schema.columns], np.int32)
        self.raw_scale = None

    def build_extra(self):
        init = _inverse_softplus(max(self.init_scale - self.min_scale, 1e-6))
        self.raw_scale = self.add_weight(
            name="raw_scale",
            shape=(len(self.schema),),
            initializer=keras.initializers.Constant(init),
            trainable=True,
        )

    def sigma(self):
        """The Gaussian scale of each column [D] (used by the continuous columns only)."""
        return tf.math.softplus(tf.convert_to_tensor(self.raw_scale)) + self.min_scale

    def distribution(self, params):
        return MixedColumns(params, self.kinds, self.num_levels, self.sigma())

    def mean(self, params):
        return self.distribution(params).mean()

    def column_support(self, j):
        """The values column ``j`` takes, for kvae.testing's normalisation check: its level
        codes, 0/1, or the counts 0..9999 (a Poisson's mass beyond them is below float32's
        resolution for any rate under 9,000); None for a continuous (Gaussian) column."""
        kind = self.kinds[j]
        if kind == CONTINUOUS:
            return None
        size = {COUNT: 10000, BINARY: 2}.get(kind, self.num_levels[j])
        return np.arange(size, dtype=np.float32)

    def check_data(self, x, name="x"):
        """Each observed value must be a code of its column: 0/1, a level index, a count."""
        x = np.asarray(x, np.float64)
        for j, col in enumerate(self.schema.columns):
            v = x[..., j]
            seen = ~np.isnan(v)
            if col.kind == "continuous":
                bad = seen & ~np.isfinite(v)
            elif col.kind == "count":
                bad = seen & ((v < 0) | (v != np.round(v)) | ~np.isfinite(v))
            else:
                bad = seen & ((v < 0) | (v >= len(col.levels)) | (v != np.round(v)))
            if bad.any():
                row = int(np.flatnonzero(bad.reshape(len(v), -1).any(axis=1))[0])
                raise DataError(
                    f"Expected {name}[:, {j}] (column {col.name!r}, {col.kind}) in the schema's "
                    f"coding. Received: {v.reshape(len(v), -1)[row][0]!r} in row {row + 1}. "
                    "Read tables with kvae.tables.read_table, which codes them."
                )

    def get_config(self):
        return {
            **super().get_config(),
            "schema": self.schema.to_dict(),
            "init_scale": self.init_scale,
            "min_scale": self.min_scale,
        }

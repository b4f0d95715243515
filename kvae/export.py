"""Export a kvae model as a TensorFlow SavedModel for serving: ``reconstruct``, ``encode``,
``decode`` and ``sample``, loadable with ``tf.saved_model.load`` without kvae installed.

    kvae.export.export_saved_model(model, "served/vae")
    served = tf.saved_model.load("served/vae")          # in any process, kvae not needed
    served.encode(x, seed=tf.constant(7))["z"]

``export_archive(model)`` returns the ``keras.export.ExportArchive`` before it is written (to
add endpoints); ``call_input_signature(model)`` is the ``input_signature`` Keras' own
``Model.export`` needs for a VAE in its other formats (it exports ``call`` alone).

Why Keras' own ``model.export(path)`` fails on a ``kvae.VAE``: for a subclassed model Keras
reads the input signature from ``model._build_shapes_dict``, which only Keras' wrapper around
``build()`` writes, on the model's first ``__call__``, and only if the model is not built yet
(``keras/src/export/export_utils.py``, ``get_input_signature``). A VAE builds every part in
its constructor (to fail early on a bad wiring) and sets ``built = True`` itself, so its
first call never goes through ``build()``: the shapes stay unrecorded and Keras reports "The
model provided has never called", however often it was called. Even with an explicit
``input_signature`` Keras exports ``call()`` alone, the reconstruction, as ``serve``; a
deployment wants codes, decodings and samples, with seeds, and a conditional VAE's ``call``
takes an ``(x, y)`` tuple. So kvae builds its own ``keras.export.ExportArchive``.

The endpoints (the first, ``reconstruct``, is also ``serving_default``). Every seed is a
scalar int32: seed ``s`` is TensorFlow's stateless seed ``[s, 0]``, as ``model.sample(n,
seed=s)`` takes it, so the served model and the Python model draw the same numbers. ``y``
(a conditional VAE's condition) is int32 labels ``[B]`` for ``condition={"num_classes": C}``,
float32 ``[B, D]`` for ``condition={"dim": D}``; a model without a condition has no ``y``.

- ``reconstruct(x[, y])`` -> ``mean`` (the likelihood's mean, data's shape) and ``z`` (the
  code used: ``q(z|x).mean()``, which every kvae posterior has, since ``kvae.VAE`` asks for it
  while it is built; for ``iaf`` it is the flow's image of the base mean, for
  ``hierarchical`` the code of zero noise, as ``model(x)`` uses). Equals ``model(x)``.
- ``encode(x[, y], seed)`` -> ``z`` (one draw of q(z|x) per example), ``mean``, and the
  closed-form parameters where q has them: a diagonal Gaussian (``gaussian``, ``iaf`` with 0
  steps) ``loc`` and ``scale`` [B, latent_dim]; a full-covariance one (``full-gaussian``)
  ``loc`` and ``scale_tril`` [B, latent_dim, latent_dim]. ``iaf`` and ``hierarchical`` have no
  closed form: ``z`` and ``mean`` only.
- ``decode(z[, y])`` -> ``mean`` (the likelihood's mean, data's shape), ``params`` (the
  likelihood head's raw parameters, ``[B, *data_shape, params_per_dim]``) and the per-dimension
  distribution's tensor parameters by TFP name: ``logits`` (``bernoulli``,
  ``continuous-bernoulli``), ``loc`` and ``scale`` (``gaussian``); ``discretized-logistic``
  has ``params`` only.
- ``sample(n, seed[, y])`` -> ``mean`` (``model.sample(n, seed=seed)``) and ``z`` (the prior's
  draws). ``y`` holds n conditions, or one for all n.
"""

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from kvae.errors import ConfigError

tfd = tfp.distributions

ENDPOINTS = ("reconstruct", "encode", "decode", "sample")

# What the duck-typed model must have (kvae.VAE has them all).
_MODEL_API = (
    "encode",
    "decode",
    "decoder_params",
    "prior_distribution",
    "likelihood_head",
    "data_shape",
    "latent_dim",
    "condition",
)


def export_saved_model(model, filepath, verbose=None):
    """Write ``model`` (a ``kvae.VAE``) to the folder ``filepath`` as a SavedModel with the
    endpoints ``reconstruct``, ``encode``, ``decode`` and ``sample`` (see the module's
    docstring and docs/export.md). ``verbose`` (default True, as Keras): print the endpoints.
    The artifact is standalone: ``tf.saved_model.load(filepath)`` needs TensorFlow only."""
    archive = export_archive(model)
    archive.write_out(str(filepath), verbose=True if verbose is None else bool(verbose))


def export_model(
    model, filepath, format="tf_saved_model", verbose=None, input_signature=None, **kwargs
):
    """What ``VAE.export`` (Keras' ``Model.export``) does for a kvae model.

    ``format="tf_saved_model"`` (default) writes :func:`export_saved_model`'s SavedModel; its
    signatures follow from the model, so it takes no ``input_signature`` or other options.
    Keras' other formats (``"onnx"``, ``"litert"``, ``"openvino"``) export ``call``, the
    reconstruction, with :func:`call_input_signature` unless one is given.
    """
    if format != "tf_saved_model":
        if input_signature is None:
            input_signature = call_input_signature(model)
        return keras.Model.export(
            model,
            filepath,
            format=format,
            verbose=verbose,
            input_signature=input_signature,
            **kwargs,
        )
    if input_signature is not None or kwargs:
        given = (["input_signature"] if input_signature is not None else []) + sorted(kwargs)
        raise ConfigError(
            "Expected no input_signature or other options with format='tf_saved_model': kvae's "
            f"serving signatures follow from the model. Received: {given}. For endpoints of "
            "your own use kvae.export.export_archive(model)."
        )
    return export_saved_model(model, filepath, verbose=verbose)


def export_archive(model):
    """A ``keras.export.ExportArchive`` holding ``model``'s four endpoints, to add more
    endpoints to before ``write_out``."""
    _check_model(model)
    archive = keras.export.ExportArchive()
    archive.track(model)
    x_spec = _x_spec(model)
    z_spec = tf.TensorSpec((None, model.latent_dim), tf.float32, name="z")
    seed_spec = tf.TensorSpec((), tf.int32, name="seed")
    n_spec = tf.TensorSpec((), tf.int32, name="n")
    y_spec = _y_spec(model)
    add = archive.add_endpoint
    if y_spec is None:
        add("reconstruct", lambda x: _reconstruct(model, x, None), [x_spec])
        add("encode", lambda x, seed: _encode(model, x, None, seed), [x_spec, seed_spec])
        add("decode", lambda z: _decode(model, z, None), [z_spec])
        add("sample", lambda n, seed: _sample(model, n, seed, None), [n_spec, seed_spec])
    else:
        add("reconstruct", lambda x, y: _reconstruct(model, x, y), [x_spec, y_spec])
        add("encode", lambda x, y, seed: _encode(model, x, y, seed), [x_spec, y_spec, seed_spec])
        add("decode", lambda z, y: _decode(model, z, y), [z_spec, y_spec])
        add("sample", lambda n, seed, y: _sample(model, n, seed, y), [n_spec, seed_spec, y_spec])
    return archive


def call_input_signature(model):
    """The ``input_signature`` of ``model.call`` (the reconstruction) for Keras' own
    ``Model.export`` (``format="onnx"``, ``"litert"``, ``"openvino"``), which cannot infer it
    for a VAE: ``[x]``, or ``[(x, y)]`` for a conditional VAE (its ``call`` takes a tuple)."""
    _check_model(model)
    y_spec = _y_spec(model)
    return [_x_spec(model)] if y_spec is None else [(_x_spec(model), y_spec)]


def _x_spec(model):
    return tf.TensorSpec((None, *model.data_shape), tf.float32, name="x")


def _y_spec(model):
    """None, int32 labels [B] or a float32 vector [B, D]: the condition's input."""
    condition = model.condition
    if condition is None:
        return None
    if condition.is_classes:
        return tf.TensorSpec((None,), tf.int32, name="y")
    return tf.TensorSpec((None, condition.dim), tf.float32, name="y")


def _check_model(model):
    missing = [name for name in _MODEL_API if not hasattr(model, name)]
    if not isinstance(model, keras.Model) or missing:
        raise ConfigError(
            f"Expected a kvae.VAE (a keras.Model with {', '.join(_MODEL_API)}). Received: "
            f"{type(model).__name__}{f' without {missing}' if missing else ''}. For another "
            "Keras model use its own model.export(...)."
        )


# ----- the endpoints (traced once each, with the archive's input signatures) -------------
def _stateless(seed):
    """Scalar seed s -> TensorFlow's stateless seed [s, 0], as kvae's ``sample(seed=s)``."""
    return tf.stack([seed, tf.zeros_like(seed)])


def _labels_checked(model, y, batch=None):
    """``y`` with in-graph checks: labels within 0..C-1, and ``batch`` rows when given."""
    checks = []
    if model.condition.is_classes:
        last = model.condition.num_classes - 1
        checks += [
            tf.debugging.assert_non_negative(
                y, message=f"Expected labels y in 0..{last}. Received: a negative label."
            ),
            tf.debugging.assert_less_equal(
                y, last, message=f"Expected labels y in 0..{last}. Received: a larger label."
            ),
        ]
    if batch is not None:
        checks.append(
            tf.debugging.assert_equal(
                tf.shape(y)[0],
                batch,
                message="Expected one condition y per example of the batch. Received: "
                "another number of rows.",
            )
        )
    with tf.control_dependencies(checks):
        return tf.identity(y)


def _condition(model, y, batch):
    return None if y is None else _labels_checked(model, y, batch)


def _reconstruct(model, x, y):
    y = _condition(model, y, tf.shape(x)[0])
    z = model.encode(x, y).mean()
    return {"mean": model.likelihood_head.mean(model.decoder_params(z, y)), "z": z}


def _encode(model, x, y, seed):
    y = _condition(model, y, tf.shape(x)[0])
    q = model.encode(x, y)
    out = {"z": q.sample(seed=_stateless(seed)), "mean": q.mean()}
    out.update(_posterior_parameters(q))
    return out


def _posterior_parameters(q):
    """The closed-form parameters of q(z|x), by the distribution's type (so a plugin head
    that returns one of these types exports them too)."""
    if isinstance(q, tfd.MultivariateNormalDiag):
        return {"loc": q.loc, "scale": q.scale.diag_part()}
    if isinstance(q, tfd.MultivariateNormalTriL):
        return {"loc": q.loc, "scale_tril": q.scale.to_dense()}
    return {}


def _decode(model, z, y):
    y = _condition(model, y, tf.shape(z)[0])
    params = model.decoder_params(z, y)
    out = _likelihood_parameters(model.likelihood_head.distribution(params), params)
    out.update(mean=model.likelihood_head.mean(params), params=params)
    return out


def _likelihood_parameters(p, params):
    """The per-dimension distribution's tensor parameters of the data's shape (``logits``,
    ``loc``, ``scale``...) under their TFP names; none for a nested one."""
    inner = p.distribution if isinstance(p, tfd.Independent) else p
    rank = params.shape.rank - 1
    out = {}
    for name, value in inner.parameters.items():
        if name in ("mean", "params") or not tf.is_tensor(value) or value.shape.rank != rank:
            continue
        out[name] = tf.convert_to_tensor(value)
    return out


def _sample(model, n, seed, y):
    assert_n = tf.debugging.assert_non_negative(
        n, message="Expected n >= 0 (the number of samples). Received: a negative n."
    )
    with tf.control_dependencies([assert_n]):
        z = model.prior_distribution().sample(n, seed=_stateless(seed))
    if y is not None:
        rows = tf.shape(y)[0]
        assert_rows = tf.debugging.Assert(
            (rows == 1) | (rows == n),
            ["Expected y to hold n conditions, or one for all n. Received: rows, n =", rows, n],
        )
        with tf.control_dependencies([assert_rows]):
            y = _labels_checked(model, y)
        y = tf.broadcast_to(y, tf.concat([[n], tf.shape(y)[1:]], axis=0))
    return {"mean": model.likelihood_head.mean(model.decoder_params(z, y)), "z": z}

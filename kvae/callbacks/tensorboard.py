"""``kvae.callbacks.TensorBoard``: what a person wants to see of a VAE while it trains.

    tb = kvae.callbacks.TensorBoard("logs", x=x_test[:1000], y=y_test[:1000])
    model.fit(train, epochs=10, validation_data=test, callbacks=[tb])
    # tensorboard --logdir logs

Layout under ``log_dir`` (each folder is a TensorBoard run):

* ``train/``: one scalar per training metric per epoch (``loss``, ``elbo``,
  ``reconstruction``, ``kl``), plus ``learning_rate`` and ``beta`` (the KL weight in use).
* ``validation/``: the ``val_*`` metrics under the same tags (TensorBoard overlays the two
  runs), and, computed from ``x`` each epoch: ``active_units`` (Burda et al.'s criterion),
  ``kl_per_dim/z<u>``, histograms ``posterior/mean`` and ``posterior/scale`` (all units
  pooled) and ``posterior/mean_z<u>`` (first units). Every ``image_every`` epochs (and after
  the last): images ``reconstructions`` (input rows over reconstruction rows), ``samples``
  (means of p(x|z), z from the prior, the same z every time), ``traversal`` (one unit varied
  per row), and for 2-D latents ``manifold`` and ``posterior`` (p(z|x) of three examples with
  q and q* over it, see kvae.plots.posterior). A figure that cannot be drawn is skipped with
  one warning (a RuntimeWarning naming it), never a failed run.
* ``.`` (``log_dir`` itself): the hparams session (the config passed as ``hparams``), the
  test metrics written by :meth:`TensorBoard.log_metrics` as ``test/<name>`` (and facts
  about the run such as ``train_seconds`` as the text table ``test/run``), and the
  embedding projector: ``projector_config.pbtxt`` with ``projector/embeddings.tsv``
  (posterior means of ``x``), ``projector/metadata.tsv`` (labels) and
  ``projector/sprite.png``.

Steps are epoch indices counted from 0, as in ``keras.callbacks.TensorBoard``.
"""

import json
import math
import os
import time
import warnings

import keras
import numpy as np
import tensorflow as tf

from kvae import _files, evaluation, plots
from kvae._checks import positive_int
from kvae.errors import ConfigError

__all__ = ["RUN_FACTS", "TensorBoard"]

# Keys of a metrics dict that describe the run, not the model's quality: a text table in
# TensorBoard instead of one-point scalar charts (see TensorBoard.log_metrics).
RUN_FACTS = frozenset(
    {
        "latent_dim",
        "num_examples",
        "epochs_completed",
        "train_seconds",
        "active_units_threshold",
        "log_likelihood_num_samples",
        "log_likelihood_resolution_tol",
        "gap_log_likelihood_resolution_tol",
        "seconds",
    }
)

_HISTOGRAM_UNITS = 8  # per-unit histograms for the first units only
_TRAVERSAL_UNITS = 10


class TensorBoard(keras.callbacks.Callback):
    """Write scalars, images, histograms, the projector and hparams for a kvae model.

    Args:
        log_dir: folder of the event files (created if missing).
        x: held-out examples (numpy) for images, histograms, active units and the projector;
            None writes the metric scalars only. The first ``max_examples`` are used.
        y: labels of ``x`` for the projector (None: no labels); for a conditional model
            (``kvae.VAE(condition=...)``) the conditions of ``x``, needed then.
        image_every: write images every N epochs (and after the last epoch); 0 = never.
        num_images: inputs shown in the reconstruction image and samples in the sample image.
        projector: write the embedding projector at the end of training.
        max_projector_points: rows of the projector (at most 8192 / image side squared).
        hparams: a dict of hyperparameters (a config's ``to_dict()``) for the hparams
            dashboard; None skips it. Nested values are shown as JSON strings.
        trial_id: the hparams session name (default: the folder name above ``log_dir``).
        max_examples: examples of ``x`` used each epoch.
    """

    def __init__(
        self,
        log_dir,
        x=None,
        y=None,
        *,
        image_every=1,
        num_images=16,
        projector=True,
        max_projector_points=1024,
        hparams=None,
        trial_id=None,
        max_examples=1000,
    ):
        super().__init__()
        self.log_dir = os.fspath(log_dir)
        if isinstance(image_every, bool) or not isinstance(image_every, int) or image_every < 0:
            raise ConfigError(
                f"Expected `image_every` to be an integer >= 0. Received: image_every={image_every!r}"
            )
        self.image_every = image_every
        self.num_images = positive_int("num_images", num_images)
        self.projector = bool(projector)
        self.max_projector_points = positive_int("max_projector_points", max_projector_points)
        self.max_examples = positive_int("max_examples", max_examples)
        if hparams is not None and not isinstance(hparams, dict):
            raise ConfigError(f"Expected `hparams` to be a dict or None. Received: {hparams!r}")
        self.hparams = hparams
        self.trial_id = trial_id
        self.x = None if x is None else np.asarray(x[:max_examples], np.float32)
        self.y = None if y is None else np.asarray(y[:max_examples])
        if self.y is not None and self.x is not None and len(self.y) != len(self.x):
            raise ConfigError(
                f"Expected one label per example. Received: {len(self.x)} examples, "
                f"{len(self.y)} labels."
            )
        self._writers = {}
        self._last_epoch = None
        self._skipped = set()  # figures skipped (warned once each)

    # ----- writers ----------------------------------------------------------------------
    def _writer(self, run):
        if run not in self._writers:
            self._writers[run] = tf.summary.create_file_writer(os.path.join(self.log_dir, run))
        return self._writers[run]

    def close(self):
        for writer in self._writers.values():
            writer.close()
        self._writers = {}

    # ----- Keras hooks ------------------------------------------------------------------------
    def _conditions(self):
        """``y`` as the conditions of ``x`` for a conditional model, else None."""
        return self.y if getattr(self.model, "condition", None) is not None else None

    def on_train_begin(self, logs=None):
        if getattr(self.model, "condition", None) is not None and self.x is not None:
            if self.y is None:
                raise ConfigError(
                    "Expected y, the conditions of x, for a conditional model's pictures and "
                    "latent statistics. Received: y=None. Pass TensorBoard(log_dir, x=x, y=y)."
                )
        os.makedirs(self.log_dir, exist_ok=True)
        if self.hparams is not None:
            self._write_hparams()

    def on_epoch_end(self, epoch, logs=None):
        self._last_epoch = epoch
        logs = logs or {}
        train = {k: v for k, v in logs.items() if not k.startswith("val_")}
        val = {k[4:]: v for k, v in logs.items() if k.startswith("val_")}
        with self._writer("train").as_default(step=epoch):
            for name, value in train.items():
                _scalar(name, value)
            optimizer = getattr(self.model, "optimizer", None)
            if optimizer is not None and "learning_rate" not in train:
                _scalar("learning_rate", optimizer.learning_rate)
            if hasattr(self.model, "beta"):
                _scalar("beta", self.model.beta)
        with self._writer("validation").as_default(step=epoch):
            for name, value in val.items():
                _scalar(name, value)
            if self.x is not None:
                self._write_latent_stats()
                total = (self.params or {}).get("epochs")
                last = total is not None and epoch + 1 >= total
                if self.image_every and ((epoch + 1) % self.image_every == 0 or last):
                    self.write_images(epoch)
        for writer in self._writers.values():
            writer.flush()

    def on_train_end(self, logs=None):
        if self.projector and self.x is not None and getattr(self.model, "latent_dim", 0) >= 1:
            self.write_projector()
        for writer in self._writers.values():
            writer.flush()

    # ----- pieces (public so they can be called outside fit) ---------------------------------
    def _write_latent_stats(self):
        cond = self._conditions()
        means, scales = evaluation.posterior_moments(self.model, self.x, y=cond)
        count, _ = evaluation.active_units(means)
        _scalar("active_units", count)
        kl, _ = evaluation.kl_per_dimension(self.model, self.x, means=means, scales=scales, y=cond)
        if kl is not None:
            for u, value in enumerate(kl):
                _scalar(f"kl_per_dim/z{u}", value)
        tf.summary.histogram("posterior/mean", means.ravel())
        tf.summary.histogram("posterior/scale", scales.ravel())
        for u in range(min(means.shape[1], _HISTOGRAM_UNITS)):
            tf.summary.histogram(f"posterior/mean_z{u}", means[:, u])

    def write_images(self, step):
        """Write the images for ``step`` to the default writer (the validation run in fit)."""
        model = self.model
        if plots.image_shape(model.data_shape) is None:
            return  # not image data: nothing to draw
        n = min(self.num_images, len(self.x))
        # A conditional model's pictures take the conditions of x: its samples those of the
        # first examples (repeated), its manifold the first example's.
        cond = self._conditions()
        sample_y = None if cond is None else np.resize(cond, (self.num_images, *cond.shape[1:]))
        figures = {
            "reconstructions": lambda: plots.reconstructions(
                model, self.x[:n], n=n, ncols=min(8, n), y=cond
            ),
            "samples": lambda: plots.samples(model, self.num_images, seed=0, y=sample_y),
            "traversal": lambda: plots.traversal(model, self.x, max_dims=_TRAVERSAL_UNITS, y=cond),
        }
        if model.latent_dim == 2:
            first = None if cond is None else cond[0]
            figures["manifold"] = lambda: plots.manifold(model, n=15, condition=first)
            if cond is None:  # the posterior figure takes no condition
                # p(z|x) with q and q* over it (quadrature, a small L-BFGS per example).
                figures["posterior"] = lambda: plots.posterior(model, self.x[:3], n=3)
        for name, draw in figures.items():
            grid = self._draw(name, draw, step)
            if grid is not None:
                tf.summary.image(name, grid[None], step=step, max_outputs=1)

    def _draw(self, name, draw, step):
        """``draw()``, or None when it raises: a figure that cannot be drawn (a quadrature
        refusal, NaN weights, ...) is skipped with one warning per figure and run, never a
        failed fit. It is tried again at the next image epoch."""
        try:
            return draw()
        except Exception as err:  # noqa: BLE001 (any failure of a figure: skip it)
            if name not in self._skipped:
                self._skipped.add(name)
                warnings.warn(
                    f"TensorBoard image {name!r} skipped at epoch {step}: "
                    f"{type(err).__name__}: {err} (warned once; tried again at later epochs).",
                    RuntimeWarning,
                    stacklevel=2,
                )
            return None

    def write_projector(self):
        """Write the embedding projector files for the posterior means of ``x``, each to a
        temporary name and then renamed (TensorBoard may be reading them)."""
        from google.protobuf import text_format
        from tensorboard.plugins import projector

        x = self.x[: self.max_projector_points]
        cond = self._conditions()
        cond = None if cond is None else cond[: len(x)]
        means = evaluation.posterior_moments(self.model, x, y=cond)[0]
        folder = os.path.join(self.log_dir, "projector")
        os.makedirs(folder, exist_ok=True)
        rows = ["\t".join(f"{v:.6g}" for v in row) for row in np.asarray(means, np.float64)]
        _files.write_text(os.path.join(folder, "embeddings.tsv"), "".join(r + "\n" for r in rows))
        config = projector.ProjectorConfig()
        embedding = config.embeddings.add()
        embedding.tensor_name = "posterior_mean"
        embedding.tensor_path = "projector/embeddings.tsv"
        if self.y is not None:
            # One column: no header line (the projector's rule for single-column metadata).
            labels = "".join(f"{label}\n" for label in self.y[: len(x)])
            _files.write_text(os.path.join(folder, "metadata.tsv"), labels)
            embedding.metadata_path = "projector/metadata.tsv"
        shape = plots.image_shape(self.model.data_shape)
        if shape is not None:
            side = math.ceil(math.sqrt(len(x)))
            h, w = shape[:2]
            if side * max(h, w) <= 8192:
                sprite = plots.tile(plots.as_images(x, self.model.data_shape), side, pad=0)
                plots.save_grid(sprite, os.path.join(folder, "sprite.png"))
                embedding.sprite.image_path = "projector/sprite.png"
                embedding.sprite.single_image_dim.extend([w, h])
        # What projector.visualize_embeddings writes, but atomically.
        _files.write_text(
            os.path.join(self.log_dir, "projector_config.pbtxt"),
            text_format.MessageToString(config),
        )

    def _write_hparams(self):
        from tensorboard.plugins.hparams import api as hp

        trial = self.trial_id or os.path.basename(os.path.dirname(os.path.abspath(self.log_dir)))
        values = dict(self.hparams)
        if "steps_per_execution" in values and self.model is not None:
            # What runs: kvae.VAE.fit may have moved it to a divisor of the steps per epoch.
            values["steps_per_execution"] = int(self.model.steps_per_execution or 1)
        with self._writer(".").as_default():
            hp.hparams(_hparam_values(values), trial_id=trial, start_time_secs=time.time())

    def log_metrics(self, metrics, step=None, prefix="test/"):
        """Write final metrics (e.g. the test set's) as ``<prefix><name>`` scalars in the
        top-level run, where the hparams dashboard finds them. Facts about the run rather
        than measures of the model (``latent_dim``, ``num_examples``, ``epochs_completed``,
        ``train_seconds``, ``active_units_threshold``, ``log_likelihood_num_samples``,
        ``seconds``) go into one text table, ``<prefix>run``, not into one-point charts.
        Other non-numbers are skipped."""
        step = self._last_epoch if step is None else step
        facts = []
        with self._writer(".").as_default(step=0 if step is None else step):
            for name, value in metrics.items():
                if name in RUN_FACTS:
                    facts.append((name, value))
                elif isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
                    _scalar(prefix + name, value)
            if facts:
                rows = [f"| {name} | {_fact(value)} |" for name, value in facts]
                tf.summary.text(prefix + "run", "\n".join(["| | |", "|---|---|", *rows]))
        self._writer(".").flush()


def _scalar(name, value):
    value = float(keras.ops.convert_to_numpy(value))
    tf.summary.scalar(name, value)


def _fact(value):
    if isinstance(value, dict):
        return ", ".join(f"{k} {_fact(v)}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _hparam_values(config):
    out = {}
    for key, value in config.items():
        if isinstance(value, (bool, int, float, str)):
            out[key] = value
        elif value is None:
            out[key] = "None"
        else:
            out[key] = json.dumps(value, sort_keys=True)
    return out

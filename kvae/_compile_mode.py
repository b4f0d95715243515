"""``compile(jit_compile="auto")``: whether kvae XLA-compiles the training step, by a rule
whose table was measured (``scripts/measure_compile_mode.py`` writes it;
``scripts/compile_mode_table.json`` is the checked-in copy).

The rule, in order:

1. ``True`` / ``False`` are taken as given.
2. On a GPU or TPU (a visible logical GPU/TPU device, or a ``TPUStrategy``): XLA on.
3. On a CPU, a model with a convolution layer anywhere in it: XLA off. TensorFlow's oneDNN
   convolutions beat the convolutions XLA emits on CPU (keras.io conv VAE shape, the table:
   XLA 0.68x of no XLA).
4. Otherwise (dense layers only, on a CPU): XLA on. XLA fuses the MLP's elementwise work
   into the GEMMs (the checked-in table: the 784-512-2 MLP 1.36x faster with XLA at batch
   128, Burda's 784-200-200-50 tanh MLP 1.18x at batch 20 and 1.04x at batch 100; XLA is
   never the slower of the two for a dense-only model there).

The same rule picks the loop that ``fit`` on arrays runs XLA's steps in
(:func:`fused_loop`): kvae's fused loop (all steps of a compiled call in one XLA while loop,
:mod:`kvae.training.fused`) for models without convolutions, Keras' own loop (one XLA
computation per step) for models with a convolution, on every device. The cause, found on
the CPU: XLA's CPU compiler rewrites a convolution into the layout its fast (Eigen)
convolution kernel takes only in the entry computation (``ConvCanonicalization`` walks
``module->entry_computation()``). Inside a while loop the backward convolutions (filter
gradients, ``dim_labels=f01b_i01o->01bf``) and the transposed convolutions keep their
layout and are emitted as XLA's generic loop nest: 7 of the conv VAE's 11 convolutions,
about 30x slower a step (48 against 1,450 samples/s on a 2-core AMD EPYC, keras.io conv
VAE, batch 128, both with XLA, measured in alternation in one process). On GPU and TPU the
convolutions go through other passes (cuDNN's rewriter visits every computation), so the
cause probably does not apply there, but that is not measured: kvae takes Keras' loop for
convolutions there too (docs/performance.md, "Convolutions and the fused loop").

A rule rather than timing steps at the start of ``fit``: timing both ways costs two
compilations (seconds for the conv step) on every run, and on a shared machine a few steps'
timings are noisier than the difference being decided. The rule is deterministic, so two
runs of one config train the same way. Rerun the measurement script on new hardware and
change the rule here if its table disagrees.
"""

import dataclasses
import logging

import keras
import tensorflow as tf

from kvae import _keras_private

__all__ = ["AUTO", "CompileChoice", "function", "fused_loop", "log", "parse_jit", "resolve"]

_log = logging.getLogger("kvae")

AUTO = "auto"

_CONV_LAYERS = tuple(
    getattr(keras.layers, name)
    for name in (
        "Conv1D",
        "Conv2D",
        "Conv3D",
        "Conv1DTranspose",
        "Conv2DTranspose",
        "Conv3DTranspose",
        "DepthwiseConv1D",
        "DepthwiseConv2D",
        "SeparableConv1D",
        "SeparableConv2D",
    )
    if hasattr(keras.layers, name)
)


@dataclasses.dataclass(frozen=True)
class CompileChoice:
    """What ``compile`` was asked for (``True``, ``False`` or ``"auto"``), what it chose
    (``jit``) and why, in words; and which loop ``fit`` on arrays runs the steps in
    (``loop``: ``"fused"``, kvae's XLA loop, or ``"keras"``, Keras' own) and why."""

    requested: object
    jit: bool
    reason: str
    loop: str = "keras"
    loop_reason: str = ""

    def to_dict(self):
        return {
            "requested": self.requested,
            "jit_compile": self.jit,
            "reason": self.reason,
            "loop": self.loop,
            "loop_reason": self.loop_reason,
        }


def parse_jit(value, name="jit_compile"):
    """``True``/``False``/``"auto"`` from the spellings kvae accepts (also "on"/"off")."""
    from kvae.errors import ConfigError

    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        if word == AUTO:
            return AUTO
        if word in ("on", "true"):
            return True
        if word in ("off", "false"):
            return False
    raise ConfigError(
        f"Expected `{name}` to be True, False or 'auto' (on the command line: on, off or "
        f"auto). Received: {name}={value!r}."
    )


def _accelerator(strategy):
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return "TPU"
    for kind in ("TPU", "GPU"):
        if tf.config.list_logical_devices(kind):
            return kind
    return None


def _conv_layer(model):
    for layer in _keras_private.nested_layers(model):
        if isinstance(layer, _CONV_LAYERS):
            return layer
    return None


def fused_loop(model, jit):
    """``(fused, reason)``: whether ``fit`` on arrays may run a call's steps in kvae's fused
    XLA loop (with ``jit`` True), else Keras' own loop (see the module's docstring)."""
    if not jit:
        return False, "no XLA: Keras' loop"
    conv = _conv_layer(model)
    if conv is not None:
        return False, (
            f"convolution layer {conv.name!r} ({type(conv).__name__}): XLA's CPU compiler "
            "leaves convolutions inside a loop in a slow layout; Keras' loop, one XLA "
            "computation per step"
        )
    return True, "no convolution layers: the steps of a call in one XLA loop"


def resolve(requested, model, run_eagerly=False):
    """The :class:`CompileChoice` for ``model`` (a built Keras model) on this machine."""
    choice = _resolve_jit(parse_jit(requested), model, run_eagerly)
    fused, why = fused_loop(model, choice.jit)
    return dataclasses.replace(choice, loop="fused" if fused else "keras", loop_reason=why)


def _resolve_jit(requested, model, run_eagerly):
    if run_eagerly:
        return CompileChoice(requested, False, "run_eagerly=True")
    if requested is not AUTO:
        return CompileChoice(requested, requested, "asked for")
    device = _accelerator(model.distribute_strategy)
    if device is not None:
        return CompileChoice(AUTO, True, f"{device}: XLA")
    conv = _conv_layer(model)
    if conv is not None:
        return CompileChoice(
            AUTO,
            False,
            f"CPU, convolution layer {conv.name!r} ({type(conv).__name__}): TensorFlow's "
            "oneDNN convolutions are faster than XLA's on CPU",
        )
    return CompileChoice(AUTO, True, "CPU, no convolution layers: XLA fuses the dense step")


def log(choice):
    """One line on the ``kvae`` logger (INFO) saying what was chosen and why."""
    _log.info(
        "jit_compile=%r -> XLA %s (%s)",
        choice.requested,
        "on" if choice.jit else "off",
        choice.reason,
    )


def function(fn, *, jit_compile=True, reduce_retracing=False):
    """``tf.function`` as kvae compiles its own steps and estimators: without AutoGraph.

    Keras 3 traces its train, test and predict steps with AutoGraph off
    (``do_not_convert``), so a VAE's step code already runs unconverted on Keras' path;
    kvae's fused steps and its log p(x) estimators do the same, so that code behaves alike
    on both paths. kvae writes its loops and branches as ``tf.while_loop`` / ``tf.cond``.
    Converting the step's Python source was about a third of the first trace's CPU time
    (4.2 -> 2.9 s for the first ``fit`` of a 784-512-2 MLP in a fresh process).
    """
    return tf.function(
        fn, jit_compile=jit_compile, reduce_retracing=reduce_retracing, autograph=False
    )

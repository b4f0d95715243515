"""kvae/_keras_private.py: each Keras or TensorFlow internal kvae relies on, checked against
the installed release. A failure here means a Keras or TensorFlow release changed it: the
message says what changed and what in kvae needs it."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kvae import _keras_private

# ----- the train function fit calls (kvae.training.fused) ----------------------------------
_FUSED = (
    "kvae relies on it for its fused XLA training loop (kvae/training/fused.py, installed by "
    "kvae._keras_private.set_iterator_train_function)"
)


class _ReadsItsOwnBatches(keras.Model):
    """A model whose train function takes ``steps_per_execution`` batches from the iterator
    itself and returns logs that count its calls, as kvae's fused loop does."""

    def __init__(self, calls):
        super().__init__()
        self.dense = keras.layers.Dense(1)
        self.record = calls.append  # not the list: Keras would track a copy of it
        self.count = calls.__len__

    def call(self, x):
        return self.dense(x)

    def make_train_function(self, force=False):
        if self.train_function is not None and not force:
            return self.train_function

        def function(iterator):
            self.record(iterator)
            for _ in range(self.steps_per_execution):
                iterator.get_next()
            return {"calls": tf.constant(float(self.count()))}

        return _keras_private.set_iterator_train_function(self, function)


def test_fit_calls_the_train_function_with_its_iterator_once_per_call():
    calls, ends = [], []
    model = _ReadsItsOwnBatches(calls)
    model.compile(optimizer="sgd", loss="mse", steps_per_execution=2)
    x = np.zeros((8, 3), np.float32)
    data = tf.data.Dataset.from_tensor_slices((x, x[:, :1])).batch(2).repeat()
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: ends.append((batch, float(logs["calls"])))
    )
    model.fit(data, epochs=2, steps_per_epoch=4, callbacks=[record], verbose=0, shuffle=False)
    assert len(calls) == 4, (
        f"Keras changed how often fit calls model.train_function: expected once per "
        f"steps_per_execution (2) steps, 4 calls for 2 epochs of 4 steps; got {len(calls)}. "
        f"{_FUSED}."
    )
    for iterator in calls:
        assert isinstance(iterator, tf.data.Iterator) and iterator.element_spec, (
            "Keras changed what fit passes to model.train_function: expected the epoch's "
            f"tf.data iterator (with element_spec and get_next); got {type(iterator)!r}. "
            f"{_FUSED}."
        )
    assert ends == [(1, 1.0), (3, 2.0), (1, 3.0), (3, 4.0)], (
        "Keras changed what fit does with the train function's result: expected its dict "
        f"as the logs of each call's last step; the callbacks saw {ends}. {_FUSED}."
    )


# ----- the layers inside a layer (kvae._compile_mode) --------------------------------------
class _Block(keras.layers.Layer):
    """A plain layer holding a list of layers and a model, as kvae's networks do."""

    def __init__(self):
        super().__init__()
        self.convs = [keras.layers.Conv2D(2, 3), keras.layers.Conv2D(2, 3)]
        self.inner = keras.Sequential([keras.layers.Dense(2)])


def test_nested_layers_reaches_layers_at_any_depth():
    block = _Block()
    outer = keras.Sequential([keras.layers.Flatten(), block])
    try:
        found = _keras_private.nested_layers(outer)
    except (AttributeError, TypeError) as err:
        pytest.fail(
            f"Keras changed Layer._flatten_layers(include_self, recursive) ({err}); kvae relies "
            "on it to find a convolution anywhere in a model for compile(jit_compile='auto') "
            "(kvae/_compile_mode.py)."
        )
    want = [block, *block.convs, block.inner, block.inner.layers[0], outer.layers[0]]
    missing = [layer.name for layer in want if not any(layer is f for f in found)]
    assert not missing and not any(f is outer for f in found), (
        f"Keras changed Layer._flatten_layers: expected every nested layer but not the layer "
        f"itself; missing {missing}, got {[f.name for f in found]}. kvae relies on it to find "
        "a convolution anywhere in a model for compile(jit_compile='auto') "
        "(kvae/_compile_mode.py)."
    )

"""The one place kvae touches Keras or TensorFlow internals.

kvae uses Keras' public hooks (``train_step``, ``make_train_function``, callback methods).
Where Keras offers no public way to do what kvae needs, the private use lives here, each with
the reason, and ``tests/test_keras_private.py`` fails loudly when a Keras or TensorFlow
release changes it. Nothing else in kvae reads or writes an underscore attribute of a Keras
or TensorFlow object.
"""

# ----- run safety (kvae.checkpointing) ------------------------------------------------------
# keras.callbacks.BackupAndRestore restores a backup (weights with optimizer state, and the
# epoch fit starts from) through its public on_train_begin, but writes the backup in place, so
# a kill mid-write tears it. kvae writes the backup itself, each file atomically
# (kvae.checkpointing), and lets BackupAndRestore restore it: so kvae must write the two files
# under the names BackupAndRestore reads, the state file a JSON object whose "epoch" is the
# epoch to start from. Keras documents neither the names nor the key (they are its private
# `_weights_path` and `_training_metadata_path`). Test: tests/test_keras_private.py restores
# a backup written under these names.
BACKUP_WEIGHTS_FILE = "latest.weights.h5"
BACKUP_STATE_FILE = "training_metadata.json"
BACKUP_EPOCH_KEY = "epoch"


# ----- the train function fit calls (kvae.training.fused) ----------------------------------
def set_iterator_train_function(model, function):
    """Make ``function(iterator) -> logs`` the train function of ``model`` and return it.

    Why private: Keras documents overriding ``make_train_function``, not how ``fit`` calls the
    function it makes. Keras 3's TensorFlow trainer (``keras/src/backend/tensorflow/
    trainer.py``, ``fit``) calls ``model.train_function(iterator)`` once per
    ``steps_per_execution`` steps, with the epoch's ``tf.data`` iterator, and hands the dict
    it returns to the callbacks as the logs of the call's last step. kvae's fused loop
    (:mod:`kvae.training.fused`) takes ``steps_per_execution`` batches from that iterator at
    once and runs them in one XLA loop; there is no public hook for a train function that
    reads its own batches. ``tests/test_keras_private.py`` checks the calling convention.
    """
    model.train_function = function
    return function


# ----- the layers inside a layer (kvae._compile_mode) --------------------------------------
def nested_layers(layer):
    """Every layer inside ``layer`` (not ``layer`` itself), at any depth.

    Why private: Keras 3 has no public way to list the layers nested inside a plain
    ``keras.layers.Layer``; ``Model.layers`` is one level deep and exists on models only, and
    kvae's networks are plain layers holding lists of Keras layers (``ConvEncoder.convs``).
    Keras itself walks them with ``Layer._flatten_layers`` (``Model.layers``, ``summary``,
    quantization), which this calls. ``compile(jit_compile="auto")`` uses it to find a
    convolution anywhere in a model.
    """
    return list(layer._flatten_layers(include_self=False, recursive=True))

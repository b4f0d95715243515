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

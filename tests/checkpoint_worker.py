"""Helper process for tests/test_resume.py (not a test module).

    python checkpoint_worker.py disk-full RUN_DIR OUT.json

Trains a small VAE with kvae's callbacks; after the first epoch (and its checkpoint) the
process's file-size limit (RLIMIT_FSIZE) drops to 4 KiB, so the next checkpoint write fails
with EFBIG ("File too large") as a full disk would fail it with ENOSPC; root is not exempt.
Writes what happened to OUT.json. In its own process because the limit is process-wide.
"""

import json
import os
import resource
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def disk_full(run_dir, out):
    import keras
    import numpy as np

    import kvae
    from kvae.checkpointing import training_callbacks

    class FillDisk(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill
                resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))

    sigint = signal.getsignal(signal.SIGINT)
    x = np.random.default_rng(0).random((256, 8, 8, 1)).astype("float32")
    model = kvae.VAE(data_shape=(8, 8, 1), latent_dim=2, seed=0)
    model.compile(steps_per_execution=1)
    error = None
    try:
        model.fit(
            x,
            epochs=3,
            batch_size=32,
            verbose=0,
            callbacks=[*training_callbacks(run_dir, backup_seconds=1e9), FillDisk()],
        )
    except kvae.TrainingError as err:
        error = str(err)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
    loaded = kvae.load_model(os.path.join(run_dir, "checkpoints", "last.keras"))
    with open(os.path.join(run_dir, "checkpoints", "state.json")) as f:
        state = json.load(f)
    with open(out, "w") as f:
        json.dump(
            {
                "error": error,
                "sigint_handler_restored": signal.getsignal(signal.SIGINT) is sigint,
                "loaded": type(loaded).__name__,
                "checkpoint_epoch": state["epoch"],
            },
            f,
        )


if __name__ == "__main__":
    mode, run_dir, out = sys.argv[1:4]
    {"disk-full": disk_full}[mode](run_dir, out)

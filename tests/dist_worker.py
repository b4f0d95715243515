"""Helper processes for tests/test_distribute.py (not a test module).

TensorFlow fixes its devices and its collective ops when it starts, so each scenario runs in
a fresh process:

    python dist_worker.py mirrored OUT.json
        two logical CPU devices; trains on one device and with MirroredStrategy over both,
        writes the loss curves.
    python dist_worker.py multi-worker OUT_DIR        (TF_CONFIG set by the caller)
        one worker of a MultiWorkerMirroredStrategy cluster; trains with kvae's callbacks
        into OUT_DIR/run and saves its final weights to OUT_DIR/final.weights.h5.
    python dist_worker.py shard-images OUT_DIR        (TF_CONFIG set by the caller)
        one worker streaming the image folder OUT_DIR/../images with
        kvae.distribute.distribute_images: records which images each epoch brought it, then
        fits a small VAE on the same stream (see shard_images).
    python dist_worker.py cli-mirrored OUT_DIR
        `kvae train --strategy mirrored` on two logical CPU devices: a refused global batch,
        a binarised run and a conditional run (see cli_mirrored).
    python dist_worker.py tpu OUT.json
        asks for a TPU and writes the error kvae raises.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

EPOCHS = 4
GLOBAL_BATCH = 64
N = 512  # examples: 8 steps of 64 per epoch
SHARD_BATCH = 8  # global batch of shard-images: 4 per worker


def digits():
    from sklearn.datasets import load_digits

    x = load_digits().data[:N] / 16.0
    return x.astype("float32").reshape(-1, 8, 8, 1)


def _zero_decoder(keras):
    """A decoder that ignores z: the loss is then free of Monte Carlo noise (the reconstruction
    term no longer depends on the sampled z, and the KL is analytic), so one device and N
    replicas must agree up to floating-point rounding."""

    class ZeroZ(keras.layers.Layer):
        def call(self, z):
            return keras.ops.zeros_like(z[..., :1])

    return keras.Sequential([ZeroZ(), keras.layers.Dense(16, activation="tanh")])


def _train(strategy, x, *, deterministic, seed, tf, keras, kvae, distribute):
    steps = distribute.steps_per_epoch(len(x), GLOBAL_BATCH)
    keras.utils.set_random_seed(0)  # same initial weights in every run
    with strategy.scope():
        kwargs = dict(data_shape=(8, 8, 1), latent_dim=2, seed=seed, kl="analytic")
        if deterministic:
            kwargs["decoder"] = _zero_decoder(keras)
        model = kvae.VAE(**kwargs)
        # Not more steps per compiled call than an epoch has (Keras would run past the epoch).
        model.compile(
            optimizer=keras.optimizers.SGD(0.05), jit_compile=True, steps_per_execution=steps
        )
    data = distribute.distribute_dataset(strategy, x, GLOBAL_BATCH, seed=1, repeat=True)
    history = model.fit(data, epochs=EPOCHS, steps_per_epoch=steps, verbose=0)
    return {
        "loss": [float(v) for v in history.history["loss"]],
        "replicas": int(strategy.num_replicas_in_sync),
        "keras_jit": bool(model.jit_compile),
        "replica_jit": bool(getattr(model, "_replica_jit", False)),
        "steps": int(keras.ops.convert_to_numpy(model.optimizer.iterations)),
    }


def _same_batches(strategy, x, distribute):
    """Replica r of step k gets rows [r * b, (r + 1) * b) of make_dataset's global batch k."""
    import numpy as np

    from kvae.datasets import make_dataset

    want = [b.numpy() for b in make_dataset(x, GLOBAL_BATCH, seed=1)]
    got = distribute.distribute_dataset(strategy, x, GLOBAL_BATCH, seed=1)
    k = -1
    for k, batch in enumerate(got):
        parts = [t.numpy() for t in strategy.experimental_local_results(batch)]
        if len(parts) != 2 or not np.array_equal(np.concatenate(parts), want[k]):
            return False
    return k + 1 == len(x) // GLOBAL_BATCH


def mirrored(out):
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras

    import kvae
    from kvae import distribute

    x = digits()
    one = tf.distribute.OneDeviceStrategy("/cpu:0")
    two = distribute.get_strategy("mirrored", devices=["/cpu:0", "/cpu:1"])
    common = dict(tf=tf, keras=keras, kvae=kvae, distribute=distribute)
    result = {
        "same_batches": _same_batches(two, x, distribute),
        "deterministic_one": _train(one, x, deterministic=True, seed=0, **common),
        "deterministic_two": _train(two, x, deterministic=True, seed=0, **common),
        "two": _train(two, x, deterministic=False, seed=0, **common),
        # Single-device runs that differ only in their latent noise (the VAE's seed): their
        # spread is the Monte Carlo noise of a loss curve.
        "one": [_train(one, x, deterministic=False, seed=s, **common) for s in range(5)],
    }
    with open(out, "w") as f:
        json.dump(result, f)


def multi_worker(out_dir):
    # The strategy first: collective ops must be configured before TensorFlow starts.
    from kvae import distribute

    strategy = distribute.get_strategy("multi-worker")
    import keras
    import numpy as np

    import kvae
    from kvae.checkpointing import training_callbacks

    x = digits()[:256]
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = kvae.VAE(data_shape=(8, 8, 1), latent_dim=2, seed=0)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), steps_per_execution=4)
    data = distribute.distribute_dataset(strategy, x, 32, seed=0, repeat=True)
    run_dir = os.path.join(out_dir, "run")
    history = model.fit(
        data,
        epochs=2,
        steps_per_epoch=distribute.steps_per_epoch(len(x), 32),
        verbose=0,
        callbacks=training_callbacks(run_dir, {"checkpoint_every": 1}),
    )
    model.save_weights(os.path.join(out_dir, "final.weights.h5"))
    weights = [np.asarray(w) for w in model.get_weights()]
    np.savez(os.path.join(out_dir, "final.npz"), *weights)
    with open(os.path.join(out_dir, "result.json"), "w") as f:
        json.dump(
            {
                "chief": distribute.is_chief(strategy),
                "workers": distribute.num_workers(strategy),
                "replicas": int(strategy.num_replicas_in_sync),
                "loss": [float(v) for v in history.history["loss"]],
                "replica_jit": bool(getattr(model, "_replica_jit", False)),
            },
            f,
        )


def shard_images(out_dir):
    """Stream OUT_DIR/../images (the k-th image holds k / 256 in pixel (0, 0)) under a
    2-worker cluster, global batch SHARD_BATCH: writes OUT_DIR/result.json with the k of every
    image of two epochs as this worker saw them, its shard's files, the steps, and the losses
    of a 2-epoch fit on the same stream."""
    from kvae import distribute

    strategy = distribute.get_strategy("multi-worker")
    import keras
    import numpy as np

    import kvae
    from kvae.datasets import list_images
    from kvae.datasets.images import shard

    folder = os.path.join(os.path.dirname(out_dir), "images")
    info = list_images(folder, test_fraction=0, pixels="uint8")
    data, steps = distribute.distribute_images(strategy, info, SHARD_BATCH, seed=0, repeat=True)
    batches = iter(data)
    epochs = []
    for _ in range(2):
        seen = []
        for _ in range(steps):
            x = next(batches)
            for part in strategy.experimental_local_results(x):
                seen += np.rint(part.numpy()[:, 0, 0, 0] * 256).astype(int).tolist()
        epochs.append(seen)
    mine = shard(info, distribute_index(strategy), distribute.num_workers(strategy))
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = kvae.VAE(data_shape=info.data_shape, latent_dim=2, seed=0)
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = model.fit(data, epochs=2, steps_per_epoch=steps, verbose=0)
    with open(os.path.join(out_dir, "result.json"), "w") as f:
        json.dump(
            {
                "epochs": epochs,
                "steps": steps,
                "files": [os.path.basename(p) for p in mine.train_files],
                "loss": [float(v) for v in history.history["loss"]],
            },
            f,
        )


def distribute_index(strategy):
    return int(strategy.cluster_resolver.task_id)


def _train_config(strategy):
    return {
        "dataset": "digits",
        "max_train_examples": 256,
        "max_test_examples": 64,
        "batch_size": 32,
        "epochs": 2,
        "latent_dim": 2,
        "validation": "none",
        "image_every": 0,
        "projector": False,
        "eval_num_samples": 0,
        "strategy": strategy,
        "seed": 0,
    }


def train_multi_worker(out_dir):
    """kvae.train.train under a 2-worker cluster, into OUT_DIR/run (each worker its own, so
    what each wrote can be told apart): writes OUT_DIR/result.json."""
    import tempfile

    from kvae import distribute
    from kvae.train import train

    run_dir = os.path.join(out_dir, "run")
    result = train(_train_config("multi-worker"), run_dir, verbose=0)
    with open(os.path.join(out_dir, "result.json"), "w") as f:
        json.dump(
            {
                "chief": distribute.is_chief(),
                "epochs": len(result.history["loss"]),
                "loss": result.history["loss"],
                "test_loss": result.metrics["loss"],
                "scratch_left": [
                    n for n in os.listdir(tempfile.gettempdir()) if n.startswith("kvae-worker-")
                ],
            },
            f,
        )


def cli_mirrored(out_dir):
    """`kvae train --strategy mirrored` over two logical CPU devices, through the command line
    (in-process: the devices must be set before TensorFlow starts), into OUT_DIR:

    * ``refused``: a global batch of 33 (not a multiple of the 2 replicas) must be refused
      before the run directory is made;
    * ``run``: the run of ``_train_config`` (binarised: VAE.fit's array path, binarising);
    * ``run-conditional``: one epoch of a conditional VAE (labels through the same pipeline).

    Writes OUT_DIR/result.json with the exit codes and the refusal's message."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from click.testing import CliRunner

    from kvae.cli import main

    def train(name, **overrides):
        args = ["train", "--run-dir", os.path.join(out_dir, name), "--progress", "none"]
        for key, value in {**_train_config("mirrored"), **overrides}.items():
            flag = "--" + key.replace("_", "-")
            if value is False:
                args.append(f"--no-{key}")
            elif value is True:
                args.append(flag)
            else:
                args += [flag, str(value)]
        result = CliRunner().invoke(main, args, prog_name="kvae")
        return {"exit_code": result.exit_code, "output": result.output[-3000:]}

    result = {
        "refused": train("refused", batch_size=33),
        "run": train("run", binarize="dynamic"),
        "run-conditional": train("run-conditional", conditional=True, epochs=1),
    }
    with open(os.path.join(out_dir, "result.json"), "w") as f:
        json.dump(result, f)


def tpu(out):
    from kvae import distribute
    from kvae.errors import ConfigError

    try:
        distribute.get_strategy("tpu")
    except ConfigError as err:
        result = {"error": type(err).__name__, "message": str(err)}
    else:
        result = {"error": None, "message": "a TPU was found"}
    with open(out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    mode, target = sys.argv[1], sys.argv[2]
    modes = {
        "mirrored": mirrored,
        "multi-worker": multi_worker,
        "train-multi-worker": train_multi_worker,
        "shard-images": shard_images,
        "cli-mirrored": cli_mirrored,
        "tpu": tpu,
    }
    modes[mode](target)

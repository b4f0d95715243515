"""Helper process for tests/test_families.py and tests/test_conditional.py (not a test module).

    python families_worker.py CASES.json

CASES.json lists cases {"model": MODEL.keras, "x": X.npy, "out": OUT.json, "y": Y.npy or
absent}, run one after the other in this one fresh process with two logical CPU devices
(TensorFlow starts once). For each case: (1) loads MODEL.keras and writes its
reconstructions and prior log-density of fixed codes (the saving check); (2) builds the same
architecture under a MirroredStrategy over both devices, trains it with per-replica XLA on X
and writes the loss curve (the tf.distribute check). With Y.npy the model is conditional:
y goes with x everywhere, and training goes through VAE.fit's array path.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(cases_path):
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    with open(cases_path) as f:
        for case in json.load(f):
            one_case(case["model"], case["x"], case["out"], case.get("y"))


def one_case(model_path, x_path, out_path, y_path=None):
    import keras
    import numpy as np

    import kvae
    from kvae import distribute

    x = np.load(x_path)
    y = None if y_path is None else np.load(y_path)
    loaded = kvae.load_model(model_path)
    z = np.linspace(-2, 2, 4 * loaded.latent_dim, dtype="float32").reshape(4, -1)
    inputs = x[:8] if y is None else (x[:8], y[:8])
    result = {
        "recon": loaded.predict(inputs, verbose=0).tolist(),
        "prior_log_prob": loaded.prior_distribution().log_prob(z).numpy().tolist(),
    }
    config = loaded.get_config()
    strategy = distribute.get_strategy("mirrored", devices=["/cpu:0", "/cpu:1"])
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = kvae.VAE.from_config({k: v for k, v in config.items() if k != "name"})
        model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=True)
    if y is None:
        steps = distribute.steps_per_epoch(len(x), 64)
        data = distribute.distribute_dataset(strategy, x, 64, seed=1, repeat=True)
        history = model.fit(data, epochs=3, steps_per_epoch=steps, verbose=0)
    else:
        # VAE.fit's array path: the labels travel with x through kvae's pipeline.
        history = model.fit(x, y, batch_size=64, epochs=3, verbose=0)
    result.update(
        loss=[float(v) for v in history.history["loss"]],
        replicas=int(strategy.num_replicas_in_sync),
        replica_jit=bool(getattr(model, "_replica_jit", False)),
    )
    with open(out_path, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(sys.argv[1])

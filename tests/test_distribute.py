"""kvae on tf.distribute: MirroredStrategy over two logical CPU devices, a two-process
MultiWorkerMirroredStrategy cluster on 127.0.0.1, the TPU path's error, TF_CONFIG checks.

The strategies run in fresh processes (tests/dist_worker.py): logical devices and collective
ops must be configured before TensorFlow starts, and this pytest process has started it.
Every process has a time limit and is killed in a ``finally``.
"""

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from kvae import distribute
from kvae.errors import ConfigError, DataError

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "dist_worker.py")
TIMEOUT = 240  # seconds per process; a run takes ~25 s on 2 cores
HINT = (
    "\n(A VAE under a multi-replica strategy needs kvae/model.py's per-replica XLA step and "
    "rank-1 multi-worker metrics: see docs/scaling.md, 'XLA under a strategy'.)"
)


def _env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    for name in ("TF_CONFIG", "TPU_NAME"):
        env.pop(name, None)
    env.update(extra)
    return env


def _tail(path_or_text, n=3000):
    text = path_or_text
    if os.path.exists(str(path_or_text)):
        with open(path_or_text, errors="replace") as f:
            text = f.read()
    return str(text)[-n:]


def _run(args, tmp_path, timeout=TIMEOUT, **env):
    log = tmp_path / f"{args[0]}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, WORKER, *map(str, args)],
            env=_env(**env),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            proc.wait(timeout=timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, f"worker {args} failed ({proc.returncode}):\n{_tail(log)}{HINT}"


# ----- MirroredStrategy: 1 device vs 2 replicas, same global batch -------------------------
@pytest.fixture(scope="module")
def mirrored_result(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mirrored")
    out = tmp / "result.json"
    _run(["mirrored", out], tmp)
    with open(out) as f:
        return json.load(f)


@pytest.mark.slow
def test_mirrored_runs_two_replicas_with_xla(mirrored_result):
    two = mirrored_result["two"]
    assert two["replicas"] == 2
    # XLA stays on: compiled per replica (Keras' own jit_compile is off under a strategy,
    # where it cannot compile strategy.run across devices).
    assert two["replica_jit"] and not two["keras_jit"]
    one = mirrored_result["one"][0]
    assert one["replicas"] == 1 and one["keras_jit"]
    # Same global batch: the same number of optimizer steps (4 epochs x 512 / 64).
    assert two["steps"] == one["steps"] == 4 * 8


@pytest.mark.slow
def test_mirrored_replicas_split_the_one_device_batches(mirrored_result):
    """distribute_dataset: the two replicas' batches of a step, concatenated, are the batch
    one device gets from make_dataset with the same seed (same data order)."""
    assert mirrored_result["same_batches"] is True


@pytest.mark.slow
def test_mirrored_equals_one_device_without_monte_carlo_noise(mirrored_result):
    """With a decoder that ignores z (and an analytic KL) the loss has no sampling noise, so
    2 replicas x 32 examples and 1 device x 64 examples compute the same mean loss and the
    same gradient; only the order of float32 sums differs. One such rounding is ~1e-7
    relative (float32 eps 1.2e-7); over 32 SGD steps differences measured here stay below
    1e-7 relative. rtol=1e-5 leaves two orders of magnitude, and is far below what a wrong
    gradient scale would give (a 2x step changes the second epoch's loss by several %)."""
    one = mirrored_result["deterministic_one"]["loss"]
    two = mirrored_result["deterministic_two"]["loss"]
    np.testing.assert_allclose(two, one, rtol=1e-5)
    assert one[-1] < one[0]  # it did train


@pytest.mark.slow
def test_mirrored_loss_curve_within_monte_carlo_noise(mirrored_result):
    """The stock VAE: each replica draws its own latent noise (model._step_seed), so the
    curves differ by Monte Carlo noise only. Five single-device runs that differ only in the
    VAE's seed measure that noise: s = pooled standard deviation over the 4 epochs (4 x 4 =
    16 degrees of freedom). Under "same distribution", (two - mean(one)) / (s sqrt(1 + 1/5))
    follows a t distribution with 16 dof; |t| <= 5 fails with probability ~1e-4 per epoch.
    (A wrong loss scale moves the curve by many s: see the deterministic test.)"""
    runs = np.array([r["loss"] for r in mirrored_result["one"]])
    two = np.array(mirrored_result["two"]["loss"])
    k = len(runs)
    pooled = float(np.sqrt(np.mean(np.var(runs, axis=0, ddof=1))))
    bound = 5.0 * pooled * np.sqrt(1 + 1 / k)
    diff = np.abs(two - runs.mean(axis=0))
    assert np.all(diff <= bound), (two, runs.mean(axis=0), pooled)
    assert two[-1] < two[0]


# ----- MultiWorkerMirroredStrategy: two processes on 127.0.0.1 -----------------------------
def _free_ports(n):
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _cluster(tmp_path, mode):
    """Run ``dist_worker.py MODE tmp_path/worker<i>`` as the two workers of a cluster on
    127.0.0.1 (each with its own TMPDIR); return the two folders once both exited 0."""
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs, dirs = [], []
    try:
        for index in range(2):
            out = tmp_path / f"worker{index}"
            out.mkdir(exist_ok=True)
            dirs.append(out)
            config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
            log = open(tmp_path / f"worker{index}.log", "w")  # noqa: SIM115 - closed below
            procs.append(
                (
                    subprocess.Popen(
                        [sys.executable, WORKER, mode, str(out)],
                        env=_env(TF_CONFIG=json.dumps(config), TMPDIR=str(out)),
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    ),
                    log,
                )
            )
        # Wait for both; when one fails, the other would wait for it until TensorFlow's own
        # timeout: stop at once.
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            codes = [proc.poll() for proc, _ in procs]
            if all(c is not None for c in codes) or any(c not in (None, 0) for c in codes):
                break
            time.sleep(0.2)
    finally:
        for proc, log in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
    for index, (proc, _) in enumerate(procs):
        assert proc.returncode == 0, (
            f"worker {index} failed ({proc.returncode}):\n"
            f"{_tail(tmp_path / f'worker{index}.log')}{HINT}"
        )
    return dirs


@pytest.mark.slow
def test_multi_worker_trains_checkpoints_from_chief_and_agrees(tmp_path):
    dirs = _cluster(tmp_path, "multi-worker")
    results = [json.loads((d / "result.json").read_text()) for d in dirs]
    assert [r["chief"] for r in results] == [True, False]
    assert all(r["workers"] == 2 and r["replicas"] == 2 and r["replica_jit"] for r in results)
    assert results[0]["loss"] == results[1]["loss"]  # all-reduced metrics
    assert results[0]["loss"][-1] < results[0]["loss"][0]

    # Chief-only checkpoints: the chief's run directory has them, the other worker's has none,
    # and the other worker's temporary folder was removed.
    chief_run, other_run = dirs[0] / "run", dirs[1] / "run"
    assert (chief_run / "checkpoints" / "last.keras").is_file()
    assert (chief_run / "history.csv").is_file()
    assert not other_run.exists() or not any(other_run.rglob("*"))
    assert not [p for p in dirs[1].iterdir() if p.name.startswith("kvae-worker-")]

    # Identical final weights on both workers.
    a, b = np.load(dirs[0] / "final.npz"), np.load(dirs[1] / "final.npz")
    assert a.files == b.files and a.files
    for key in a.files:
        np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.slow
def test_kvae_train_under_multi_worker_writes_from_the_chief_only(tmp_path):
    """kvae.train.train on two workers: the chief writes the whole run directory; the other
    worker writes nothing into its run directory (here one that already holds a file, as a
    shared one the chief has written into would: before, it refused with "already holds
    files" or wrote config.json, run.json, model.keras, metrics.json and logs there) and
    leaves no scratch folder. Both trained the same all-reduced run."""
    foreign = tmp_path / "worker1" / "run" / "written-by-the-chief.txt"
    foreign.parent.mkdir(parents=True)
    foreign.write_text("x")
    dirs = _cluster(tmp_path, "train-multi-worker")
    results = [json.loads((d / "result.json").read_text()) for d in dirs]
    assert [r["chief"] for r in results] == [True, False]
    assert results[0]["loss"] == results[1]["loss"] and results[0]["epochs"] == 2
    assert results[0]["test_loss"] == results[1]["test_loss"]
    assert results[0]["scratch_left"] == results[1]["scratch_left"] == []
    chief_run = dirs[0] / "run"
    for name in ("run.json", "config.json", "model.keras", "metrics.json", "history.csv"):
        assert (chief_run / name).is_file(), name
    assert os.listdir(chief_run / "logs" / "train") and (chief_run / "checkpoints").is_dir()
    info = json.loads((chief_run / "run.json").read_text())
    assert info["status"] == "finished" and info["replicas"] == 2
    assert sorted(p.name for p in (dirs[1] / "run").rglob("*")) == [foreign.name]


def _grey_folder(root, n):
    """n 8x8 grey PNGs, img_000.png ... ; the k-th holds k in pixel (0, 0) (k / 256 read
    with pixels="uint8"), the rest noise."""
    from PIL import Image

    root.mkdir()
    rng = np.random.default_rng(0)
    for k in range(n):
        image = rng.integers(0, 256, (8, 8), dtype=np.uint8)
        image[0, 0] = k
        Image.fromarray(image).save(root / f"img_{k:03d}.png")


@pytest.mark.slow
@pytest.mark.parametrize("n, dropped", [(48, 0), (50, 2)])
def test_multi_worker_workers_read_their_own_files_once_per_epoch(tmp_path, n, dropped):
    """distribute_images on two loopback workers, global batch 8 (4 per worker): worker i
    reads the files of shard i (img_000, img_002, ... for worker 0), each once per epoch;
    the two shards are disjoint and together every file. 48 files: 6 steps, nothing left
    over. 50 files: shards of 25, still 6 steps, so each worker leaves one of its files (a
    different one each epoch) for later epochs. fit runs on the same (x, y) stream."""
    _grey_folder(tmp_path / "images", n)
    dirs = _cluster(tmp_path, "shard-images")
    results = [json.loads((d / "result.json").read_text()) for d in dirs]
    assert [r["steps"] for r in results] == [6, 6]
    for index, result in enumerate(results):
        own = set(range(index, n, 2))
        assert result["files"] == [f"img_{k:03d}.png" for k in sorted(own)]
        for seen in result["epochs"]:
            assert len(seen) == len(set(seen)) == 24  # each image at most once an epoch
            assert set(seen) <= own  # only its own files
        assert result["epochs"][0] != result["epochs"][1]  # reshuffled
        assert len(result["loss"]) == 2 and all(np.isfinite(result["loss"]))
    for epoch in range(2):
        a, b = (set(r["epochs"][epoch]) for r in results)
        assert not a & b
        assert len(a | b) == n - dropped
    assert results[0]["loss"] == results[1]["loss"]  # all-reduced


@pytest.mark.slow
def test_kvae_train_strategy_mirrored_end_to_end(tmp_path):
    """`kvae train --strategy mirrored` through the command line on two logical CPUs, in one
    fresh process (tests/dist_worker.py cli-mirrored): docs/scaling.md's refusal of a global
    batch that does not divide over the replicas, before the run directory is made; a
    binarised run (VAE.fit's array path); a conditional run (labels in the same pipeline)."""
    _run(["cli-mirrored", tmp_path], tmp_path)
    result = json.loads((tmp_path / "result.json").read_text())
    refused = result["refused"]
    assert refused["exit_code"] != 0 and "Traceback" not in refused["output"]
    assert "multiple of the number of replicas (2)" in refused["output"], refused
    assert "Use 32 or 34" in refused["output"]
    assert not (tmp_path / "refused").exists()
    for name, epochs in (("run", 2), ("run-conditional", 1)):
        assert result[name]["exit_code"] == 0, result[name]["output"]
        run = tmp_path / name
        info = json.loads((run / "run.json").read_text())
        assert info["status"] == "finished" and info["epochs_completed"] == epochs
        assert info["replicas"] == 2
        metrics = json.loads((run / "metrics.json").read_text())
        # It learnt: below 64 ln 2 = 44.4 nats, the loss of pixels all predicted as p = 0.5.
        assert np.isfinite(metrics["loss"]) and 0 < metrics["loss"] < 64 * np.log(2), name
        history = (run / "history.csv").read_text().split()
        assert [row.split(",")[0] for row in history[1:]] == [str(e) for e in range(epochs)]
    assert json.loads((tmp_path / "run-conditional" / "config.json").read_text())["conditional"]


# ----- TPU: not here; a clear error ---------------------------------------------------------
@pytest.mark.slow
def test_tpu_without_tpu_is_a_clear_config_error(tmp_path):
    out = tmp_path / "tpu.json"
    _run(["tpu", out], tmp_path, timeout=120)
    result = json.loads(out.read_text())
    assert result["error"] == "ConfigError", result
    message = result["message"]
    assert "no TPU was found" in message and "strategy='mirrored'" in message


# ----- in-process checks (no strategy is created) --------------------------------------------
def test_unknown_strategy_names_the_choices():
    with pytest.raises(ConfigError, match="one of 'default', 'mirrored', 'multi-worker', 'tpu'"):
        distribute.get_strategy("horovod")
    with pytest.raises(ConfigError, match="devices"):
        distribute.get_strategy("default", devices=["/cpu:0"])


def test_default_strategy():
    import tensorflow as tf

    assert distribute.get_strategy("default") is tf.distribute.get_strategy()


def test_mirrored_strategy_is_made_once_per_device_list():
    """A second MirroredStrategy in a process reuses the first one's collective keys, and a
    model of another size then fails in TensorFlow's collective runtime (the two runs of
    test_kvae_train_strategy_mirrored_end_to_end did): kvae hands out the first one."""
    first = distribute.get_strategy("mirrored", devices=["/cpu:0"])
    assert distribute.get_strategy("mirrored", devices=("/cpu:0",)) is first
    assert distribute.get_strategy("mirrored") is distribute.get_strategy("mirrored")
    assert distribute.get_strategy("mirrored") is not first  # another list of devices


def test_multi_worker_without_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="TF_CONFIG is not set") as info:
        distribute.get_strategy("multi-worker")
    assert '"cluster"' in str(info.value)  # shows what to set


@pytest.mark.parametrize(
    "raw, match",
    [
        ("{not json", "to be JSON"),
        ("[]", "'cluster'"),
        ('{"cluster": {"worker": []}, "task": {"type": "worker", "index": 0}}', "non-empty list"),
        (
            '{"cluster": {"worker": ["nohost"]}, "task": {"type": "worker", "index": 0}}',
            "host:port",
        ),
        ('{"cluster": {"worker": ["a:1"]}}', "'task'"),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}', "task type"),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}', "index"),
        ('{"cluster": {"ps": ["a:1"], "worker": ["b:2"]}, "task": {"type": "worker"}}', "'ps'"),
        ('{"cluster": {"gpu": ["a:1"]}, "task": {"type": "gpu"}}', "'chief' and 'worker'"),
    ],
)
def test_malformed_tf_config(monkeypatch, raw, match):
    monkeypatch.setenv("TF_CONFIG", raw)
    with pytest.raises(ConfigError, match=match):
        distribute.get_strategy("multi-worker")


@pytest.mark.parametrize(
    "config, chief",
    [
        (None, True),
        ({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 0}}, True),
        ({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}, False),
        (
            {
                "cluster": {"chief": ["c:1"], "worker": ["a:1"]},
                "task": {"type": "worker", "index": 0},
            },
            False,
        ),
        ({"cluster": {"chief": ["c:1"], "worker": ["a:1"]}, "task": {"type": "chief"}}, True),
    ],
)
def test_is_chief(monkeypatch, config, chief):
    if config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", json.dumps(config))
    assert distribute.is_chief() is chief
    assert distribute.num_workers() == (
        1 if config is None else sum(map(len, config["cluster"].values()))
    )


class _Replicas:
    def __init__(self, n):
        self.num_replicas_in_sync = n


def test_global_batch_must_divide_over_replicas():
    assert distribute.per_replica_batch_size(_Replicas(4), 128) == 32
    with pytest.raises(ConfigError, match="multiple of the number of replicas") as info:
        distribute.per_replica_batch_size(_Replicas(4), 130)
    assert "128" in str(info.value) and "132" in str(info.value)
    for bad in (2, 0, "64", True, 64.0):
        with pytest.raises(ConfigError):
            distribute.per_replica_batch_size(_Replicas(4), bad)


def test_distribute_dataset_checks_before_building(tmp_path):
    import tensorflow as tf

    strategy = tf.distribute.get_strategy()
    with pytest.raises(ConfigError, match="at least one global batch"):
        distribute.distribute_dataset(strategy, np.zeros((10, 4), "float32"), 16)
    with pytest.raises(DataError):
        distribute.distribute_dataset(strategy, "not an array", 16)


def test_distribute_images_one_worker_reads_every_file(tmp_path):
    """One pipeline (no cluster): the whole folder each epoch, static per-replica batches."""
    from kvae.datasets import list_images

    _grey_folder(tmp_path / "images", 20)
    info = list_images(tmp_path / "images", test_fraction=0, pixels="uint8")
    data, steps = distribute.distribute_images(tf_default(), info, 5)
    seen = [np.rint(x.numpy()[:, 0, 0, 0] * 256).astype(int) for x in data]
    assert steps == 4 and len(seen) == 4 and all(s.shape == (5,) for s in seen)
    assert sorted(np.concatenate(seen).tolist()) == list(range(20))
    with pytest.raises(ConfigError, match="fill one step"):
        distribute.distribute_images(tf_default(), info, 32)


def tf_default():
    import tensorflow as tf

    return tf.distribute.get_strategy()


def test_distribute_dataset_one_replica_matches_make_dataset():
    """One pipeline and one replica: the batches of make_dataset, last partial one dropped."""
    import tensorflow as tf

    from kvae.datasets import make_dataset

    x = np.random.default_rng(0).random((70, 3)).astype("float32")
    strategy = tf.distribute.get_strategy()
    got = [b.numpy() for b in distribute.distribute_dataset(strategy, x, 16, seed=3)]
    want = [b.numpy() for b in make_dataset(x, 16, seed=3)][:4]
    assert len(got) == 4 == distribute.steps_per_epoch(70, 16)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)

"""Scaling out with TensorFlow's own distribution engine (``tf.distribute``).

    from kvae import distribute
    strategy = distribute.get_strategy("mirrored")        # all local GPUs (or the CPU)
    with strategy.scope():                                # build and compile inside the scope
        model = kvae.VAE(data_shape=(28, 28, 1))
        model.compile(optimizer="adam")
    train = distribute.distribute_dataset(strategy, x_train, global_batch_size=256, seed=0)
    model.fit(train, epochs=10)

Names (``kvae train --strategy NAME``):

* ``"default"``: no distribution (one device), ``tf.distribute.get_strategy()``.
* ``"mirrored"``: ``tf.distribute.MirroredStrategy``: one replica per local GPU (the CPU when
  there is none), gradients summed across replicas every step.
* ``"multi-worker"``: ``tf.distribute.MultiWorkerMirroredStrategy`` over the machines that the
  ``TF_CONFIG`` environment variable lists; every worker runs the same program. Create it
  before anything else touches TensorFlow (collective ops are configured at start-up).
* ``"tpu"``: ``tf.distribute.TPUStrategy`` on the TPU named by ``tpu=`` or ``$TPU_NAME``, or
  the one attached to this VM. Raises :class:`~kvae.errors.ConfigError` when none is found.

What "the same loss" means on N replicas. The global batch of B examples is split into N
per-replica batches of B / N (B must divide evenly); each replica computes the mean loss of
its own examples, divides it by N, and the gradients are summed across replicas, so a step
follows the gradient of the mean over all B examples, exactly as one device with batch B
does. The learning rate therefore needs no change when B is kept; if you grow B with the
number of replicas, scale the learning rate yourself (linearly, with a warm-up, is the usual
rule). The metrics (loss, elbo, reconstruction, kl) are means over all examples of all
replicas. One thing differs: each replica draws its own latent noise, so the Monte Carlo noise
of N replicas is not the noise of one device (statistically the same, numerically different).

See docs/scaling.md for GPUs, TPUs and several machines.
"""

import json
import os

from kvae._choices import STRATEGIES
from kvae.errors import ConfigError, DataError

__all__ = [
    "STRATEGIES",
    "distribute_dataset",
    "distribute_images",
    "get_strategy",
    "is_chief",
    "num_workers",
    "per_replica_batch_size",
    "steps_per_epoch",
    "tf_config",
]


_TF_CONFIG_EXAMPLE = (
    'TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
    '"task": {"type": "worker", "index": 0}}\''
)


# ----- strategies -------------------------------------------------------------------------
def get_strategy(name="default", *, devices=None, tpu=None):
    """A ``tf.distribute.Strategy`` by name (one of :data:`STRATEGIES`).

    Args:
        name: ``"default"``, ``"mirrored"``, ``"multi-worker"`` or ``"tpu"``.
        devices: for ``"mirrored"`` only: the devices to mirror over (e.g.
            ``["/gpu:0", "/gpu:1"]``); default: every local GPU, or the CPU.
        tpu: for ``"tpu"`` only: the TPU's name or ``grpc://`` address; default
            ``$TPU_NAME``, else the TPU this machine is attached to.

    Returns:
        The strategy. ``"mirrored"`` (per list of devices) and ``"multi-worker"`` give the
        same object on every call in a process, as TensorFlow needs (see ``_STRATEGIES``).

    Raises:
        ConfigError: an unknown name; ``"multi-worker"`` without a valid ``TF_CONFIG`` or after
            TensorFlow has started; ``"tpu"`` when no TPU is found.
    """
    if not isinstance(name, str) or name not in STRATEGIES:
        raise ConfigError(
            f"Expected `strategy` to be one of {', '.join(map(repr, STRATEGIES))}. "
            f"Received: strategy={name!r}"
        )
    if devices is not None and name != "mirrored":
        raise ConfigError(
            f"Expected `devices` only with strategy='mirrored'. Received: strategy={name!r}, "
            f"devices={devices!r}"
        )
    if tpu is not None and name != "tpu":
        raise ConfigError(
            f"Expected `tpu` only with strategy='tpu'. Received: strategy={name!r}, tpu={tpu!r}"
        )
    import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "tpu":
        return _tpu(tf, tpu)
    if name == "mirrored":
        devices = _checked_devices(devices)
        key = (name, None if devices is None else tuple(devices))
    else:
        key = (name, json.dumps(tf_config(), sort_keys=True))
    if key not in _STRATEGIES:
        _STRATEGIES[key] = _mirrored(tf, devices) if name == "mirrored" else _multi_worker(tf)
    return _STRATEGIES[key]


# One mirrored strategy per device list, and one multi-worker strategy, per process: later
# calls get the first one. Every new MirroredStrategy numbers its collective ops from the same
# start, so a second one reuses the first one's keys, and TensorFlow's collective runtime,
# which remembers the tensor shapes of a key, then fails a model of another size ("Shape
# mismatch in the collective instance"): two `kvae.train.train` runs of different models under
# strategy='mirrored' in one Python session did. A second MultiWorkerMirroredStrategy cannot
# start once TensorFlow runs at all.
_STRATEGIES = {}


def _checked_devices(devices):
    if devices is None:
        return None
    if isinstance(devices, str) or not all(isinstance(d, str) for d in devices):
        raise ConfigError(
            "Expected `devices` to be a list of device names such as ['/gpu:0', '/gpu:1']. "
            f"Received: devices={devices!r}"
        )
    if not devices:
        raise ConfigError("Expected at least one device in `devices`. Received: [].")
    return list(devices)


def _mirrored(tf, devices):
    try:
        return tf.distribute.MirroredStrategy(devices)
    except (ValueError, RuntimeError) as err:
        known = [d.name for d in tf.config.list_logical_devices()]
        raise ConfigError(
            f"Could not create a MirroredStrategy over devices={devices!r}: {err}. "
            f"The devices of this machine: {known}."
        ) from None


def tf_config(environ=None):
    """The parsed and checked ``TF_CONFIG`` (a dict), or None when it is not set.

    Raises:
        ConfigError: ``TF_CONFIG`` is not JSON, or lacks a cluster of ``host:port`` addresses
            or a task (type and index) within that cluster.
    """
    environ = os.environ if environ is None else environ
    raw = environ.get("TF_CONFIG")
    if raw is None or not raw.strip():
        return None
    try:
        config = json.loads(raw)
    except ValueError as err:
        raise ConfigError(
            f"Expected TF_CONFIG to be JSON such as {_TF_CONFIG_EXAMPLE}. Received: {raw!r} "
            f"({err})."
        ) from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not cluster:
        raise ConfigError(
            f"Expected TF_CONFIG to hold a 'cluster' mapping job names to address lists, as "
            f"in {_TF_CONFIG_EXAMPLE}. Received: {raw!r}."
        )
    for job, addresses in cluster.items():
        if job not in ("chief", "worker", "evaluator", "ps"):
            raise ConfigError(
                f"Expected TF_CONFIG's cluster jobs to be 'chief' and 'worker'. Received: "
                f"job {job!r} in {raw!r}."
            )
        if (
            not isinstance(addresses, list)
            or not addresses
            or not all(isinstance(a, str) and _is_address(a) for a in addresses)
        ):
            raise ConfigError(
                f"Expected TF_CONFIG's cluster[{job!r}] to be a non-empty list of 'host:port' "
                f"addresses. Received: {addresses!r}."
            )
    if "ps" in cluster:
        raise ConfigError(
            "Expected a cluster of 'chief' and 'worker' jobs for strategy='multi-worker' "
            "(synchronous all-reduce). Received: a 'ps' job; parameter-server training is "
            "not supported by kvae."
        )
    if len(cluster.get("chief", [])) > 1:
        raise ConfigError(
            f"Expected at most one 'chief' in TF_CONFIG. Received: {cluster['chief']!r}."
        )
    task = config.get("task")
    if not isinstance(task, dict):
        raise ConfigError(
            f"Expected TF_CONFIG to hold a 'task' with this process's type and index, as in "
            f"{_TF_CONFIG_EXAMPLE}. Received: {raw!r}."
        )
    kind, index = task.get("type"), task.get("index", 0)
    if kind not in cluster or kind == "evaluator":
        raise ConfigError(
            f"Expected TF_CONFIG's task type to be one of the cluster's jobs "
            f"{sorted(j for j in cluster if j != 'evaluator')}. Received: type={kind!r}."
        )
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(cluster[kind]):
        raise ConfigError(
            f"Expected TF_CONFIG's task index to be an integer in [0, {len(cluster[kind])}) "
            f"for job {kind!r}. Received: index={index!r}."
        )
    return config


def _is_address(text):
    host, sep, port = text.rpartition(":")
    return bool(sep and host and port.isdigit() and 0 < int(port) < 65536)


def _multi_worker(tf):
    config = tf_config()
    if config is None:
        raise ConfigError(
            "Expected the TF_CONFIG environment variable for strategy='multi-worker': it tells "
            "every worker the cluster's addresses and its own place in it. Received: TF_CONFIG "
            f"is not set. Set it on each machine, for example {_TF_CONFIG_EXAMPLE} (index 1 on "
            "the second machine), then start the same command on all of them. See "
            "docs/scaling.md."
        )
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except RuntimeError as err:
        raise ConfigError(
            "Could not start MultiWorkerMirroredStrategy: TensorFlow was already running "
            f"({err}). Create the strategy (kvae.distribute.get_strategy('multi-worker')) "
            "first thing in the program, before any other TensorFlow call."
        ) from None
    except (ValueError, tf.errors.OpError) as err:
        raise ConfigError(
            f"Could not start MultiWorkerMirroredStrategy from TF_CONFIG={json.dumps(config)}: "
            f"{err}."
        ) from None


def _tpu(tf, tpu):
    name = tpu if tpu is not None else os.environ.get("TPU_NAME")
    attempts = [name] if name else [None, "local"]
    errors = []
    for attempt in attempts:
        try:
            if attempt is None:
                resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
            else:
                resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=attempt)
            if attempt != "local":
                tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
            return tf.distribute.TPUStrategy(resolver)
        except Exception as err:  # noqa: BLE001 - any failure here means "no usable TPU"
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
            errors.append(f"{attempt or 'auto-detect'}: {type(err).__name__}: {first_line}")
    devices = [d.name for d in tf.config.list_logical_devices()]
    raise ConfigError(
        "Expected a TPU for strategy='tpu'. Received: no TPU was found ("
        + "; ".join(errors)
        + f"). This machine has {devices}. On a Cloud TPU VM run kvae on the VM itself; for a "
        "TPU node, pass its name (tpu='my-tpu' or TPU_NAME=my-tpu); without a TPU use "
        "strategy='mirrored' (GPUs) or 'default'. See docs/scaling.md."
    )


# ----- cluster roles ------------------------------------------------------------------------
def _role(strategy=None):
    """(task type, task index) of this process, from the strategy or TF_CONFIG."""
    resolver = getattr(strategy, "cluster_resolver", None) if strategy is not None else None
    kind = getattr(resolver, "task_type", None)
    index = getattr(resolver, "task_id", None)
    if kind is not None:
        cluster = resolver.cluster_spec().as_dict() if resolver is not None else {}
        return kind, int(index or 0), cluster
    config = tf_config()
    if config is None:
        return None, 0, {}
    task = config["task"]
    return task["type"], int(task.get("index", 0)), config["cluster"]


def is_chief(strategy=None):
    """True for the process that writes checkpoints and logs: the ``chief`` task, or worker 0
    of a cluster without a chief; True without a cluster (one process).

    Args:
        strategy: a ``tf.distribute.Strategy`` whose cluster resolver says which task this
            is; None: read ``TF_CONFIG``.
    """
    kind, index, cluster = _role(strategy)
    if kind is None:
        return True
    if kind == "chief":
        return True
    return kind == "worker" and index == 0 and "chief" not in cluster


def num_workers(strategy=None):
    """How many processes (chief plus workers) train together; 1 without a cluster."""
    _, _, cluster = _role(strategy)
    return max(1, len(cluster.get("chief", [])) + len(cluster.get("worker", [])))


# ----- data -------------------------------------------------------------------------------
def per_replica_batch_size(strategy, global_batch_size):
    """``global_batch_size // replicas``; ConfigError unless it divides evenly."""
    replicas = int(strategy.num_replicas_in_sync)
    if isinstance(global_batch_size, bool) or not isinstance(global_batch_size, int):
        raise ConfigError(
            f"Expected `global_batch_size` to be an integer >= {replicas}. "
            f"Received: global_batch_size={global_batch_size!r}"
        )
    if global_batch_size < replicas or global_batch_size % replicas:
        raise ConfigError(
            f"Expected `global_batch_size` to be a multiple of the number of replicas "
            f"({replicas}), so every replica gets the same number of examples. Received: "
            f"global_batch_size={global_batch_size}. Use "
            f"{max(replicas, global_batch_size - global_batch_size % replicas)} or "
            f"{global_batch_size + replicas - global_batch_size % replicas}."
        )
    return global_batch_size // replicas


def steps_per_epoch(num_examples, global_batch_size):
    """Steps in one epoch of :func:`distribute_dataset`: ``num_examples // global_batch_size``
    (the last, partial global batch is dropped, see there)."""
    return int(num_examples) // int(global_batch_size)


def distribute_dataset(
    strategy,
    x,
    global_batch_size,
    *,
    shuffle=True,
    binarize=None,
    seed=None,
    repeat=False,
):
    """A ``tf.distribute.DistributedDataset`` of ``x`` for ``model.fit`` under ``strategy``.

    Made with ``strategy.distribute_datasets_from_function``: each input pipeline (one per
    worker) builds ``kvae.datasets.make_dataset`` over its own shard of the examples (shard
    ``input_pipeline_id`` of ``num_input_pipelines``, every k-th row), batched at the
    per-replica size ``global_batch_size // num_replicas``. Every epoch has
    ``num_examples // global_batch_size`` steps on every worker: the few examples that do not
    fill a last global batch are dropped (a different few each epoch when shuffling is on
    with one worker), so every step of every replica averages the same number of examples and
    no worker waits for another at the end of an epoch.

    On one machine (one pipeline feeding all replicas) the examples of a global batch are the
    ones one device would get from ``make_dataset(x, global_batch_size, seed=seed)``, in the
    same order: replica r gets rows [r * b, (r + 1) * b) of that batch.

    Args:
        strategy: a ``tf.distribute.Strategy`` (``get_strategy(...)``).
        x: training examples, shape (n, ...), as for ``kvae.datasets.make_dataset``.
        global_batch_size: examples per step over all replicas; a multiple of
            ``strategy.num_replicas_in_sync``.
        shuffle, binarize, seed, repeat: as for ``make_dataset`` (the seed is shared by all
            workers; each shuffles its own shard).

    Raises:
        ConfigError: the global batch does not divide evenly over the replicas, or there are
            fewer examples than one global batch.
        DataError: ``x`` is not usable (see ``make_dataset``).
    """
    import numpy as np

    from kvae.datasets import make_dataset

    per_replica = per_replica_batch_size(strategy, global_batch_size)
    if not hasattr(x, "shape") or len(getattr(x, "shape", ())) == 0:
        raise DataError(
            f"Expected `x` to be an array of shape (n, ...). Received: {type(x).__name__}."
        )
    x = np.asarray(x)
    n = int(x.shape[0])
    if n < global_batch_size:
        raise ConfigError(
            f"Expected at least one global batch of examples ({global_batch_size}). "
            f"Received: {n} examples. Lower global_batch_size."
        )
    if seed is None:
        seed = int(np.random.randint(0, 2**31 - 1))

    steps = steps_per_epoch(n, global_batch_size)

    def dataset_fn(context):
        pipelines = context.num_input_pipelines
        # Per-replica batches this pipeline serves in one epoch: one per local replica and step.
        batches = steps * (context.num_replicas_in_sync // pipelines)
        part = (
            x[context.input_pipeline_id :: pipelines][: batches * per_replica]
            if pipelines > 1
            else x
        )
        dataset = make_dataset(
            part,
            per_replica,
            shuffle=shuffle,
            binarize=binarize,
            seed=seed,
            drop_remainder=True,
            repeat=repeat,
        )
        return dataset if repeat else dataset.take(batches)

    import tensorflow as tf

    options = tf.distribute.InputOptions(experimental_fetch_to_device=True)
    return strategy.distribute_datasets_from_function(dataset_fn, options)


def distribute_images(
    strategy,
    info,
    global_batch_size,
    *,
    seed=0,
    shuffle=True,
    repeat=False,
    cache=None,
    labels=False,
):
    """The training images of ``info`` (a :class:`kvae.datasets.ImageData` from
    ``kvae.datasets.list_images``) streamed under ``strategy``, each worker reading its own
    files: ``(dataset, steps)``, a ``tf.distribute.DistributedDataset`` of per-replica
    batches of images ``x`` (``(x, label)`` with ``labels=True``) and the steps of one epoch.

    Made with ``strategy.distribute_datasets_from_function``: input pipeline ``i`` of ``P``
    (one per worker) takes the files of ``kvae.datasets.images.shard(info, i, P)`` (every P-th file,
    or TFRecord file, from the i-th) before anything is read, so the workers together read
    every training file once per epoch and none reads another's. Each pipeline is
    ``kvae.datasets.image_dataset`` over its shard at the per-replica batch
    ``global_batch_size // replicas`` with ``drop_remainder=True``: static batches of images
    alone. Keras 3.15's ``fit`` under ``MultiWorkerMirroredStrategy`` reduces its first batch
    with ``strategy.reduce`` to build the model, which fails for any tuple element
    (``(x, y)`` or kvae's padded ``(x, y, weight)``: "Attempt to convert a value
    (PerReplica...) to a Tensor"), so only a lone ``x`` trains there (docs/scaling.md). Every
    worker runs the same ``steps``
    per epoch: the fewest its shards allow, ``min_i(images of shard i) // (global // P)``; a
    worker's images beyond them (fewer than one global batch's share, a different few each
    epoch when shuffling) wait for the next epoch. Each worker shuffles its own files anew every
    epoch from ``seed``.

    Args:
        strategy: a ``tf.distribute.Strategy`` (``get_strategy(...)``).
        info: the listed images (``kvae.datasets.list_images(...)`` or the record
            ``image_dataset`` returns); every worker must list the same files.
        global_batch_size: images per step over all replicas; a multiple of
            ``strategy.num_replicas_in_sync``.
        seed, shuffle, cache: as for ``image_dataset``.
        labels: yield ``(x, label)`` (a conditional VAE; not under
            ``MultiWorkerMirroredStrategy`` in Keras 3.15, see above) instead of ``x``.
        repeat: repeat the epochs without end (pass ``steps_per_epoch=steps`` to ``fit``:
            Keras then keeps one iterator for the run, as for ``distribute_dataset``).

    Raises:
        ConfigError: the global batch does not divide over the replicas, or a worker's shard
            has fewer images than one step needs.
    """
    from kvae.datasets.images import image_dataset, shard

    per_replica = per_replica_batch_size(strategy, global_batch_size)
    workers = num_workers(strategy)
    steps = _image_steps(info, global_batch_size, workers, shard)

    def dataset_fn(context):
        pipelines, index = context.num_input_pipelines, context.input_pipeline_id
        if pipelines != workers:
            raise ConfigError(
                f"Expected one input pipeline per worker ({workers}). Received: {pipelines}."
            )
        local = context.num_replicas_in_sync // pipelines
        train, _, _ = image_dataset(
            info.source,
            info=shard(info, index, pipelines),
            batch_size=per_replica,
            seed=seed,
            shuffle=shuffle,
            drop_remainder=True,
            cache=cache,
        )
        train = train.take(steps * local)
        if not labels:
            train = train.map(lambda x, y: x)
        return train.repeat() if repeat else train

    import tensorflow as tf

    options = tf.distribute.InputOptions(experimental_fetch_to_device=True)
    return strategy.distribute_datasets_from_function(dataset_fn, options), steps


def _image_steps(info, global_batch_size, workers, shard):
    """Steps per epoch every worker can serve: the smallest shard's images // its share."""
    share = global_batch_size // workers
    sizes = [shard(info, i, workers).num_train for i in range(workers)]
    if min(sizes) < share:
        raise ConfigError(
            f"Expected every worker's share of the training images to fill one step "
            f"({share} images: global batch {global_batch_size} over {workers} workers). "
            f"Received: {min(sizes)} images in the smallest of the shards {sizes} "
            f"({len(info.train_files)} files). Lower the global batch or add images."
        )
    return min(sizes) // share

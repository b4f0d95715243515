"""Interruption: a real `kvae train` killed with SIGKILL mid-epoch and resumed, Ctrl-C
(SIGINT) and SIGTERM, a checkpoint write that fails, and the resume helpers.

Subprocesses have time limits and are killed in a ``finally``.
"""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

import kvae
from kvae.checkpointing import resume_state, training_callbacks
from kvae.errors import ConfigError, ModelFileError, TrainingError, TrainingInterrupted
from kvae.train import resume_config

HERE = os.path.dirname(os.path.abspath(__file__))
TIMEOUT = 240  # seconds per process; each takes 5-15 s on 2 cores

# digits, 512 training examples in batches of 8: 64 steps per epoch, one step per compiled
# call, so a backup can be written after any step and a kill lands inside an epoch.
TRAIN_ARGS = [
    "--dataset", "digits", "--max-train-examples", "512", "--max-test-examples", "256",
    "--batch-size", "8", "--steps-per-execution", "1", "--validation", "none",
    "--image-every", "0", "--no-projector", "--progress", "epoch", "--seed", "0",
]  # fmt: skip
EPOCHS = 4

# Seed-to-seed spread of this configuration's final test loss (metrics.json "loss", 4 epochs),
# measured with seeds 0-3 on this machine: 26.13, 26.03, 26.30, 26.14 -> standard deviation
# 0.11 nats. A resumed run is another random path (a partly repeated epoch, a fresh shuffle
# order after the restart), so the difference of two runs has sd ~ 0.11 * sqrt(2) = 0.16;
# 5 of those is 0.8 nats. Tolerance: 1.0 nat (4% of the loss).
LOSS_TOLERANCE = 1.0


def _env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    env.pop("KVAE_BACKUP_SECONDS", None)
    env.update(extra)
    return env


def _command(*args):
    return [sys.executable, "-m", "kvae", *map(str, args)]


def _kvae(*args, timeout=TIMEOUT, **env):
    """Run `python -m kvae ...` to completion (killed after ``timeout``)."""
    proc = subprocess.Popen(
        _command(*args),
        env=_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out, err


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _history(run_dir):
    with open(os.path.join(run_dir, "history.csv"), newline="") as f:
        return list(csv.DictReader(f))


def _rows_written(run_dir):
    try:
        return len(_history(run_dir))
    except OSError:
        return 0


def _wait_and_signal(proc, ready, sig, timeout=TIMEOUT):
    """Poll ``ready()`` until true, then send ``sig`` to ``proc``; return what ready gave."""
    start = time.monotonic()
    while time.monotonic() - start < timeout and proc.poll() is None:
        found = ready()
        if found:
            proc.send_signal(sig)
            return found
        time.sleep(0.01)
    raise AssertionError(f"the training process never got ready (exit code {proc.poll()})")


@pytest.fixture(autouse=True)
def interactive_sigint():
    """Every test here runs as a process started from a terminal: Python's own Ctrl-C handler
    (a test run started with SIGINT ignored, as a background job, would not have it), put
    back as it was afterwards. Subprocesses started meanwhile start with the default."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    previous_term = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGINT, previous)
    signal.signal(signal.SIGTERM, previous_term)


# ----- SIGKILL in the middle of an epoch, then --resume ----------------------------------------
@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_reaches_the_same_result(tmp_path):
    reference = tmp_path / "reference"
    code, out, err = _kvae("train", *TRAIN_ARGS, "--epochs", EPOCHS, "--run-dir", reference)
    assert code == 0, err[-3000:]

    victim = tmp_path / "victim"
    proc = subprocess.Popen(
        _command("train", *TRAIN_ARGS, "--epochs", EPOCHS, "--run-dir", victim),
        env=_env(KVAE_BACKUP_SECONDS="0"),  # a backup after every step
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def mid_epoch():
            state = _read_json(victim / "backup" / "training_metadata.json")
            return state if state and state["epoch"] >= 1 and state["batch"] >= 8 else None

        _wait_and_signal(proc, mid_epoch, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    killed = _read_json(
        victim / "backup" / "training_metadata.json"
    )  # what the kill left committed
    assert killed["batch"] > 0, killed  # inside an epoch, not at its end
    done_before = int(killed["epoch"])
    assert _read_json(victim / "run.json")["status"] == "running"
    assert len(_history(victim)) == done_before
    assert resume_state(victim)["kind"] == "backup"
    assert resume_state(victim)["epoch"] == done_before

    code, out, err = _kvae("train", "--resume", victim)
    assert code == 0, err[-3000:]
    # The resumed run went on from the backup: only the remaining epochs ran.
    assert f"Epoch {done_before + 1}/{EPOCHS}" in out and f"Epoch {done_before}/" not in out
    info = _read_json(victim / "run.json")
    assert info["status"] == "finished" and info["epochs_completed"] == EPOCHS
    assert [int(r["epoch"]) for r in _history(victim)] == list(range(EPOCHS))
    assert not [n for n in os.listdir(victim / "checkpoints") if ".tmp" in n]

    loss = _read_json(victim / "metrics.json")["loss"]
    want = _read_json(reference / "metrics.json")["loss"]
    assert abs(loss - want) <= LOSS_TOLERANCE, (loss, want)
    resumed = kvae.load_model(victim / "checkpoints" / "last.keras")
    assert int(resumed.optimizer.iterations.numpy()) > EPOCHS * 64  # a partial epoch repeated


# ----- Ctrl-C and SIGTERM -----------------------------------------------------------------------
# Kubernetes' default grace period between SIGTERM and SIGKILL (terminationGracePeriodSeconds);
# SLURM's KillWait defaults to 30 s too. Saving this run takes ~1 s; exiting, a few more.
GRACE_SECONDS = 30


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sig", "received", "by"),
    [
        (signal.SIGINT, "Interrupt received", ""),
        (signal.SIGTERM, "SIGTERM received", "by SIGTERM "),
    ],
    ids=["sigint", "sigterm"],
)
def test_signal_saves_a_checkpoint_and_says_how_to_resume(tmp_path, sig, received, by):
    """Ctrl-C, or SIGTERM as Kubernetes, SLURM or a preemptible VM sends it: the backup and
    checkpoint are saved within the grace period; exit status 128 + the signal (130, 143: the
    shell's codes), the message, no traceback; run.json says "interrupted" with the reason and
    the resume command, and --resume goes on."""
    run = tmp_path / "run"
    proc = subprocess.Popen(
        _command("train", *TRAIN_ARGS, "--epochs", 50, "--run-dir", run),
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_and_signal(proc, lambda: _rows_written(run), sig)  # after epoch 1
        sent = time.monotonic()
        out, err = proc.communicate(timeout=120)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 128 + sig, err[-3000:]
    assert took < GRACE_SECONDS, took
    assert "Traceback" not in err
    assert f"Resume with: kvae train --resume {run}" in err
    assert received in err and f"Interrupted {by}" in err
    # A checkpoint that loads, the logs so far, and a run that is not marked finished.
    state = resume_state(run)
    assert state is not None and state["epoch"] >= 1
    assert isinstance(kvae.load_model(run / "checkpoints" / "last.keras"), kvae.VAE)
    assert len(_history(run)) >= 1
    assert os.listdir(run / "logs" / "train")
    info = _read_json(run / "run.json")
    assert info["status"] == "interrupted", info
    assert info["reason"].startswith(f"Interrupted {by}"), info
    assert info["resume"] == f"kvae train --resume {run}"
    # The interrupted epoch is not printed as complete: no "64/64" after the last "Epoch" line.
    last_epoch = out[out.rindex("Epoch ") :]
    assert "64/64" not in last_epoch or f"Interrupted {by}after epoch" in err, last_epoch[-500:]

    # Resume for one more epoch: it starts where the interrupt left off.
    until = state["epoch"] + 1
    code, out, err = _kvae("train", "--resume", run, "--epochs", until)
    assert code == 0, err[-3000:]
    assert f"Epoch {until}/{until}" in out and f"Epoch {until - 1}/" not in out
    assert _read_json(run / "run.json")["status"] == "finished"
    assert [int(r["epoch"]) for r in _history(run)] == list(range(until))


def _tiny_config(epochs):
    """A run of train() that takes seconds: 64 digits in 2 steps per epoch."""
    from kvae.config import TrainConfig

    return TrainConfig(
        dataset="digits",
        max_train_examples=64,
        max_test_examples=16,
        batch_size=32,
        epochs=epochs,
        validation="none",
        image_every=0,
        projector=False,
        eval_num_samples=0,
        jit=False,
    )


def _model():
    model = kvae.VAE(data_shape=(8, 8, 1), latent_dim=2, seed=0)
    model.compile(steps_per_execution=1)
    return model


X = np.random.default_rng(0).random((128, 8, 8, 1)).astype("float32")


def _survive(signum, frame):
    """Stands in for SIGTERM's default (which would end the test run) where kvae's handler
    should be installed: a test then fails instead of killing pytest."""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_signal_in_process_stops_cleanly(tmp_path, sig):
    """Ctrl-C or SIGTERM at a step: the backup and checkpoint of that step are written and
    TrainingInterrupted says how to resume (``signum``: which signal); resuming continues."""

    class Signal(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 2:
                os.kill(os.getpid(), sig)

    if sig == signal.SIGTERM:
        signal.signal(signal.SIGTERM, _survive)
    before = signal.getsignal(sig)
    model = _model()
    with pytest.raises(TrainingInterrupted, match="Resume with: kvae train --resume") as info:
        model.fit(
            X,
            epochs=3,
            batch_size=16,
            verbose=0,
            callbacks=[*training_callbacks(tmp_path), Signal()],
        )
    assert isinstance(info.value, TrainingError)
    assert info.value.signum == sig
    by = "by SIGTERM " if sig == signal.SIGTERM else ""
    assert f"Interrupted {by}in epoch 1 after batch 4" in str(info.value)
    assert signal.getsignal(sig) is before  # the handler is given back
    assert resume_state(tmp_path)["epoch"] == 0  # epoch 1 runs again on resume
    assert _read_json(tmp_path / "checkpoints" / "state.json")["partial_epoch"] is True
    kvae.load_model(tmp_path / "checkpoints" / "last.keras")

    # Resume: the restored model continues from the interrupted step.
    step = resume_state(tmp_path)["step"]
    assert step == 4  # the guard runs before Signal: it sees the signal one step later
    model = _model()
    history = model.fit(
        X,
        epochs=1,
        batch_size=16,
        verbose=0,
        callbacks=training_callbacks(tmp_path, {"resume": True}),
    )
    assert history.epoch == [0]
    assert int(model.optimizer.iterations.numpy()) == step + len(X) // 16


def test_a_repeated_sigterm_does_not_stop_the_save_a_second_ctrl_c_does(tmp_path):
    """A job manager may send SIGTERM to every process of a job: the second one must not cut
    the save short. A Ctrl-C after it stops at once (KeyboardInterrupt)."""

    class Twice(keras.callbacks.Callback):
        def __init__(self, second):
            super().__init__()
            self.second = second

        def on_train_batch_end(self, batch, logs=None):
            if batch == 2:
                os.kill(os.getpid(), signal.SIGTERM)
                os.kill(os.getpid(), self.second)

    signal.signal(signal.SIGTERM, _survive)
    try:
        _model().fit(
            X,
            batch_size=16,
            verbose=0,
            callbacks=[*training_callbacks(tmp_path), Twice(signal.SIGTERM)],
        )
    except KeyboardInterrupt:  # not through pytest.raises: it would end the test session
        pytest.fail("a repeated SIGTERM stopped training at once, before the save")
    except TrainingInterrupted as err:
        assert "Interrupted by SIGTERM in epoch 1" in str(err)
    else:
        pytest.fail("SIGTERM did not stop training")
    assert resume_state(tmp_path)["step"] == 4  # saved after the repeated SIGTERM too
    with pytest.raises(KeyboardInterrupt):
        _model().fit(
            X,
            batch_size=16,
            verbose=0,
            callbacks=[*training_callbacks(tmp_path / "b"), Twice(signal.SIGINT)],
        )
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) is _survive


def test_sigterm_after_the_epochs_is_recorded_and_the_run_resumes(tmp_path):
    """SIGTERM while train() saves the model and computes the test metrics (outside fit):
    run.json says "interrupted" with the resume command, and --resume finishes the run."""
    from kvae.train import train

    class Late(keras.callbacks.Callback):
        def on_train_end(self, logs=None):  # after kvae's guard gave its handler back
            os.kill(os.getpid(), signal.SIGTERM)

    config = _tiny_config(epochs=2)
    signal.signal(signal.SIGTERM, _survive)
    run = tmp_path / "run"
    with pytest.raises(TrainingInterrupted, match="Interrupted by SIGTERM") as info:
        train(config, run, callbacks=[Late()], verbose=0)
    assert info.value.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is _survive
    record = _read_json(run / "run.json")
    assert record["status"] == "interrupted", record
    assert record["reason"].startswith("Interrupted by SIGTERM")
    assert record["resume"] == f"kvae train --resume {run}"
    result = train(resume_config(run), run, verbose=0)
    assert _read_json(run / "run.json")["status"] == "finished"
    assert result.metrics["epochs_completed"] == 2 and result.history == {}


def _own_handler(signum, frame):
    pass


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
@pytest.mark.parametrize(
    "handler",
    [signal.SIG_IGN, signal.SIG_DFL, _own_handler],
    ids=["ignored", "default", "own-handler"],
)
def test_training_leaves_an_ignored_signal_alone_and_gives_any_other_back(tmp_path, handler, sig):
    """nohup and a shell's background jobs start a process with SIGINT ignored, and Python
    leaves it so: training must not take it over (nor an ignored SIGTERM). Any other handler
    is replaced by kvae's during training and is exactly the one found afterwards (SIG_DFL
    too, which is 0)."""
    seen = []

    class Look(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(signal.getsignal(sig))

    signal.signal(sig, handler)
    callbacks = [*training_callbacks(tmp_path), Look()]
    _model().fit(X, epochs=1, batch_size=32, verbose=0, callbacks=callbacks)
    assert (seen[0] is handler) == (handler is signal.SIG_IGN), seen
    assert signal.getsignal(sig) is handler


# ----- a checkpoint write that fails ------------------------------------------------------------
def test_unwritable_run_directory_keeps_the_previous_checkpoint(tmp_path):
    """The backup folder turns into a regular file after the first epoch: writing into it
    fails (ENOTDIR) for root too. The error names the path; the checkpoint stays whole."""

    class BreakFolder(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                shutil.rmtree(tmp_path / "backup")
                (tmp_path / "backup").write_text("not a folder")

    checkpoint = tmp_path / "checkpoints" / "last.keras"
    model = _model()
    with pytest.raises(TrainingError) as info:
        model.fit(
            X,
            epochs=3,
            batch_size=32,
            verbose=0,
            callbacks=[*training_callbacks(tmp_path, backup_seconds=1e9), BreakFolder()],
        )
    message = str(info.value)
    assert "Cannot write the checkpoint" in message and str(tmp_path / "backup") in message
    assert "Not a directory" in message or "File exists" in message
    assert f"kvae train --resume {tmp_path}" in message
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    # The checkpoint of epoch 1 is intact and loads.
    assert _read_json(tmp_path / "checkpoints" / "state.json")["epoch"] == 1
    assert isinstance(kvae.load_model(checkpoint), kvae.VAE)
    assert not [n for n in os.listdir(tmp_path / "checkpoints") if ".tmp" in n]


@pytest.mark.slow
def test_full_disk_is_a_clear_error_and_the_previous_checkpoint_survives(tmp_path):
    out = tmp_path / "out.json"
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [
            sys.executable,
            os.path.join(HERE, "checkpoint_worker.py"),
            "disk-full",
            str(run),
            str(out),
        ],  # fmt: skip
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        log, _ = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, log[-3000:]
    result = _read_json(out)
    assert "File too large" in result["error"] and str(run) in result["error"]
    assert "is intact" in result["error"]
    assert result["loaded"] == "VAE" and result["checkpoint_epoch"] == 1
    assert result["sigint_handler_restored"]
    assert not [n for n in os.listdir(run / "backup") if ".tmp" in n]


# ----- resume helpers -----------------------------------------------------------------------------
def test_resume_config_reads_the_runs_config(tmp_path):
    from kvae.config import TrainConfig
    from kvae.train import CONFIG_FILE, RUN_FILE

    config = TrainConfig(dataset="digits", epochs=7, latent_dim=3, on_nan="stop")
    (tmp_path / CONFIG_FILE).write_text(config.to_json())
    (tmp_path / RUN_FILE).write_text(json.dumps({"format": "kvae-run", "status": "running"}))
    got = resume_config(tmp_path)
    assert got.resume is True and got.replace(resume=False) == config
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFileError, match="not a kvae run"):
        resume_config(tmp_path / "empty")


def test_resume_state_of_an_empty_or_damaged_run(tmp_path):
    assert resume_state(tmp_path) is None
    (tmp_path / "backup").mkdir()
    (tmp_path / "backup" / "training_metadata.json").write_text("{ truncated")
    with pytest.raises(ModelFileError, match="unreadable"):
        resume_state(tmp_path)


def test_resume_refuses_a_checkpoint_of_another_model(tmp_path):
    _model().fit(X, epochs=1, batch_size=32, verbose=0, callbacks=training_callbacks(tmp_path))
    other = kvae.VAE(data_shape=(8, 8, 1), latent_dim=5, seed=0)
    other.compile(steps_per_execution=1)
    with pytest.raises(ModelFileError, match="does not fit this model"):
        other.fit(
            X,
            epochs=2,
            batch_size=32,
            verbose=0,
            callbacks=training_callbacks(tmp_path, {"resume": True}),
        )
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_training_callbacks_checks_its_options(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="on_nan"):
        training_callbacks(tmp_path, {"on_nan": "ignore"})
    with pytest.raises(ConfigError, match="checkpoint_every"):
        training_callbacks(tmp_path, {"checkpoint_every": 0})
    with pytest.raises(ConfigError, match="backup_seconds"):
        training_callbacks(tmp_path, backup_seconds=-1)
    monkeypatch.setenv("KVAE_BACKUP_SECONDS", "soon")
    with pytest.raises(ConfigError, match="KVAE_BACKUP_SECONDS"):
        training_callbacks(tmp_path)
    monkeypatch.delenv("KVAE_BACKUP_SECONDS")
    callbacks = training_callbacks(tmp_path)
    assert all(isinstance(c, keras.callbacks.Callback) for c in callbacks)
    assert not os.listdir(tmp_path)  # nothing is written before training starts


# ----- backup schedule ----------------------------------------------------------------------------
class _BackupWrites(keras.callbacks.Callback):
    """Counts the backups written: after each compiled call (and epoch end), whether any file
    of RUN/backup is new or was replaced (os.replace gives it a new inode)."""

    def __init__(self, run_dir):
        super().__init__()
        self.folder = os.path.join(run_dir, "backup")
        self.seen, self.writes = set(), 0

    def _look(self):
        try:
            names = os.listdir(self.folder)
        except OSError:
            return
        now = set()
        for name in names:
            with_stat = os.stat(os.path.join(self.folder, name))
            now.add((name, with_stat.st_ino, with_stat.st_mtime_ns))
        if now - self.seen:
            self.writes += 1
        self.seen = now

    def on_train_batch_end(self, batch, logs=None):
        self._look()

    def on_epoch_end(self, epoch, logs=None):
        self._look()


@pytest.mark.parametrize(
    ("steps_per_execution", "writes"), [(1, 6), (4, 5)], ids=["one-step-calls", "4-step-calls"]
)
def test_backup_steps_saves_every_n_steps_not_every_batch(tmp_path, steps_per_execution, writes):
    """Two epochs of 12 steps with backup_steps=5. The schedule counts steps across the epoch
    boundary: one step per compiled call, step backups land after steps 5, 10, 15 and 20 (4),
    plus one at each epoch end (2): 6 writes. Four steps per call: a backup is due at the end
    of the call in which 5 steps have passed, after steps 8, 16 and 24 (3), plus the two epoch
    ends: 5 writes (counting calls instead of steps would give 3). An older Backup set Keras'
    private `_last_batch_seen` before asking `_should_save_on_batch`, so every batch looked
    like a new epoch: ~24 writes."""
    x = np.random.default_rng(1).random((96, 8, 8, 1)).astype("float32")  # 12 steps of 8
    counter = _BackupWrites(tmp_path)
    model = kvae.VAE(data_shape=(8, 8, 1), latent_dim=2, seed=0)
    model.compile(steps_per_execution=steps_per_execution)
    model.fit(
        x,
        epochs=2,
        batch_size=8,
        verbose=0,
        callbacks=[*training_callbacks(tmp_path, backup_steps=5), counter],
    )
    assert counter.writes == writes


def test_any_error_in_training_marks_the_run_failed(tmp_path):
    """Not only a NaN: whatever raises out of training leaves run.json saying "failed", with
    the reason and the resume command (and the SIGINT handler given back)."""
    from kvae.train import train

    class Boom(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise RuntimeError("the cooling failed")

    config = _tiny_config(epochs=3)
    run = tmp_path / "run"
    with pytest.raises(RuntimeError, match="the cooling failed"):
        train(config, run, callbacks=[Boom()], verbose=0)
    info = _read_json(run / "run.json")
    assert info["status"] == "failed" and info["reason"] == "RuntimeError: the cooling failed"
    assert info["resume"] == f"kvae train --resume {run}" and "finished" in info
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert resume_state(run)["epoch"] == 1  # the backup of epoch 1's end was written first

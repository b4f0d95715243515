"""Add evaluation results to a run directory: its ``metrics.json`` (merged, written
atomically) and its TensorBoard log (``test/<name>`` scalars in the top-level run, where the
hparams dashboard finds them as metrics, so runs compare).

This is the run side's half of evaluation: :mod:`kvae.evaluation` computes and returns
numbers, and writes nothing."""

import json
import os

from kvae import _files
from kvae.callbacks.tensorboard import TensorBoard
from kvae.train import LOG_DIR, METRICS_FILE

__all__ = ["record_metrics"]


def record_metrics(run_dir, metrics):
    """Merge the numbers of ``metrics`` into ``run_dir``'s metrics.json and TensorBoard log.

    Returns the merged dict. Keys already present are replaced."""
    path = os.path.join(os.fspath(run_dir), METRICS_FILE)
    merged = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            merged = json.load(f)
    merged.update(metrics)
    _files.write_json(path, merged)
    board = TensorBoard(os.path.join(os.fspath(run_dir), LOG_DIR), projector=False)
    try:
        board.log_metrics(metrics, step=int(merged.get("epochs_completed", 0) or 0))
    finally:
        board.close()
    return merged

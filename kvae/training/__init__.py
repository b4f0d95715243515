"""How kvae models are trained, apart from what they are (as Keras 3 keeps its trainers apart
from ``Model``).

* :mod:`kvae.training.trainer`: the :class:`~kvae.training.trainer.Trainer` mixin (``fit``
  / ``evaluate`` / ``predict`` with input checks, kvae's own pipeline for arrays,
  ``make_train_function``).
* :mod:`kvae.training.step_helpers`: what the model's steps take from the trainer.
* :mod:`kvae.training.checks`: data checked against the model before any step.
* :mod:`kvae.training.steps`: steps per compiled call, and when they run fused.
* :mod:`kvae.training.fused`: a call's steps in one XLA loop.
* :mod:`kvae.training.progress`: progress bars that show the steps that ran.
* :mod:`kvae.training.replicas`: one device, or several replicas or workers.
* :mod:`kvae.training.arrays`: which data ``fit`` feeds itself.

Duck-typed on the model: nothing here imports ``kvae.model``.
"""

from kvae.training.steps import steps_per_call
from kvae.training.trainer import Trainer

__all__ = ["Trainer", "steps_per_call"]

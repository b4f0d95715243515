"""``kvae train``: options -> a TrainConfig -> kvae.train.train."""

import json
import os

import click

from kvae._choices import (
    BINARIZE,
    FREE_BITS_MODES,
    KL_METHODS,
    LR_SCHEDULES,
    OBJECTIVES,
    ON_NAN,
    OPTIMIZERS,
    PRECISIONS,
    STRATEGIES,
)
from kvae.config import TrainConfig
from kvae.recipes import RECIPES

_DEFAULTS = TrainConfig()


class _JSONObject(click.ParamType):
    name = "JSON"

    def convert(self, value, param, ctx):
        if isinstance(value, dict):
            return value
        try:
            data = json.loads(value)
        except ValueError as err:
            self.fail(
                f"Expected a JSON object such as '{{\"hidden\": [256]}}'. Received: {value!r} ({err}).",
                param,
                ctx,
            )
        if not isinstance(data, dict):
            self.fail(
                f"Expected a JSON object such as '{{\"hidden\": [256]}}'. Received: {value!r}.",
                param,
                ctx,
            )
        return data


class _Validation(click.ParamType):
    name = "test|none|FRACTION"

    def convert(self, value, param, ctx):
        if isinstance(value, float) or value in ("test", "none"):
            return value
        try:
            return float(value)
        except ValueError:
            self.fail(
                f"Expected 'test', 'none' or a fraction in (0, 1). Received: {value!r}.", param, ctx
            )


def _default(key):
    value = getattr(_DEFAULTS, key)
    return "none" if value is None else value


# (flags, key, type, help). Every option defaults to None: only options given on the command
# line override the config file (and the config file overrides TrainConfig's defaults).
_OPTIONS = [
    (
        ("--dataset", "-d"),
        "dataset",
        str,
        "Data set name (kvae plugins list), .npz path, folder of images (class sub-folders "
        "are labels), TFRecord path/glob (folders and TFRecords are streamed from disk), or "
        "a table (.csv, .tsv, .parquet; needs kvae[tables]), or a TensorFlow Datasets data set "
        "already prepared on disk (tfds:NAME[/CONFIG][:VERSION]; never downloaded).",
    ),
    (("--dataset-kwargs",), "dataset_kwargs", _JSONObject(), "Data set loader arguments (JSON)."),
    (
        ("--image-size",),
        "image_size",
        str,
        "H[xW]: resize folder/TFRecord images to this size (centre crop to the aspect ratio, "
        "then resize; docs/images.md).",
    ),
    (
        ("--on-bad-file",),
        "on_bad_file",
        click.Choice(["error", "skip"]),
        "Unreadable image files: stop with an error naming the file, or skip them.",
    ),
    (("--encoder",), "encoder", str, "Encoder network name."),
    (("--encoder-kwargs",), "encoder_kwargs", _JSONObject(), "Encoder arguments (JSON object)."),
    (("--decoder",), "decoder", str, "Decoder network name."),
    (("--decoder-kwargs",), "decoder_kwargs", _JSONObject(), "Decoder arguments (JSON object)."),
    (("--posterior",), "posterior", str, "Posterior q(z|x) head name."),
    (("--posterior-kwargs",), "posterior_kwargs", _JSONObject(), "Posterior arguments (JSON)."),
    (("--likelihood",), "likelihood", str, "Likelihood p(x|z) head name."),
    (("--likelihood-kwargs",), "likelihood_kwargs", _JSONObject(), "Likelihood arguments (JSON)."),
    (("--prior",), "prior", str, "Prior p(z) name."),
    (("--prior-kwargs",), "prior_kwargs", _JSONObject(), "Prior arguments (JSON object)."),
    (("--latent-dim", "-z"), "latent_dim", click.IntRange(min=1), "Size of z."),
    (("--beta",), "beta", click.FloatRange(min=0), "KL weight (1 = the ELBO)."),
    (("--kl-warmup-epochs",), "kl_warmup_epochs", click.IntRange(min=0), "Linear KL warm-up."),
    (("--kl",), "kl", click.Choice(KL_METHODS), "KL estimate."),
    (("--objective",), "objective", click.Choice(OBJECTIVES), "Training objective."),
    (("--num-samples", "-k"), "num_samples", click.IntRange(min=1), "Latent samples (IWAE's K)."),
    (("--epochs", "-e"), "epochs", click.IntRange(min=1), "Training epochs."),
    (("--batch-size", "-b"), "batch_size", click.IntRange(min=1), "Examples per batch."),
    (
        ("--learning-rate", "--lr"),
        "learning_rate",
        click.FloatRange(min=0, min_open=True),
        "Learning rate.",
    ),
    (("--optimizer",), "optimizer", click.Choice(OPTIMIZERS), "Optimizer."),
    (
        ("--lr-schedule",),
        "lr_schedule",
        click.Choice(["none", *LR_SCHEDULES[1:]]),
        "Learning-rate schedule: burda = Burda et al. 2016's stages (3^i epochs at "
        "1e-3 * 10^(-i/7)), cut after --epochs.",
    ),
    (
        ("--clip-norm",),
        "clip_norm",
        click.FloatRange(min=0, min_open=True),
        "Global gradient-norm clip.",
    ),
    (("--seed",), "seed", click.IntRange(min=0), "Random seed."),
    (
        ("--steps-per-execution",),
        "steps_per_execution",
        click.IntRange(min=1),
        "Steps per compiled call.",
    ),
    (
        ("--precision",),
        "precision",
        click.Choice(PRECISIONS),
        "float32, or bf16 (Keras' mixed_bfloat16; pays for convolutions on AMX CPUs).",
    ),
    (("--binarize",), "binarize", click.Choice(["none", *BINARIZE[1:]]), "Binarise the data."),
    (
        ("--validation",),
        "validation",
        _Validation(),
        "Validation data: test, none or a held-out fraction.",
    ),
    (
        ("--max-train-examples",),
        "max_train_examples",
        click.IntRange(min=1),
        "Use only the first N training examples.",
    ),
    (
        ("--max-test-examples",),
        "max_test_examples",
        click.IntRange(min=1),
        "Use only the first N test examples.",
    ),
    (
        ("--image-every",),
        "image_every",
        click.IntRange(min=0),
        "TensorBoard images every N epochs (0: never).",
    ),
    (
        ("--eval-num-samples",),
        "eval_num_samples",
        click.IntRange(min=0),
        "K of the log p(x) estimate in metrics.json (0: skip).",
    ),
    (("--strategy",), "strategy", click.Choice(STRATEGIES), "tf.distribute strategy."),
    (("--on-nan",), "on_nan", click.Choice(ON_NAN), "What to do when the loss becomes NaN."),
    (
        ("--free-bits",),
        "free_bits",
        click.FloatRange(min=0),
        "Free bits: nats of KL per latent dimension that cost no gradient (0: off); see "
        "--free-bits-mode.",
    ),
    (
        ("--free-bits-mode",),
        "free_bits_mode",
        click.Choice(FREE_BITS_MODES),
        "Where the free-bits floor applies: total (the whole code's KL, floor free-bits x "
        "latent dim), dimension (each dimension, Kingma et al. 2016) or group (each layer of "
        "a hierarchical model).",
    ),
    (
        ("--checkpoint-every",),
        "checkpoint_every",
        click.IntRange(min=1),
        "Checkpoint every N epochs.",
    ),
]


def _add_options(func):
    for flags, key, type_, help_ in reversed(_OPTIONS):
        func = click.option(
            *flags,
            key,
            type=type_,
            default=None,
            help=f"{help_}  [default: {_default(key)}]",
        )(func)
    return func


@click.command(
    context_settings={"help_option_names": ["-h", "--help"]},
    short_help="Train a VAE and write a run directory.",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    help="A .yaml/.yml/.json file of config keys; options given here override it.",
)
@click.option(
    "--recipe",
    type=click.Choice(list(RECIPES)),
    default=None,
    help="A named published setting (kvae.recipes) as the base config; options given here "
    "override it (--epochs N runs a shortened schedule).",
)
@_add_options
@click.option(
    "--jit",
    "jit",
    type=click.Choice(["on", "off", "auto"]),
    default=None,
    help="XLA-compile the training step: on, off, or auto (kvae's measured rule: on for GPU/TPU "
    "and dense models, off for convolutions on CPU).  [default: auto]",
)
@click.option("--no-jit", "no_jit", is_flag=True, default=False, help="The same as --jit off.")
@click.option(
    "--conditional/--no-conditional",
    "conditional",
    default=None,
    help="A conditional VAE on the data set's labels (fit(x, y)).  [default: no-conditional]",
)
@click.option(
    "--projector/--no-projector",
    "projector",
    default=None,
    help="Write TensorBoard's embedding projector.  [default: projector]",
)
@click.option(
    "--run-dir",
    type=click.Path(file_okay=False),
    help="Where to write the run.  [default: runs/<time>-<name>]",
)
@click.option(
    "--resume",
    "resume_dir",
    type=click.Path(file_okay=False),
    help="Continue the run in this directory (its config, plus options given here).",
)
@click.option(
    "--progress",
    type=click.Choice(["bar", "epoch", "none"]),
    default="bar",
    show_default=True,
    help="Keras' progress bar, one line per epoch, or nothing.",
)
def train(config_file, recipe, run_dir, resume_dir, progress, **options):
    """Train a VAE and write a run directory. With no options: the default MNIST VAE
    (784-512-2 MLP, Bernoulli).

    --resume RUN continues an interrupted or failed run; a finished run trains on when
    --epochs (the total) is larger than the epochs it trained, else kvae says so and exits 0.
    Ctrl-C or SIGTERM (a scheduler's stop) saves and exits 130 or 143 with the command that
    resumes the run.

    Keys of --config files are TrainConfig's: the options' names with '_' for '-'.

    \b
    The run directory holds:
      run.json      status (running, finished, interrupted, failed: with the reason and the
                  resume command), package versions, times, epochs
      config.json   the resolved configuration (--config reads it back)
      model.keras   the final model (kvae.load_model; kvae evaluate, sample, ...)
      metrics.json  test metrics (ELBO, reconstruction, KL, log p(x), active units, KL per
                    unit) and the seconds each estimate took
      history.csv   one row of metrics per finished epoch
      checkpoints/  last.keras (the last checkpointed epoch) and state.json (its epoch)
      backup/       the state --resume continues from (weights, optimizer, epoch, step)
      logs/         TensorBoard event files (tensorboard --logdir RUN_DIR/logs)
    """
    from kvae.train import finished_epochs, finished_message, load_config
    from kvae.train import train as run_training

    no_jit = options.pop("no_jit")
    if no_jit and options.get("jit") not in (None, "off"):
        raise click.UsageError(f"Expected --no-jit or --jit {options['jit']}, not both.")
    if no_jit:
        options["jit"] = "off"
    if options.get("jit") is not None:
        options["jit"] = {"on": True, "off": False, "auto": "auto"}[options["jit"]]
    overrides = {k: v for k, v in options.items() if v is not None}
    for key in ("binarize", "lr_schedule"):
        if overrides.get(key) == "none":
            overrides[key] = None
    if recipe is not None and (config_file is not None or resume_dir is not None):
        raise click.UsageError("Expected --recipe without --config or --resume.")
    if resume_dir is not None:
        if run_dir is not None and os.path.abspath(run_dir) != os.path.abspath(resume_dir):
            raise click.UsageError("Expected either --resume RUN_DIR or --run-dir, not both.")
        if config_file is not None:
            raise click.UsageError(
                "Expected no --config with --resume: a resumed run keeps its own config.json "
                "(give single options to change it, e.g. --epochs)."
            )
        base = load_config(resume_dir)
        run_dir = resume_dir
        overrides["resume"] = True
    elif config_file is not None:
        base = TrainConfig.from_file(config_file)
    elif recipe is not None:
        from kvae.recipes import recipe as named_recipe

        base = TrainConfig.from_dict(named_recipe(recipe), source=f"recipe {recipe!r}")
    else:
        base = TrainConfig()
    config = base.replace(**overrides)
    if config.resume and resume_dir is None:
        raise click.UsageError("Expected --resume RUN_DIR to resume a run (resume: true needs it).")
    if config.resume:
        done = finished_epochs(run_dir)
        if done is not None and config.epochs <= done:
            click.echo(finished_message(run_dir, done), err=True)
            return  # nothing to do is not an error: exit status 0
    # run_dir None: kvae.train names it (runs/<stamp>-<short name>) once the data set has
    # settled the components (a table's encoder is "table"), and announces it.
    verb = "Resuming" if config.resume else "Training"

    def announce(run_dir):  # once the config and the data have been checked
        click.echo(f"{verb}: writing the run to {run_dir}", err=True)

    verbose = {"bar": "auto", "epoch": 2, "none": 0}[progress]
    result = run_training(config, run_dir, verbose=verbose, on_start=announce)
    click.echo(result.summary())

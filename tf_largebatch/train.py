"""The trainer: `horovodrun -np N python -m tf_largebatch.train --flagfile=...`.

One program for 2 CPU processes and for 256 GPUs: absl flags, Keras `fit` with
the recipe's callbacks, Horovod through `tf_largebatch.distributed`. Defaults
are Goyal et al.'s ImageNet recipe; configs/ holds the experiments.
"""

import dataclasses
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from absl import app, flags, logging  # noqa: E402

MODELS = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"] + [
    f"cifar_resnet{d}" for d in (8, 14, 20, 32, 44, 56, 110)
]

# Model.
flags.DEFINE_enum("model", "resnet50", MODELS, "Network.")
flags.DEFINE_enum("resnet_version", "1.5", ["1", "1.5"], "ResNet v1 (stride in the first 1x1) "
                  "or v1.5 (stride in the 3x3).")
flags.DEFINE_bool("zero_gamma", True, "Zero-init γ of the last BN of each residual block.")
flags.DEFINE_float("bn_momentum", 0.9, "BN moving-average decay.")
flags.DEFINE_integer("image_size", None, "Input size (default 224, 32 for CIFAR ResNets).")
flags.DEFINE_integer("num_classes", None, "Classes (default: from the dataset).")
# Data.
flags.DEFINE_string("dataset", "synthetic", "synthetic | shapes | folder | tfrecord | "
                    "tfds:<name>.")
flags.DEFINE_string("data_dir", None, "Folder tree, TFRecord directory, or TFDS data_dir.")
flags.DEFINE_bool("download", False, "Let TFDS download the dataset.")
flags.DEFINE_integer("synthetic_examples", 2048, "Training images of --dataset=synthetic or "
                     "shapes.")
flags.DEFINE_bool("cache", False, "Cache decoded images in memory (small datasets).")
flags.DEFINE_integer("augment_off_epochs", 0, "Turn augmentation off for the last E epochs.")
# Schedule.
flags.DEFINE_integer("per_worker_batch", 32, "n, images per worker per step.")
flags.DEFINE_integer("epochs", 90, "Training epochs.")
flags.DEFINE_integer("steps_per_epoch", None, "Override (smoke runs); default N // kn.")
flags.DEFINE_integer("eval_every", 1, "Evaluate every this many epochs (0: never).")
flags.DEFINE_integer("eval_steps", None, "Override the evaluation steps (smoke runs).")
flags.DEFINE_float("base_lr", 0.1, "η_ref, the rate for --base_batch images.")
flags.DEFINE_integer("base_batch", 256, "B_ref of the scaling rule.")
flags.DEFINE_enum("scaling_rule", "linear", ["linear", "sqrt"], "η̂ = η_ref·kn/B_ref or ·sqrt.")
flags.DEFINE_enum("warmup", "gradual", ["gradual", "constant", "none"], "Warmup kind.")
flags.DEFINE_float("warmup_epochs", 5, "Warmup length in epochs.")
flags.DEFINE_enum("decay", "step", ["step", "poly", "linear", "cosine", "constant"], "Decay.")
flags.DEFINE_list("milestones", ["30", "60", "80"], "Epochs of the ×decay_factor steps.")
flags.DEFINE_float("decay_factor", 0.1, "Step decay factor.")
flags.DEFINE_float("power", 1.0, "Polynomial decay power.")
flags.DEFINE_float("end_lr", 0.0, "Final rate of poly/linear/cosine decay.")
flags.DEFINE_float("decay_start_epoch", None, "Start of the linear decay (default: warmup end).")
# Optimizer.
flags.DEFINE_enum("optimizer", "sgd", ["sgd", "lars"], "Momentum SGD or LARS.")
flags.DEFINE_float("momentum", 0.9, "Momentum m.")
flags.DEFINE_bool("nesterov", False, "Nesterov momentum.")
flags.DEFINE_bool("momentum_correction", True, "Scale the velocity by η_t/η_(t-1).")
flags.DEFINE_float("weight_decay", 1e-4, "L2 λ (not on BN γ/β and biases).")
flags.DEFINE_float("final_weight_decay", None, "λ for the last --final_weight_decay_fraction "
                   "of training (Codreanu et al.: 2λ).")
flags.DEFINE_float("final_weight_decay_fraction", 0.06, "Fraction of training with the final λ.")
flags.DEFINE_float("trust_coefficient", 0.001, "LARS trust coefficient.")
flags.DEFINE_float("label_smoothing", 0.0, "Label smoothing ε.")
# Precision, distribution.
flags.DEFINE_enum("mixed_precision", "none", ["none", "mixed_float16", "mixed_bfloat16"],
                  "Mixed precision policy (logits stay float32).")
flags.DEFINE_bool("xla", False, "Compile the train step with XLA.")
flags.DEFINE_integer("simulate_workers", 1, "k workers simulated in each process: batch k·n, "
                     "BN over groups of n.")
flags.DEFINE_bool("hierarchical_allreduce", False, "Horovod hierarchical allreduce (MPI+NCCL, "
                  "several hosts).")
flags.DEFINE_bool("fp16_allreduce", False, "Compress gradients to fp16 for the allreduce.")
flags.DEFINE_float("fusion_threshold_mb", None, "HOROVOD_FUSION_THRESHOLD in MiB.")
flags.DEFINE_float("cycle_time_ms", None, "HOROVOD_CYCLE_TIME in ms.")
flags.DEFINE_integer("seed", 0, "Seed of initial weights, data order and augmentation.")
# Outputs.
# --log_dir is absl's own flag (absl.logging defines it); here it holds the run's logs.
flags.FLAGS.set_default("log_dir", "runs/latest")
flags.DEFINE_string("checkpoint_dir", None, "Checkpoints (default <log_dir>/checkpoints).")
flags.DEFINE_bool("resume", False, "Continue from the latest checkpoint in --checkpoint_dir.")
flags.DEFINE_bool("log_every_step", False, "Also write steps.jsonl (step, lr, loss).")
flags.DEFINE_integer("keep_checkpoints", 3, "Checkpoints kept.")
flags.DEFINE_string("reference_run", None, "A run's --log_dir: stop when this run's training "
                    "error leaves that run's curve early on (the paper's early check).")
flags.DEFINE_float("check_fraction", 0.3, "Fraction of training the early check covers.")
flags.DEFINE_float("check_tolerance", 0.02, "Allowed |Δ train top-1 error| in the early check.")

FLAGS = flags.FLAGS

for _name in ("per_worker_batch", "epochs", "simulate_workers", "base_batch", "keep_checkpoints"):
    flags.register_validator(_name, lambda v: v is not None and v >= 1, f"--{_name} must be ≥ 1")
for _name in ("steps_per_epoch", "eval_steps", "image_size", "num_classes"):
    flags.register_validator(_name, lambda v: v is None or v >= 1, f"--{_name} must be ≥ 1")
flags.register_validator("base_lr", lambda v: v > 0, "--base_lr must be > 0")
flags.register_validator("momentum", lambda v: 0 <= v < 1, "--momentum must be in [0, 1)")
flags.register_validator("weight_decay", lambda v: v >= 0, "--weight_decay must be ≥ 0")
flags.register_validator("label_smoothing", lambda v: 0 <= v < 1,
                         "--label_smoothing must be in [0, 1)")
flags.register_validator("warmup_epochs", lambda v: v >= 0, "--warmup_epochs must be ≥ 0")
flags.register_validator("eval_every", lambda v: v >= 0, "--eval_every must be ≥ 0")
flags.register_validator("augment_off_epochs", lambda v: v >= 0,
                         "--augment_off_epochs must be ≥ 0")


@flags.multi_flags_validator(["warmup", "warmup_epochs", "epochs"],
                             "--warmup_epochs must be smaller than --epochs")
def _warmup_fits(f):
    return f["warmup"] == "none" or f["warmup_epochs"] < f["epochs"]


@flags.multi_flags_validator(["milestones"], "--milestones must be increasing numbers of epochs, "
                             "e.g. --milestones=30,60,80")
def _milestones_valid(f):
    try:
        values = [float(m) for m in f["milestones"]]
    except ValueError:
        return False
    return all(a < b for a, b in zip(values, values[1:], strict=False)) and all(
        v > 0 for v in values)


@flags.multi_flags_validator(["dataset", "data_dir"], "--dataset=folder|tfrecord needs --data_dir")
def _data_dir_given(f):
    return f["dataset"] not in ("folder", "tfrecord") or bool(f["data_dir"])


@flags.multi_flags_validator(["augment_off_epochs", "epochs"],
                             "--augment_off_epochs must not exceed --epochs")
def _augment_off_fits(f):
    return f["augment_off_epochs"] <= f["epochs"]


def _validate_dataset(name):
    return name in ("synthetic", "shapes", "folder", "tfrecord") or (
        name.startswith("tfds:") and len(name) > 5)


flags.register_validator("dataset", _validate_dataset,
                         "--dataset must be synthetic, shapes, folder, tfrecord or tfds:<name>")


class TrainError(RuntimeError):
    """A problem the user must fix, reported without a traceback."""


@dataclasses.dataclass
class Run:
    """What `train()` leaves behind."""

    log_dir: str
    checkpoint_dir: str
    context: object  # distributed.Context; None for tf_largebatch.portable_train
    model: object  # keras.Model


def build_model(num_classes, image_size, virtual_batch_size):
    from tf_largebatch import models

    policy = None if FLAGS.mixed_precision == "none" else FLAGS.mixed_precision
    common = dict(num_classes=num_classes, input_shape=(image_size, image_size, 3),
                  zero_gamma=FLAGS.zero_gamma, bn_momentum=FLAGS.bn_momentum,
                  virtual_batch_size=virtual_batch_size, dtype_policy=policy)
    if FLAGS.model.startswith("cifar_resnet"):
        return models.cifar_resnet(int(FLAGS.model[len("cifar_resnet"):]), **common)
    return models.resnet(int(FLAGS.model[len("resnet"):]), version=FLAGS.resnet_version, **common)


def build_schedule(n, workers, steps_per_epoch):
    from tf_largebatch import schedules

    return schedules.goyal_schedule(
        n, workers, steps_per_epoch, base_lr=FLAGS.base_lr, base_batch=FLAGS.base_batch,
        rule=FLAGS.scaling_rule, total_epochs=FLAGS.epochs, warmup=FLAGS.warmup,
        warmup_epochs=FLAGS.warmup_epochs, decay=FLAGS.decay,
        milestones=[float(m) for m in FLAGS.milestones], decay_factor=FLAGS.decay_factor,
        power=FLAGS.power, end_lr=FLAGS.end_lr, decay_start_epoch=FLAGS.decay_start_epoch)


def build_optimizer(schedule, steps_per_epoch):
    from tf_largebatch import optimizers, schedules

    weight_decay = FLAGS.weight_decay
    if FLAGS.final_weight_decay is not None:
        weight_decay = schedules.WeightDecaySchedule(
            FLAGS.weight_decay, steps_per_epoch, FLAGS.epochs,
            FLAGS.final_weight_decay_fraction, FLAGS.final_weight_decay)
    common = dict(learning_rate=schedule, momentum=FLAGS.momentum, nesterov=FLAGS.nesterov,
                  weight_decay=weight_decay, momentum_correction=FLAGS.momentum_correction)
    if FLAGS.optimizer == "lars":
        return optimizers.LARS(trust_coefficient=FLAGS.trust_coefficient, **common)
    return optimizers.MomentumSGD(**common)


def build_loss():
    import keras

    if FLAGS.label_smoothing == 0:
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    smoothing = FLAGS.label_smoothing

    def smoothed_crossentropy(labels, logits):
        one_hot = keras.ops.one_hot(keras.ops.reshape(labels, (-1,)), keras.ops.shape(logits)[-1])
        return keras.losses.categorical_crossentropy(
            one_hot, logits, from_logits=True, label_smoothing=smoothing)

    return smoothed_crossentropy


def build_metrics():
    """top1/top5 accuracy (logged as errors) and the cross-entropy (logged as val_loss).

    Compile them as `weighted_metrics`: Keras's plain `metrics` ignore sample weights, and the
    evaluation's padding is only excluded by its weight 0."""
    import keras

    return [keras.metrics.SparseCategoricalAccuracy(name="top1"),
            keras.metrics.SparseTopKCategoricalAccuracy(5, name="top5"),
            keras.metrics.SparseCategoricalCrossentropy(from_logits=True, name="xent")]


def train():
    """Builds everything from FLAGS and runs `fit`; returns a `Run`."""
    import keras

    from tf_largebatch import callbacks, checkpointing, data, distributed, run_log

    ctx = distributed.init(FLAGS.hierarchical_allreduce, FLAGS.fusion_threshold_mb,
                           FLAGS.cycle_time_ms)
    if FLAGS.xla and ctx.size > 1 and os.environ.get("HOROVOD_ENABLE_XLA_OPS") != "1":
        raise TrainError("--xla with more than one Horovod worker needs horovod's XLA ops "
                         "(HOROVOD_ENABLE_XLA_OPS=1 and a horovod built with them); drop --xla.")
    workers = ctx.size * FLAGS.simulate_workers  # k
    n = FLAGS.per_worker_batch
    cifar = FLAGS.model.startswith("cifar_resnet")
    image_size = FLAGS.image_size or (32 if cifar else 224)
    checkpoint_dir = FLAGS.checkpoint_dir or os.path.join(FLAGS.log_dir, "checkpoints")
    keras.utils.set_random_seed(FLAGS.seed)

    # Each source is listed once; the schedule and the resume point need its size first.
    opened = {split: data.get_source(
        FLAGS.dataset, FLAGS.data_dir, split, image_size=image_size, num_classes=FLAGS.num_classes,
        download=FLAGS.download, synthetic_examples=FLAGS.synthetic_examples if split == "train"
        else None) for split in ("train", "eval")}
    natural_steps = opened["train"].num_examples // (workers * n)
    if natural_steps < 1:
        raise TrainError(f"--dataset={FLAGS.dataset} has {opened['train'].num_examples} training "
                         f"images, fewer than one global batch of {workers * n}: lower "
                         "--per_worker_batch or the number of workers.")
    if FLAGS.steps_per_epoch and FLAGS.steps_per_epoch > natural_steps:
        raise TrainError(f"--steps_per_epoch={FLAGS.steps_per_epoch} exceeds the {natural_steps} "
                         f"global batches of {workers * n} in one epoch of --dataset.")
    steps_per_epoch = FLAGS.steps_per_epoch or natural_steps
    num_classes = opened["train"].num_classes
    common = dict(image_size=image_size, per_worker_batch=n, num_workers=ctx.size,
                  worker_index=ctx.rank, simulate_workers=FLAGS.simulate_workers,
                  preprocessing="cifar" if cifar else "imagenet", cache=FLAGS.cache)

    schedule = build_schedule(n, workers, steps_per_epoch)
    model = build_model(num_classes, image_size, n if FLAGS.simulate_workers > 1 else None)
    optimizer = build_optimizer(schedule, steps_per_epoch)
    if FLAGS.mixed_precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    optimizer = distributed.distributed_optimizer(
        optimizer, "fp16" if FLAGS.fp16_allreduce else "none")
    model.compile(
        optimizer=optimizer,
        loss=build_loss(),
        weighted_metrics=build_metrics(),
        jit_compile=FLAGS.xla,
    )
    optimizer.build(model.trainable_variables)

    run_facts = dict(workers=workers, processes=ctx.size, per_worker_batch=n,
                     global_batch=workers * n, steps_per_epoch=steps_per_epoch)
    checkpointer = checkpointing.Checkpointer(checkpoint_dir, model, FLAGS.keep_checkpoints)
    initial_epoch = 0
    if FLAGS.resume:
        state = checkpointer.restore()
        initial_epoch = state["epoch"]
        if state["global_batch"] != workers * n or state["steps_per_epoch"] != steps_per_epoch:
            logging.warning(
                "Resuming a run of k·n = %d×%d with k·n = %d×%d: the rate follows the linear "
                "rule for the new global batch and the step count restarts at epoch %d.",
                state["workers"], state["per_worker_batch"], workers, n, initial_epoch)
            optimizer.iterations.assign(initial_epoch * steps_per_epoch)
    elif checkpointer.latest is not None:
        raise TrainError(f"{checkpoint_dir} already holds checkpoints ({checkpointer.latest}). "
                         "Pass --resume to continue that run, or choose another "
                         "--checkpoint_dir/--log_dir; nothing was overwritten.")
    if initial_epoch >= FLAGS.epochs:
        raise TrainError(f"the checkpoint is at epoch {initial_epoch}, not before --epochs="
                         f"{FLAGS.epochs}: raise --epochs to train further.")

    augment_off_epoch = (FLAGS.epochs - FLAGS.augment_off_epochs) if FLAGS.augment_off_epochs \
        else None
    train_ds, _ = data.train_dataset(
        opened["train"], seed=FLAGS.seed, epochs=FLAGS.epochs, start_epoch=initial_epoch,
        steps_per_epoch=steps_per_epoch, augment_off_epoch=augment_off_epoch, **common)
    eval_ds, eval_info = data.eval_dataset(opened["eval"], **common)
    eval_steps = min(FLAGS.eval_steps or eval_info.steps, eval_info.steps)
    val_images = data.eval_examples_on_worker(
        eval_info.num_examples, eval_steps, n * FLAGS.simulate_workers, ctx.size, ctx.rank)

    cbs = [
        distributed.BroadcastInitialState(),
        callbacks.StopOnNonFiniteLoss(checkpoint_dir if ctx.is_chief else None),
        distributed.AverageBatchNormStatistics(),
        run_log.GlobalMetrics(steps_per_epoch * n * FLAGS.simulate_workers, val_images),
    ]
    if FLAGS.reference_run:  # after GlobalMetrics: every worker sees the same averaged error
        warmup_epochs = 0.0 if FLAGS.warmup == "none" else FLAGS.warmup_epochs
        cbs.append(callbacks.EarlyCurveCheck(FLAGS.reference_run, FLAGS.check_fraction,
                                             FLAGS.check_tolerance, warmup_epochs=warmup_epochs))
    if ctx.is_chief:
        os.makedirs(FLAGS.log_dir, exist_ok=True)
        with open(os.path.join(FLAGS.log_dir, "flags.json"), "w") as f:
            json.dump(dict(FLAGS.flag_values_dict(), **run_facts, peak_lr=schedule.peak_lr,
                           commit=run_log.source_commit()), f, indent=1, default=str)
        cbs += [
            run_log.RunLogger(FLAGS.log_dir, schedule, workers * n, FLAGS.log_every_step),
            keras.callbacks.TensorBoard(os.path.join(FLAGS.log_dir, "tensorboard")),
            checkpointing.SaveCheckpoint(checkpointer, run_facts),
        ]
        logging.info("k = %d workers (%d processes × %d simulated), n = %d, kn = %d, η̂ = %.4g, "
                     "%d steps/epoch.", workers, ctx.size, FLAGS.simulate_workers, n, workers * n,
                     schedule.peak_lr, steps_per_epoch)
    model.fit(
        train_ds,
        epochs=FLAGS.epochs,
        initial_epoch=initial_epoch,
        steps_per_epoch=steps_per_epoch,
        validation_data=eval_ds if FLAGS.eval_every else None,
        validation_steps=eval_steps,
        validation_freq=FLAGS.eval_every or 1,
        callbacks=cbs,
        shuffle=False,
        verbose=(1 if sys.stdout.isatty() else 2) if ctx.is_chief else 0,
    )
    return Run(FLAGS.log_dir, checkpoint_dir, ctx, model)


def main(argv, train_fn=None):
    """Runs `train_fn` (default `train`); a problem the user must fix exits 1 with its message."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from tf_largebatch import run_log
    from tf_largebatch.callbacks import NonFiniteLossError
    from tf_largebatch.checkpointing import CheckpointError
    from tf_largebatch.data import DataError

    try:
        run = (train_fn or train)()
    except (TrainError, CheckpointError, DataError, NonFiniteLossError) as err:
        logging.error("%s", err)
        print(f"error: {err}", file=sys.stderr)
        return 1
    if run.context is None or run.context.is_chief:
        written = sorted(name for name in os.listdir(run.log_dir) if name != "checkpoints")
        print(f"Logs in {os.path.abspath(run.log_dir)} ({', '.join(written)}); checkpoints in "
              f"{os.path.abspath(run.checkpoint_dir)}.")
        print(run_log.summary(run.log_dir))
    return 0


def run():
    app.run(main)


if __name__ == "__main__":
    run()

"""The trainer on one accelerator with any Keras backend, for hosts without TensorFlow:

    KERAS_BACKEND=jax python -m tf_largebatch.portable_train --flagfile=configs/cifar10_gpu_X.cfg \
        --data_dir=DIR --log_dir=DIR

It reads tf_largebatch.train's flags and flagfiles and writes the same logs (metrics.jsonl,
flags.json), so the curves tool puts its runs beside the trainer's. What differs:
- one process: all k workers are simulated (--simulate_workers=k: batch kn, ghost BN over each
  n), so there is no allreduce and none of the Horovod flags apply;
- data: --dataset=folder only, decoded into memory by tf_largebatch.data.arrays (CIFAR scale),
  with that module's NumPy permutation and augmentation (same rules, other random draws);
- checkpoints: Keras's .weights.h5 files (tf_largebatch.checkpointing.WeightsFileCheckpointer);
- no TensorBoard (it needs TensorFlow).
The recipe itself (model, schedule, optimizer, loss, callbacks) is the same code as the trainer's.
"""

import functools
import json
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")

from absl import app, flags, logging  # noqa: E402

from tf_largebatch import train as trainer  # noqa: E402  (defines the flags)

FLAGS = flags.FLAGS

# Flags of tf_largebatch.train that have no meaning here, and what to do instead.
UNSUPPORTED = {
    "hierarchical_allreduce": "there is no allreduce in one process",
    "fp16_allreduce": "there is no allreduce in one process",
    "fusion_threshold_mb": "there is no allreduce in one process",
    "cycle_time_ms": "there is no allreduce in one process",
    "eval_steps": "the whole evaluation split is always used",
    "download": "only --dataset=folder is read",
}


def check_flags():
    """Raises TrainError naming the first flag this runner cannot honour."""
    if FLAGS.dataset != "folder":
        raise trainer.TrainError(
            f"--dataset={FLAGS.dataset}: tf_largebatch.portable_train reads only "
            "--dataset=folder (an image folder tree, decoded into memory); use tf_largebatch.train "
            "for TFRecords and TFDS.")
    for name, why in UNSUPPORTED.items():
        if FLAGS[name].present:
            raise trainer.TrainError(f"--{name} is not supported by tf_largebatch.portable_train "
                                     f"({why}); drop it.")


def train():
    """Builds everything from FLAGS and runs `fit`; returns a `trainer.Run`."""
    import keras
    import numpy as np

    from tf_largebatch import callbacks, checkpointing, run_log
    from tf_largebatch.data import arrays

    check_flags()
    workers = FLAGS.simulate_workers  # k
    n = FLAGS.per_worker_batch
    if not FLAGS.model.startswith("cifar_resnet"):
        raise trainer.TrainError(f"--model={FLAGS.model}: tf_largebatch.portable_train holds "
                                 "whole splits in memory and trains the CIFAR ResNets only "
                                 "(--model=cifar_resnet20 ...); use tf_largebatch.train.")
    checkpoint_dir = FLAGS.checkpoint_dir or os.path.join(FLAGS.log_dir, "checkpoints")
    keras.utils.set_random_seed(FLAGS.seed)

    train_x, train_y, classes = arrays.load_image_folder(FLAGS.data_dir, "train")
    eval_x, eval_y, _ = arrays.load_image_folder(FLAGS.data_dir, "eval")
    image_size = FLAGS.image_size or 32
    if train_x.shape[1:3] != (image_size, image_size):
        raise trainer.TrainError(f"{FLAGS.data_dir} holds {train_x.shape[2]}x{train_x.shape[1]} "
                                 f"images, not {image_size}x{image_size}: resize them or set "
                                 "--image_size to match.")
    if FLAGS.num_classes is not None and FLAGS.num_classes != len(classes):
        raise trainer.TrainError(f"{FLAGS.data_dir} has {len(classes)} classes but "
                                 f"--num_classes={FLAGS.num_classes}.")
    natural_steps = len(train_x) // (workers * n)
    if natural_steps < 1:
        raise trainer.TrainError(f"{FLAGS.data_dir} has {len(train_x)} training images, fewer "
                                 f"than one global batch of {workers * n}: lower "
                                 "--per_worker_batch or --simulate_workers.")
    if FLAGS.steps_per_epoch and FLAGS.steps_per_epoch > natural_steps:
        raise trainer.TrainError(f"--steps_per_epoch={FLAGS.steps_per_epoch} exceeds the "
                                 f"{natural_steps} global batches of {workers * n} per epoch.")
    steps_per_epoch = FLAGS.steps_per_epoch or natural_steps

    schedule = trainer.build_schedule(n, workers, steps_per_epoch)
    model = trainer.build_model(len(classes), image_size, n if workers > 1 else None)
    optimizer = trainer.build_optimizer(schedule, steps_per_epoch)
    if FLAGS.mixed_precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    model.compile(optimizer=optimizer, loss=trainer.build_loss(),
                  weighted_metrics=trainer.build_metrics(),
                  jit_compile=FLAGS.xla or keras.backend.backend() == "jax")
    optimizer.build(model.trainable_variables)

    run_facts = dict(workers=workers, processes=1, per_worker_batch=n, global_batch=workers * n,
                     steps_per_epoch=steps_per_epoch)
    checkpointer = checkpointing.WeightsFileCheckpointer(checkpoint_dir, model,
                                                         FLAGS.keep_checkpoints)
    initial_epoch = 0
    if FLAGS.resume:
        state = checkpointer.restore()
        initial_epoch = state["epoch"]
        if state["global_batch"] != workers * n or state["steps_per_epoch"] != steps_per_epoch:
            raise trainer.TrainError(
                f"{checkpoint_dir} is a run of kn = {state['global_batch']} with "
                f"{state['steps_per_epoch']} steps per epoch, not {workers * n} and "
                f"{steps_per_epoch}: resume with the run's own flagfile.")
    elif checkpointer.latest is not None:
        raise trainer.TrainError(
            f"{checkpoint_dir} already holds checkpoints ({checkpointer.latest}). Pass --resume "
            "to continue that run, or choose another --checkpoint_dir/--log_dir; nothing was "
            "overwritten.")
    if initial_epoch >= FLAGS.epochs:
        raise trainer.TrainError(f"the checkpoint is at epoch {initial_epoch}, not before "
                                 f"--epochs={FLAGS.epochs}: raise --epochs to train further.")

    augment_off_epoch = (FLAGS.epochs - FLAGS.augment_off_epochs) if FLAGS.augment_off_epochs \
        else None
    batches = arrays.train_batches(train_x, train_y, workers * n, FLAGS.seed, initial_epoch,
                                   FLAGS.epochs, steps_per_epoch, augment_off_epoch)
    cbs = [
        callbacks.StopOnNonFiniteLoss(checkpoint_dir),
        run_log.GlobalMetrics(steps_per_epoch * workers * n, len(eval_x),
                              average=lambda value, count: float(value)),
    ]
    if FLAGS.reference_run:
        warmup_epochs = 0.0 if FLAGS.warmup == "none" else FLAGS.warmup_epochs
        cbs.append(callbacks.EarlyCurveCheck(FLAGS.reference_run, FLAGS.check_fraction,
                                             FLAGS.check_tolerance, warmup_epochs=warmup_epochs))
    os.makedirs(FLAGS.log_dir, exist_ok=True)
    with open(os.path.join(FLAGS.log_dir, "flags.json"), "w") as f:
        json.dump(dict(FLAGS.flag_values_dict(), **run_facts, trainer="portable_train",
                       keras_backend=keras.backend.backend(),
                       peak_lr=schedule.peak_lr, commit=run_log.source_commit()),
                  f, indent=1, default=str)
    cbs += [
        run_log.RunLogger(FLAGS.log_dir, schedule, workers * n, FLAGS.log_every_step),
        checkpointing.SaveCheckpoint(checkpointer, run_facts),
    ]
    logging.info("k = %d simulated workers, n = %d, kn = %d, η̂ = %.4g, %d steps/epoch, "
                 "Keras backend %s.", workers, n, workers * n, schedule.peak_lr, steps_per_epoch,
                 keras.backend.backend())
    model.fit(
        batches,
        epochs=FLAGS.epochs,
        initial_epoch=initial_epoch,
        steps_per_epoch=steps_per_epoch,
        validation_data=(arrays.normalize(eval_x), eval_y.astype(np.int32))
        if FLAGS.eval_every else None,
        validation_batch_size=1000,
        validation_freq=FLAGS.eval_every or 1,
        callbacks=cbs,
        shuffle=False,  # the generator's order is the data rule
        verbose=1 if sys.stdout.isatty() else 2,
    )
    return trainer.Run(FLAGS.log_dir, checkpoint_dir, None, model)


def run():
    app.run(functools.partial(trainer.main, train_fn=train))


if __name__ == "__main__":
    run()

"""Flags → the recipe's objects: model (by name, from a registry), schedule, optimizer, loss
and metrics. Backend-neutral; Keras is imported only when something is built.
"""

from absl import flags

FLAGS = flags.FLAGS

# --model → (builder in tf_largebatch.models, depth).
MODELS = {
    **{f"resnet{d}": ("resnet", d) for d in (18, 34, 50, 101, 152)},
    **{f"cifar_resnet{d}": ("cifar_resnet", d) for d in (8, 14, 20, 32, 44, 56, 110)},
}


def is_cifar_model() -> bool:
    return MODELS[FLAGS.model][0] == "cifar_resnet"


def image_size() -> int:
    """--image_size, else 32 for CIFAR ResNets and 224 for ImageNet ones."""
    return FLAGS.image_size or (32 if is_cifar_model() else 224)


def build_model(num_classes: int, image_size: int, virtual_batch_size: int | None):
    """The --model network; BN statistics over groups of `virtual_batch_size` (None: the
    whole batch)."""
    from tf_largebatch import models

    builder, depth = MODELS[FLAGS.model]
    policy = None if FLAGS.mixed_precision == "none" else FLAGS.mixed_precision
    common = dict(num_classes=num_classes, input_shape=(image_size, image_size, 3),
                  zero_gamma=FLAGS.zero_gamma, bn_momentum=FLAGS.bn_momentum,
                  virtual_batch_size=virtual_batch_size, dtype_policy=policy)
    if builder == "resnet":
        common["version"] = FLAGS.resnet_version
    return getattr(models, builder)(depth, **common)


def build_schedule(n: int, workers: int, steps_per_epoch: int):
    """`schedules.goyal_schedule` for k = `workers` of n, from the schedule flags."""
    from tf_largebatch import schedules

    return schedules.goyal_schedule(
        n, workers, steps_per_epoch, base_lr=FLAGS.base_lr, base_batch=FLAGS.base_batch,
        rule=FLAGS.scaling_rule, total_epochs=FLAGS.epochs, warmup=FLAGS.warmup,
        warmup_epochs=FLAGS.warmup_epochs, decay=FLAGS.decay,
        milestones=[float(m) for m in FLAGS.milestones], decay_factor=FLAGS.decay_factor,
        power=FLAGS.power, end_lr=FLAGS.end_lr, decay_start_epoch=FLAGS.decay_start_epoch)


def build_optimizer(schedule, steps_per_epoch: int):
    """`optimizers.MomentumSGD` or `LARS` with the rate `schedule` and the decay flags."""
    from tf_largebatch import optimizers, schedules

    l2 = FLAGS.weight_decay  # coupled L2 (the paper's weight decay): MomentumSGD's l2
    if FLAGS.final_weight_decay is not None:
        l2 = schedules.WeightDecaySchedule(
            FLAGS.weight_decay, steps_per_epoch, FLAGS.epochs,
            FLAGS.final_weight_decay_fraction, FLAGS.final_weight_decay)
    common = dict(learning_rate=schedule, momentum=FLAGS.momentum, nesterov=FLAGS.nesterov,
                  l2=l2)
    if FLAGS.momentum_correction is not None:  # else each optimizer's own default
        common["momentum_correction"] = FLAGS.momentum_correction
    if FLAGS.optimizer == "lars":
        return optimizers.LARS(trust_coefficient=FLAGS.trust_coefficient, **common)
    return optimizers.MomentumSGD(**common)


def build_loss():
    """Cross-entropy on logits, with --label_smoothing."""
    import keras

    from tf_largebatch.losses import SparseSmoothedCrossentropy

    if FLAGS.label_smoothing == 0:
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return SparseSmoothedCrossentropy(FLAGS.label_smoothing)  # registered: model.keras loads


def build_metrics():
    """top1/top5 accuracy (logged as errors) and the cross-entropy (logged as val_loss).

    Compile them as `weighted_metrics`: Keras's plain `metrics` ignore sample weights, and the
    evaluation's padding is only excluded by its weight 0."""
    import keras

    return [keras.metrics.SparseCategoricalAccuracy(name="top1"),
            keras.metrics.SparseTopKCategoricalAccuracy(5, name="top5"),
            keras.metrics.SparseCategoricalCrossentropy(from_logits=True, name="xent")]

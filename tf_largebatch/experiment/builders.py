"""A run's config → the recipe's objects: model (by name, from a registry), schedule,
optimizer, loss and metrics. Backend-neutral; Keras is imported only when something is built.
"""

from tf_largebatch.experiment.config import ModelConfig, OptimizerConfig, ScheduleConfig

# --model → (builder in tf_largebatch.models, depth).
MODELS = {
    **{f"resnet{d}": ("resnet", d) for d in (18, 34, 50, 101, 152)},
    **{f"cifar_resnet{d}": ("cifar_resnet", d) for d in (8, 14, 20, 32, 44, 56, 110)},
}


def is_cifar_model(config: ModelConfig) -> bool:
    return MODELS[config.model][0] == "cifar_resnet"


def image_size(config: ModelConfig) -> int:
    """--image_size, else 32 for CIFAR ResNets and 224 for ImageNet ones."""
    return config.image_size or (32 if is_cifar_model(config) else 224)


def build_model(config: ModelConfig, mixed_precision: str, num_classes: int, image_size: int,
                virtual_batch_size: int | None):
    """The --model network in the --mixed_precision policy; BN statistics over groups of
    `virtual_batch_size` (None: the whole batch)."""
    from tf_largebatch import models

    builder, depth = MODELS[config.model]
    policy = None if mixed_precision == "none" else mixed_precision
    common = dict(num_classes=num_classes, input_shape=(image_size, image_size, 3),
                  zero_gamma=config.zero_gamma, bn_momentum=config.bn_momentum,
                  virtual_batch_size=virtual_batch_size, dtype_policy=policy)
    if builder == "resnet":
        common["version"] = config.resnet_version
    return getattr(models, builder)(depth, **common)


def build_schedule(config: ScheduleConfig, n: int, workers: int, steps_per_epoch: int):
    """`schedules.goyal_schedule` for k = `workers` of n, from the schedule's settings."""
    from tf_largebatch import schedules

    return schedules.goyal_schedule(
        n, workers, steps_per_epoch, base_lr=config.base_lr, base_batch=config.base_batch,
        rule=config.scaling_rule, total_epochs=config.epochs, warmup=config.warmup,
        warmup_epochs=config.warmup_epochs, decay=config.decay,
        milestones=list(config.milestones), decay_factor=config.decay_factor,
        power=config.power, end_lr=config.end_lr, decay_start_epoch=config.decay_start_epoch)


def build_optimizer(config: OptimizerConfig, schedule, steps_per_epoch: int, epochs: int):
    """`optimizers.MomentumSGD` or `LARS` with the rate `schedule` and the decay settings
    (a final weight decay applies to the last fraction of `epochs`)."""
    from tf_largebatch import optimizers, schedules

    l2 = config.weight_decay  # coupled L2 (the paper's weight decay): MomentumSGD's l2
    if config.final_weight_decay is not None:
        l2 = schedules.WeightDecaySchedule(
            config.weight_decay, steps_per_epoch, epochs,
            config.final_weight_decay_fraction, config.final_weight_decay)
    common = dict(learning_rate=schedule, momentum=config.momentum, nesterov=config.nesterov,
                  l2=l2)
    if config.momentum_correction is not None:  # else each optimizer's own default
        common["momentum_correction"] = config.momentum_correction
    if config.optimizer == "lars":
        return optimizers.LARS(trust_coefficient=config.trust_coefficient, **common)
    return optimizers.MomentumSGD(**common)


def build_loss(label_smoothing: float = 0.0):
    """Cross-entropy on logits, with `label_smoothing` ε."""
    import keras

    from tf_largebatch.losses import SparseSmoothedCrossentropy

    if label_smoothing == 0:
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return SparseSmoothedCrossentropy(label_smoothing)  # registered: model.keras loads


def build_metrics():
    """top1/top5 accuracy (logged as errors) and the cross-entropy (logged as val_loss).

    Compile them as `weighted_metrics`: Keras's plain `metrics` ignore sample weights, and the
    evaluation's padding is only excluded by its weight 0."""
    import keras

    return [keras.metrics.SparseCategoricalAccuracy(name="top1"),
            keras.metrics.SparseTopKCategoricalAccuracy(5, name="top5"),
            keras.metrics.SparseCategoricalCrossentropy(from_logits=True, name="xent")]

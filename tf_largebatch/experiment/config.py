"""One run's settings as a frozen object: what `runner.run_experiment(config, backend)` reads.

The trainers build it once from their flags (`experiment.flags.from_flags()`); a notebook, a
sweep or a test builds it in Python, without absl:

    from tf_largebatch.experiment.config import (ExperimentConfig, ModelConfig, DataConfig,
                                                 ScheduleConfig, OutputConfig)
    config = ExperimentConfig(
        model=ModelConfig(model="cifar_resnet20"),
        data=DataConfig(dataset="shapes", synthetic_examples=1024),
        schedule=ScheduleConfig(per_worker_batch=32, epochs=4, base_lr=0.2, warmup_epochs=1,
                                milestones=(3,)),
        output=OutputConfig(log_dir="/tmp/demo", log_every_step=True))
    sweep = [dataclasses.replace(config, schedule=dataclasses.replace(config.schedule,
                                                                      base_lr=lr))
             for lr in (0.1, 0.2, 0.4)]

One dataclass per concern, in the order of the flag groups of `experiment.flags`; each field
is named and defaulted as its flag (docs/trainer.md describes them), so `flag_values()` is
what flags.json records. A config built in Python does not pass through the flags'
validators: give it values the flags would accept.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The network (--model ... --num_classes)."""

    model: str = "resnet50"
    resnet_version: str = "1.5"
    zero_gamma: bool = True
    bn_momentum: float = 0.9
    image_size: int | None = None
    num_classes: int | None = None


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the images come from (--dataset ... --augment_off_epochs)."""

    dataset: str = "synthetic"
    data_dir: str | None = None
    download: bool = False
    synthetic_examples: int = 2048
    cache: bool = False
    augment_off_epochs: int = 0


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
    """n, the epochs and the rate's schedule (--per_worker_batch ... --decay_start_epoch)."""

    per_worker_batch: int = 32
    epochs: int = 90
    steps_per_epoch: int | None = None
    eval_every: int = 1
    eval_steps: int | None = None
    base_lr: float = 0.1
    base_batch: int = 256
    scaling_rule: str = "linear"
    warmup: str = "gradual"
    warmup_epochs: float = 5.0
    decay: str = "step"
    milestones: tuple[float, ...] = (30, 60, 80)
    decay_factor: float = 0.1
    power: float = 1.0
    end_lr: float = 0.0
    decay_start_epoch: float | None = None

    def __post_init__(self):  # --milestones=30,60,80 arrives as strings
        object.__setattr__(self, "milestones", tuple(float(m) for m in self.milestones))


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """The optimizer, its regularization and the divergence stop (--optimizer ...
    --label_smoothing)."""

    optimizer: str = "sgd"
    momentum: float = 0.9
    nesterov: bool = False
    momentum_correction: bool | None = None
    weight_decay: float = 1e-4
    final_weight_decay: float | None = None
    final_weight_decay_fraction: float = 0.06
    trust_coefficient: float = 0.001
    divergence_factor: float = 10.0
    label_smoothing: float = 0.0


@dataclasses.dataclass(frozen=True)
class SystemConfig:
    """Precision, workers, allreduce and seed (--mixed_precision ... --seed)."""

    mixed_precision: str = "none"
    xla: bool = False
    simulate_workers: int = 1
    allreduce: str = "auto"  # "auto", "flat" or "hierarchical"
    hierarchical_allreduce: bool = False  # the same as allreduce="hierarchical"
    fp16_allreduce: bool = False
    grouped_allreduce: bool = False
    fusion_threshold_mb: float | None = None
    cycle_time_ms: float | None = None
    seed: int = 0

    @property
    def allreduce_scheme(self) -> str:
        """`allreduce`, or "hierarchical" under `hierarchical_allreduce`."""
        return "hierarchical" if self.hierarchical_allreduce else self.allreduce


@dataclasses.dataclass(frozen=True)
class OutputConfig:
    """Logs, checkpoints, resume and the early check (--checkpoint_dir ... --check_tolerance,
    and absl's --log_dir)."""

    checkpoint_dir: str | None = None
    resume: bool | str = False  # True, False or "auto"
    overwrite: bool = False
    log_every_step: bool = False
    keep_checkpoints: int = 3
    checkpoint_every_steps: int = 0
    saved_model: bool = True
    reference_run: str | None = None
    check_fraction: float = 0.3
    check_tolerance: float = 0.014
    log_dir: str = "runs/latest"

    @property
    def checkpoint_folder(self) -> str:
        """--checkpoint_dir, else <log_dir>/checkpoints."""
        import os

        return self.checkpoint_dir or os.path.join(self.log_dir, "checkpoints")


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Everything one run reads, by concern; every part defaults to the flags' defaults.

    Example:
        >>> config = ExperimentConfig(schedule=ScheduleConfig(epochs=2, warmup_epochs=1))
        >>> config.schedule.milestones, config.output.log_dir
        ((30.0, 60.0, 80.0), 'runs/latest')
    """

    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    system: SystemConfig = SystemConfig()
    output: OutputConfig = OutputConfig()

    def flag_values(self) -> dict:
        """{flag name: value} of every field, in the flags' order: what flags.json records
        (milestones as the flag spells them, e.g. ["30", "60", "80"])."""
        values = {}
        for part in dataclasses.fields(self):
            values.update(dataclasses.asdict(getattr(self, part.name)))
        values["milestones"] = [f"{m:.0f}" if m.is_integer() else repr(m)
                                for m in self.schedule.milestones]
        return values

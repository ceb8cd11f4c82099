"""The trainer on one accelerator with any Keras backend, for hosts without TensorFlow:

    KERAS_BACKEND=jax python -m tf_largebatch.portable_train --flagfile=configs/cifar10_gpu_X.cfg \
        --data_dir=DIR --log_dir=DIR

It reads tf_largebatch.train's flags and flagfiles and writes the same logs (metrics.jsonl,
flags.json), so the curves tool puts its runs beside the trainer's; the run itself is the same
code (`experiment.runner`). What differs, all of it below:
- one process: all k workers are simulated (--simulate_workers=k: batch kn, ghost BN over each
  n), so there is no allreduce and none of the Horovod flags apply;
- data: --dataset=folder only, decoded into memory by tf_largebatch.data.arrays (CIFAR scale),
  with that module's NumPy permutation and augmentation (same rules, other random draws);
- checkpoints: Keras's .weights.h5 files (experiment.checkpointing.WeightsFileCheckpointer);
- no TensorBoard (it needs TensorFlow).
"""

import hashlib
import os

os.environ.setdefault("KERAS_BACKEND", "jax")

from absl import flags  # noqa: E402

from tf_largebatch.experiment import builders, cli, runner  # noqa: E402
from tf_largebatch.experiment import flags as trainer_flags  # noqa: E402
from tf_largebatch.experiment.config import ExperimentConfig  # noqa: E402

flags.adopt_module_key_flags(trainer_flags)
flags.declare_key_flag("log_dir")

USAGE = """\
usage: KERAS_BACKEND=jax python -m tf_largebatch.portable_train \\
           --flagfile=configs/cifar10_gpu_X.cfg --data_dir=DIR [flags]

tf_largebatch.train's recipe on one device with any Keras backend: all k workers simulated
(--simulate_workers=k), --dataset=folder only, no Horovod flags."""

# Flags of tf_largebatch.train that have no meaning here, and what to do instead.
UNSUPPORTED = {
    "allreduce": "there is no allreduce in one process",
    "hierarchical_allreduce": "there is no allreduce in one process",
    "fp16_allreduce": "there is no allreduce in one process",
    "grouped_allreduce": "there is no allreduce in one process",
    "fusion_threshold_mb": "there is no allreduce in one process",
    "cycle_time_ms": "there is no allreduce in one process",
    "eval_steps": "the whole evaluation split is always used",
    "download": "only --dataset=folder is read",
}


def check_flags(config=None):
    """Raises TrainError naming the first setting of `config` (default: the flags') that this
    runner cannot honour (a setting of UNSUPPORTED other than its default)."""
    config = config or trainer_flags.from_flags()
    if config.data.dataset != "folder":
        raise runner.TrainError(
            f"--dataset={config.data.dataset}: tf_largebatch.portable_train reads only "
            "--dataset=folder (an image folder tree, decoded into memory); use tf_largebatch.train "
            "for TFRecords and TFDS.")
    values, defaults = config.flag_values(), ExperimentConfig().flag_values()
    for name, why in UNSUPPORTED.items():
        if values[name] != defaults[name]:
            raise runner.TrainError(f"--{name} is not supported by tf_largebatch.portable_train "
                                    f"({why}); drop it.")
    if not builders.is_cifar_model(config.model):
        raise runner.TrainError(f"--model={config.model.model}: tf_largebatch.portable_train holds "
                                "whole splits in memory and trains the CIFAR ResNets only "
                                "(--model=cifar_resnet20 ...); use tf_largebatch.train.")


class PortableBackend(runner.Backend):
    """One process, any Keras backend, image folders held in memory as NumPy arrays."""

    name = "portable_train"

    def start(self, config):
        super().start(config)
        check_flags(config)

    def open_training_set(self, image_size):
        from tf_largebatch.data import arrays

        data_dir, num_classes = self.config.data.data_dir, self.config.model.num_classes
        self.train_x, self.train_y, classes = arrays.load_image_folder(data_dir, "train")
        self.eval_x, self.eval_y, _ = arrays.load_image_folder(data_dir, "eval")
        if self.train_x.shape[1:3] != (image_size, image_size):
            raise runner.TrainError(
                f"{data_dir} holds {self.train_x.shape[2]}x{self.train_x.shape[1]} images, "
                f"not {image_size}x{image_size}: resize them or set --image_size to match.")
        if num_classes is not None and num_classes != len(classes):
            raise runner.TrainError(f"{data_dir} has {len(classes)} classes but "
                                    f"--num_classes={num_classes}.")
        digest = hashlib.sha256(self.train_x.tobytes() + self.train_y.tobytes()).hexdigest()
        return runner.TrainingSet(len(self.train_x), len(classes), data_dir,
                                  tuple(classes), len(self.eval_x), digest[:16])

    def train_data(self, layout, start_epoch, augment_off_epoch, start_step=0, stop_epoch=None):
        from tf_largebatch.data import arrays

        return arrays.train_batches(self.train_x, self.train_y, layout.global_batch,
                                    self.config.system.seed, start_epoch,
                                    stop_epoch or self.config.schedule.epochs,
                                    layout.steps_per_epoch, augment_off_epoch, start_step)

    def validation(self, layout):
        import numpy as np

        from tf_largebatch.data import arrays

        data = (arrays.normalize(self.eval_x), self.eval_y.astype(np.int32))
        return dict(validation_data=data, validation_batch_size=1000), len(self.eval_x)

    def jit_compile(self):
        import keras

        return self.config.system.xla or keras.backend.backend() == "jax"

    def checkpointer(self, directory, model):
        from tf_largebatch.experiment import checkpointing

        return checkpointing.WeightsFileCheckpointer(directory, model,
                                                     self.config.output.keep_checkpoints)

    def facts(self):
        import keras

        return dict(keras_backend=keras.backend.backend())


def train():
    """Builds everything from the flags and runs `fit` on one device; returns a `runner.Run`."""
    return runner.run_experiment(trainer_flags.from_flags(), PortableBackend())


def main(argv):
    return runner.main(argv, trainer_flags.from_flags(), PortableBackend())


def run():
    cli.run_cli(main, USAGE)


if __name__ == "__main__":
    run()

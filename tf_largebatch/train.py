"""The Horovod trainer: `horovodrun -np N python -m tf_largebatch.train --flagfile=...`.

One program for 2 CPU processes and for 256 GPUs. The run itself (flags, builders, resume,
logs, `fit`) is `experiment.runner`; this file holds only what Horovod and TensorFlow add:
starting the workers, tf.data pipelines sharded over them, gradients averaged by allreduce,
the initial broadcast and BN statistics averaged across workers, TensorFlow checkpoints and
TensorBoard.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # INFO off; warnings and errors stay
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from tf_largebatch.experiment import builders, cli, runner  # noqa: E402
from tf_largebatch.experiment import flags as trainer_flags  # noqa: E402

TrainError = runner.TrainError
USAGE = """\
usage: horovodrun -np K python -m tf_largebatch.train --flagfile=configs/X.cfg [flags]
   or: python -m tf_largebatch.train --flagfile=configs/X.cfg [flags]   (one process)

Goyal et al.'s large-minibatch recipe on K Horovod processes (each simulating
--simulate_workers workers): k·n images per step, learning rate scaled with k·n, warmup.
Flags on the command line override the flag file; configs/ holds the experiments."""


class HorovodBackend(runner.Backend):
    """Horovod processes (or one, without horovodrun), each simulating --simulate_workers."""

    name = "horovod"

    def start(self, config):
        from tf_largebatch import distributed  # here, not at the top: --help needs no TensorFlow

        self.distributed = distributed
        super().start(config)
        system = config.system
        try:
            self.context = distributed.init(system.allreduce_scheme,
                                            system.fusion_threshold_mb, system.cycle_time_ms)
        except distributed.HostNameError as err:  # said once per host, by its first process
            self.is_chief = distributed.first_on_host()
            raise TrainError(str(err)) from None
        self.processes, self.rank = self.context.size, self.context.rank
        self.is_chief = self.context.is_chief
        if system.xla and self.processes > 1 and os.environ.get("HOROVOD_ENABLE_XLA_OPS") != "1":
            raise TrainError("--xla with more than one Horovod worker needs horovod's XLA ops "
                             "(HOROVOD_ENABLE_XLA_OPS=1 and a horovod built with them); drop "
                             "--xla.")

    def facts(self):  # the allreduce and Horovod settings in effect (flags or launcher)
        return self.context.facts()

    def open_training_set(self, image_size):
        from tf_largebatch import data

        config, source = self.config, self.config.data
        # Each source is listed once; the schedule and the resume point need its size first.
        self.sources = {split: data.get_source(
            source.dataset, source.data_dir, split, image_size=image_size,
            num_classes=config.model.num_classes, download=source.download,
            synthetic_examples=source.synthetic_examples if split == "train" else None)
            for split in ("train", "eval")}
        cifar = builders.is_cifar_model(config.model)
        self.common = dict(image_size=image_size, per_worker_batch=config.schedule.per_worker_batch,
                           num_workers=self.processes, worker_index=self.rank,
                           simulate_workers=config.system.simulate_workers,
                           preprocessing="cifar" if cifar else "imagenet", cache=source.cache)
        train = self.sources["train"]
        return runner.TrainingSet(train.num_examples, train.num_classes, train.name,
                                  train.class_names, self.sources["eval"].num_examples,
                                  train.fingerprint)

    def train_data(self, layout, start_epoch, augment_off_epoch, start_step=0, stop_epoch=None):
        from tf_largebatch import data

        dataset, _ = data.train_dataset(
            self.sources["train"], seed=self.config.system.seed,
            epochs=stop_epoch or self.config.schedule.epochs,
            start_epoch=start_epoch, start_step=start_step,
            steps_per_epoch=layout.steps_per_epoch, augment_off_epoch=augment_off_epoch,
            **self.common)
        return dataset

    def validation(self, layout):
        from tf_largebatch import data

        dataset, info = data.eval_dataset(self.sources["eval"], **self.common)
        steps = min(self.config.schedule.eval_steps or info.steps, info.steps)
        images = data.eval_examples_on_worker(info.num_examples, steps, layout.process_batch,
                                              self.processes, self.rank)
        return dict(validation_data=dataset, validation_steps=steps), images

    def wrap_optimizer(self, optimizer, model):  # --allreduce=auto decides here, for model
        self.stop_flag, system = self.distributed.StopFlag(), self.config.system
        self.context = self.distributed.choose_allreduce(
            self.context, model.trainable_variables, 2 if system.fp16_allreduce else None,
            system.grouped_allreduce)
        return self.distributed.distributed_optimizer(
            optimizer, "fp16" if system.fp16_allreduce else "none", system.grouped_allreduce,
            self.stop_flag)

    def request_stop(self):
        self.stop_flag.request()

    def stop_agreed(self):
        return self.stop_flag.agreed()

    def checkpointer(self, directory, model):
        from tf_largebatch.experiment import checkpointing

        return checkpointing.Checkpointer(directory, model, self.config.output.keep_checkpoints)

    def average(self, value, count):
        return self.distributed.weighted_mean(value, count)

    def any_worker(self, flag):
        return self.distributed.any_worker(flag)

    def average_worker_state(self, model):
        self.distributed.average_batch_norm_statistics(model)

    def first_callbacks(self):
        return [self.distributed.BroadcastInitialState(),
                self.distributed.AverageBatchNormStatistics()]

    def chief_callbacks(self, log_dir):
        import keras

        return [keras.callbacks.TensorBoard(os.path.join(log_dir, "tensorboard"))]


def train():
    """Builds everything from the flags and runs `fit` under Horovod; returns a `runner.Run`."""
    return runner.run_experiment(trainer_flags.from_flags(), HorovodBackend())


def main(argv):
    return runner.main(argv, trainer_flags.from_flags(), HorovodBackend())


def run():
    cli.run_cli(main, USAGE)


if __name__ == "__main__":
    run()

"""One training run from a config, the same for every trainer: `run_experiment(config,
backend)`.

The trainers (`tf_largebatch.train` with Horovod and TensorFlow, `tf_largebatch.portable_train`
on one device with any Keras backend) differ only in what a `Backend` provides: how the
workers are started, where the data comes from, how gradients and metrics are averaged, how
checkpoints are written. Everything else is here, once:

    config → batch layout → schedule, model, optimizer → position → data → callbacks → fit

The run's position (where it starts, the logs' step) is one `position.RunPosition`, found by
the one resume policy (`position.resume_point`) and handed to the checkpointer, the logs and
the preemption callbacks.

The config (`experiment.config.ExperimentConfig`) is built from the flags by the trainers
(`experiment.flags.from_flags()`) or in Python (docs/trainer.md, "From Python"); nothing here
reads a flag.
"""

import dataclasses
import json
import os
import re
import signal
import sys

from absl import logging

from tf_largebatch.experiment import builders, run_folder
from tf_largebatch.experiment.config import ExperimentConfig
from tf_largebatch.experiment.errors import TrainError
from tf_largebatch.experiment.position import RunPosition, resume_point
from tf_largebatch.experiment.workers import Workers


@dataclasses.dataclass
class Run:
    """What `run_experiment()` leaves behind."""

    log_dir: str
    checkpoint_dir: str
    rank: int
    is_chief: bool
    model: object  # keras.Model
    layout: object  # data.layout.BatchLayout
    # A resume of a run that had trained all its epochs: the final outputs it wrote now
    # (model.keras, saved_model; empty: none was missing). None: the run trained.
    completed: list | None = None


@dataclasses.dataclass
class TrainingSet:
    """What a backend reports after opening the training data."""

    num_examples: int
    num_classes: int
    name: str
    class_names: tuple | None = None
    eval_examples: int | None = None
    fingerprint: str | None = None  # of the training examples (see data.sources.Source)


class Backend(Workers):
    """The parts of a run that differ between trainers; subclasses override these hooks.

    `start(config)` runs first, keeps the run's config as `self.config` and sets `processes`,
    `rank` and `is_chief`. As a `Workers` it also gives the callbacks what they need from the
    workers (averages, the stop agreement).
    """

    name = "base"
    processes, rank, is_chief = 1, 0, True

    def start(self, config: ExperimentConfig):
        """Starts the workers (Horovod) or checks that `config` suits this trainer."""
        self.config = config

    def open_training_set(self, image_size) -> TrainingSet:
        raise NotImplementedError

    def train_data(self, layout, start_epoch, augment_off_epoch, start_step=0, stop_epoch=None):
        """The `x` of `fit`: batches of this process for epochs start_epoch .. stop_epoch - 1
        (default the last), the first from its step `start_step`."""
        raise NotImplementedError

    def validation(self, layout):
        """(the validation arguments of `fit`, real validation images on this process)."""
        raise NotImplementedError

    def wrap_optimizer(self, optimizer, model):
        """The optimizer `fit` uses for `model` (e.g. one that averages its gradients across
        workers)."""
        return optimizer

    def jit_compile(self):
        return self.config.system.xla

    def checkpointer(self, directory, model):
        raise NotImplementedError

    def first_callbacks(self):
        """Callbacks that run before the recipe's (e.g. the initial broadcast)."""
        return []

    def chief_callbacks(self, log_dir):
        """Extra callbacks of the chief worker (e.g. TensorBoard)."""
        return []

    def facts(self):
        """Extra entries for flags.json."""
        return {}


def check_writable(flag, directory):
    """Writes a probe file in `directory` (creating it for the check and removing again the
    folders it created: a refused run leaves no trace), so that a folder that cannot be
    written fails now, naming the flag, instead of after an epoch of training."""
    created = run_folder.absent_folders(directory)
    try:
        os.makedirs(directory, exist_ok=True)
        probe = os.path.join(directory, f".write-check-{os.getpid()}")
        with open(probe, "w") as f:
            f.write("ok")
            f.flush()
            os.fsync(f.fileno())
        os.remove(probe)
    except OSError as err:
        raise TrainError(f"{flag}={directory} cannot be written ({err.strerror or err}): choose "
                         "a folder this user can write, on a disk with free space.") from err
    finally:
        run_folder.remove_folders(created)


def first_epoch_loss(log_dir):
    """The first logged epoch's training loss of the run in `log_dir` (None if none)."""
    from tf_largebatch.experiment import run_log

    path = os.path.join(log_dir, "metrics.jsonl")
    records = run_log.read_jsonl(path) if os.path.exists(path) else []
    return records[0].get("train_loss") if records else None


def run_experiment(config: ExperimentConfig, backend: Backend) -> Run:
    """Builds everything from `config` with `backend` and runs `fit`; returns a `Run`.

    Args:
      config: the run's settings; `experiment.flags.from_flags()` builds it from the flags,
        or build it in Python (`experiment.config`; docs/trainer.md, "From Python").
      backend: the trainer's `Backend`, e.g. `tf_largebatch.train.HorovodBackend()`.

    Returns:
      a `Run` (its folders, rank, the trained model, the batch layout). metrics.jsonl,
      flags.json (and steps.jsonl with `log_every_step`) are in `config.output.log_dir`.

    Example:
        >>> from tf_largebatch.train import HorovodBackend
        >>> config = ExperimentConfig(data=DataConfig(dataset="shapes"), ...)
        >>> run_experiment(config, HorovodBackend()).log_dir
    """
    import keras

    from tf_largebatch.data.layout import batch_layout
    from tf_largebatch.experiment.preemption import SignalWatch

    backend.start(config)
    keras.utils.set_random_seed(config.system.seed)
    image_size = builders.image_size(config.model)
    training_set = backend.open_training_set(image_size)
    layout = batch_layout(training_set.num_examples, config.schedule.per_worker_batch,
                          backend.processes, config.system.simulate_workers,
                          config.schedule.steps_per_epoch, training_set.name)
    if backend.is_chief:
        claim_run_folders(config.output, training_set)
    schedule, model, optimizer = build_compiled_model(config, backend, training_set, layout,
                                                      image_size)
    run_facts = facts_of_run(config, training_set, layout, image_size)
    checkpointer = open_checkpointer(config, backend, model)
    position = resume_point(config, checkpointer, layout, optimizer, run_facts)
    checkpointer.position = position  # its saves record the logs' step in run.json
    if position.finished:  # trained all its epochs before: write what its final save lacks
        return complete_finished_run(config, backend, model, layout, checkpointer)
    validation, val_images = backend.validation(layout)
    if backend.is_chief:
        record_the_run(config, backend, layout, schedule, run_facts)
    watch = SignalWatch()
    cbs = build_callbacks(config, backend, layout, schedule, checkpointer, run_facts, position,
                          val_images, watch)
    with watch:
        Training(config, backend, model, layout, cbs, validation).run_from(position)
    if backend.is_chief:  # the run finished: its model, for load_model, serving and evaluate
        from tf_largebatch.experiment import trained_model

        trained_model.save_trained_model(model, config.output.log_dir,
                                         trained_model.outputs(config.output.saved_model))
    return Run(config.output.log_dir, config.output.checkpoint_folder, backend.rank,
               backend.is_chief, model, layout)


def claim_run_folders(out, training_set: TrainingSet):
    """The chief's first step: checks that --log_dir and --checkpoint_dir can be written,
    claims them for this run (`run_folder.claim`: --resume, --overwrite) and logs what the
    training set holds."""
    check_writable("--log_dir", out.log_dir)
    check_writable("--checkpoint_dir", out.checkpoint_folder)
    aside = run_folder.claim(out.log_dir, out.checkpoint_folder, out.resume, out.overwrite)
    if aside:
        logging.warning("--overwrite: the earlier run's logs and checkpoints were moved to "
                        "%s.", aside)
    names = list(training_set.class_names or ())
    shown = f" ({', '.join(names[:5])}{', ...' if len(names) > 5 else ''})" if names else ""
    logging.info("%s: %d classes%s, %d training images, %s validation images.",
                 training_set.name, training_set.num_classes, shown,
                 training_set.num_examples, training_set.eval_examples)


def build_compiled_model(config: ExperimentConfig, backend: Backend, training_set, layout,
                         image_size):
    """(schedule, model, optimizer): the recipe's schedule and model, and the optimizer `fit`
    uses (loss-scaled under mixed_float16, wrapped by the backend), compiled and built."""
    import keras

    system, n = config.system, config.schedule.per_worker_batch
    schedule = builders.build_schedule(config.schedule, n, layout.workers, layout.steps_per_epoch)
    model = builders.build_model(config.model, system.mixed_precision, training_set.num_classes,
                                 image_size, n if system.simulate_workers > 1 else None)
    optimizer = builders.build_optimizer(config.optimizer, schedule, layout.steps_per_epoch,
                                         config.schedule.epochs)
    if system.mixed_precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    optimizer = backend.wrap_optimizer(optimizer, model)
    model.compile(optimizer=optimizer, loss=builders.build_loss(config.optimizer.label_smoothing),
                  weighted_metrics=builders.build_metrics(), jit_compile=backend.jit_compile())
    optimizer.build(model.trainable_variables)
    return schedule, model, optimizer


def facts_of_run(config: ExperimentConfig, training_set, layout, image_size) -> dict:
    """The facts run.json keeps beside each checkpoint and flags.json records: the batch
    layout, and what a resume must not change (`position.RESUME_MUST_MATCH`)."""
    system = config.system
    run_facts = dict(workers=layout.workers, processes=layout.processes,
                     per_worker_batch=config.schedule.per_worker_batch,
                     global_batch=layout.global_batch, steps_per_epoch=layout.steps_per_epoch,
                     model=config.model.model, image_size=image_size,
                     optimizer=config.optimizer.optimizer,
                     mixed_precision=system.mixed_precision, seed=system.seed,
                     base_lr=config.schedule.base_lr, base_batch=config.schedule.base_batch,
                     train_examples=training_set.num_examples,
                     num_classes=training_set.num_classes)
    if training_set.class_names:
        run_facts["class_names"] = list(training_set.class_names)
    if training_set.fingerprint:
        run_facts["data_fingerprint"] = training_set.fingerprint
    return run_facts


def open_checkpointer(config: ExperimentConfig, backend: Backend, model):
    """The backend's checkpointer for the run's --checkpoint_dir, naming its run (run.json's
    `log_dir`, see `run_folder`); the chief, which holds the folder's lock (no other save is
    in flight), removes the temporaries of dead writers."""
    checkpointer = backend.checkpointer(config.output.checkpoint_folder, model)
    checkpointer.log_dir = os.path.abspath(config.output.log_dir)
    if backend.is_chief:
        checkpointer.remove_temporaries()
    return checkpointer


def complete_finished_run(config: ExperimentConfig, backend: Backend, model, layout,
                          checkpointer) -> Run:
    """The resume of a run that had trained all its epochs: the chief writes from the last
    checkpoint what its final save lacks (`trained_model.complete_final_save`)."""
    from tf_largebatch.experiment.trained_model import complete_final_save

    written = (complete_final_save(model, config.output.log_dir, checkpointer.state_path,
                                   config.output.saved_model) if backend.is_chief else [])
    return Run(config.output.log_dir, config.output.checkpoint_folder, backend.rank,
               backend.is_chief, model, layout, written)


def record_the_run(config: ExperimentConfig, backend: Backend, layout, schedule, run_facts):
    """The chief's flags.json (the config's flag values, the run's facts, η̂, the trainer, the
    source commit) and its log line of k, n, kn, η̂ and the steps per epoch."""
    from tf_largebatch.experiment import run_log

    log_dir, system = config.output.log_dir, config.system
    os.makedirs(log_dir, exist_ok=True)
    with open(os.path.join(log_dir, "flags.json"), "w") as f:
        json.dump(dict(config.flag_values(), **run_facts, peak_lr=schedule.peak_lr,
                       trainer=backend.name, **backend.facts(),
                       commit=run_log.source_commit()), f, indent=1, default=str)
    logging.info("k = %d workers (%d processes × %d simulated), n = %d, kn = %d, η̂ = %.4g, "
                 "%d step%s/epoch; %s.", layout.workers, layout.processes,
                 system.simulate_workers, config.schedule.per_worker_batch, layout.global_batch,
                 schedule.peak_lr, layout.steps_per_epoch,
                 "" if layout.steps_per_epoch == 1 else "s", backend.name)


def build_callbacks(config: ExperimentConfig, backend: Backend, layout, schedule, checkpointer,
                    run_facts, position: RunPosition, val_images, watch) -> list:
    """The run's callbacks, in the order they run: the backend's first ones, the stops on a
    non-finite loss, the resumed epoch's means (`position`), the metrics averaged over the
    workers, the stop on divergence (after the averages: every worker sees the same losses;
    before the checkpoint: a diverged epoch is never saved), the early curve check; on the
    chief the logs, its own callbacks and the per-epoch checkpoint; last the mid-epoch
    checkpoints and the preemption stop."""
    from tf_largebatch import callbacks
    from tf_largebatch.experiment import checkpointing, preemption, run_log
    from tf_largebatch.experiment.callbacks import EarlyCurveCheck

    out, chief = config.output, backend.is_chief
    cbs = [
        *backend.first_callbacks(),
        callbacks.StopOnNonFiniteLoss(out.checkpoint_folder if chief else None),
        *([preemption.ResumedEpochMetrics(position)] if position.resumed_means else []),
        run_log.GlobalMetrics(layout.steps_per_epoch * layout.process_batch, val_images,
                              backend.average),
        callbacks.StopOnDivergence(config.optimizer.divergence_factor, first_epoch_loss(
            out.log_dir) if position.epoch else None, out.checkpoint_folder if chief else None),
    ]
    if out.reference_run:  # after GlobalMetrics: every worker sees the same averaged error
        warmup = config.schedule.warmup
        warmup_epochs = 0.0 if warmup == "none" else config.schedule.warmup_epochs
        cbs.append(EarlyCurveCheck(out.reference_run, out.check_fraction,
                                   out.check_tolerance, warmup_epochs=warmup_epochs))
    if chief:
        cbs += [
            run_log.RunLogger(out.log_dir, schedule, layout.global_batch, out.log_every_step,
                              position),
            *backend.chief_callbacks(out.log_dir),
            checkpointing.SaveCheckpoint(checkpointer, run_facts),
        ]
    cbs.append(preemption.MidEpochCheckpoints(
        backend, out, watch, layout.steps_per_epoch, checkpointer if chief else None,
        run_facts, position))
    return cbs


@dataclasses.dataclass
class Training:
    """The `fit`s of a run: its model, its data (from the backend, by the batch layout), its
    callbacks and the validation arguments of `fit`."""

    config: ExperimentConfig
    backend: Backend
    model: object  # keras.Model, compiled
    layout: object  # data.layout.BatchLayout
    callbacks: list
    validation: dict

    def run_from(self, position: RunPosition):
        """Trains from `position` to the last epoch: first the end of the epoch it starts in
        (the validation of an epoch trained whole, or the rest of a mid-epoch one), then the
        remaining epochs in one `fit`, unless a callback stopped the training."""
        epoch, epochs = position.epoch, self.config.schedule.epochs
        if position.steps_into_epoch == self.layout.steps_per_epoch:
            self.evaluate_trained_epoch(epoch, position.means)
            epoch += 1
        elif position.mid_epoch:
            self.fit_rest_of_epoch(epoch, position.steps_into_epoch)
            epoch += 1
        if epoch < epochs and not self.model.stop_training:
            self.fit(epoch, epochs)

    def fit(self, first_epoch, stop_epoch, start_step=0):
        """`fit` over epochs first_epoch .. stop_epoch - 1, the first from its step
        `start_step`."""
        from tf_largebatch import schedules

        config, layout = self.config, self.layout
        augment_off_epoch = schedules.augmentation_off_epoch(config.schedule.epochs,
                                                             config.data.augment_off_epochs)
        self.model.fit(
            self.backend.train_data(layout, first_epoch, augment_off_epoch, start_step,
                                    stop_epoch),
            epochs=stop_epoch,
            initial_epoch=first_epoch,
            steps_per_epoch=layout.steps_per_epoch - start_step,
            **(self.validation if config.schedule.eval_every else {}),
            validation_freq=config.schedule.eval_every or 1,
            callbacks=self.callbacks,
            shuffle=False,  # the data order is the data rule, fixed by (seed, epoch)
            verbose=(1 if sys.stdout.isatty() else 2) if self.backend.is_chief else 0,
        )

    def fit_rest_of_epoch(self, epoch, steps_into_epoch):
        """The rest of the epoch a mid-epoch checkpoint stopped in, from its step
        `steps_into_epoch`: Keras epochs have one length per `fit`, so this part is a `fit` of
        its own."""
        self.fit(epoch, epoch + 1, steps_into_epoch)

    def evaluate_trained_epoch(self, epoch, means):
        """The end of an epoch whose training a checkpoint saved whole, but whose validation
        a signal cut short: its validation, then its log line and checkpoint, as `fit` would
        have done (the training means are the saved ones, `means`)."""
        import keras

        callback_list = keras.callbacks.CallbackList(self.callbacks, model=self.model)
        callback_list.on_train_begin()
        callback_list.on_epoch_begin(epoch)
        logs = dict(means or {})
        eval_every = self.config.schedule.eval_every
        if eval_every and (epoch + 1) % eval_every == 0:
            val_logs = self.model.evaluate(self.validation["validation_data"],
                                           steps=self.validation["validation_steps"],
                                           callbacks=self.callbacks, verbose=0,
                                           return_dict=True)
            logs.update({"val_" + key: value for key, value in val_logs.items()})
        callback_list.on_epoch_end(epoch, logs)
        callback_list.on_train_end()


def io_problem(err: OSError) -> str:
    """One line for an I/O failure: the file, the cause, the fix, and what is kept."""
    import errno

    where = err.filename or "a file of the run"
    fix = {errno.ENOSPC: "free space on that disk or choose another --log_dir/--checkpoint_dir",
           errno.EDQUOT: "free space within your quota or choose another --log_dir",
           errno.EACCES: "make it writable by this user or choose another --log_dir",
           errno.EROFS: "choose a --log_dir/--checkpoint_dir on a writable disk",
           errno.ENOENT: "restore it (a data file must stay in place while a run reads it)",
           }.get(err.errno, "fix the cause")
    return (f"{where}: {err.strerror or err}. To continue: {fix}, then run the same command "
            "with --resume (the checkpoints committed in run.json are kept).")


def finished_line(run: Run) -> str:
    """The one line of a resume of a run that had trained all its epochs: where its model is
    and what was written now."""
    from tf_largebatch.experiment.trained_model import EXPORT_DIR, MODEL_FILE

    log_dir = os.path.abspath(run.log_dir)
    export = os.path.join(log_dir, EXPORT_DIR)
    done = (f"wrote {' and '.join(run.completed)} from the last checkpoint"
            if run.completed else "its outputs were complete")
    return (f"The run had trained all its epochs: nothing to train, {done}. Its model is "
            f"{os.path.join(log_dir, MODEL_FILE)}"
            + (f" (inference export: {export})." if os.path.isdir(export) else "."))


def data_file_problem(err: Exception) -> str | None:
    """One line for TensorFlow's error on a data file that vanished or cannot be read
    mid-run (it names the file); None for other errors."""
    tf = sys.modules.get("tensorflow")
    if not (tf and isinstance(err, tf.errors.NotFoundError | tf.errors.PermissionDeniedError)):
        return None
    lines = [line.strip() for line in str(getattr(err, "message", err)).splitlines()]
    first = next((line for line in lines if re.search(r"No such file|[Pp]ermission denied",
                                                      line)), lines[-1] if lines else "")
    first = re.sub(r"\s*\[\[\{\{node .*", "", first).rstrip(" .")
    return (f"a data file cannot be read: {first}. Restore it (or point --data_dir at a "
            "complete copy of the same data), then run the same command with --resume (the "
            "checkpoints committed in run.json are kept).")


def lost_worker_problem(err: Exception, config: ExperimentConfig, backend: Backend) -> str | None:
    """One line for the error a worker gets when another worker of its job died (killed by
    the OOM killer or a signal, its host gone) or went silent (its host cut off, the worker
    frozen). Died: Horovod 0.28.1 shuts down on the survivors (its log names only Gloo's
    cause, e.g. "Connection closed by peer [127.0.0.1]:409"), and their next collective, the
    gradients' allreduce in the train step or an eager one in a callback, raises
    `tf.errors.UnknownError` "... Horovod has been shut down. This was caused by an exception
    on one of the ranks ...". Silent: after HOROVOD_GLOO_TIMEOUT_SECONDS the collective
    raises `tf.errors.UnknownError` "... Timed out waiting 30000ms for recv operation to
    complete". None for other errors."""
    tf = sys.modules.get("tensorflow")
    if not isinstance(err, getattr(getattr(tf, "errors", None), "UnknownError", ())):
        return None
    timed_out = re.search(r"Timed out waiting (\d+)ms for (?:recv|send) operation", str(err))
    if timed_out:
        seconds = int(timed_out.group(1)) / 1000
        who = (f"another worker of this job stopped answering for {seconds:g} s (Gloo's "
               "timeout, HOROVOD_GLOO_TIMEOUT_SECONDS): its host was cut off from the network "
               "or the worker froze")
    elif "Horovod has been shut down" not in str(err):
        return None
    elif backend.processes == 2:  # the only other one
        other = 1 - backend.rank
        who = (f"another worker of this job (rank {other}) stopped (killed, e.g. out of memory, "
               f"or its host failed; horovodrun's line \"Process {other} exit with status "
               "code\" gives its status)")
    else:
        who = ("another worker of this job stopped (killed, e.g. out of memory, or its host "
               "failed; Horovod does not say which: horovodrun's line \"Process N exit with "
               "status code\" names its rank)")
    folder = config.output.checkpoint_folder
    try:
        with open(os.path.join(folder, "run.json")) as f:
            state = json.load(f)
        steps = (state.get("partial_epoch") or {}).get("steps")
        kept = (f"The last committed checkpoint, {os.path.join(folder, state['checkpoint'])} "
                f"(epoch {state['epoch']}{f', {steps} steps into the next' if steps else ''}), "
                "is kept: the same command with --resume=auto continues from it.")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        kept = (f"No committed checkpoint is in {folder} (as this worker sees it): the same "
                "command with --resume=auto starts the run again, or continues from the last "
                "committed checkpoint if there is one.")
    return f"{who}, so this one stopped too. {kept}"


def main(argv: list[str], config: ExperimentConfig, backend: Backend) -> int:
    """Runs `run_experiment(config, backend)`; a problem the user must fix exits 1 with its
    message."""
    from absl import app

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from tf_largebatch.callbacks import DivergenceError
    from tf_largebatch.data.errors import DataError
    from tf_largebatch.data.undecodable import naming_undecodable_images
    from tf_largebatch.experiment import run_log
    from tf_largebatch.experiment.checkpointing import CheckpointError
    from tf_largebatch.experiment.preemption import PREEMPTED_EXIT_CODE, Preempted

    try:
        with naming_undecodable_images(config.data.dataset, config.data.data_dir):
            run = run_experiment(config, backend)
    except Preempted as stop:
        if backend.is_chief:
            print(f"preempted: {stop}", file=sys.stderr)
        return PREEMPTED_EXIT_CODE
    except (TrainError, CheckpointError, DataError, DivergenceError,
            run_folder.FolderInUseError, run_log.CorruptLogError) as err:
        # Once per job: every worker hits these alike, except a file only one worker reads.
        if backend.is_chief or getattr(err, "raised_by_this_worker_only", False):
            print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # a log or checkpoint write (full disk, permissions), a file gone
        print(f"error: {io_problem(err)}", file=sys.stderr)
        return 1
    except Exception as err:
        message = lost_worker_problem(err, config, backend)
        if message is not None:  # every surviving worker says it: none knows of the others
            # horovodrun SIGTERMs the survivors and SIGKILLs them 5 s later, while the teardown
            # of TensorFlow and the stopped Horovod takes seconds: say it, and exit 1 at once
            # (the checkpoints and metrics.jsonl are fsynced as they are written).
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            print(f"error: {message}", file=sys.stderr, flush=True)
            sys.stdout.flush()
            os._exit(1)
        message = data_file_problem(err)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 1
    if run.is_chief and run.completed is not None:
        print(finished_line(run))
        return 0
    if run.is_chief:
        written = sorted(name for name in os.listdir(run.log_dir) if name != "checkpoints")
        print(f"Logs in {os.path.abspath(run.log_dir)} ({', '.join(written)}); checkpoints in "
              f"{os.path.abspath(run.checkpoint_dir)}.")
        print(run_log.summary(run.log_dir))
    return 0

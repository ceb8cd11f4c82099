"""Preemption and mid-epoch checkpoints: a SIGTERM or SIGINT costs no finished step.

On SIGTERM (what SLURM and Kubernetes send before a kill) or SIGINT:
- during training, every worker finishes its step and raises its stop flag, which travels
  with the next step's gradients (`distributed.StopFlag`: one more number in a gradient's
  allreduce, so watching for a signal costs no collective of its own); after that step
  every worker reads the same agreed flag, rank 0 saves a checkpoint at exactly that step;
- during validation, the workers agree after the validation batch in flight (one small
  allreduce a validation batch), the evaluation stops, and rank 0 saves the epoch's
  training (all its steps, its training means); the resumed run evaluates that epoch
  first, then trains on;
then every worker raises `Preempted`, which the trainer turns into exit status 75
(EX_TEMPFAIL, "try again") and a one-line message. `--resume` (or `--resume=auto`) then
continues at that step: the data order and the augmentation are functions of (seed, epoch,
index), so the resumed run sees the same batches and ends with the same weights as an
uninterrupted one. `--checkpoint_every_steps` adds the same mid-epoch saves periodically,
for kills that give no warning.

Why our own: Keras's `BackupAndRestore(save_freq=N)` restarts an interrupted epoch from its
first step, and TensorFlow's `PreemptionCheckpointHandler` needs a `tf.distribute` strategy.

A mid-epoch checkpoint also keeps the epoch's training metrics so far (averaged over the
workers), so the resumed epoch logs the mean over all its steps:

    m = (s · m_before + (t − s) · m_after) / t

with m_before the running mean of the first s steps (saved) and m_after Keras's running mean
of the t − s steps since the resume.
"""

import signal

import keras

PREEMPTED_EXIT_CODE = 75  # sysexits.h EX_TEMPFAIL: a temporary failure, to be retried


class Preempted(Exception):
    """Training stopped on a signal after saving a checkpoint at global step `step`;
    `in_validation`: the epoch's training was complete and its validation was cut short."""

    def __init__(self, signal_name, epoch, step, steps_per_epoch, in_validation=False):
        self.step = step
        done = step - epoch * steps_per_epoch
        where = (f"stopped during the validation of epoch {epoch + 1} (all its "
                 f"{steps_per_epoch} steps trained; the resumed run evaluates it first)"
                 if in_validation else
                 f"stopped after step {done} of {steps_per_epoch} in epoch {epoch + 1}")
        super().__init__(
            f"{signal_name} received: {where} (global step {step}), checkpoint saved. Run the "
            "same command with --resume (or --resume=auto) to continue from that step.")


class SignalWatch:
    """Context manager that records a SIGTERM or SIGINT instead of dying on it.

    A second signal of the same kind gets the default behaviour (an impatient Ctrl-C still
    stops the process at once).
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.received = None  # the signal's name, once one arrived
        self._previous = {}

    def _handle(self, signum, frame):
        self.received = signal.Signals(signum).name
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))

    def __enter__(self):
        for signum in self.SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def combine_means(before, steps_before, after, steps_after):
    """The running means of `steps_before` + `steps_after` steps, from those of each part."""
    total = steps_before + steps_after
    return {key: (steps_before * before[key] + steps_after * float(after[key])) / total
            for key in before if key in after}


def training_keys(logs):
    return [key for key in logs if not key.startswith("val_")]


class ResumedEpochMetrics(keras.callbacks.Callback):
    """In the epoch a mid-epoch checkpoint resumed, replaces Keras's training means (of the
    steps since the resume) by the means over the whole epoch. Runs before `GlobalMetrics`
    (the combination is linear, so averaging over workers before or after it is the same).

    `position`: the run's `position.RunPosition`, one with `resumed_means` (its epoch, the
    steps trained before the resume and their means)."""

    def __init__(self, position):
        super().__init__()
        self.position = position
        self.steps_after = 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps_after = batch + 1

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.position.epoch and logs is not None:
            logs.update(combine_means(self.position.means, self.position.steps_into_epoch, logs,
                                      self.steps_after))


class MidEpochCheckpoints(keras.callbacks.Callback):
    """Saves a checkpoint mid-epoch on a signal (then raises `Preempted`) or every
    `config.checkpoint_every_steps` global steps. Runs on every worker, last in the callback
    list.

    A signal during training is acted on after at most one more step: the flag travels with
    that step's gradients, every worker reads the same agreed value and stops at the same
    step. A signal during validation is acted on after the validation batch in flight (one
    small allreduce a validation batch): the evaluation stops, the epoch's training (all its
    steps) is saved, and the resumed run evaluates that epoch before training on.

    Args:
      workers: the services of the workers, one `experiment.workers.Workers` (the trainer's
        backend): the stop agreement, averages over the workers, their BN statistics.
      config: the run's `experiment.config.OutputConfig` (`checkpoint_every_steps`: periodic
        saves, 0: only on a signal).
      watch: the `SignalWatch` of this process.
      steps_per_epoch: S, the global batches of an epoch.
      checkpointer: the run's `checkpointing` object on rank 0, None on the other ranks.
      run_facts: the facts run.json keeps beside each checkpoint.
      position: the run's `position.RunPosition` (None: a fresh run's); the saved means of
        the epoch it resumes in count in that epoch's means.
    """

    def __init__(self, workers, config, watch, steps_per_epoch, checkpointer=None,
                 run_facts=None, position=None):
        super().__init__()
        self.checkpointer, self.run_facts, self.watch = checkpointer, run_facts, watch
        self.steps_per_epoch, self.every_steps = steps_per_epoch, config.checkpoint_every_steps
        self.workers, self.position = workers, position
        self.requested = False

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.last_logs, self.steps_in_fit = None, 0

    def on_train_batch_end(self, batch, logs=None):
        from tf_largebatch.faults import fault_point

        fault_point("step-done")
        self.last_logs, self.steps_in_fit = logs, batch + 1
        if self.watch.received is not None and not self.requested:
            self.workers.request_stop()
            self.requested = True
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        done = step - self.epoch * self.steps_per_epoch  # steps of this epoch so far
        preempted = self.workers.stop_agreed()
        periodic = bool(self.every_steps) and step % self.every_steps == 0
        if preempted or (periodic and done < self.steps_per_epoch):
            self._save(step, done)
        if preempted:
            self._stop(step)

    def on_test_batch_end(self, batch, logs=None):
        from tf_largebatch.faults import fault_point

        fault_point("eval-batch")
        if not hasattr(self, "epoch") or not self.workers.any_worker(
                self.watch.received is not None):
            return
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        self._save(step, self.steps_per_epoch)
        self._stop(step, in_validation=True)

    def _epoch_means(self):
        """This epoch's training means so far, averaged over the workers."""
        logs = self.last_logs or {}
        means = {key: float(logs[key]) for key in training_keys(logs)}
        resumed = self.position
        if resumed is not None and resumed.resumed_means and resumed.epoch == self.epoch:
            means = combine_means(resumed.means, resumed.steps_into_epoch, means,
                                  self.steps_in_fit) if means else dict(resumed.means)
        return {key: self.workers.average(value, 1) for key, value in sorted(means.items())}

    def _save(self, step, done):
        means = self._epoch_means()
        self.workers.average_worker_state(self.model)
        if self.checkpointer is not None:
            self.checkpointer.save(self.epoch, self.run_facts,
                                   partial_epoch=dict(steps=done, means=means))

    def _stop(self, step, in_validation=False):
        self.workers.any_worker(False)  # every worker waits for rank 0's save before exiting
        raise Preempted(self.watch.received or "a signal on another worker", self.epoch, step,
                        self.steps_per_epoch, in_validation)

"""Preemption and mid-epoch checkpoints: a SIGTERM or SIGINT costs at most the step in flight.

On SIGTERM (what SLURM and Kubernetes send before a kill) or SIGINT, every worker finishes
its current step; at that step's end the workers agree that one of them was signalled (one
allreduce per step), rank 0 saves a checkpoint at exactly that step, and every worker raises
`Preempted`, which the trainer turns into exit status 75 (EX_TEMPFAIL, "try again") and a
one-line message. `--resume` then continues mid-epoch at that step: the data order and the
augmentation are functions of (seed, epoch, index), so the resumed run sees the same batches
and ends with the same weights as an uninterrupted one. `--checkpoint_every_steps` adds the
same mid-epoch saves periodically, for kills that give no warning.

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
    """Training stopped on a signal after saving a checkpoint at global step `step`."""

    def __init__(self, signal_name, epoch, step, steps_per_epoch):
        self.step = step
        done = step - epoch * steps_per_epoch
        super().__init__(
            f"{signal_name} received: stopped after step {done} of {steps_per_epoch} in epoch "
            f"{epoch + 1} (global step {step}), checkpoint saved. Run the same command with "
            "--resume to continue from that step.")


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
    (the combination is linear, so averaging over workers before or after it is the same)."""

    def __init__(self, epoch, steps_before, means_before):
        super().__init__()
        self.epoch, self.steps_before, self.means_before = epoch, steps_before, means_before
        self.steps_after = 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps_after = batch + 1

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch and logs is not None:
            logs.update(combine_means(self.means_before, self.steps_before, logs,
                                      self.steps_after))


class MidEpochCheckpoints(keras.callbacks.Callback):
    """Saves a checkpoint mid-epoch on a signal (then raises `Preempted`) or every
    `every_steps` global steps. Runs on every worker, last in the callback list.

    Args:
      checkpointer: the run's `checkpointing` object on rank 0, None on the other ranks.
      run_facts: the facts run.json keeps beside each checkpoint.
      watch: the `SignalWatch` of this process.
      steps_per_epoch: S, the global batches of an epoch.
      any_worker: `any_worker(flag) -> bool`, True when `flag` holds on some worker.
      average: `average(value, count)`, the mean of a metric over the workers.
      average_worker_state: `average_worker_state(model)` averages what differs between
        workers and is not trained (BN moving statistics: an exponential moving average is
        linear, so averaging mid-epoch leaves the epoch-end average as it would have been).
      every_steps: periodic saves (0: only on a signal).
      resumed: (epoch, steps, means) of a mid-epoch resume, or None.
    """

    def __init__(self, checkpointer, run_facts, watch, steps_per_epoch, any_worker, average,
                 average_worker_state, every_steps=0, resumed=None):
        super().__init__()
        self.checkpointer, self.run_facts, self.watch = checkpointer, run_facts, watch
        self.steps_per_epoch, self.every_steps = steps_per_epoch, every_steps
        self.any_worker, self.average = any_worker, average
        self.average_worker_state = average_worker_state
        self.resumed = resumed

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        from tf_largebatch.experiment.checkpointing import fault_point

        fault_point("step-done")
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        done = step - self.epoch * self.steps_per_epoch  # steps of this epoch so far
        preempted = self.any_worker(self.watch.received is not None)
        periodic = bool(self.every_steps) and step % self.every_steps == 0
        if not preempted and not (periodic and done < self.steps_per_epoch):
            return
        means = {key: float(logs[key]) for key in training_keys(logs or {})}
        if self.resumed and self.resumed[0] == self.epoch:
            means = combine_means(self.resumed[2], self.resumed[1], means, batch + 1)
        means = {key: self.average(value, 1) for key, value in sorted(means.items())}
        self.average_worker_state(self.model)
        if self.checkpointer is not None:
            self.checkpointer.save(self.epoch, self.run_facts,
                                   partial_epoch=dict(steps=done, means=means))
        if preempted:
            self.any_worker(False)  # every worker waits for rank 0's save before exiting
            raise Preempted(self.watch.received or "a signal on another worker", self.epoch,
                            step, self.steps_per_epoch)

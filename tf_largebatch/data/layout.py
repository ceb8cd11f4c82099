"""How a global batch is laid out over workers, and what an epoch of N examples becomes.

One place computes it for both trainers and both pipelines (tf.data and NumPy arrays):

    k = processes · simulate_workers      workers (the paper's k)
    G = k · n                             global batch (kn)
    S = N // G                            full global batches per epoch (or fewer, on request)

The N mod G examples that cannot fill a global batch are left out of each epoch (a
different random subset each time, since every epoch has its own permutation);
`steps_per_epoch` < N // G also skips whole batches. This module needs neither
TensorFlow nor Keras.
"""

import dataclasses

from tf_largebatch.data.errors import DataError


@dataclasses.dataclass(frozen=True)
class BatchLayout:
    """The batch arithmetic of one run.

    Attributes:
        num_examples: N, training examples.
        per_worker_batch: n, images per worker per step.
        processes: Horovod processes (1 in one process).
        simulate_workers: workers simulated in each process (batch n·s, BN per n).
        steps_per_epoch: global steps per epoch actually taken (≤ `full_steps`).
        full_steps: N // G, the global batches an epoch can fill.
    """

    num_examples: int
    per_worker_batch: int
    processes: int
    simulate_workers: int
    steps_per_epoch: int
    full_steps: int

    @property
    def workers(self):
        """k = processes · simulate_workers."""
        return self.processes * self.simulate_workers

    @property
    def global_batch(self):
        """kn, the images of one optimizer step."""
        return self.workers * self.per_worker_batch

    @property
    def process_batch(self):
        """n · simulate_workers, the images one process feeds per step."""
        return self.simulate_workers * self.per_worker_batch

    @property
    def remainder(self):
        """N mod kn: examples that cannot fill a global batch, left out of each epoch."""
        return self.num_examples % self.global_batch

    @property
    def skipped(self):
        """Examples in the full global batches that a shorter epoch does not take."""
        return (self.full_steps - self.steps_per_epoch) * self.global_batch

    def describe(self):
        """One line for the log: N, kn, steps, and which examples an epoch leaves out."""
        text = (f"{self.num_examples} examples, global batch {self.global_batch}, "
                f"{self.steps_per_epoch} steps per epoch")
        if self.remainder:
            text += (f"; {self.remainder} examples (N mod global batch) left out of each epoch, "
                     "a different random subset each time")
        if self.skipped:
            text += (f"; steps_per_epoch = {self.steps_per_epoch} of the {self.full_steps} full "
                     f"global batches, so {self.skipped} more examples are not seen in each epoch")
        return text


def batch_layout(num_examples, per_worker_batch, processes=1, simulate_workers=1,
                 steps_per_epoch=None, name="the training set"):
    """The `BatchLayout` of N = `num_examples`; raises `DataError` naming the fix when N cannot
    fill one global batch or `steps_per_epoch` asks for more than N // kn batches.

    Example:
        >>> batch_layout(50_000, 32, simulate_workers=4).steps_per_epoch
        390
    """
    for label, value in (("per_worker_batch", per_worker_batch), ("processes", processes),
                         ("simulate_workers", simulate_workers)):
        if value < 1:
            raise ValueError(f"{label} must be ≥ 1, got {value}")
    global_batch = per_worker_batch * processes * simulate_workers
    full_steps = num_examples // global_batch
    if full_steps < 1:
        raise DataError(f"{name} has {num_examples} training images, fewer than one global batch "
                        f"of {global_batch} = k·n = {processes * simulate_workers}×"
                        f"{per_worker_batch}: lower --per_worker_batch or the number of workers.")
    if steps_per_epoch is not None and not 1 <= steps_per_epoch <= full_steps:
        raise DataError(f"--steps_per_epoch={steps_per_epoch} exceeds the {full_steps} global "
                        f"batches of {global_batch} in one epoch of {name} (N = {num_examples})"
                        if steps_per_epoch > full_steps else
                        f"--steps_per_epoch={steps_per_epoch} must be ≥ 1")
    return BatchLayout(num_examples, per_worker_batch, processes, simulate_workers,
                       steps_per_epoch or full_steps, full_steps)

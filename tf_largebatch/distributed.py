"""The Keras 3 ↔ Horovod bridge (TensorFlow backend).

`horovod.tensorflow.keras` targets Keras 2: its DistributedOptimizer overrides
methods that the Keras 3 trainer never calls (the allreduce would be skipped
silently) and its callbacks use Keras 2 backend functions. This module does
the same jobs with the ops of `horovod.tensorflow`, which work:

- `init()`: Horovod settings from arguments, `hvd.init()`, one GPU per local rank, and
  the allreduce scheme: flat, Horovod's native hierarchical one (MPI + NCCL, GPUs,
  several hosts), or the paper's three phases on Horovod process sets everywhere else.
- `distributed_optimizer()`: averages gradients across the k workers before every
  update. Each worker's loss is its mean over n images, so the average over k is
  the paper's 1/(kn) normalisation of the summed gradient. One allreduce op per
  gradient inside the step's graph, so each starts as soon as backprop has produced its
  gradient (overlap); Horovod's fusion buffer batches those that arrive together.
- `BroadcastInitialState`, `AverageBatchNormStatistics`: Keras callbacks.
- `StopFlag`: a preemption flag that travels inside the gradient allreduce.
- `weighted_mean()`: a metric averaged across workers by sample counts; `any_worker()`:
  whether a flag holds on some worker (one small allreduce).
"""

import dataclasses
import os

import horovod.tensorflow as hvd
import keras
import tensorflow as tf
from absl import logging


@dataclasses.dataclass(frozen=True)
class Context:
    rank: int
    size: int
    local_rank: int
    hierarchical_allreduce: bool  # some hierarchical scheme is in effect
    allreduce: str = "flat"  # "flat", "native hierarchical" or "process-set hierarchical"

    @property
    def is_chief(self):
        return self.rank == 0


class ThreePhaseAllreduce:
    """The paper's hierarchical allreduce on Horovod process sets, for any controller:

        1. s_h = Σ_{r on host h} g_r          allreduce inside each host's process set
        2. S   = Σ_h s_h                      allreduce across the set of local roots
        3. every rank of host h ← S           broadcast from the host's local root

    Hosts are what horovodrun reports (`cross_rank`), so uneven hosts and any number of
    them work. Built collectively: every rank must create it, in the same order.
    """

    def __init__(self):
        hosts = hvd.allgather(tf.constant([hvd.cross_rank()], tf.int32)).numpy().tolist()
        by_host = {}
        for rank, host in enumerate(hosts):
            by_host.setdefault(host, []).append(rank)
        self.host_ranks = by_host[hvd.cross_rank()]
        self.local_root = self.host_ranks[0]
        self.is_local_root = hvd.rank() == self.local_root
        roots = sorted(ranks[0] for ranks in by_host.values())
        # Every rank registers every set, in one order (a collective call each).
        sets = {tuple(ranks): hvd.add_process_set(ranks) if len(ranks) < hvd.size()
                else hvd.global_process_set for _, ranks in sorted(by_host.items())}
        self.host_set = sets[tuple(self.host_ranks)]
        self.roots_set = (hvd.add_process_set(roots) if 1 < len(roots) < hvd.size()
                          else hvd.global_process_set if len(roots) == hvd.size() else None)
        self.hosts = len(by_host)

    def sum(self, tensor, name):
        """Σ over all ranks of `tensor`, in three phases."""
        host_sum = hvd.allreduce(tensor, op=hvd.Sum, process_set=self.host_set,
                                 name=f"{name}_host")
        if self.roots_set is not None and self.is_local_root:
            host_sum = hvd.allreduce(host_sum, op=hvd.Sum, process_set=self.roots_set,
                                     name=f"{name}_cross")
        if len(self.host_ranks) == 1:
            return host_sum
        return hvd.broadcast(host_sum, self.local_root, process_set=self.host_set,
                             name=f"{name}_bcast")


_three_phase = None  # the process-set scheme, when init() chose it

# Horovod's cycle in a single process. Its background thread wakes every cycle (1 ms by
# default) even with nothing to exchange: 1.7% of a one-process training run's CPU
# (docs/performance.md). The package exchanges nothing when hvd.size() == 1; a
# collective called there anyway waits at most one cycle.
SINGLE_PROCESS_CYCLE_TIME_MS = 100


def init(hierarchical_allreduce: bool = False, fusion_threshold_mb: float | None = None,
         cycle_time_ms: float | None = None) -> Context:
    """Initialises Horovod (or a single process when not run by horovodrun).

    Horovod reads its tuning variables at `hvd.init()`, so they are set here first. In a
    single process without a `cycle_time_ms`, Horovod runs with a 100 ms cycle (its idle
    background thread otherwise wakes every 1 ms, for nothing). With
    `hierarchical_allreduce`, Horovod's native scheme is used where it works (a build with
    MPI and NCCL, GPUs, several hosts); elsewhere (Gloo, CPU, one host) the paper's three
    phases run on Horovod process sets (`ThreePhaseAllreduce`). The log says which, and why.
    Returns a `Context`.
    """
    global _three_phase
    if hierarchical_allreduce:
        os.environ["HOROVOD_HIERARCHICAL_ALLREDUCE"] = "1"
    if fusion_threshold_mb is not None:
        os.environ["HOROVOD_FUSION_THRESHOLD"] = str(int(fusion_threshold_mb * 1024 * 1024))
    if cycle_time_ms is not None:
        os.environ["HOROVOD_CYCLE_TIME"] = str(cycle_time_ms)
    process_sets = "dynamic" if hierarchical_allreduce else None
    hvd.init(process_sets=process_sets)
    if hvd.size() == 1 and "HOROVOD_CYCLE_TIME" not in os.environ:
        hvd.shutdown()  # Horovod reads its settings at init only: restart with a long cycle
        os.environ["HOROVOD_CYCLE_TIME"] = str(SINGLE_PROCESS_CYCLE_TIME_MS)
        try:
            hvd.init(process_sets=process_sets)
        finally:  # not for the processes this one starts (horovodrun in tests, launchers)
            del os.environ["HOROVOD_CYCLE_TIME"]
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        tf.config.experimental.set_memory_growth(gpu, True)
    if gpus:
        tf.config.set_visible_devices(gpus[hvd.local_rank() % len(gpus)], "GPU")
    scheme = "flat"
    if hierarchical_allreduce:
        missing = [why for why, ok in (
            ("horovod was built without MPI", hvd.mpi_built()),
            ("horovod was built without NCCL", hvd.nccl_built()),
            ("all workers are on one host", hvd.cross_size() > 1),
            ("there are no GPUs", bool(gpus)),
        ) if not ok]
        if not missing:
            scheme = "native hierarchical"
            why = "MPI and NCCL, GPUs, several hosts"
        else:
            os.environ.pop("HOROVOD_HIERARCHICAL_ALLREDUCE", None)
            _three_phase = ThreePhaseAllreduce()
            scheme = "process-set hierarchical"
            why = ("Horovod's native one needs what is missing here: " + "; ".join(missing))
        if hvd.rank() == 0:
            logging.info("--hierarchical_allreduce: %s allreduce in effect (%d hosts) because %s.",
                         scheme, hvd.cross_size(), why)
    if hvd.size() == 1 and "HOROVOD_RANK" not in os.environ and "OMPI_COMM_WORLD_RANK" not in (
        os.environ
    ):
        logging.info("Not launched by horovodrun: training in a single process (k = 1).")
    return Context(hvd.rank(), hvd.size(), hvd.local_rank(), scheme != "flat", scheme)


def allreduce_gradients(grads, compression=hvd.Compression.none, grouped=False):
    """The average of `grads` over all workers.

    Default: one allreduce op per gradient (with the three-phase scheme when `init` chose
    it), so in a compiled step each starts when its gradient is ready, overlapping backprop.
    `grouped=True`: one `hvd.grouped_allreduce` of the whole list, which waits for the last
    gradient (no overlap).
    """
    if hvd.size() == 1:
        return list(grads)
    if grouped and _three_phase is None:
        return hvd.grouped_allreduce(list(grads), op=hvd.Average, compression=compression)
    out = []
    for i, grad in enumerate(grads):
        if grad is None:
            out.append(None)
        elif _three_phase is None:
            out.append(hvd.allreduce(grad, op=hvd.Average, compression=compression,
                                     name=f"grad{i}"))
        else:
            compressed, context = compression.compress(grad)
            total = compression.decompress(_three_phase.sum(compressed, f"grad{i}"), context)
            out.append(total / tf.cast(hvd.size(), total.dtype))
    return out


class StopFlag:
    """A preemption flag that rides in the gradient allreduce: no collective of its own.

    `request()` sets this worker's flag f_r ∈ {0, 1}. In every step, f_r is appended to the
    first gradient backprop produces (the last in the list), so it is averaged with it:
    F = (1/p) Σ_r f_r, and `agreed()` (a local read of F after the step) is true on every
    worker after the same step when some worker asked. Why our own: Horovod has no
    preemption agreement, and a separate allreduce per step costs a round trip of its own.
    """

    def __init__(self):
        self.local = tf.Variable(0.0, trainable=False, name="stop_requested")
        self.average = tf.Variable(0.0, trainable=False, name="stop_agreed")

    def request(self):
        self.local.assign(1.0)

    def agreed(self) -> bool:
        if hvd.size() == 1:  # no one to agree with: stop at this step
            return bool(self.local.numpy() > 0)
        return bool(self.average.numpy() > 0)

    def ride(self, grads):
        """`grads` with the flag appended to the last gradient (flattened)."""
        index = max(i for i, g in enumerate(grads) if g is not None)
        grad = grads[index]
        carrier = tf.concat([tf.reshape(grad, [-1]), tf.cast(self.local, grad.dtype)[None]], 0)
        return grads[:index] + [carrier] + grads[index + 1:], index, grad.shape

    def land(self, grads, index, shape):
        """Takes the averaged flag back out of `grads`, stores it; returns the gradients."""
        carrier = grads[index]
        self.average.assign(tf.cast(carrier[-1], tf.float32))
        return grads[:index] + [tf.reshape(carrier[:-1], shape)] + grads[index + 1:]


class _AllreduceGradients:
    """Mixin placed before an optimizer's class: averages gradients across workers (and,
    with a `StopFlag`, the workers' stop flags with them)."""

    def apply(self, grads, trainable_variables=None):
        grads, flag = list(grads), getattr(self, "hvd_stop_flag", None)
        if flag is not None:
            grads, index, shape = flag.ride(grads)
        grads = allreduce_gradients(grads, self.hvd_compression, self.hvd_grouped)
        if flag is not None:
            grads = flag.land(grads, index, shape)
        return super().apply(grads, trainable_variables)


def distributed_optimizer(optimizer: keras.optimizers.Optimizer,
                          compression: str = "none",
                          grouped: bool = False,
                          stop_flag: StopFlag | None = None) -> keras.optimizers.Optimizer:
    """Makes `optimizer` average its gradients across the Horovod workers.

    The object keeps its state, config and variables; its class becomes a
    subclass with the allreduce in `apply`, the method Keras 3's `train_step`
    reaches through `apply_gradients`. Wrap the outermost optimizer: with
    mixed_float16, wrap `keras.optimizers.LossScaleOptimizer(opt)` (the trainer
    does), so that every worker sees the same averaged, possibly non-finite,
    gradients and takes the same branch. `compression`: "none" or "fp16".
    `grouped`: one grouped allreduce after backprop instead of one op per gradient.
    `stop_flag`: a `StopFlag` that rides in the gradients' allreduce (preemption).

    Example:
        >>> context = distributed.init()
        >>> model.compile(optimizer=distributed_optimizer(optimizers.MomentumSGD(schedule)))
    """
    if not hvd.is_initialized():
        raise RuntimeError("call tf_largebatch.distributed.init() before distributed_optimizer()")
    if isinstance(optimizer, _AllreduceGradients):
        return optimizer
    compressions = {"none": hvd.Compression.none, "fp16": hvd.Compression.fp16}
    if compression not in compressions:
        raise ValueError(f"compression must be one of {sorted(compressions)}, got {compression!r}")
    base = type(optimizer)
    optimizer.__class__ = type(f"Distributed{base.__name__}", (_AllreduceGradients, base), {})
    optimizer.hvd_compression = compressions[compression]
    optimizer.hvd_grouped = grouped
    optimizer.hvd_stop_flag = stop_flag
    return optimizer


def _broadcast(variables, root_rank):
    for i, variable in enumerate(variables):
        variable.assign(hvd.broadcast(tf.convert_to_tensor(variable), root_rank, name=f"bcast{i}"))


def broadcast_model_and_optimizer(model: keras.Model, root_rank: int = 0) -> None:
    """Copies rank `root_rank`'s weights and optimizer state to every worker."""
    if hvd.size() > 1:
        _broadcast(model.variables + list(model.optimizer.variables), root_rank)


class BroadcastInitialState(keras.callbacks.Callback):
    """Broadcasts model and optimizer variables from rank 0 when training begins.

    In Keras 3 the model and the optimizer are built before `on_train_begin`, so
    all their variables (momentum buffers included) exist here.
    """

    def __init__(self, root_rank=0):
        super().__init__()
        self.root_rank = root_rank

    def on_train_begin(self, logs=None):
        broadcast_model_and_optimizer(self.model, self.root_rank)


def batch_norm_statistics(model: keras.Model) -> list:
    """The moving means and variances of every BatchNormalization layer in `model`."""
    return [
        v
        for layer in model._flatten_layers()
        if isinstance(layer, keras.layers.BatchNormalization)
        for v in (layer.moving_mean, layer.moving_variance)
    ]


def average_batch_norm_statistics(model: keras.Model) -> None:
    """Replaces each worker's BN moving statistics by their average over workers."""
    stats = batch_norm_statistics(model)
    if hvd.size() > 1 and stats:
        averaged = hvd.grouped_allreduce([tf.convert_to_tensor(v) for v in stats], op=hvd.Average)
        for variable, value in zip(stats, averaged, strict=True):
            variable.assign(value)


class AverageBatchNormStatistics(keras.callbacks.Callback):
    """Averages BN moving statistics across workers before evaluation and at epoch end.

    Each worker's BN saw only its own shard; evaluation and checkpoints need one
    set of statistics. Put it before the checkpoint callback.
    """

    def on_test_begin(self, logs=None):
        average_batch_norm_statistics(self.model)

    def on_epoch_end(self, epoch, logs=None):
        average_batch_norm_statistics(self.model)


def weighted_mean(value: float, count: int) -> float:
    """Σ_r value_r·count_r / Σ_r count_r over the workers (a mean of means is wrong
    when the workers' counts differ, as in evaluation with padding)."""
    if hvd.size() == 1:
        return float(value)
    total, weight = hvd.allreduce(
        tf.constant([float(value) * count, float(count)], tf.float64), op=hvd.Sum
    ).numpy()
    return float(total / weight) if weight else float("nan")


def any_worker(flag: bool) -> bool:
    """True when `flag` holds on at least one worker (one small allreduce; every worker must
    call it, so it also waits for all of them)."""
    if hvd.size() == 1:
        return bool(flag)
    return bool(hvd.allreduce(tf.constant(int(flag), tf.int32), op=hvd.Sum,
                              name="any_worker").numpy() > 0)

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
  gradient (overlap); Horovod's fusion buffer batches those that arrive together. The
  optimizer keeps its class, so the model saves and loads as plain Keras; `load_model()`
  loads it bridged again, to resume a distributed fit.
- `BroadcastInitialState`, `AverageBatchNormStatistics`: Keras callbacks.
- `StopFlag`: a preemption flag that travels inside the gradient allreduce.
- `sum_over_workers()`: a host array summed over the workers (one allreduce), and on it
  `weighted_mean()` (a metric averaged by sample counts) and `any_worker()` (a flag).
"""

import dataclasses
import os
import re

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
    # horovodrun's tuning variables in effect at hvd.init() (from flags or the launcher)
    horovod_settings: dict = dataclasses.field(default_factory=dict, hash=False)
    hosts: tuple = ()  # each host's name, in horovodrun's host order (cross_rank)
    allreduce_reason: str = ""  # why this scheme (the flag, or auto's prediction)

    def facts(self) -> dict:
        """What flags.json records of the workers and the allreduce."""
        return dict(hierarchical_allreduce=self.hierarchical_allreduce,
                    allreduce=self.allreduce, allreduce_reason=self.allreduce_reason,
                    horovod_settings=self.horovod_settings, hosts=self.hosts)

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
        self.most_on_a_host = max(len(ranks) for ranks in by_host.values())

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


def horovod_settings() -> dict:
    """{variable: value} of horovodrun's tuning variables set in this process's environment
    (HOROVOD_FUSION_THRESHOLD, HOROVOD_CYCLE_TIME, HOROVOD_HIERARCHICAL_ALLREDUCE, ...: the
    ones horovodrun's options set, listed by horovod's own config_parser)."""
    from horovod.runner.common.util import config_parser

    names = {value for key, value in vars(config_parser).items()
             if key.startswith("HOROVOD_") and isinstance(value, str)}
    return {name: os.environ[name] for name in sorted(names) if name in os.environ}


def env_flag_set(name: str) -> bool:
    """Whether Horovod reads the variable as on: as its C++ does, strtol(value) > 0."""
    number = re.match(r"\s*[+-]?\d+", os.environ.get(name, ""))
    return bool(number) and int(number.group()) > 0


# Variables that the launchers set in every process they start (horovodrun; Open MPI's and
# MPICH's mpirun; srun): without any, this process is alone and Horovod's size will be 1.
LAUNCHER_VARIABLES = ("HOROVOD_RANK", "HOROVOD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE",
                      "PMIX_RANK", "SLURM_STEP_NUM_TASKS")


def launched_by(env=os.environ) -> str | None:
    """The launcher variable that says this process was started by horovodrun, mpirun or
    srun (None for a plain `python ...`)."""
    return next((name for name in LAUNCHER_VARIABLES if name in env), None)


class HostNameError(RuntimeError):
    """This host's name resolves to a loopback address in a job that spans several hosts."""


def first_on_host() -> bool:
    """Whether this process speaks for its host before `hvd.init` (HOROVOD_LOCAL_RANK 0, or
    no launcher): a HostNameError is said once per host."""
    return os.environ.get("HOROVOD_LOCAL_RANK", "0") == "0"


def interface_address(interface: str) -> str | None:
    """The IPv4 address of network interface `interface` (None if it has none)."""
    import fcntl
    import socket
    import struct

    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            request = struct.pack("256s", interface[:15].encode())
            return socket.inet_ntoa(fcntl.ioctl(probe.fileno(), 0x8915, request)[20:24])
    except OSError:  # 0x8915: SIOCGIFADDR
        return None


def loopback_hostname_problem(env=os.environ, hostname=None, resolve=None) -> str | None:
    """Why `hvd.init()` would abort here, or None: horovodrun started a Gloo job across hosts
    (HOROVOD_CROSS_SIZE > 1, its rendezvous on a non-loopback address) while this host's own
    name resolves to a loopback address (Debian's stock /etc/hosts maps it to 127.0.1.1).
    Horovod 0.28.1's Gloo contexts bind to the address the host name resolves to, whatever
    HOROVOD_GLOO_IFACE says, so the other hosts cannot connect (gloo::IoException, exit 134).
    Why our own check: Horovod aborts with no word about the cause."""
    import ipaddress
    import socket

    rendezvous = env.get("HOROVOD_GLOO_RENDEZVOUS_ADDR")
    if not rendezvous or int(env.get("HOROVOD_CROSS_SIZE", "1") or 1) < 2:
        return None
    try:
        if ipaddress.ip_address(rendezvous).is_loopback:  # hosts on one machine (-H localhost)
            return None
    except ValueError:
        pass
    hostname = hostname or socket.gethostname()
    try:
        address = (resolve or socket.gethostbyname)(hostname)
    except OSError:
        address = None
    if address is not None and not ipaddress.ip_address(address).is_loopback:
        return None
    interface = env.get("HOROVOD_GLOO_IFACE")
    own = interface and interface_address(interface)
    line = f"'{own} {hostname}'" if own else f"'<this host's address> {hostname}'"
    found = (f"resolves to {address}, a loopback address" if address
             else "does not resolve to an address")
    return (f"this host's name {hostname!r} {found}, but the job spans "
            f"{env['HOROVOD_CROSS_SIZE']} hosts (rendezvous at {rendezvous}"
            f"{f', interface {interface}' if interface else ''}): Horovod's Gloo binds to the "
            "address the host name resolves to, so the other hosts could not reach this one "
            f"and hvd.init() would abort. Fix: on every host, map each host's name to its "
            f"address on that network in /etc/hosts (here {line}, replacing a 127.0.1.1 line), "
            "or give the hosts names that DNS resolves to those addresses.")


def init(allreduce: str = "flat", fusion_threshold_mb: float | None = None,
         cycle_time_ms: float | None = None) -> Context:
    """Initialises Horovod (or a single process when not run by horovodrun).

    Horovod reads its tuning variables at `hvd.init()`, so they are set here first; the
    arguments override what a launcher set (`horovodrun --fusion-threshold-mb ...` sets the
    same variables). In a single process without a cycle time set, Horovod runs with a
    100 ms cycle (its idle background thread otherwise wakes every 1 ms, for nothing). With
    `allreduce="hierarchical"`, or HOROVOD_HIERARCHICAL_ALLREDUCE=1 from the launcher
    (`horovodrun --hierarchical-allreduce`), Horovod's native scheme is used where it works
    (a build with MPI and NCCL, GPUs, several hosts); elsewhere (Gloo, CPU, one host) the
    paper's three phases run on Horovod process sets (`ThreePhaseAllreduce`). The log says
    which, and why. `allreduce="auto"` on several hosts leaves the choice to
    `choose_allreduce` once the model is built (flat on one host). Returns a `Context` with
    the settings in effect.
    """
    global _three_phase
    if allreduce not in ("flat", "hierarchical", "auto"):
        raise ValueError(f"allreduce must be flat, hierarchical or auto, got {allreduce!r}")
    requested_by = "--allreduce=hierarchical"
    if allreduce != "hierarchical" and env_flag_set("HOROVOD_HIERARCHICAL_ALLREDUCE"):
        allreduce = "hierarchical"
        requested_by = "HOROVOD_HIERARCHICAL_ALLREDUCE=1 (from the launcher)"
    hierarchical_allreduce = allreduce == "hierarchical"
    # auto needs process sets added after hvd.init(), unless horovodrun says one host
    auto = allreduce == "auto" and os.environ.get("HOROVOD_CROSS_SIZE", "2") != "1"
    if hierarchical_allreduce:
        os.environ["HOROVOD_HIERARCHICAL_ALLREDUCE"] = "1"
    if fusion_threshold_mb is not None:
        os.environ["HOROVOD_FUSION_THRESHOLD"] = str(int(fusion_threshold_mb * 1024 * 1024))
    if cycle_time_ms is not None:
        os.environ["HOROVOD_CYCLE_TIME"] = str(cycle_time_ms)
    problem = loopback_hostname_problem()
    if problem:
        raise HostNameError(problem)
    settings = horovod_settings()  # before the process-set scheme drops the native variable
    process_sets = "dynamic" if hierarchical_allreduce or auto else None
    # Horovod reads its settings at init only, so a single process (no launcher) gets its long
    # cycle before the one hvd.init(); a launcher's job of one process is restarted with it.
    long_cycle = "HOROVOD_CYCLE_TIME" not in os.environ and not launched_by()
    if long_cycle:
        os.environ["HOROVOD_CYCLE_TIME"] = str(SINGLE_PROCESS_CYCLE_TIME_MS)
    try:
        hvd.init(process_sets=process_sets)
        guessed_wrong = (hvd.size() > 1 if long_cycle else
                         hvd.size() == 1 and "HOROVOD_CYCLE_TIME" not in os.environ)
        if guessed_wrong:  # rare: a launcher's one-process job, or a launcher not known here
            hvd.shutdown()
            long_cycle = not long_cycle
            if long_cycle:
                os.environ["HOROVOD_CYCLE_TIME"] = str(SINGLE_PROCESS_CYCLE_TIME_MS)
            else:
                del os.environ["HOROVOD_CYCLE_TIME"]
            hvd.init(process_sets=process_sets)
    finally:  # not for the processes this one starts (horovodrun in tests, launchers)
        if long_cycle:
            del os.environ["HOROVOD_CYCLE_TIME"]
    if long_cycle:
        settings["HOROVOD_CYCLE_TIME"] = str(SINGLE_PROCESS_CYCLE_TIME_MS)
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        tf.config.experimental.set_memory_growth(gpu, True)
    if gpus:
        tf.config.set_visible_devices(gpus[hvd.local_rank() % len(gpus)], "GPU")
    scheme, why = "flat", "--allreduce=flat"
    if auto and hvd.cross_size() > 1:
        scheme, why = "auto", "chosen once the model is built"
    elif allreduce == "auto":
        why = "--allreduce=auto: all workers are on one host"
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
            logging.info("%s: %s allreduce in effect (%d hosts) because %s.",
                         requested_by, scheme, hvd.cross_size(), why)
        why = f"{requested_by}: {why}"
    if hvd.size() == 1 and "HOROVOD_RANK" not in os.environ and "OMPI_COMM_WORLD_RANK" not in (
        os.environ
    ):
        logging.info("Not launched by horovodrun: training in a single process (k = 1).")
    return Context(hvd.rank(), hvd.size(), hvd.local_rank(), scheme.endswith("hierarchical"),
                   scheme, settings, host_names(), why)


def choose_allreduce(context: Context, variables, bytes_per_value=None,
                     grouped=False) -> Context:
    """--allreduce=auto on several hosts: flat or the three phases, by the planner, for the
    gradients of `variables` on the links measured now (`auto_allreduce.choose`); a
    collective of every rank. Logged with its reason; the context of any other scheme is
    returned as it is."""
    global _three_phase
    if context.allreduce != "auto":
        return context
    from tf_largebatch import auto_allreduce
    from tf_largebatch.plan import fused_messages

    nbytes = auto_allreduce.gradient_bytes(variables, bytes_per_value)
    fusion = int(context.horovod_settings.get("HOROVOD_FUSION_THRESHOLD", 64 * 1024 * 1024))
    three_phase = ThreePhaseAllreduce()
    choice = auto_allreduce.choose(three_phase, nbytes, 1 if grouped else fused_messages(
        nbytes, len(variables), fusion))
    _three_phase = three_phase if choice.scheme == "hierarchical" else None
    scheme = "process-set hierarchical" if _three_phase else "flat"
    why = f"--allreduce=auto: {choice.reason}"
    if hvd.rank() == 0:
        logging.info("%s allreduce in effect, %s.", scheme, why)
    return dataclasses.replace(context, allreduce=scheme,
                               hierarchical_allreduce=_three_phase is not None,
                               allreduce_reason=why)


def host_names() -> tuple:
    """Each host's name (`socket.gethostname()`), in horovodrun's host order; a collective."""
    import socket

    own = (hvd.cross_rank(), socket.gethostname())
    every = hvd.allgather_object(own) if hvd.size() > 1 else [own]
    return tuple(name for _, name in sorted(dict(every).items()))


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


@dataclasses.dataclass(frozen=True)
class _Bridge:
    """What `distributed_optimizer` binds to an optimizer: how its gradients are averaged."""

    compression: object
    grouped: bool
    stop_flag: StopFlag | None

    def average(self, grads):
        """The gradients averaged across workers (with the stop flag riding in them)."""
        grads, flag = list(grads), self.stop_flag
        if flag is not None:
            grads, index, shape = flag.ride(grads)
        grads = allreduce_gradients(grads, self.compression, self.grouped)
        if flag is not None:
            grads = flag.land(grads, index, shape)
        return grads


COMPRESSIONS = {"none": hvd.Compression.none, "fp16": hvd.Compression.fp16}


def distributed_optimizer(optimizer: keras.optimizers.Optimizer,
                          compression: str = "none",
                          grouped: bool = False,
                          stop_flag: StopFlag | None = None) -> keras.optimizers.Optimizer:
    """Makes `optimizer` average its gradients across the Horovod workers; returns it.

    The allreduce is bound to this object's `apply`, the method Keras 3's `train_step`
    reaches through `apply_gradients`. Nothing else changes: the object keeps its class,
    config, variables and state, so a model compiled with it saves with `model.save` and
    loads with plain `keras.models.load_model` (as the optimizer it was, without the
    allreduce; `load_model` below loads it bridged, to resume a distributed fit). Why the
    object itself and not a copy: a copy goes through the config, which drops a built
    optimizer's state and fails on a schedule whose class is not registered with Keras. So
    after the call, `optimizer` is the bridged optimizer (this returns the same object);
    `is_distributed(optimizer)` says so, and calling this again leaves it as it is.

    Wrap the outermost optimizer: with mixed_float16, wrap
    `keras.optimizers.LossScaleOptimizer(opt)` (the trainer does), so that every worker sees
    the same averaged, possibly non-finite, gradients and takes the same branch.
    `compression`: "none" or "fp16". `grouped`: one grouped allreduce after backprop instead
    of one op per gradient. `stop_flag`: a `StopFlag` that rides in the gradients'
    allreduce (preemption).

    Example:
        >>> context = distributed.init()
        >>> model.compile(optimizer=distributed_optimizer(optimizers.MomentumSGD(schedule)))
    """
    if not hvd.is_initialized():
        raise RuntimeError("call tf_largebatch.distributed.init() before distributed_optimizer()")
    if is_distributed(optimizer):
        return optimizer
    if compression not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {sorted(COMPRESSIONS)}, got {compression!r}")
    bridge = _Bridge(COMPRESSIONS[compression], grouped, stop_flag)
    class_apply = type(optimizer).apply

    def apply(grads, trainable_variables=None):
        return class_apply(optimizer, bridge.average(grads), trainable_variables)

    # Instance attributes: the class, hence what Keras serialises, stays the caller's.
    optimizer.apply = apply
    optimizer.hvd_bridge = bridge
    return optimizer


def is_distributed(optimizer: keras.optimizers.Optimizer) -> bool:
    """Whether `distributed_optimizer` has bridged `optimizer` (its gradients are averaged)."""
    return isinstance(getattr(optimizer, "hvd_bridge", None), _Bridge)


def load_model(filepath: str, compression: str = "none", grouped: bool = False,
               stop_flag: StopFlag | None = None, custom_objects: dict | None = None
               ) -> keras.Model:
    """`keras.models.load_model(filepath)` with the model's optimizer bridged, to resume a
    distributed fit from a .keras file (what `hvd.load_model` does for Keras 2).

    Every worker loads the same file (weights and optimizer state, step count included), so
    the workers start equal; `BroadcastInitialState` in the `fit` keeps them so when they
    might not have read the same file. The other arguments are `distributed_optimizer`'s.

    Example:
        >>> distributed.init()
        >>> model = distributed.load_model("run/model.keras")
        >>> model.fit(train, epochs=90, initial_epoch=30,
        ...           callbacks=[distributed.BroadcastInitialState()])
    """
    import tf_largebatch

    model = keras.models.load_model(filepath, custom_objects={
        **tf_largebatch.custom_objects(), **(custom_objects or {})})
    if getattr(model, "optimizer", None) is None:
        raise ValueError(f"{filepath} holds no compiled optimizer to resume from: save the model "
                         "after model.compile(...) (or use keras.models.load_model to load the "
                         "weights only)")
    distributed_optimizer(model.optimizer, compression, grouped, stop_flag)
    return model


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


def sum_over_workers(values, name: str = "host_values"):
    """Σ_r values_r over the workers, of a host float array (float64; one allreduce, which
    every worker must call, so it also waits for all of them): the building block of every
    value the workers agree on outside the compiled step (metric means, flags, counts)."""
    import numpy as np

    values = np.asarray(values, np.float64)
    if hvd.size() == 1:
        return values
    return hvd.allreduce(tf.constant(values), op=hvd.Sum, name=name).numpy()


def weighted_mean(value: float, count: int) -> float:
    """Σ_r value_r·count_r / Σ_r count_r over the workers (a mean of means is wrong
    when the workers' counts differ, as in evaluation with padding)."""
    total, weight = sum_over_workers([float(value) * count, float(count)], "weighted_mean")
    return float(total / weight) if weight else float("nan")


def any_worker(flag: bool) -> bool:
    """True when `flag` holds on at least one worker."""
    return bool(sum_over_workers([float(bool(flag))], "any_worker")[0] > 0)

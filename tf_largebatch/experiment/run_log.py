"""Per-epoch and per-step logs that the curves tool, the tests and the benchmarks read.

`metrics.jsonl`: one JSON object per epoch (epoch, step, lr, train_loss,
train_top1_error, val_loss, val_top1_error, val_top5_error, images_per_sec: over the
epoch's training, steady_images_per_sec: over its steps after the first, which in a
process's first epoch includes compilation (None for an epoch of one step), wall_s);
`steps.jsonl` with --log_every_step: step, lr, loss. Files are
appended to, so a resumed run continues them; lines past the checkpoint it
resumes from are dropped first (by epoch and step), so each epoch appears once.
"""

import json
import os
import subprocess
import time

import keras
from keras import ops

from tf_largebatch.callbacks import MetricAverage
from tf_largebatch.experiment.position import RunPosition


def source_commit() -> str | None:
    """The git commit the package was loaded from ('<sha>-dirty' with uncommitted changes),
    recorded in flags.json so that every run names the code it ran; None outside a git
    checkout (an installed wheel)."""
    here = os.path.dirname(os.path.abspath(__file__))

    def git(*args):
        return subprocess.run(["git", "-C", here, *args], capture_output=True, text=True,
                              check=True).stdout.strip()

    try:
        sha = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".")
    except (OSError, subprocess.CalledProcessError):
        return None
    return sha + ("-dirty" if dirty else "")


class CorruptLogError(ValueError):
    """A line of a run's .jsonl log is not a JSON record (and not a line cut by a kill)."""


def read_jsonl(path: str) -> list[dict]:
    """The records of a .jsonl file; a last line cut short by a kill is left out."""
    with open(path) as f:
        lines = f.readlines()
    records = []
    for number, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            if number < len(lines) - 1 or line.endswith("\n"):
                raise CorruptLogError(
                    f"{path}, line {number + 1}, is not a JSON record ({err.msg}: "
                    f"{line.strip()[:60]!r}). Delete or repair that line (the checkpoints are "
                    "not affected), then run the same command again.") from None
    return records


def _keep_jsonl(path, keep):
    """Rewrites `path` with the records for which `keep(record)` holds, through a temporary
    file that is fsynced and renamed (a kill leaves the old file or the new one, whole)."""
    if not os.path.exists(path):
        return
    kept = [r for r in read_jsonl(path) if keep(r)]
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in kept)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _append_jsonl(path, record, sync):
    try:
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")
            if sync:
                f.flush()
                os.fsync(f.fileno())
    except OSError as err:  # a failed write names no file: name it for the error line
        raise OSError(err.errno, err.strerror, path) from err


def _percent(value):
    return "–" if value is None else f"{100 * value:.1f}%"


def training_speed(records: list[dict]) -> float | None:
    """Images/s of a run without compilation: the mean over its epochs of each epoch's
    images/s after its first step (`steady_images_per_sec`; the first step of a process
    compiles the model, also in a resumed run's first epoch); an epoch of one step, or a log
    written before that was recorded, counts with its whole-epoch images/s unless it is the
    first. None when no epoch gives a figure (a run of one epoch of one step)."""
    timed = []
    for index, record in enumerate(records):
        value = record.get("steady_images_per_sec") or (
            record.get("images_per_sec") if index else None)
        if value:
            timed.append(value)
    return sum(timed) / len(timed) if timed else None


def summary(log_dir: str) -> str:
    """What a finished run did, in a few lines, from its metrics.jsonl and flags.json: training
    and validation error of the first and last epoch, k, n, kn, η̂, images/s without
    compilation (`training_speed`: the steps after each epoch's first; no line when there are
    none), and the command that draws its curves.
    """
    records = read_jsonl(os.path.join(log_dir, "metrics.jsonl"))
    with open(os.path.join(log_dir, "flags.json")) as f:
        facts = json.load(f)
    if not records:
        return f"No epoch finished; nothing logged in {log_dir}."
    first, last = records[0], records[-1]
    warmup_epochs = float(facts.get("warmup_epochs") or 0)
    warmup = "no warmup" if facts.get("warmup") == "none" or not warmup_epochs else (
        f"{facts['warmup']} warmup over {warmup_epochs:g} epoch"
        f"{'' if warmup_epochs == 1 else 's'}")
    epochs = (f"epoch {first['epoch']}" if first["epoch"] == last["epoch"] else
              f"epochs {first['epoch']}–{last['epoch']}")
    lines = [
        f"Trained {epochs}: k = {facts['workers']} workers "
        f"({facts['processes']} process{'' if facts['processes'] == 1 else 'es'}), "
        f"n = {facts['per_worker_batch']}, "
        f"kn = {facts['global_batch']}, η̂ = {facts['peak_lr']:.4g}, {warmup}.",
    ]
    for name, key in (("training error  ", "train_top1_error"),
                      ("validation error", "val_top1_error")):
        if last.get(key) is not None:
            lines.append(f"  {name} {_percent(first.get(key))} (epoch {first['epoch']}) → "
                         f"{_percent(last[key])} (epoch {last['epoch']})")
    speed = training_speed(records)
    if speed is not None:
        lines.append(f"  speed            {speed:,.0f} images/s")
    lines.append(f"Curves: python -m tf_largebatch.curves {log_dir} "
                 f"--out={os.path.join(log_dir, 'curves.png')}")
    return "\n".join(lines)


class GlobalMetrics(MetricAverage):
    """`callbacks.MetricAverage` (each epoch metric averaged over all workers, weighted by
    counts: training by steps·n, the same on every worker; validation by each worker's count
    of real, unpadded validation images), then Keras's keys renamed to the log's:
    top1 → top1_error = 1 − accuracy, and val_loss is the weighted cross-entropy (Keras's own
    val_loss counts padding).
    """

    def __init__(self, train_images_per_epoch, val_images_on_worker, average):
        """`average(value, count)` is the cross-worker mean: `distributed.weighted_mean`
        under Horovod, `lambda value, count: float(value)` in one process."""
        super().__init__(train_images_per_epoch, val_images_on_worker, average)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        super().on_epoch_end(epoch, logs)
        out = {key: logs[key] for key in sorted(logs)}
        for prefix in ("", "val_"):
            if prefix + "top1" in out:
                out[prefix + "top1_error"] = 1.0 - out.pop(prefix + "top1")
                out[prefix + "top5_error"] = 1.0 - out.pop(prefix + "top5")
        if "val_xent" in out:
            out["val_loss"] = out.pop("val_xent")
        out.pop("xent", None)
        logs.clear()
        logs.update(out)


class RunLogger(keras.callbacks.Callback):
    """Writes metrics.jsonl (and steps.jsonl) in `log_dir`; chief worker only.

    `schedule` gives the rate of global step t; `images_per_step` is k·n. `position` is the
    run's `position.RunPosition` (default: a fresh run's). The logged step is the optimizer's
    plus its `log_step_offset` (the updates taken before a resume that changed k·n, which
    restarts the optimizer's count in the new units), so logged steps only increase. A run
    resumed from the checkpoint of epoch `position.epoch` (logged step `position.log_step`)
    first drops the lines that checkpoint does not cover (a later epoch, step ≥ that step),
    so every epoch and step is logged exactly once; then lines are only appended (each
    epoch's fsynced).
    """

    def __init__(self, log_dir, schedule, images_per_step, log_every_step=False,
                 position=None):
        super().__init__()
        self.position = position or RunPosition()
        self.to_drop = True  # the lines past `position`, dropped at the first `fit`'s start
        self.log_dir = log_dir
        self.schedule = schedule
        self.images_per_step = images_per_step
        self.log_every_step = log_every_step
        self.metrics_path = os.path.join(log_dir, "metrics.jsonl")
        self.steps_path = os.path.join(log_dir, "steps.jsonl")
        self.start = time.time()

    def _step(self):
        return int(ops.convert_to_numpy(self.model.optimizer.iterations))

    def _lr(self, step):
        return float(ops.convert_to_numpy(self.schedule(step)))

    def on_train_begin(self, logs=None):
        os.makedirs(self.log_dir, exist_ok=True)
        if not self.to_drop:  # a second `fit` of the same run (after a mid-epoch resume)
            return
        _keep_jsonl(self.steps_path, lambda r: r["step"] < self.position.log_step)
        _keep_jsonl(self.metrics_path, lambda r: r["epoch"] <= self.position.epoch)
        self.to_drop = False

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = time.time()
        self.epoch_first_step = self._step()
        self.first_step_end = None  # (time, step) after the epoch's first step
        self.train_end = None
        self.previous_mean = 0.0

    def on_train_batch_end(self, batch, logs=None):
        if self.first_step_end is None:
            self.first_step_end = (time.time(), self._step())
        if not self.log_every_step:
            return
        # Keras logs the running mean of the epoch; the batch's own loss is recovered from it.
        mean = float(logs["loss"])
        loss = (batch + 1) * mean - batch * self.previous_mean
        self.previous_mean = mean
        step = self._step() - 1
        _append_jsonl(self.steps_path, {"step": step + self.position.log_step_offset,
                                        "lr": self._lr(step), "loss": loss},
                      sync=False)

    def on_test_begin(self, logs=None):
        if self.train_end is None:
            self.train_end = time.time()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        step = self._step()
        train_end = self.train_end or time.time()
        train_seconds = train_end - self.epoch_start
        after_first, first_step = self.first_step_end or (train_end, step)
        record = {
            "epoch": epoch + 1,  # epochs completed
            "step": step + self.position.log_step_offset,
            "lr": self._lr(step - 1),
            "train_loss": logs.get("loss"),
            "train_top1_error": logs.get("top1_error"),
            "val_loss": logs.get("val_loss"),
            "val_top1_error": logs.get("val_top1_error"),
            "val_top5_error": logs.get("val_top5_error"),
            # None for an epoch whose training a checkpoint saved whole (only its validation
            # ran in this process): no steps were timed.
            "images_per_sec": (step - self.epoch_first_step) * self.images_per_step
            / max(train_seconds, 1e-9) if step > self.epoch_first_step else None,
            "steady_images_per_sec": (step - first_step) * self.images_per_step
            / max(train_end - after_first, 1e-9) if step > first_step else None,
            "wall_s": time.time() - self.start,
        }
        _append_jsonl(self.metrics_path, record, sync=True)
        if self.log_every_step and os.path.exists(self.steps_path):
            with open(self.steps_path, "a") as f:
                os.fsync(f.fileno())

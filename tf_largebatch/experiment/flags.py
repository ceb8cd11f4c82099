"""The flags of both trainers (`tf_largebatch.train`, `tf_largebatch.portable_train`).

Defaults are Goyal et al.'s ImageNet recipe; configs/ holds the experiments as flagfiles.
Importing this module defines the flags; only the trainers read them, once, through
`from_flags()`: the experiment core reads the `config.ExperimentConfig` it returns.
`trainer_flag_values()` is what flags.json records: these flags and --log_dir, not
the flags that absl and TensorFlow define for themselves.
"""

import dataclasses
import re
import sys

from absl import flags
from absl import logging as _absl_logging  # noqa: F401  (defines --log_dir, used below)

from tf_largebatch.experiment.builders import MODELS
from tf_largebatch.experiment.config import ExperimentConfig

# Model.
flags.DEFINE_enum("model", "resnet50", list(MODELS), "Network.")
flags.DEFINE_enum("resnet_version", "1.5", ["1", "1.5"], "ResNet v1 (stride in the first 1x1) "
                  "or v1.5 (stride in the 3x3).")
flags.DEFINE_bool("zero_gamma", True, "Zero-init γ of the last BN of each residual block.")
flags.DEFINE_float("bn_momentum", 0.9, "BN moving-average decay.")
flags.DEFINE_integer("image_size", None, "Input size (default 224, 32 for CIFAR ResNets).")
flags.DEFINE_integer("num_classes", None, "Classes (default: from the dataset).")
# Data.
flags.DEFINE_string("dataset", "synthetic", "synthetic | shapes | folder | tfrecord | "
                    "tfds:<name>.")
flags.DEFINE_string("data_dir", None, "Folder tree, TFRecord directory, or TFDS data_dir.")
flags.DEFINE_bool("download", False, "Let TFDS download the dataset.")
flags.DEFINE_integer("synthetic_examples", 2048, "Training images of --dataset=synthetic or "
                     "shapes.")
flags.DEFINE_bool("cache", False, "Cache decoded images in memory (small datasets).")
flags.DEFINE_integer("augment_off_epochs", 0, "Turn augmentation off for the last E epochs.")
# Schedule.
flags.DEFINE_integer("per_worker_batch", 32, "n, images per worker per step.")
flags.DEFINE_integer("epochs", 90, "Training epochs.")
flags.DEFINE_integer("steps_per_epoch", None, "Override (smoke runs); default N // kn.")
flags.DEFINE_integer("eval_every", 1, "Evaluate every this many epochs (0: never).")
flags.DEFINE_integer("eval_steps", None, "Override the evaluation steps (smoke runs).")
flags.DEFINE_float("base_lr", 0.1, "η_ref, the rate for --base_batch images.")
flags.DEFINE_integer("base_batch", 256, "B_ref of the scaling rule.")
flags.DEFINE_enum("scaling_rule", "linear", ["linear", "sqrt"], "η̂ = η_ref·kn/B_ref or ·sqrt.")
flags.DEFINE_enum("warmup", "gradual", ["gradual", "constant", "none"], "Warmup kind.")
flags.DEFINE_float("warmup_epochs", 5, "Warmup length in epochs.")
flags.DEFINE_enum("decay", "step", ["step", "poly", "linear", "cosine", "constant"], "Decay.")
flags.DEFINE_list("milestones", ["30", "60", "80"], "Epochs of the ×decay_factor steps.")
flags.DEFINE_float("decay_factor", 0.1, "Step decay factor.")
flags.DEFINE_float("power", 1.0, "Polynomial decay power.")
flags.DEFINE_float("end_lr", 0.0, "Final rate of poly/linear/cosine decay.")
flags.DEFINE_float("decay_start_epoch", None, "Start of the linear decay (default: warmup end).")
# Optimizer.
flags.DEFINE_enum("optimizer", "sgd", ["sgd", "lars"], "Momentum SGD or LARS.")
flags.DEFINE_float("momentum", 0.9, "Momentum m.")
flags.DEFINE_bool("nesterov", False, "Nesterov momentum.")
flags.DEFINE_bool("momentum_correction", None, "Scale the velocity by η_t/η_(t-1) (default: "
                  "on for sgd, as in Goyal et al.; off for lars, as in You et al.).")
flags.DEFINE_float("weight_decay", 1e-4, "L2 λ (not on BN γ/β and biases).")
flags.DEFINE_float("final_weight_decay", None, "λ for the last --final_weight_decay_fraction "
                   "of training (Codreanu et al.: 2λ).")
flags.DEFINE_float("final_weight_decay_fraction", 0.06, "Fraction of training with the final λ.")
flags.DEFINE_float("trust_coefficient", 0.001, "LARS trust coefficient.")
flags.DEFINE_float("divergence_factor", 10.0, "Stop (and save nothing) when an epoch's training "
                   "loss exceeds this many times the first epoch's (0: only non-finite losses).")
flags.DEFINE_float("label_smoothing", 0.0, "Label smoothing ε.")
# Precision, distribution.
flags.DEFINE_enum("mixed_precision", "none", ["none", "mixed_float16", "mixed_bfloat16"],
                  "Mixed precision policy (logits stay float32).")
flags.DEFINE_bool("xla", False, "Compile the train step with XLA.")
flags.DEFINE_integer("simulate_workers", 1, "k workers simulated in each process: batch k·n, "
                     "BN over groups of n.")
flags.DEFINE_enum("allreduce", "auto", ["auto", "flat", "hierarchical"], "flat: one ring over "
                  "all workers; hierarchical: reduce inside each host, allreduce across hosts, "
                  "broadcast inside (Horovod's own with MPI+NCCL on GPUs, else the same three "
                  "phases on Horovod process sets); auto: flat on one host, on several the one "
                  "the planner predicts faster for this model on the links measured at start.")
flags.DEFINE_bool("hierarchical_allreduce", False, "The same as --allreduce=hierarchical.")
flags.register_multi_flags_validator(
    ["allreduce", "hierarchical_allreduce"],
    lambda v: not (v["hierarchical_allreduce"] and v["allreduce"] == "flat"),
    "--hierarchical_allreduce asks for --allreduce=hierarchical, not flat: drop one of them")
flags.DEFINE_bool("fp16_allreduce", False, "Compress gradients to fp16 for the allreduce.")
flags.DEFINE_bool("grouped_allreduce", False, "One grouped allreduce after backprop instead of "
                  "one allreduce per gradient as soon as it is ready (no overlap).")
flags.DEFINE_float("fusion_threshold_mb", None, "HOROVOD_FUSION_THRESHOLD in MiB.")
flags.DEFINE_float("cycle_time_ms", None, "HOROVOD_CYCLE_TIME in ms.")
flags.DEFINE_integer("seed", 0, "Seed of initial weights, data order and augmentation.")
# Outputs.
# --log_dir is absl's own flag (absl.logging defines it for log files that absl writes only
# when asked, which the trainers never do); here it names the run's folder.
flags.FLAGS.set_default("log_dir", "runs/latest")
flags.FLAGS["log_dir"].help = ("The run's folder: flags.json, metrics.jsonl, steps.jsonl, "
                               "tensorboard/ and (by default) checkpoints/. A local or shared "
                               "file system path, not a URL.")
flags.DEFINE_string("checkpoint_dir", None, "Checkpoints (default <log_dir>/checkpoints). A "
                    "local or shared file system path, not a URL.")


def _not_a_url(path):
    return not (path and re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", path))


for _name in ("log_dir", "checkpoint_dir"):
    # Without this check, --log_dir=gs://bucket/run was a local folder ./gs:/bucket/run.
    flags.register_validator(
        _name, _not_a_url,
        f"--{_name} must be a file system path, not a URL (gs://, s3://, hdfs://, ...): a run "
        "commits its checkpoints with os.replace and locks its folders with flock, which "
        "object stores do not provide. Write to a local or shared disk (NFS, Lustre, ...) "
        "and copy the folder to the bucket afterwards.")


class _ResumeParser(flags.ArgumentParser):
    """--resume (True), --noresume / --resume=false (False) or --resume=auto ("auto")."""

    def parse(self, argument):
        if isinstance(argument, bool) or argument == "auto":
            return argument
        value = str(argument).lower()
        if value in ("true", "t", "1", "yes"):
            return True
        if value in ("false", "f", "0", "no"):
            return False
        raise ValueError(f"--resume takes true, false or auto, not {argument!r}")

    def flag_type(self):
        return "bool or auto"


# A boolean flag (bare --resume and --noresume keep working) that also takes "auto": resume
# when the folders hold a committed run, start afresh when they hold nothing (the launchers'
# setting: the same command for the first attempt and every requeue).
flags.DEFINE_flag(flags.Flag(
    _ResumeParser(), flags.ArgumentSerializer(), "resume", False,
    "Continue from the latest committed checkpoint in --checkpoint_dir; --resume=auto: "
    "continue when the folders hold a committed run, start afresh when they hold nothing "
    "(what a requeued job wants).", boolean=True))
flags.DEFINE_bool("overwrite", False, "Start afresh in folders that hold an earlier run (its "
                  "files are moved into <log_dir>/replaced-<time>/, not deleted).")
flags.DEFINE_bool("log_every_step", False, "Also write steps.jsonl (step, lr, loss).")
flags.DEFINE_integer("keep_checkpoints", 3, "Checkpoints kept.")
flags.DEFINE_integer("checkpoint_every_steps", 0, "Also save a mid-epoch checkpoint every this "
                     "many global steps (0: only at epoch ends and on SIGTERM/SIGINT); "
                     "--resume continues at that exact step.")
flags.DEFINE_bool("saved_model", True, "Also export <log_dir>/saved_model/ (model.export, for "
                  "serving) when the run finishes; --nosaved_model writes model.keras only.")
flags.DEFINE_string("reference_run", None, "A run's --log_dir: stop when this run's training "
                    "error leaves that run's curve early on (the paper's early check).")
flags.DEFINE_float("check_fraction", 0.3, "Fraction of training the early check covers.")
flags.DEFINE_float("check_tolerance", 0.014, "Allowed |Δ train top-1 error| in the early check.")

FLAGS = flags.FLAGS

for _name in ("per_worker_batch", "epochs", "simulate_workers", "base_batch", "keep_checkpoints"):
    flags.register_validator(_name, lambda v: v is not None and v >= 1, f"--{_name} must be ≥ 1")
for _name in ("steps_per_epoch", "eval_steps", "image_size", "num_classes"):
    flags.register_validator(_name, lambda v: v is None or v >= 1, f"--{_name} must be ≥ 1")
flags.register_validator("base_lr", lambda v: v > 0, "--base_lr must be > 0")
flags.register_validator("momentum", lambda v: 0 <= v < 1, "--momentum must be in [0, 1)")
flags.register_validator("weight_decay", lambda v: v >= 0, "--weight_decay must be ≥ 0")
flags.register_validator("label_smoothing", lambda v: 0 <= v < 1,
                         "--label_smoothing must be in [0, 1)")
flags.register_validator("warmup_epochs", lambda v: v >= 0, "--warmup_epochs must be ≥ 0")
flags.register_validator("eval_every", lambda v: v >= 0, "--eval_every must be ≥ 0")
flags.register_validator("checkpoint_every_steps", lambda v: v >= 0,
                         "--checkpoint_every_steps must be ≥ 0 (0: off)")
flags.register_validator("divergence_factor", lambda v: v == 0 or v > 1,
                         "--divergence_factor must be 0 (off) or > 1")
flags.register_validator("augment_off_epochs", lambda v: v >= 0,
                         "--augment_off_epochs must be ≥ 0")


@flags.multi_flags_validator(["warmup", "warmup_epochs", "epochs"],
                             "--warmup_epochs must be smaller than --epochs")
def _warmup_fits(f):
    return f["warmup"] == "none" or f["warmup_epochs"] < f["epochs"]


@flags.multi_flags_validator(["milestones"], "--milestones must be increasing numbers of epochs, "
                             "e.g. --milestones=30,60,80")
def _milestones_valid(f):
    try:
        values = [float(m) for m in f["milestones"]]
    except ValueError:
        return False
    return all(a < b for a, b in zip(values, values[1:], strict=False)) and all(
        v > 0 for v in values)


@flags.multi_flags_validator(["dataset", "data_dir"], "--dataset=folder|tfrecord needs --data_dir")
def _data_dir_given(f):
    return f["dataset"] not in ("folder", "tfrecord") or bool(f["data_dir"])


@flags.multi_flags_validator(["augment_off_epochs", "epochs"],
                             "--augment_off_epochs must not exceed --epochs")
def _augment_off_fits(f):
    return f["augment_off_epochs"] <= f["epochs"]


def _validate_dataset(name):
    return name in ("synthetic", "shapes", "folder", "tfrecord") or (
        name.startswith("tfds:") and len(name) > 5)


flags.register_validator("dataset", _validate_dataset,
                         "--dataset must be synthetic, shapes, folder, tfrecord or tfds:<name>")


def trainer_flag_values() -> dict:
    """{name: value} of the trainer's own flags (and absl's --log_dir, which names the run's
    folder), in the order they are defined."""
    own = [f.name for f in FLAGS.get_flags_for_module(sys.modules[__name__])]
    return {name: FLAGS[name].value for name in own + ["log_dir"]}


def from_flags() -> ExperimentConfig:
    """The parsed flags as the frozen `config.ExperimentConfig` the experiment core reads
    (each field is read from the flag of its name)."""
    parts = {part.name: part.type(**{field.name: FLAGS[field.name].value
                                     for field in dataclasses.fields(part.type)})
             for part in dataclasses.fields(ExperimentConfig)}
    return ExperimentConfig(**parts)

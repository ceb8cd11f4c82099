"""The trainers' command line around `absl.app.run`: `--help` by topic, flag files expanded
with includes found next to their file (`flagfiles`), and framework start-up noise off.

`--help` (also -h, -?, --helpshort) prints the usage line and the trainer's flags under
topic headings; `--helpfull` stays absl's list of every flag (absl's and TensorFlow's too).
absl groups help by the module that defines a flag, so the topics are listed here.
"""

import importlib.util
import logging
import os
import sys
import textwrap

from absl import app, flags
from absl import logging as absl_logging

from tf_largebatch.experiment import flagfiles

FLAGS = flags.FLAGS
SHORT_HELP = ("-h", "-?", "--help", "--helpshort")

# (heading, flags) in the order a user meets them; a trainer flag missing here is listed
# under "Other" (tests/test_cli.py asserts there is none).
TOPICS = [
    ("Model", ["model", "resnet_version", "zero_gamma", "bn_momentum", "image_size",
               "num_classes"]),
    ("Data", ["dataset", "data_dir", "download", "synthetic_examples", "cache",
              "augment_off_epochs"]),
    ("Batch and learning rate: kn = per_worker_batch × workers, η̂ = base_lr·kn/base_batch",
     ["per_worker_batch", "simulate_workers", "epochs", "steps_per_epoch", "base_lr",
      "base_batch", "scaling_rule", "warmup", "warmup_epochs", "decay", "milestones",
      "decay_factor", "power", "end_lr", "decay_start_epoch"]),
    ("Optimizer and loss", ["optimizer", "momentum", "nesterov", "momentum_correction",
                            "weight_decay", "final_weight_decay", "final_weight_decay_fraction",
                            "trust_coefficient", "label_smoothing"]),
    ("Evaluation and early stops", ["eval_every", "eval_steps", "divergence_factor",
                                    "reference_run", "check_fraction", "check_tolerance"]),
    ("Precision and Horovod", ["mixed_precision", "xla", "allreduce", "hierarchical_allreduce",
                               "fp16_allreduce", "grouped_allreduce", "fusion_threshold_mb",
                               "cycle_time_ms"]),
    ("Outputs and resuming", ["log_dir", "checkpoint_dir", "resume", "overwrite",
                              "log_every_step", "keep_checkpoints", "checkpoint_every_steps",
                              "saved_model", "seed"]),
]

FOOTER = """\
Flag files: --flagfile=FILE reads one flag per line (# starts a comment); a line
--flagfile=OTHER includes OTHER, looked up next to FILE first. Later flags win: flags
after --flagfile override it. --helpfull lists every flag, absl's and TensorFlow's too."""


def _default(flag):
    value = flag.default
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(map(str, value))
    return value


def _describe(flag):
    """`--name: help (default: value)` wrapped; absl puts an enum's <a|b|c> into its help."""
    name = f"--[no]{flag.name}" if flag.boolean else f"--{flag.name}"
    text, choices = flag.help, getattr(flag.parser, "enum_values", None)
    if choices:  # spaced, so that a long list wraps
        text = text.replace(f"<{'|'.join(choices)}>", f"<{' | '.join(choices)}>", 1)
    text = f"{name}: {text}"
    if flag.default is not None:
        text += f" (default: {_default(flag)})"
    return textwrap.fill(text, width=90, initial_indent="  ", subsequent_indent="      ",
                         break_long_words=False, break_on_hyphens=False)


def help_text(usage: str, trainer_flags) -> str:
    """The usage line, then `trainer_flags` (names) under the TOPICS headings."""
    shown = set(trainer_flags)
    topics = [(heading, [n for n in names if n in shown]) for heading, names in TOPICS]
    listed = {name for _, names in topics for name in names}
    topics.append(("Other", [n for n in trainer_flags if n not in listed]))
    lines = [usage, ""]
    for heading, names in topics:
        if names:
            lines += [f"{heading}:", *(_describe(FLAGS[n]) for n in names), ""]
    return "\n".join(lines + [FOOTER, ""])


class _DropTensorFlowInfo(logging.Filter):
    """Drops the INFO lines that TensorFlow's own modules log through absl (checkpoint
    saving's 'Sharding callback duration' after every epoch) while --verbosity is at most
    0; TensorFlow's warnings and errors pass."""

    def __init__(self, package_dir):
        super().__init__()
        self.package_dir = package_dir

    def filter(self, record):
        return (record.levelno >= logging.WARNING or absl_logging.get_verbosity() > 0
                or not record.pathname.startswith(self.package_dir))


def quiet_framework_logs():
    """Framework start-up and progress noise off, before TensorFlow is imported: its C++
    INFO lines (TF_CPP_MIN_LOG_LEVEL=1 unless the user set it; warnings and errors stay)
    and its Python INFO lines (`_DropTensorFlowInfo`, --verbosity=1 shows them)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    spec = importlib.util.find_spec("tensorflow")  # finds the package without importing it
    if spec and spec.origin:
        handler = absl_logging.get_absl_handler()
        if not any(isinstance(f, _DropTensorFlowInfo) for f in handler.filters):
            handler.addFilter(_DropTensorFlowInfo(os.path.dirname(spec.origin) + os.sep))


def parse_flags(argv, usage, trainer_flags):
    """absl's parser (`app.parse_flags_with_usage`) after our help and flag-file expansion."""
    args = argv[1:argv.index("--")] if "--" in argv else argv[1:]
    if any(arg in SHORT_HELP for arg in args):
        sys.stdout.write(help_text(usage, trainer_flags))
        sys.exit(0)
    try:
        argv = flagfiles.expand(argv)
    except flags.Error as err:
        sys.stderr.write(f"FATAL Flags parsing error: {err}\n")
        sys.exit(1)
    return app.parse_flags_with_usage(argv)


HELP_FLAGS = ("-h", "-?", "--help", "--helpshort", "--helpfull", "--helpxml")


def run_cli(main, usage="usage: python -m <trainer> --flagfile=configs/X.cfg [flags]"):
    """`absl.app.run(main)` with `cli`'s help by topic, flag-file includes next to their
    file and quiet frameworks; asking for help exits 0 (absl exits 1 after it)."""
    from tf_largebatch.experiment.flags import trainer_flag_values

    quiet_framework_logs()
    own = list(trainer_flag_values())
    try:
        app.run(main, flags_parser=lambda argv: parse_flags(argv, usage, own))
    except SystemExit as exit_:
        if exit_.code == 1 and any(arg in HELP_FLAGS for arg in sys.argv[1:]):
            sys.exit(0)
        raise

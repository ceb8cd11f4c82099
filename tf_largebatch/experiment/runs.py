"""Reading the folders that tf_largebatch.train and tf_largebatch.portable_train leave behind.

A run folder (its --log_dir) holds `metrics.jsonl` (one JSON object per epoch, written by
`run_log.RunLogger`) and `flags.json` (the flags and k, n, kn of the run). Curve values are
fractions (0.25) everywhere; only messages show percentages. Imports neither Keras nor
TensorFlow.
"""

import dataclasses
import json
import os

METRICS = "metrics.jsonl"
FLAGS_FILE = "flags.json"


class RunDirError(ValueError):
    """A path that is not a readable tf_largebatch.train run directory."""


def read_metrics(path: str) -> list[dict]:
    """Parses a metrics.jsonl; errors name the file and the 1-based line number."""
    records = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise RunDirError(f"{path}, line {number}: malformed JSON ({e.msg})") from None
            if not isinstance(record, dict) or "epoch" not in record:
                raise RunDirError(f"{path}, line {number}: not an epoch record "
                                  "(a JSON object with an \"epoch\" key)")
            records.append(record)
    return records


@dataclasses.dataclass
class Run:
    """One run's logs: `records` from metrics.jsonl, `flags` from flags.json ({} if absent)."""

    path: str
    flags: dict
    records: list

    def curve(self, key):
        """{epoch: value} of `key`, leaving out epochs where it is null or missing."""
        return {int(r["epoch"]): float(r[key]) for r in self.records
                if r.get(key) is not None}

    @property
    def epochs(self):
        """Last epoch logged (epochs completed)."""
        return max(int(r["epoch"]) for r in self.records)

    @property
    def warmup_epochs(self):
        """Warmup length in epochs; 0 when --warmup=none or unknown."""
        if self.flags.get("warmup", "none") == "none":
            return 0.0
        return float(self.flags.get("warmup_epochs") or 0.0)

    @property
    def label(self):
        return run_label(self.flags, os.path.basename(os.path.normpath(self.path)))


def load_run(path: str) -> Run:
    """Reads RUN_DIR/metrics.jsonl and RUN_DIR/flags.json; raises RunDirError."""
    hint = "pass the --log_dir of a tf_largebatch.train run"
    if not os.path.isdir(path):
        raise RunDirError(f"{path}: no such directory; not a trainer run directory ({hint})")
    metrics = os.path.join(path, METRICS)
    if not os.path.isfile(metrics):
        raise RunDirError(f"{path} has no {METRICS}; not a trainer run directory ({hint})")
    records = read_metrics(metrics)
    if not records:
        raise RunDirError(f"{metrics} is empty: the run has not finished an epoch yet ({hint} "
                          "that has logged at least one epoch)")
    flags = {}
    flags_path = os.path.join(path, FLAGS_FILE)
    if os.path.isfile(flags_path):
        try:
            with open(flags_path) as f:
                flags = json.load(f)
        except json.JSONDecodeError as e:
            raise RunDirError(f"{flags_path}, line {e.lineno}: malformed JSON ({e.msg})") from None
    return Run(path=path, flags=flags, records=records)


def run_label(flags: dict, fallback: str) -> str:
    """'kn=8192, gradual warmup' / 'kn=256, no warmup' / '… + LARS' / '…, 2 processes' from
    flags.json (processes: real Horovod processes, when more than one)."""
    if "global_batch" not in flags:
        return fallback
    warmup = flags.get("warmup", "none")
    if warmup == "none" or not flags.get("warmup_epochs"):
        text = "no warmup"
    else:
        text = f"{warmup} warmup"
    label = f"kn={flags['global_batch']}, {text}"
    if flags.get("optimizer") == "lars":
        label += " + LARS"
    if flags.get("processes", 1) > 1:
        label += f", {flags['processes']} processes"
    return label


def unique_labels(runs):
    """Labels, with the directory name appended where two runs would share one."""
    labels = [r.label for r in runs]
    return [f"{label} ({os.path.basename(os.path.normpath(r.path))})"
            if labels.count(label) > 1 else label for label, r in zip(labels, runs, strict=True)]


def final_val_error(run: Run) -> float:
    """The last logged validation top-1 error (a fraction); RunDirError if there is none."""
    val = run.curve("val_top1_error")
    if not val:
        raise RunDirError(f"{run.path} logged no validation error; error vs kn needs runs "
                          "evaluated at least at the end (--eval_every)")
    return val[max(val)]

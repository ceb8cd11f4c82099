"""The paper's early check: do a run's training-error curves stay on the reference's?

Goyal et al.: "training error curves can be used as a reliable proxy for success well
before training finishes". With fraction f and tolerance t, a run PASSES when at every
epoch e with warmup < e ≤ f × (the reference's number of logged epochs) its training error is
within t (absolute, 0.02 = 2 points) of the reference's at the same epoch, i.e. max |Δ| ≤ t.
A run that has not yet logged every such epoch and exceeded nowhere is INCOMPLETE. "Warmup"
is the longer of the two runs' warmups (0 epochs for --warmup=none).

Used by the curves CLI (`python -m tf_largebatch.curves --check_fraction`) and, during
training, by `experiment.callbacks.EarlyCurveCheck`. Imports neither Keras nor TensorFlow.
"""

import dataclasses
import math

_EPS = 1e-9


def _after_warmup(reference, run):
    return max(reference.warmup_epochs, run.warmup_epochs)


def training_gap(reference, run):
    """Mean |Δ train_top1_error| over shared epochs after warmup (a fraction); None if none."""
    start = _after_warmup(reference, run)
    ref, mine = reference.curve("train_top1_error"), run.curve("train_top1_error")
    diffs = [abs(mine[e] - ref[e]) for e in sorted(ref.keys() & mine.keys()) if e > start + _EPS]
    return sum(diffs) / len(diffs) if diffs else None


def check_window(reference_epochs: int, fraction: float,
                 warmup_epochs: float) -> tuple[int, int]:
    """(first, last) epochs the early check covers: warmup < e ≤ fraction·reference_epochs."""
    if not 0 < fraction <= 1:
        raise ValueError(f"the check fraction must be in (0, 1], got {fraction}")
    first = math.floor(warmup_epochs + _EPS) + 1
    last = math.floor(fraction * reference_epochs + _EPS)
    if last < first:
        raise ValueError(
            f"nothing to check: fraction {fraction} of the reference's {reference_epochs} "
            f"epochs ends at epoch {fraction * reference_epochs:g}, within the warmup "
            f"({warmup_epochs:g} epochs); raise the check fraction")
    return first, last


@dataclasses.dataclass
class CheckResult:
    """Outcome of the early check of one run. `verdict` is PASS, FAIL or INCOMPLETE."""

    verdict: str
    first: int
    last: int
    tolerance: float
    checked: list  # epochs compared
    max_diff: float | None
    worst_epoch: int | None
    missing: list  # window epochs the run (or the reference) has not logged

    @property
    def passed(self):
        return self.verdict == "PASS"

    def describe(self):
        where = f"epochs {self.first}–{self.last}"
        if self.max_diff is None:
            return f"{self.verdict}: no epoch of {where} logged yet"
        text = (f"{self.verdict}: max |Δ train top-1| {100 * self.max_diff:.2f} points at epoch "
                f"{self.worst_epoch} (tolerance {100 * self.tolerance:.2f}) over {where}")
        if self.missing:
            text += f"; epochs {', '.join(map(str, self.missing))} not logged yet"
        return text


def compare_curves(ref_curve, run_curve, first, last, tolerance):
    """The early check on {epoch: train error} dicts over epochs first..last (see module doc)."""
    window = range(first, last + 1)
    checked = [e for e in window if e in ref_curve and e in run_curve]
    missing = [e for e in window if e not in checked]
    diffs = {e: abs(run_curve[e] - ref_curve[e]) for e in checked}
    worst = max(diffs, key=diffs.get) if diffs else None
    max_diff = diffs[worst] if diffs else None
    if max_diff is not None and max_diff > tolerance + _EPS:
        verdict = "FAIL"
    elif missing:
        verdict = "INCOMPLETE"
    else:
        verdict = "PASS"
    return CheckResult(verdict, first, last, tolerance, checked, max_diff, worst, missing)


def early_check(reference, run, fraction, tolerance):
    """Does `run`'s training error stay within `tolerance` of `reference`'s early on?

    Epochs after warmup (of either run) up to fraction × the reference's logged
    epochs; PASS iff |Δ| ≤ tolerance at every one. Raises ValueError when that
    window is empty.
    """
    first, last = check_window(reference.epochs, fraction, _after_warmup(reference, run))
    return compare_curves(reference.curve("train_top1_error"), run.curve("train_top1_error"),
                          first, last, tolerance)

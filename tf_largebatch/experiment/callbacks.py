"""Keras callbacks of the experiment core (not of the recipe): the paper's early check."""

import logging

import keras

from tf_largebatch.experiment import curve_check, runs

logger = logging.getLogger(__name__)


class EarlyCurveCheck(keras.callbacks.Callback):
    """Stops training when the training error leaves the reference's curve early on.

    At each epoch end compares logs["top1_error"] (the train top-1 error, as
    named by run_log.GlobalMetrics, which must come before this callback so
    every worker sees the same averaged value and stops at the same epoch)
    with the reference run's train_top1_error at that epoch, over the epochs
    after warmup (max of the reference's and `warmup_epochs`, this run's) up
    to `fraction` × the reference's logged epochs. Once any epoch differs by
    more than `tolerance` the check has failed (the verdict cannot change):
    it logs why and, with stop=True, sets model.stop_training. After the last
    checked epoch with no such difference it logs that the check passed.
    `result` holds the CheckResult once decided.

    Args:
        reference_dir: the --log_dir of the reference (small-minibatch) run.
        fraction: the check covers epochs up to fraction × the reference's logged epochs.
        tolerance: largest allowed |Δ train top-1 error| (a fraction: 0.02 = 2 points).
        stop: stop training when the check fails (else only log it).
        warmup_epochs: this run's warmup, left out of the check.

    Example:
        >>> model.fit(ds, epochs=90, callbacks=[GlobalMetrics(...),
        ...           EarlyCurveCheck("runs/kn256", fraction=0.3, tolerance=0.02)])
    """

    def __init__(self, reference_dir, fraction, tolerance, stop=True, warmup_epochs=0.0):
        super().__init__()
        reference = runs.load_run(reference_dir)
        self.reference_dir = reference_dir
        self.reference_curve = reference.curve("train_top1_error")
        self.first, self.last = curve_check.check_window(
            reference.epochs, fraction, max(reference.warmup_epochs, warmup_epochs))
        self.tolerance = tolerance
        self.stop = stop
        self.curve = {}
        self.result = None

    def on_epoch_end(self, epoch, logs=None):
        if self.result is not None or logs is None:
            return
        completed = epoch + 1
        if "top1_error" in logs:
            error = float(logs["top1_error"])
        elif "top1" in logs:
            error = 1.0 - float(logs["top1"])
        else:
            raise ValueError("EarlyCurveCheck needs the training top-1 error in the epoch "
                             f"logs ('top1_error'); got keys {sorted(logs)}. Put it after "
                             "run_log.GlobalMetrics.")
        if self.first <= completed <= self.last:
            self.curve[completed] = error
        result = curve_check.compare_curves(self.reference_curve, self.curve, self.first,
                                       min(completed, self.last), self.tolerance)
        if result.verdict == "FAIL":
            self.result = result
            message = (f"early curve check against {self.reference_dir} failed at epoch "
                       f"{completed}: train top-1 error {100 * error:.2f}% vs the "
                       f"reference's {100 * self.reference_curve[completed]:.2f}%. "
                       f"{result.describe()}")
            if self.stop:
                logger.error("%s. Stopping training.", message)
                self.model.stop_training = True
            else:
                logger.warning("%s (stop=False: training continues).", message)
        elif completed >= self.last:
            self.result = curve_check.compare_curves(self.reference_curve, self.curve, self.first,
                                                self.last, self.tolerance)
            if self.result.verdict == "INCOMPLETE":
                logger.warning(
                    "early curve check against %s not decided: epochs %s were not seen "
                    "(training resumed after them?) and the rest were within tolerance",
                    self.reference_dir, ", ".join(map(str, self.result.missing)))
            else:
                logger.info("early curve check against %s: %s", self.reference_dir,
                             self.result.describe())

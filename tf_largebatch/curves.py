"""Training/validation error curves of trainer runs, and the early curve check.

    python -m tf_largebatch.curves RUN_DIR [RUN_DIR ...] [--out=curves.png]
        [--reference=RUN_DIR] [--check_fraction=0.3 --tolerance=0.02]
        [--error_vs_kn=error_vs_kn.png --match_points=1]

Reads each run's `metrics.jsonl` and `flags.json` (written by tf_largebatch.train
in its --log_dir), draws training and validation top-1 error (%) against epochs
side by side (as in Goyal et al. 2017, Fig. 2/4) into a PNG, and prints a
markdown table: run, epochs, final and best validation top-1 error, and the gap
to the reference's training curve. The reference is --reference, else the first
RUN_DIR.

Gap: the mean of |train_top1_error(run) − train_top1_error(reference)| over the
epochs both runs logged that come after warmup, in percentage points. "After
warmup" means epoch > max(reference's warmup epochs, run's warmup epochs), so a
run's own warmup (where its curve is meant to differ) is left out; a run's
warmup counts as 0 epochs when its --warmup is "none".

Early check (--check_fraction=f, --tolerance=t): `experiment.curve_check`; the same check
during training is `experiment.callbacks.EarlyCurveCheck` (the trainers' --reference_run).

Exit codes: 0 all checked runs pass (or no check asked), 1 some run FAILs,
2 bad arguments or a directory that is not a trainer run, 3 no FAIL but some
run INCOMPLETE.

Error vs minibatch size (the paper's Figure 1), with --error_vs_kn=PNG: runs whose
labels agree (same kn, warmup, optimizer, process count) are seeds of one setting; each
setting's final validation error is the mean ± sample standard deviation over its seeds,
drawn against kn on a log axis, one line per warmup kind, with the baseline's mean ± std
(the setting of the reference run) as a band. A second table gives, per setting, the gap
of its mean to the baseline's, whether it matches (|gap| ≤ --match_points), and, with
--check_fraction, the early check of every seed against the reference and whether that
check predicted the match (all seeds PASS ⇔ match).

This module imports neither Keras nor TensorFlow, so the CLI starts fast.

Curve values are fractions (0.25) everywhere in the functions; only the table,
messages and plot show percentages.
"""

import argparse
import dataclasses
import math
import os
import sys

from tf_largebatch.experiment.curve_check import early_check, training_gap
from tf_largebatch.experiment.runs import (
    FLAGS_FILE,
    RunDirError,
    final_val_error,
    load_run,
    unique_labels,
)

_EPS = 1e-9

# ----------------------------------------------------------- error vs kn --


def mean_std(values):
    """(mean, sample standard deviation); the std is None for a single value."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


@dataclasses.dataclass
class Setting:
    """Runs that differ only in their seed: one point of the error-vs-kn figure."""

    label: str
    runs: list

    @property
    def global_batch(self):
        return int(self.runs[0].flags["global_batch"])

    @property
    def series(self):
        """The line it belongs to in the figure: the label without its kn."""
        return self.label.split(", ", 1)[1]

    @property
    def final_errors(self):
        return [final_val_error(r) for r in self.runs]


def group_settings(runs):
    """Settings in order of first appearance; runs without flags.json cannot be grouped."""
    settings = {}
    for run in runs:
        if "global_batch" not in run.flags:
            raise RunDirError(f"{run.path} has no flags.json with global_batch: error vs kn "
                              "needs the runs' flags")
        settings.setdefault(run.label, Setting(run.label, [])).runs.append(run)
    return list(settings.values())


def _mean_pm(values):
    mean, std = mean_std(values)
    return f"{100 * mean:.2f}" + ("" if std is None else f" ± {100 * std:.2f}")


def format_kn_table(settings, baseline, match_points, checks=None):
    """Markdown table: kn, setting, seeds, final val top-1 mean ± std, gap to the baseline's
    mean, match (|gap| ≤ match_points), and with `checks` ({run path: CheckResult}) the early
    check of every seed and whether it predicted the match."""
    base_mean, _ = mean_std(baseline.final_errors)
    head = "| kn | setting | seeds | final val top-1 (%) | gap to baseline (points) | match |"
    rule = "|---:|---|---:|---:|---:|---|"
    if checks is not None:
        head += " early check | predicted |"
        rule += "---|---|"
    lines = [head, rule]
    for setting in sorted(settings, key=lambda s: (s.series, s.global_batch)):
        mean, _ = mean_std(setting.final_errors)
        row = (f"| {setting.global_batch} | {setting.series} | {len(setting.runs)} "
               f"| {_mean_pm(setting.final_errors)} |")
        if setting is baseline:
            row += " (baseline) | – |"
            row += " – | – |" if checks is not None else ""
            lines.append(row)
            continue
        gap = 100 * (mean - base_mean)
        match = abs(gap) <= match_points + _EPS
        row += f" {gap:+.2f} | {'yes' if match else 'no'} |"
        if checks is not None:
            verdicts = [checks[r.path].verdict for r in setting.runs]
            verdict = ("FAIL" if "FAIL" in verdicts else "INCOMPLETE" if "INCOMPLETE" in verdicts
                       else "PASS")
            predicted = "–" if verdict == "INCOMPLETE" else (
                "yes" if (verdict == "PASS") == match else "no")
            row += f" {verdict} | {predicted} |"
        lines.append(row)
    return "\n".join(lines)


def plot_error_vs_kn(settings, baseline, out):
    """Final validation error (%) vs kn (log axis), one line per series, error bars = std over
    seeds, and the baseline's mean ± std as a band (the paper's Figure 1)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    mean, std = mean_std(baseline.final_errors)
    ax.axhspan(100 * (mean - (std or 0)), 100 * (mean + (std or 0)), color="0.85",
               label=f"baseline kn={baseline.global_batch}: {_mean_pm(baseline.final_errors)}%")
    ax.axhline(100 * mean, color="0.5", linewidth=1)
    series = sorted({s.series for s in settings}, key=lambda name: name != baseline.series)
    for i, name in enumerate(series):
        points = sorted((s for s in settings if s.series == name), key=lambda s: s.global_batch)
        stats = [mean_std(s.final_errors) for s in points]
        ax.errorbar([s.global_batch for s in points], [100 * m for m, _ in stats],
                    yerr=[100 * (d or 0) for _, d in stats], color=f"C{i % 10}", marker="o",
                    markersize=4, capsize=3, label=name)
    kns = sorted({s.global_batch for s in settings})
    ax.set_xscale("log", base=2)
    ax.set_xticks(kns, [str(k) for k in kns])
    ax.set_xlabel("minibatch size kn")
    ax.set_ylabel("final validation top-1 error (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


# ------------------------------------------------------------- reporting --


def _pct(value):
    return "–" if value is None else f"{100 * value:.2f}"


def format_table(runs, labels=None):
    """Markdown table; runs[0] is the reference."""
    labels = labels or unique_labels(runs)
    lines = ["| run | epochs | final val top-1 (%) | best val top-1 (%) "
             "| train-error gap to reference (points) |",
             "|---|---:|---:|---:|---:|"]
    for i, (run, label) in enumerate(zip(runs, labels, strict=True)):
        val = run.curve("val_top1_error")
        final = val[max(val)] if val else None
        best = min(val.values()) if val else None
        gap = "(reference)" if i == 0 else _pct(training_gap(runs[0], run))
        lines.append(f"| {label} | {run.epochs} | {_pct(final)} | {_pct(best)} | {gap} |")
    return "\n".join(lines)


def plot_curves(runs, out, labels=None):
    """Training and validation top-1 error (%) vs epochs, two panels, saved to `out`."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    labels = labels or unique_labels(runs)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for i, (run, label) in enumerate(zip(runs, labels, strict=True)):
        color = f"C{i % 10}"
        for ax, key in zip(axes, ("train_top1_error", "val_top1_error"), strict=True):
            curve = run.curve(key)
            if not curve:
                continue
            epochs = sorted(curve)
            ax.plot(epochs, [100 * curve[e] for e in epochs], color=color, label=label,
                    linewidth=1.5, marker="o" if len(epochs) <= 30 else None, markersize=3)
    for ax, title in zip(axes, ("training error", "validation error"), strict=True):
        ax.set_title(title)
        ax.set_xlabel("epochs")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("top-1 error (%)")
    axes[0].legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


# -------------------------------------------------------------------- CLI --


def _fraction(text):
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def _tolerance(text):
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be ≥ 0, got {text}")
    return value


def _parser():
    p = argparse.ArgumentParser(
        prog="python -m tf_largebatch.curves",
        description="Plot error curves of tf_largebatch.train runs and compare them with a "
                    "reference run (the first RUN_DIR, or --reference).")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="a train run's --log_dir")
    p.add_argument("--out", default="curves.png", help="PNG to write (default: curves.png)")
    p.add_argument("--reference", help="reference run (default: the first RUN_DIR)")
    p.add_argument("--check_fraction", type=_fraction,
                   help="early check over epochs after warmup up to this fraction of the "
                        "reference's epochs; exit 1 if a run fails it")
    p.add_argument("--tolerance", type=_tolerance, default=0.02,
                   help="largest allowed |Δ train top-1 error| at any checked epoch, as a "
                        "fraction (default 0.02 = 2 points)")
    p.add_argument("--error_vs_kn", metavar="PNG",
                   help="also draw final validation error vs kn (seeds averaged; the "
                        "reference's setting is the baseline) and print its table")
    p.add_argument("--match_points", type=_tolerance, default=1.0,
                   help="a setting matches the baseline when its mean final validation error "
                        "is within this many points of the baseline's (default 1)")
    return p


def main(argv=None):
    args = _parser().parse_args(argv)
    paths = list(args.run_dirs)
    if args.reference:
        paths = [args.reference] + paths
    # A run named twice (the reference first, then again in a glob) counts once.
    first = {}
    for path in paths:
        first.setdefault(os.path.realpath(path), path)
    paths = list(first.values())
    try:
        runs = [load_run(p) for p in paths]
    except (RunDirError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for run in runs:
        if not run.flags:
            print(f"note: {run.path} has no {FLAGS_FILE}: labelled by its directory name, "
                  "warmup taken as 0 epochs", file=sys.stderr)
    labels = unique_labels(runs)

    plot_curves(runs, args.out, labels)
    print(format_table(runs, labels))
    print(f"\nReference: {labels[0]} ({runs[0].path}). Figure: {args.out}")

    verdicts, checks = [], {}
    if args.check_fraction is not None and len(runs) == 1:
        print("Early check: no run besides the reference; nothing to check.")
    elif args.check_fraction is not None:
        print(f"\nEarly check: |Δ train top-1| ≤ {100 * args.tolerance:.2f} points at every "
              f"epoch after warmup up to {args.check_fraction:g} × the reference's "
              f"{runs[0].epochs} epochs")
        for run, label in zip(runs[1:], labels[1:], strict=True):
            try:
                result = early_check(runs[0], run, args.check_fraction, args.tolerance)
            except ValueError as e:
                print(f"error: {label}: {e}", file=sys.stderr)
                return 2
            verdicts.append(result.verdict)
            checks[run.path] = result
            print(f"- {label}: {result.describe()}")
    if args.error_vs_kn:
        try:
            settings = group_settings(runs)
            baseline = next(s for s in settings if runs[0] in s.runs)
            checks = checks if args.check_fraction is not None else None
            table = format_kn_table(settings, baseline, args.match_points, checks)
            plot_error_vs_kn(settings, baseline, args.error_vs_kn)
        except (RunDirError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"\nFinal validation error vs kn (match: within {args.match_points:g} "
              f"point{'' if args.match_points == 1 else 's'} of "
              f"the baseline's mean). Figure: {args.error_vs_kn}\n{table}")
    if "FAIL" in verdicts:
        return 1
    return 3 if "INCOMPLETE" in verdicts else 0


if __name__ == "__main__":
    sys.exit(main())

"""Training/validation error curves of trainer runs, and the early curve check.

    python -m tf_largebatch.curves RUN_DIR [RUN_DIR ...] [--out=curves.png]
        [--reference=RUN_DIR] [--check_fraction=0.3 [--tolerance=0.014]]
        [--panels=panels.png] [--error_vs_kn=error_vs_kn.png --match_points=1]

Reads each run's `metrics.jsonl` and `flags.json` (written by tf_largebatch.train
in its --log_dir), draws training and validation top-1 error (%) against epochs
side by side into a PNG (--out; default curves.png, not drawn when only --panels is
asked), and prints a markdown table: run, epochs, final and best validation top-1
error, and the gap to the reference's training curve. The reference is --reference,
else the first RUN_DIR; its setting is the baseline.

Gap: the mean of |train_top1_error(run) − train_top1_error(reference)| over the
epochs both runs logged that come after warmup, in percentage points. "After
warmup" means epoch > max(reference's warmup epochs, run's warmup epochs), so a
run's own warmup (where its curve is meant to differ) is left out; a run's
warmup counts as 0 epochs when its --warmup is "none".

Settings: runs whose flags.json agree on kn (simulate_workers × processes ×
per_worker_batch), warmup kind, optimizer, process count and planned --epochs are
seeds of one setting, so a 48-epoch run is another setting than a 16-epoch one. The
baseline of a setting is the baseline's kn, warmup and optimizer at the setting's own
--epochs (none when those runs are not given).

Small multiples (the paper's Figures 2/3), with --panels=PNG: one panel per setting
besides the baselines, rows by series (warmup kind, optimizer, budget), each showing
the setting's and its baseline's training error against epochs: the mean over seeds,
with a band from the lowest to the highest seed where there are several; the title
gives the final validation errors (means over seeds). One colour per kn (`kn_color`)
in every figure.

Early check (--check_fraction=f, --tolerance=t): `experiment.curve_check`; the same check
during training is `experiment.callbacks.EarlyCurveCheck` (the trainers' --reference_run).
Each run is checked against the baseline run of its own budget (the reference, or the
lowest seed of the baseline at another --epochs). Without --tolerance it is derived
from the baseline's seeds (`derive_tolerance`):

    σ² = mean over the window's epochs e of s_e², s_e² the sample variance of the
         baseline seeds' training errors at epoch e (epochs every seed logged);
    t  = 2·√2·σ,

two standard deviations of the difference between two independent baseline runs
(the check compares one run with one reference run, both with variance σ²). With
fewer than two seeds t = FALLBACK_TOLERANCE (0.014: 2·√2 × 0.505 points, σ of the
CIFAR-10 study's three kn=128 seeds over epochs 2–5; the trainer's --check_tolerance).

Exit codes: 0 all checked runs pass (or no check asked), 1 some run FAILs,
2 bad arguments or a directory that is not a trainer run, 3 no FAIL but some
run INCOMPLETE.

Error vs minibatch size (the paper's Figure 1), with --error_vs_kn=PNG: each setting's
final validation error is the mean ± sample standard deviation over its seeds, drawn
against kn on a log axis, one series per warmup kind, optimizer and budget (own marker
and line style, points in their kn's colour), with each budget's baseline mean ± std as
a band. A second table gives, per setting, the gap of its mean to its baseline's,
whether it matches (|gap| ≤ --match_points), and, with --check_fraction, the early
check of every seed and whether that check predicted the match (all seeds PASS ⇔
match), followed by how many settings it predicted.

This module imports neither Keras nor TensorFlow, so the CLI starts fast.

Curve values are fractions (0.25) everywhere in the functions; only the table,
messages and plot show percentages.
"""

import argparse
import dataclasses
import math
import os
import sys

from tf_largebatch.experiment.curve_check import check_window, early_check, training_gap
from tf_largebatch.experiment.runs import (
    FLAGS_FILE,
    RunDirError,
    final_val_error,
    load_run,
    unique_labels,
)

_EPS = 1e-9
TRAIN = "train_top1_error"
# The early check's tolerance when the baseline has a single seed (see the module doc).
FALLBACK_TOLERANCE = 0.014
TOLERANCE_SIGMAS = 2 * math.sqrt(2)

# ------------------------------------------------------------ settings --


def run_kn(run):
    """kn = simulate_workers × processes × per_worker_batch (flags.json's global_batch for
    logs without those flags)."""
    flags = run.flags
    if {"simulate_workers", "per_worker_batch"} <= flags.keys():
        return (int(flags["simulate_workers"]) * int(flags.get("processes", 1))
                * int(flags["per_worker_batch"]))
    return int(flags["global_batch"])


def planned_epochs(run):
    """The run's --epochs (its logged epochs when flags.json lacks it)."""
    return int(run.flags.get("epochs", run.epochs))


def mean_std(values):
    """(mean, sample standard deviation); the std is None for a single value."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


@dataclasses.dataclass
class Setting:
    """Runs that differ only in their seed: one point of the error-vs-kn figure, one panel."""

    kn: int
    kind: str  # warmup kind, optimizer, processes: "gradual warmup", "no warmup + LARS", ...
    epochs: int  # planned --epochs
    runs: list
    name_budget: bool = False  # add ", E epochs" to the series (when budgets differ)

    @property
    def global_batch(self):
        return self.kn

    @property
    def series(self):
        """The line it belongs to in the figure: everything but its kn."""
        return self.kind + (f", {self.epochs} epochs" if self.name_budget else "")

    @property
    def label(self):
        return f"kn={self.kn}, {self.series}"

    @property
    def final_errors(self):
        return [final_val_error(r) for r in self.runs]

    @property
    def running(self):
        """Whether some seed has not logged all its epochs yet."""
        return any(r.epochs < self.epochs for r in self.runs)


def group_settings(runs):
    """Settings in order of first appearance; runs without flags.json cannot be grouped."""
    settings = {}
    for run in runs:
        if "global_batch" not in run.flags:
            raise RunDirError(f"{run.path} has no flags.json with global_batch: settings "
                              "need the runs' flags")
        key = (run_kn(run), run.label.split(", ", 1)[1], planned_epochs(run))
        settings.setdefault(key, Setting(*key, [])).runs.append(run)
    settings = list(settings.values())
    if len({s.epochs for s in settings}) > 1:
        for setting in settings:
            setting.name_budget = True
    return settings


def budget_baseline(settings, baseline, epochs):
    """The baseline's kn, warmup and optimizer at `epochs` epochs; None if not among them."""
    return next((s for s in settings
                 if (s.kn, s.kind, s.epochs) == (baseline.kn, baseline.kind, epochs)), None)


def _warmup_kind(setting):
    """"gradual", "constant" or "none" (also for a warmup of 0 epochs)."""
    return "none" if setting.kind.startswith("no warmup") else setting.runs[0].flags["warmup"]


def series_order(settings):
    """Series names, budget first, then gradual, no, constant warmup, then LARS."""
    warmups = ("gradual", "none", "constant")

    def key(setting):
        warmup = _warmup_kind(setting)
        return (setting.epochs, setting.runs[0].flags.get("optimizer") == "lars",
                warmups.index(warmup) if warmup in warmups else 3, setting.series)

    return list(dict.fromkeys(s.series for s in sorted(settings, key=key)))


# ---------------------------------------------------------- seed curves --


def seed_band(runs, key=TRAIN):
    """{epoch: (mean, min, max)} of the runs' `key` curves at the epochs every run logged."""
    curves = [r.curve(key) for r in runs]
    shared = sorted(set.intersection(*(set(c) for c in curves)))
    return {e: (sum(c[e] for c in curves) / len(curves), min(c[e] for c in curves),
                max(c[e] for c in curves)) for e in shared}


def seed_sigma(curves, first, last):
    """Pooled sample std of {epoch: value} curves (one per seed) over epochs first..last:
    sqrt(mean over the epochs every curve logged of the sample variance across curves).
    Returns (σ, epochs used); σ is None with fewer than two curves or no shared epoch."""
    epochs = [e for e in range(first, last + 1) if all(e in c for c in curves)]
    if len(curves) < 2 or not epochs:
        return None, epochs
    variances = [mean_std([c[e] for c in curves])[1] ** 2 for e in epochs]
    return math.sqrt(sum(variances) / len(variances)), epochs


def derive_tolerance(curves, first, last):
    """The early check's tolerance from the baseline seeds' training-error curves over epochs
    first..last: (2·√2·σ, why) with σ from `seed_sigma`, or (FALLBACK_TOLERANCE, why) when σ
    is undefined (one seed)."""
    sigma, used = seed_sigma(curves, first, last)
    if sigma is None:
        return FALLBACK_TOLERANCE, "the fallback constant: the baseline has one seed"
    return TOLERANCE_SIGMAS * sigma, (
        f"2·√2 × σ = {100 * sigma:.3f} points, the pooled std of the training error across "
        f"the baseline's {len(curves)} seeds over epochs {used[0]}–{used[-1]}")


# --------------------------------------------------------- early checks --


@dataclasses.dataclass
class CheckPlan:
    """The early check of the runs of one budget: against `reference`, within `tolerance`."""

    epochs: int
    reference: object
    tolerance: float
    why: str  # how the tolerance was chosen, for the printout
    runs: list  # the runs checked (not the reference)


def plan_checks(runs, fraction, tolerance=None):
    """One CheckPlan per budget (planned --epochs) that holds a baseline run.

    runs[0] is the reference and its label (kn, warmup, optimizer) the baseline's. At
    runs[0]'s budget the reference is runs[0]; at another, the baseline's lowest seed
    there. Runs without flags.json count as runs[0]'s budget and as no seed of it. Runs
    of a budget without a baseline run are not checked. `tolerance` None: `derive_tolerance`
    from that budget's baseline seeds over the check window.
    """
    first_run = runs[0]
    home = planned_epochs(first_run)

    def budget(run):
        return planned_epochs(run) if run.flags else home

    def is_baseline(run):
        return run is first_run or bool(run.flags and first_run.flags
                                        and run.label == first_run.label)

    plans = []
    for epochs in dict.fromkeys(budget(r) for r in runs):
        members = [r for r in runs if budget(r) == epochs]
        seeds = [r for r in members if is_baseline(r)]
        if not seeds:
            continue
        reference = first_run if epochs == home else min(
            seeds, key=lambda r: r.flags.get("seed", 0))
        value, why = tolerance, "given with --tolerance"
        if tolerance is None:
            first, last = check_window(reference.epochs, fraction, reference.warmup_epochs)
            value, why = derive_tolerance([r.curve(TRAIN) for r in seeds], first, last)
        plans.append(CheckPlan(epochs, reference, value, why,
                               [r for r in members if r is not reference]))
    return plans


# ----------------------------------------------------------- error vs kn --


def _mean_pm(values):
    mean, std = mean_std(values)
    return f"{100 * mean:.2f}" + ("" if std is None else f" ± {100 * std:.2f}")


def outcome(setting, baseline, match_points, checks=None):
    """(gap to the baseline's mean in points, match, early-check verdict, predicted) of a
    setting against `baseline` (its budget's); None where there is no baseline or check."""
    if baseline is None:
        return None, None, None, None
    gap = 100 * (mean_std(setting.final_errors)[0] - mean_std(baseline.final_errors)[0])
    match = abs(gap) <= match_points + _EPS
    verdicts = [checks[r.path].verdict for r in setting.runs if r.path in (checks or {})]
    if len(verdicts) < len(setting.runs):
        return gap, match, None, None
    verdict = ("FAIL" if "FAIL" in verdicts else "INCOMPLETE" if "INCOMPLETE" in verdicts
               else "PASS")
    predicted = None if verdict == "INCOMPLETE" else (verdict == "PASS") == match
    return gap, match, verdict, predicted


def _is_a_baseline(setting, baseline):
    return (setting.kn, setting.kind) == (baseline.kn, baseline.kind)


def format_kn_table(settings, baseline, match_points, checks=None):
    """Markdown table, rows in `series_order` then kn: kn, setting, seeds, final val top-1
    mean ± std (* while a seed runs), gap to the mean of the baseline at the same budget,
    match (|gap| ≤ match_points), and with `checks` ({run path: CheckResult}) the early
    check of every seed and whether it predicted the match."""
    head = "| kn | setting | seeds | final val top-1 (%) | gap to baseline (points) | match |"
    rule = "|---:|---|---:|---:|---:|---|"
    if checks is not None:
        head += " early check | predicted |"
        rule += "---|---|"
    lines = [head, rule]
    order = series_order(settings)
    for setting in sorted(settings, key=lambda s: (order.index(s.series), s.kn)):
        running = "*" if setting.running else ""
        row = f"| {setting.kn} | {setting.series} | {len(setting.runs)} " \
              f"| {_mean_pm(setting.final_errors)}{running} |"
        base = budget_baseline(settings, baseline, setting.epochs)
        if _is_a_baseline(setting, baseline) or base is None:
            row += " (baseline) | – |" if base is setting else " (no baseline) | – |"
            lines.append(row + (" – | – |" if checks is not None else ""))
            continue
        gap, match, verdict, predicted = outcome(setting, base, match_points, checks)
        row += f" {gap:+.2f} | {'yes' if match else 'no'} |"
        if checks is not None:
            shown = "–" if predicted is None else "yes" if predicted else "no"
            row += f" {verdict or '–'} | {shown} |"
        lines.append(row)
    if any(s.running for s in settings):
        lines.append("\n\\* a seed still running: its last logged validation error.")
    return "\n".join(lines)


def count_predicted(settings, baseline, match_points, checks):
    """(settings whose early check predicted the match, settings with a decided check)."""
    predictions = [outcome(s, budget_baseline(settings, baseline, s.epochs), match_points,
                           checks)[3]
                   for s in settings if not _is_a_baseline(s, baseline)]
    decided = [p for p in predictions if p is not None]
    return sum(decided), len(decided)


# ------------------------------------------------------------- drawing --


def kn_color(kn):
    """The colour of minibatch size kn in every figure: matplotlib's tab10 colour number
    round(log2 kn) mod 10, so kn = 64 … 32768 get ten different colours (128 grey)."""
    return f"C{round(math.log2(kn)) % 10}"


_MARKERS = {"gradual": "o", "none": "s", "constant": "^"}
_LINESTYLES = ("-", "--", ":", "-.")


def _marker(setting):
    """The series' marker: its warmup kind's, a diamond for LARS."""
    if setting.runs[0].flags.get("optimizer") == "lars":
        return "D"
    return _MARKERS.get(_warmup_kind(setting), "v")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt


def _log_error_axis(ax):
    """A log y axis with plain percent ticks (shared by every panel): it spreads the last
    epochs' few points of difference that a linear 20–90% axis squeezes together."""
    from matplotlib.ticker import FixedLocator, NullFormatter, ScalarFormatter

    ax.set_yscale("log")
    ax.yaxis.set_major_locator(FixedLocator([10, 15, 20, 25, 30, 40, 50, 60, 80, 100]))
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(NullFormatter())


def _draw_baseline_bands(ax, settings, baseline, style):
    """Each budget's baseline: mean ± std over seeds as a band (hatched after the first
    budget) and its mean as a line in the budget's line style; returns legend handles."""
    from matplotlib.patches import Patch

    handles = []
    for i, epochs in enumerate(style):
        base = budget_baseline(settings, baseline, epochs)
        if base is None:
            continue
        mean, std = mean_std(base.final_errors)
        color, hatch = kn_color(base.kn), None if i == 0 else "//"
        ax.axhspan(100 * (mean - (std or 0)), 100 * (mean + (std or 0)), facecolor=color,
                   edgecolor=color, alpha=0.2, hatch=hatch, linewidth=0)
        ax.axhline(100 * mean, color=color, linewidth=1, linestyle=style[epochs])
        seeds = f"± std, {len(base.runs)} seeds" if std is not None else "1 seed"
        handles.append(Patch(facecolor=color, edgecolor=color, alpha=0.35, hatch=hatch,
                             label=f"baseline kn={base.kn}, {epochs} epochs: "
                                   f"{_mean_pm(base.final_errors)}% ({seeds})"))
    return handles


def _draw_series(ax, settings, style):
    """One grey line per series through its settings' means, a marker per setting in its kn's
    colour with the std over seeds as error bar; returns legend handles."""
    from matplotlib.lines import Line2D

    handles = []
    names = series_order(settings)
    for i, name in enumerate(names):
        points = sorted((s for s in settings if s.series == name), key=lambda s: s.kn)
        stats = [mean_std(s.final_errors) for s in points]
        marker, linestyle = _marker(points[0]), style[points[0].epochs]
        # Series side by side at each kn (a few % of a doubling apart), so no marker hides.
        xs = [s.kn * 2 ** (0.05 * (i - (len(names) - 1) / 2)) for s in points]
        ax.plot(xs, [100 * m for m, _ in stats], color="0.35", linestyle=linestyle,
                linewidth=1, zorder=2)
        for x, setting, (mean, std) in zip(xs, points, stats, strict=True):
            ax.errorbar([x], [100 * mean], yerr=[100 * (std or 0)], color=kn_color(setting.kn),
                        marker=marker, markersize=7, markeredgecolor="black",
                        markeredgewidth=0.6, capsize=3, linestyle="none", zorder=3)
        handles.append(Line2D([], [], color="0.35", linestyle=linestyle, marker=marker,
                              markerfacecolor="white", markeredgecolor="black", label=name))
    return handles


def plot_error_vs_kn(settings, baseline, out):
    """Final validation error (%) vs kn (log axes), the paper's Figure 1: `_draw_series` (marker
    by warmup kind or LARS, line style by budget, colour by kn) over `_draw_baseline_bands`,
    one legend below. Returns the (closed) Figure."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 6), layout="constrained")
    style = {e: _LINESTYLES[i % len(_LINESTYLES)]
             for i, e in enumerate(sorted({s.epochs for s in settings}))}
    handles = _draw_baseline_bands(ax, settings, baseline, style)
    handles += _draw_series(ax, settings, style)
    kns = sorted({s.kn for s in settings})
    ax.set_xscale("log", base=2)
    ax.set_xticks(kns, [str(k) for k in kns])
    ax.minorticks_off()
    _log_error_axis(ax)
    ax.set_xlabel("minibatch size kn (marker colour: kn, as in the curves figure)")
    ax.set_ylabel("final validation top-1 error (%, log scale)")
    ax.grid(alpha=0.3)
    fig.legend(handles=handles, loc="outside lower center", ncol=2, fontsize="small",
               frameon=False)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return fig


def _draw_seeds(ax, runs, color):
    """Mean training error over the runs (%), and the band min..max where there are two."""
    band = seed_band(runs)
    epochs = sorted(band)
    if len(runs) > 1:
        ax.fill_between(epochs, [100 * band[e][1] for e in epochs],
                        [100 * band[e][2] for e in epochs], color=color, alpha=0.35,
                        linewidth=0)
    ax.plot(epochs, [100 * band[e][0] for e in epochs], color=color, linewidth=1.3)


def _final(setting):
    mean, _ = mean_std(setting.final_errors)
    return f"{100 * mean:.2f}%" + ("*" if setting.running else "")


def panel_title(setting, base):
    """'kn=1024, no warmup (3 seeds)' over 'val 25.78% · baseline 23.17%' (means over seeds;
    * marks a setting with a seed still running: its last logged epoch)."""
    seeds = f" ({len(setting.runs)} seeds)" if len(setting.runs) > 1 else ""
    vals = f"val {_final(setting)}"
    vals += f" · baseline {_final(base)}" if base is not None else " · no baseline"
    return f"{setting.label}{seeds}\n{vals}"


def panel_grid(settings, baseline, columns=3):
    """[[Setting, ...], ...]: the panels' rows, each series starting a row, kn ascending,
    wrapped after `columns` (fewer when no series has that many); baselines left out."""
    others = [s for s in settings if not _is_a_baseline(s, baseline)]
    rows = []
    for name in series_order(others):
        row = sorted((s for s in others if s.series == name), key=lambda s: s.kn)
        rows += [row[i:i + columns] for i in range(0, len(row), columns)]
    return rows


def plot_panels(settings, baseline, out, columns=3):
    """Small multiples of training error (%) vs epochs (the paper's Figures 2/3): one panel per
    setting (`panel_grid`) with its budget's baseline, seeds as bands min..max around their
    mean, titled by `panel_title`; one legend below the panels. Returns the (closed) Figure."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    grid = panel_grid(settings, baseline, columns)
    if not grid:
        raise ValueError("no setting besides the baseline: nothing to draw in panels")
    ncols = max(len(row) for row in grid)
    fig, axes = plt.subplots(len(grid), ncols, figsize=(3.3 * ncols, 2.5 * len(grid) + 0.9),
                             sharey=True, squeeze=False, layout="constrained")
    for row, row_axes in zip(grid, axes, strict=True):
        for ax, setting in zip(row_axes, row + [None] * (ncols - len(row)), strict=True):
            if setting is None:
                ax.set_visible(False)
                continue
            base = budget_baseline(settings, baseline, setting.epochs)
            if base is not None:
                _draw_seeds(ax, base.runs, kn_color(base.kn))
            _draw_seeds(ax, setting.runs, kn_color(setting.kn))
            ax.set_title(panel_title(setting, base), fontsize=9)
            ax.set_xlim(0, setting.epochs)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            ax.set_xlabel("epochs", fontsize=8)
            ax.tick_params(labelsize=8)
        row_axes[0].set_ylabel("training error (%, log scale)", fontsize=9)
    _log_error_axis(axes[0][0])
    kns = sorted({s.kn for s in settings})
    handles = [Line2D([], [], color=kn_color(kn), linewidth=2,
                      label=f"kn={kn}" + (" (baseline)" if kn == baseline.kn else ""))
               for kn in kns]
    note = "lines: mean over seeds; bands: lowest to highest seed"
    if any(s.running for s in settings):
        note += "; * a seed still running (its last logged epoch)"
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 8),
               fontsize="small", frameon=False, title=note, title_fontsize="small")
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return fig


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


def _run_styles(runs):
    """(colour, line style) per run: its kn's colour, line styles cycling among the runs that
    share one; runs without flags.json get tab10 colours in order."""
    styles, seen = [], {}
    for i, run in enumerate(runs):
        color = kn_color(run_kn(run)) if "global_batch" in run.flags else f"C{i % 10}"
        seen[color] = seen.get(color, -1) + 1
        styles.append((color, _LINESTYLES[seen[color] % len(_LINESTYLES)]))
    return styles


def plot_curves(runs, out, labels=None):
    """Training and validation top-1 error (%) vs epochs, two panels (colours by kn, line
    styles apart within a colour), one legend below them, saved to `out`."""
    plt = _pyplot()
    labels = labels or unique_labels(runs)
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), sharey=True, layout="constrained")
    for run, label, (color, linestyle) in zip(runs, labels, _run_styles(runs), strict=True):
        for ax, key in zip(axes, (TRAIN, "val_top1_error"), strict=True):
            curve = run.curve(key)
            if not curve:
                continue
            epochs = sorted(curve)
            ax.plot(epochs, [100 * curve[e] for e in epochs], color=color, label=label,
                    linestyle=linestyle, linewidth=1.5,
                    marker="o" if len(epochs) <= 30 else None, markersize=3)
    for ax, title in zip(axes, ("training error", "validation error"), strict=True):
        ax.set_title(title)
        ax.set_xlabel("epochs")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("top-1 error (%)")
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncol=min(len(names), 3),
               fontsize="small", frameon=False)
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
    p.add_argument("--out", help="PNG of every run's training and validation curves (default: "
                                 "curves.png; not drawn when --panels is given without it)")
    p.add_argument("--reference", help="reference run (default: the first RUN_DIR); its "
                                       "setting is the baseline, its seeds are found by flags")
    p.add_argument("--panels", metavar="PNG",
                   help="small multiples: one panel per setting with its baseline (seeds "
                        "as bands), final validation errors in the titles")
    p.add_argument("--check_fraction", type=_fraction,
                   help="early check over epochs after warmup up to this fraction of the "
                        "reference's epochs; exit 1 if a run fails it")
    p.add_argument("--tolerance", type=_tolerance,
                   help="largest allowed |Δ train top-1 error| at any checked epoch, as a "
                        "fraction (default: 2·√2 × the baseline seeds' pooled std over the "
                        f"window, or {FALLBACK_TOLERANCE} with one seed)")
    p.add_argument("--error_vs_kn", metavar="PNG",
                   help="also draw final validation error vs kn (seeds averaged; the "
                        "reference's setting is the baseline) and print its table")
    p.add_argument("--match_points", type=_tolerance, default=1.0,
                   help="a setting matches the baseline when its mean final validation error "
                        "is within this many points of the baseline's (default 1)")
    return p


def _early_checks(runs, labels, fraction, tolerance):
    """Prints and returns {run path: CheckResult} of every run against its budget's
    reference; ValueError (with the run's label) when a window is empty."""
    label_of = {id(run): label for run, label in zip(runs, labels, strict=True)}
    checks = {}
    plans = plan_checks(runs, fraction, tolerance)
    for plan in plans:
        ref = plan.reference
        budget = f" ({plan.epochs}-epoch runs)" if len(plans) > 1 else ""
        print(f"\nEarly check{budget}: |Δ train top-1| ≤ {100 * plan.tolerance:.2f} points at "
              f"every epoch after warmup up to {fraction:g} × the reference's "
              f"{ref.epochs} epochs\nTolerance: {plan.why}."
              + (f" Reference: {label_of[id(ref)]}." if ref is not runs[0] else ""))
        for run in plan.runs:
            try:
                result = early_check(ref, run, fraction, plan.tolerance)
            except ValueError as e:
                raise ValueError(f"{label_of[id(run)]}: {e}") from None
            checks[run.path] = result
            print(f"- {label_of[id(run)]}: {result.describe()}")
    checked = {id(p.reference) for p in plans} | {id(r) for p in plans for r in p.runs}
    for run in runs:
        if id(run) not in checked:
            print(f"- {label_of[id(run)]}: not checked (no baseline run at its "
                  f"{planned_epochs(run)} epochs)")
    return checks


def _kn_figures(args, runs, checks):
    """The settings' table (printed), --error_vs_kn and --panels; RunDirError/ValueError."""
    settings = group_settings(runs)
    baseline = next(s for s in settings if runs[0] in s.runs)
    if args.panels:
        plot_panels(settings, baseline, args.panels)
        print(f"\nPanels: {args.panels}")
    if not args.error_vs_kn:
        return
    table = format_kn_table(settings, baseline, args.match_points, checks)
    plot_error_vs_kn(settings, baseline, args.error_vs_kn)
    print(f"\nFinal validation error vs kn (match: within {args.match_points:g} "
          f"point{'' if args.match_points == 1 else 's'} of the mean of the baseline at the "
          f"same epochs). Figure: {args.error_vs_kn}\n{table}")
    if checks is not None:
        predicted, decided = count_predicted(settings, baseline, args.match_points, checks)
        print(f"\nThe early check predicted {predicted} of {decided} settings "
              "(all seeds PASS ⇔ match).")


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

    out = args.out or (None if args.panels else "curves.png")
    if out:
        plot_curves(runs, out, labels)
    print(format_table(runs, labels))
    print(f"\nReference: {labels[0]} ({runs[0].path})." + (f" Figure: {out}" if out else ""))

    checks = None
    if args.check_fraction is not None and len(runs) == 1:
        print("Early check: no run besides the reference; nothing to check.")
    elif args.check_fraction is not None:
        try:
            checks = _early_checks(runs, labels, args.check_fraction, args.tolerance)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    if args.error_vs_kn or args.panels:
        try:
            _kn_figures(args, runs, checks)
        except (RunDirError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    verdicts = [c.verdict for c in (checks or {}).values()]
    if "FAIL" in verdicts:
        return 1
    return 3 if "INCOMPLETE" in verdicts else 0


if __name__ == "__main__":
    sys.exit(main())

"""tf_largebatch.curves on small hand-made run logs (expected values worked out by hand)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from matplotlib.colors import to_rgba

from tf_largebatch import curves
from tf_largebatch.experiment import curve_check, runs

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]


def write_run(path, train_errors, warmup="gradual", warmup_epochs=2, global_batch=256,
              optimizer="sgd", val_errors=None, flags=True, epochs=None, seed=0):
    """A run directory as tf_largebatch.train leaves it: metrics.jsonl (+ flags.json);
    `epochs`: the planned --epochs (default: the epochs logged)."""
    path.mkdir(parents=True)
    with open(path / "metrics.jsonl", "w") as f:
        for i, err in enumerate(train_errors):
            val = None if val_errors is None else val_errors[i]
            f.write(json.dumps({
                "epoch": i + 1, "step": 10 * (i + 1), "lr": 0.1, "train_loss": 2.0,
                "train_top1_error": err, "val_loss": None if val is None else 2.0,
                "val_top1_error": val, "val_top5_error": None if val is None else val / 2,
                "images_per_sec": 1000.0, "wall_s": 1.0 * (i + 1)}) + "\n")
    if flags:
        with open(path / "flags.json", "w") as f:
            json.dump({"workers": global_batch // 32, "simulate_workers": global_batch // 32,
                       "processes": 1, "per_worker_batch": 32,
                       "global_batch": global_batch, "warmup": warmup,
                       "warmup_epochs": warmup_epochs, "optimizer": optimizer, "seed": seed,
                       "epochs": epochs or len(train_errors)}, f)
    return str(path)


def cli(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "tf_largebatch.curves", *map(str, args)], capture_output=True,
        text=True, timeout=120, cwd=cwd,
        env=dict(os.environ, PYTHONPATH=str(ROOT), MPLBACKEND="Agg"))


REF = [0.9, 0.7, 0.5, 0.4, 0.3]
RUN = [0.95, 0.75, 0.52, 0.43, 0.31]


def test_training_gap_after_reference_warmup(tmp_path):
    ref = curves.load_run(write_run(tmp_path / "ref", REF, warmup_epochs=2))
    run = curves.load_run(write_run(tmp_path / "run", RUN, warmup="none", warmup_epochs=0,
                                    global_batch=8192))
    # Epochs 3..5: |0.52-0.5|, |0.43-0.4|, |0.31-0.3| = 0.02, 0.03, 0.01 → mean 0.02.
    assert curves.training_gap(ref, run) == pytest.approx(0.02)
    assert "| kn=8192, no warmup | 5 | – | – | 2.00 |" in curves.format_table([ref, run])


def test_training_gap_skips_the_runs_own_warmup_and_unshared_epochs(tmp_path):
    ref = curves.load_run(write_run(tmp_path / "ref", REF, warmup="none", warmup_epochs=0))
    # The run warms up for 3 epochs: only epochs 4, 5 count: (0.03 + 0.01) / 2.
    run = curves.load_run(write_run(tmp_path / "run", RUN, warmup_epochs=3))
    assert curves.training_gap(ref, run) == pytest.approx(0.02)
    # A run with 4 epochs, no warmup: all of epochs 1..4: (0.05+0.05+0.02+0.03)/4 = 0.0375.
    short = curves.load_run(write_run(tmp_path / "short", RUN[:4], warmup="none"))
    assert curves.training_gap(ref, short) == pytest.approx(0.0375)


def test_labels_and_table_values(tmp_path):
    assert runs.run_label({"global_batch": 8192, "warmup": "gradual", "warmup_epochs": 5},
                            "x") == "kn=8192, gradual warmup"
    assert runs.run_label({"global_batch": 256, "warmup": "none", "warmup_epochs": 5},
                            "x") == "kn=256, no warmup"
    assert runs.run_label({"global_batch": 32768, "warmup": "constant", "warmup_epochs": 5,
                             "optimizer": "lars"}, "x") == "kn=32768, constant warmup + LARS"
    assert runs.run_label({"global_batch": 256, "warmup": "none", "processes": 2},
                            "x") == "kn=256, no warmup, 2 processes"
    assert runs.run_label({}, "dirname") == "dirname"
    ref = curves.load_run(write_run(tmp_path / "ref", REF, val_errors=[0.8, None, 0.45, 0.35,
                                                                       0.36]))
    # Final val 36.00 %, best 35.00 %; the reference's own row has no gap.
    assert "| kn=256, gradual warmup | 5 | 36.00 | 35.00 | (reference) |" in (
        curves.format_table([ref]))


# Reference: 10 epochs, 1 warmup epoch. --check_fraction=0.5 checks epochs 2..5.
REF10 = [0.95, 0.80, 0.70, 0.60, 0.50, 0.45, 0.40, 0.35, 0.30, 0.25]
# Within 0.015 on epochs 2..5 (epoch 1 is warmup, epochs 6+ are past the check).
CLOSE = [0.99, 0.81, 0.715, 0.59, 0.51, 0.60, 0.60, 0.60, 0.60, 0.60]
# 0.05 above the reference at epoch 4.
FAR = [0.95, 0.80, 0.70, 0.65, 0.50, 0.45, 0.40, 0.35, 0.30, 0.25]


def test_cli_early_check_pass_writes_png_and_table(tmp_path):
    ref = write_run(tmp_path / "ref", REF10, warmup_epochs=1, val_errors=REF10)
    close = write_run(tmp_path / "close", CLOSE, global_batch=8192, warmup_epochs=1,
                      val_errors=CLOSE)
    out = tmp_path / "fig.png"
    result = cli(ref, close, f"--out={out}", "--check_fraction=0.5", "--tolerance=0.02",
                 cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "| kn=8192, gradual warmup | 10 |" in result.stdout
    assert "- kn=8192, gradual warmup: PASS: max |Δ train top-1| 1.50 points at epoch 3" in (
        result.stdout)
    png = out.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(png) > 10_000


def test_cli_early_check_fail_exit_1_and_default_out(tmp_path):
    ref = write_run(tmp_path / "ref", REF10, warmup_epochs=1)
    close = write_run(tmp_path / "close", CLOSE, global_batch=8192, warmup_epochs=1)
    far = write_run(tmp_path / "far", FAR, global_batch=8192, warmup="none", optimizer="lars")
    # The reference comes from --reference, not the first positional argument.
    # One baseline seed: the tolerance is the fallback constant, 1.4 points.
    result = cli(close, far, f"--reference={ref}", "--check_fraction=0.5", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "≤ 1.40 points" in result.stdout
    assert "Tolerance: the fallback constant: the baseline has one seed." in result.stdout
    # CLOSE is 1.5 points off at epoch 3: within 2 points, not within 1.4.
    assert ("- kn=8192, gradual warmup: FAIL: max |Δ train top-1| 1.50 points at epoch 3"
            in result.stdout)
    assert ("- kn=8192, no warmup + LARS: FAIL: max |Δ train top-1| 5.00 points at epoch 4"
            in result.stdout)
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert "- kn=8192, gradual warmup: PASS" in cli(
        close, f"--reference={ref}", "--check_fraction=0.5", "--tolerance=0.02", "--out=a.png",
        cwd=tmp_path).stdout
    # With a tolerance above 5 points the same runs pass.
    assert cli(ref, far, "--check_fraction=0.5", "--tolerance=0.06", "--out=b.png",
               cwd=tmp_path).returncode == 0


def test_early_check_window_and_incomplete(tmp_path):
    ref = curves.load_run(write_run(tmp_path / "ref", REF10, warmup_epochs=1))
    partial = curves.load_run(write_run(tmp_path / "partial", CLOSE[:3], warmup_epochs=1))
    result = curves.early_check(ref, partial, 0.5, 0.02)
    assert (result.first, result.last) == (2, 5)
    assert result.verdict == "INCOMPLETE" and result.missing == [4, 5]
    # A violation decides it even before the run reaches the end of the window.
    assert curves.early_check(ref, partial, 0.5, 0.01).verdict == "FAIL"
    # 0.1 × 10 = epoch 1, inside the warmup: nothing to check.
    with pytest.raises(ValueError, match="nothing to check"):
        curves.early_check(ref, partial, 0.1, 0.02)


def test_not_a_run_directory(tmp_path):
    (tmp_path / "nologs").mkdir()
    result = cli(tmp_path / "nologs", cwd=tmp_path)
    assert result.returncode == 2
    assert f"{tmp_path / 'nologs'} has no metrics.jsonl" in result.stderr
    assert "not a trainer run directory" in result.stderr
    assert "--log_dir of a tf_largebatch.train run" in result.stderr
    assert not (tmp_path / "curves.png").exists()
    with pytest.raises(curves.RunDirError, match="no such directory"):
        curves.load_run(str(tmp_path / "missing"))


def test_empty_and_malformed_metrics(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "metrics.jsonl").write_text("\n")
    with pytest.raises(curves.RunDirError, match="metrics.jsonl is empty"):
        curves.load_run(str(empty))
    bad = Path(write_run(tmp_path / "bad", REF))
    with open(bad / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 6, "train_top1_error": \n')
    with pytest.raises(curves.RunDirError) as e:
        curves.load_run(str(bad))
    assert f"{bad / 'metrics.jsonl'}, line 6: malformed JSON" in str(e.value)
    assert curves.main([str(bad)]) == 2


def test_cli_path_imports_no_keras(tmp_path):
    ref = write_run(tmp_path / "ref", REF)
    code = ("import sys; from tf_largebatch import curves; "
            f"curves.format_table([curves.load_run({ref!r})]); "
            "assert not {'keras', 'tensorflow'} & set(sys.modules), 'heavy import'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=60)
    assert result.returncode == 0, result.stderr


class StubModel:
    stop_training = False


def make_callback(tmp_path, **kwargs):
    ref = write_run(tmp_path / "ref", REF10, warmup_epochs=1)
    from tf_largebatch.experiment.callbacks import EarlyCurveCheck

    callback = EarlyCurveCheck(ref, 0.5, 0.02, **kwargs)
    model = StubModel()
    callback.set_model(model)
    return callback, model


def test_callback_passes_and_lets_training_continue(tmp_path):
    callback, model = make_callback(tmp_path)
    for epoch, err in enumerate(CLOSE):  # Keras's epoch index is 0-based.
        callback.on_epoch_end(epoch, {"loss": 1.0, "top1_error": err})
        if epoch == 3:
            assert callback.result is None  # epoch 5 (last checked) not reached yet
    assert callback.result.verdict == "PASS" and callback.result.checked == [2, 3, 4, 5]
    assert model.stop_training is False


def test_callback_stops_training_when_the_curve_diverges(tmp_path):
    callback, model = make_callback(tmp_path)
    for epoch, err in enumerate(FAR[:3]):
        callback.on_epoch_end(epoch, {"top1_error": err})
    assert not model.stop_training and callback.result is None
    callback.on_epoch_end(3, {"top1_error": FAR[3]})  # epoch 4: 0.65 vs 0.60
    assert model.stop_training is True
    assert callback.result.verdict == "FAIL" and callback.result.worst_epoch == 4


def test_callback_without_stop_only_reports(tmp_path):
    callback, model = make_callback(tmp_path, stop=False)
    for epoch, err in enumerate(FAR):
        callback.on_epoch_end(epoch, {"top1_error": err})
    assert callback.result.verdict == "FAIL"
    assert model.stop_training is False


# ------------------------------------------------------------ error vs kn --


def write_seeded(tmp_path, name, global_batch, finals, warmup="gradual", train=None):
    """One directory per seed; every seed's final validation error from `finals`."""
    paths = []
    for seed, final in enumerate(finals):
        val = [0.9, 0.6, final]
        path = write_run(tmp_path / f"{name}_seed{seed}", train or [0.9, 0.6, 0.4],
                         warmup=warmup, warmup_epochs=1, global_batch=global_batch,
                         val_errors=val)
        paths.append(path)
    return paths


def test_settings_average_seeds_with_the_sample_std(tmp_path):
    base = write_seeded(tmp_path, "base", 128, [0.30, 0.32, 0.31])
    big = write_seeded(tmp_path, "big", 2048, [0.35])
    runs = [curves.load_run(p) for p in base + big]
    settings = curves.group_settings(runs)
    assert [(s.label, len(s.runs)) for s in settings] == [
        ("kn=128, gradual warmup", 3), ("kn=2048, gradual warmup", 1)]
    # mean 0.31; sample std sqrt((0.01² + 0.01² + 0) / 2) = 0.01.
    mean, std = curves.mean_std(settings[0].final_errors)
    assert (mean, std) == (pytest.approx(0.31), pytest.approx(0.01))
    assert curves.mean_std([0.35]) == (0.35, None)


def test_kn_table_gap_match_and_prediction(tmp_path):
    base = write_seeded(tmp_path, "base", 128, [0.30, 0.32])
    # 0.315 vs 0.31: +0.50 points, a match; 0.33: +2.00, no match.
    near = write_seeded(tmp_path, "near", 512, [0.315])
    far = write_seeded(tmp_path, "far", 4096, [0.33], warmup="none")
    runs = [curves.load_run(p) for p in base + near + far]
    settings = curves.group_settings(runs)
    checks = {runs[1].path: curve_check.CheckResult("PASS", 2, 2, 0.02, [2], 0.0, 2, []),
              runs[2].path: curve_check.CheckResult("PASS", 2, 2, 0.02, [2], 0.0, 2, []),
              runs[3].path: curve_check.CheckResult("PASS", 2, 2, 0.02, [2], 0.0, 2, [])}
    table = curves.format_kn_table(settings, settings[0], 1.0, checks).splitlines()
    assert "| 128 | gradual warmup | 2 | 31.00 ± 1.41 | (baseline) | – | – | – |" in table
    assert "| 512 | gradual warmup | 1 | 31.50 | +0.50 | yes | PASS | yes |" in table
    # The early check passed but the final error is 2 points off: it did not predict it.
    assert "| 4096 | no warmup | 1 | 33.00 | +2.00 | no | PASS | no |" in table
    plain = curves.format_kn_table(settings, settings[0], 2.5)
    assert "| 4096 | no warmup | 1 | 33.00 | +2.00 | yes |" in plain


def test_cli_error_vs_kn_writes_figure_and_table(tmp_path):
    base = write_seeded(tmp_path, "base", 128, [0.30, 0.32], train=[0.9, 0.6, 0.4])
    close = write_seeded(tmp_path, "close", 1024, [0.31], train=[0.9, 0.61, 0.41])
    off = write_seeded(tmp_path, "off", 8192, [0.50], train=[0.9, 0.75, 0.6])
    out, fig = tmp_path / "kn.png", tmp_path / "curves.png"
    result = cli(*base, *close, *off, f"--out={fig}", f"--error_vs_kn={out}",
                 "--check_fraction=1", "--tolerance=0.02", cwd=tmp_path)
    assert result.returncode == 1, result.stderr  # the kn=8192 run fails its early check
    assert "| 1024 | gradual warmup | 1 | 31.00 | +0.00 | yes | PASS | yes |" in result.stdout
    assert "| 8192 | gradual warmup | 1 | 50.00 | +19.00 | no | FAIL | yes |" in result.stdout
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and fig.exists()


def test_error_vs_kn_needs_validation_errors(tmp_path):
    path = write_run(tmp_path / "noval", REF)
    result = cli(path, f"--error_vs_kn={tmp_path}/kn.png", cwd=tmp_path)
    assert result.returncode == 2
    assert "logged no validation error" in result.stderr


def test_a_run_named_twice_counts_once(tmp_path):
    base = write_seeded(tmp_path, "base", 128, [0.30, 0.32])
    far = write_seeded(tmp_path, "far", 1024, [0.40])
    # The reference first, then again inside a glob: it stays the reference and counts once.
    result = cli(base[1], *far, *base, f"--error_vs_kn={tmp_path}/kn.png", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "| 128 | gradual warmup | 2 | 31.00 ± 1.41 | (baseline) |" in result.stdout
    assert f"Reference: kn=128, gradual warmup (base_seed1) ({base[1]})" in result.stdout


def test_kn_table_counts_the_settings_the_check_predicted(tmp_path):
    base = write_seeded(tmp_path, "base", 128, [0.30, 0.32])
    near = write_seeded(tmp_path, "near", 512, [0.315])  # +0.50: match
    far = write_seeded(tmp_path, "far", 4096, [0.33])  # +2.00: no match
    runs = [curves.load_run(p) for p in base + near + far]
    settings = curves.group_settings(runs)
    passed = curve_check.CheckResult("PASS", 2, 2, 0.02, [2], 0.0, 2, [])
    # Both PASS: right for the match, wrong for the 2-point miss.
    checks = {runs[2].path: passed, runs[3].path: passed}
    assert curves.count_predicted(settings, settings[0], 1.0, checks) == (1, 2)
    # A seed without a check leaves its setting undecided.
    assert curves.count_predicted(settings, settings[0], 1.0, {runs[2].path: passed}) == (1, 1)


# ------------------------------------------------------- settings, panels --


def test_kn_is_workers_times_processes_times_n(tmp_path):
    path = Path(write_run(tmp_path / "hvd", REF, global_batch=9999))
    flags = json.loads((path / "flags.json").read_text())
    flags.update(simulate_workers=4, processes=2, per_worker_batch=32)
    (path / "flags.json").write_text(json.dumps(flags))
    assert curves.run_kn(curves.load_run(str(path))) == 4 * 2 * 32
    del flags["simulate_workers"]
    (path / "flags.json").write_text(json.dumps(flags))
    assert curves.run_kn(curves.load_run(str(path))) == 9999  # older logs: global_batch


def budget_runs(tmp_path):
    """A 4-epoch study (baseline kn=128 with 2 seeds, kn=1024 gradual with 2 seeds, kn=1024
    without warmup, kn=2048 with LARS) and an 8-epoch one (baseline kn=128 seeds 1 and 0,
    kn=512), as {name: path}; validation errors end at the value in the name's comment."""
    four = [0.9, 0.6, 0.5, 0.4]
    eight = [0.9, 0.7, 0.6, 0.5, 0.45, 0.4, 0.35, 0.3]

    def run(name, train, final, **kwargs):
        val = [v + 0.01 for v in train[:-1]] + [final]
        kwargs.setdefault("warmup_epochs", 1)
        kwargs.setdefault("global_batch", 128)
        return write_run(tmp_path / name, train, val_errors=val, **kwargs)

    return {
        "base": run("base", four, 0.30),  # baseline: 30.00 and 31.00, mean 30.50
        "base1": run("base1", [0.8, 0.7, 0.5, 0.4], 0.31, seed=1),
        "g1024": run("g1024", [0.95, 0.75, 0.55, 0.45], 0.32, global_batch=1024),  # 31.50
        "g1024s1": run("g1024s1", [0.85, 0.65, 0.55, 0.45], 0.31, global_batch=1024, seed=1),
        "n1024": run("n1024", four, 0.35, global_batch=1024, warmup="none", warmup_epochs=0),
        "lars": run("lars", four, 0.40, global_batch=2048, optimizer="lars"),
        "b8s1": run("b8s1", eight, 0.26, seed=1),  # 8-epoch baseline: 26.00, 28.00 → 27.00
        "b8": run("b8", eight, 0.28),
        "g512": run("g512", eight, 0.275, global_batch=512),  # 27.50: +0.50 to its baseline
    }


def test_settings_split_by_budget_with_a_baseline_per_budget(tmp_path):
    paths = budget_runs(tmp_path)
    settings = curves.group_settings([curves.load_run(p) for p in paths.values()])
    assert [(s.label, len(s.runs)) for s in settings] == [
        ("kn=128, gradual warmup, 4 epochs", 2), ("kn=1024, gradual warmup, 4 epochs", 2),
        ("kn=1024, no warmup, 4 epochs", 1), ("kn=2048, gradual warmup + LARS, 4 epochs", 1),
        ("kn=128, gradual warmup, 8 epochs", 2), ("kn=512, gradual warmup, 8 epochs", 1)]
    baseline = settings[0]
    assert curves.budget_baseline(settings, baseline, 8) is settings[4]
    assert curves.budget_baseline(settings, baseline, 16) is None
    table = curves.format_kn_table(settings, baseline, 1.0).splitlines()
    # kn=512 at 8 epochs: 27.50 against the 8-epoch baseline's 27.00, not the 4-epoch 30.50.
    assert "| 512 | gradual warmup, 8 epochs | 1 | 27.50 | +0.50 | yes |" in table
    assert "| 128 | gradual warmup, 8 epochs | 2 | 27.00 ± 1.41 | (baseline) | – |" in table
    assert "| 2048 | gradual warmup + LARS, 4 epochs | 1 | 40.00 | +9.50 | no |" in table


def test_panel_count_and_titles(tmp_path):
    paths = budget_runs(tmp_path)
    settings = curves.group_settings([curves.load_run(p) for p in paths.values()])
    grid = curves.panel_grid(settings, settings[0])
    # One row per series (gradual, no warmup, LARS at 4 epochs; gradual at 8), baselines out.
    assert [[s.label for s in row] for row in grid] == [
        ["kn=1024, gradual warmup, 4 epochs"], ["kn=1024, no warmup, 4 epochs"],
        ["kn=2048, gradual warmup + LARS, 4 epochs"], ["kn=512, gradual warmup, 8 epochs"]]
    fig = curves.plot_panels(settings, settings[0], tmp_path / "panels.png")
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles == [
        "kn=1024, gradual warmup, 4 epochs (2 seeds)\nval 31.50% · baseline 30.50%",
        "kn=1024, no warmup, 4 epochs\nval 35.00% · baseline 30.50%",
        "kn=2048, gradual warmup + LARS, 4 epochs\nval 40.00% · baseline 30.50%",
        "kn=512, gradual warmup, 8 epochs\nval 27.50% · baseline 27.00%"]
    assert (tmp_path / "panels.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_seed_band_is_the_min_and_max_of_the_seeds(tmp_path):
    paths = budget_runs(tmp_path)
    seeds = [curves.load_run(paths["g1024"]), curves.load_run(paths["g1024s1"])]
    # Train errors [0.95, 0.75, 0.55, 0.45] and [0.85, 0.65, 0.55, 0.45].
    band = curves.seed_band(seeds)
    assert sorted(band) == [1, 2, 3, 4]
    for epoch, (mean, low, high) in {1: (0.90, 0.85, 0.95), 2: (0.70, 0.65, 0.75),
                                     3: (0.55, 0.55, 0.55), 4: (0.45, 0.45, 0.45)}.items():
        assert band[epoch] == (pytest.approx(mean), pytest.approx(low), pytest.approx(high))
    # A seed that has logged 2 epochs so far limits the band to those.
    partial = curves.load_run(write_run(tmp_path / "partial", [0.8, 0.6], epochs=4))
    assert sorted(curves.seed_band(seeds + [partial])) == [1, 2]
    # The panel draws it: its band polygon spans 85–95% at epoch 1 and 65–75% at epoch 2.
    settings = curves.group_settings([curves.load_run(p) for p in paths.values()])
    fig = curves.plot_panels(settings, settings[0], tmp_path / "panels.png")
    ax = next(a for a in fig.axes if a.get_title().startswith("kn=1024, gradual"))
    color = to_rgba(curves.kn_color(1024))
    band_polygon = next(c for c in ax.collections
                        if tuple(c.get_facecolor()[0][:3]) == color[:3])
    points = {tuple(v) for v in band_polygon.get_paths()[0].vertices.round(6)}
    assert {(1.0, 85.0), (1.0, 95.0), (2.0, 65.0), (2.0, 75.0)} <= points


def test_a_kns_colour_is_the_same_in_both_figures(tmp_path):
    paths = budget_runs(tmp_path)
    settings = curves.group_settings([curves.load_run(p) for p in paths.values()])
    panels = curves.plot_panels(settings, settings[0], tmp_path / "panels.png")
    error_vs_kn = curves.plot_error_vs_kn(settings, settings[0], tmp_path / "kn.png")

    def panel_color(title_start, curve):
        """The colour of the line through `curve` (%) in the panel titled title_start…"""
        ax = next(a for a in panels.axes if a.get_title().startswith(title_start))
        line = next(li for li in ax.lines if list(li.get_ydata()) == pytest.approx(curve))
        return to_rgba(line.get_color())

    def point_color(final):
        """The colour of the marker at `final` (%) in the error-vs-kn figure."""
        ax = error_vs_kn.axes[0]
        line = next(li for li in ax.lines if li.get_marker() not in ("None", "_")
                    and li.get_ydata()[0] == pytest.approx(final))
        return to_rgba(line.get_color())

    # kn=1024's mean curve (90, 70, 55, 45) and its mean final error 31.50%.
    kn1024 = panel_color("kn=1024, gradual", [90, 70, 55, 45])
    assert kn1024 == point_color(31.5)
    # The no-warmup setting has the same kn, so the same colour; kn=2048 another one.
    assert panel_color("kn=1024, no warmup", [90, 60, 50, 40]) == kn1024 == point_color(35.0)
    kn2048 = panel_color("kn=2048", [90, 60, 50, 40])
    assert kn2048 == point_color(40.0) != kn1024
    # The baseline in every panel: kn=128's colour, also its point (30.50%).
    assert panel_color("kn=2048", [85, 65, 50, 40]) == point_color(30.5) != kn2048


# -------------------------------------------------------- early-check tolerance --


def test_tolerance_from_the_baseline_seeds_spread():
    # Three seeds; epochs 2 and 3 form the window. Epoch 2: 0.50, 0.52, 0.54 (sample
    # variance (0.02² + 0 + 0.02²)/2 = 0.0004); epoch 3: 0.42, 0.40, 0.38 (0.0004 too).
    # σ = sqrt((0.0004 + 0.0004)/2) = 0.02; tolerance = 2·√2·0.02 = 0.0565685.
    # Epochs 1 and 4 (outside the window) differ wildly and must not count.
    seeds = [{1: 0.9, 2: 0.50, 3: 0.42, 4: 0.9}, {1: 0.5, 2: 0.52, 3: 0.40, 4: 0.1},
             {1: 0.1, 2: 0.54, 3: 0.38, 4: 0.5}]
    assert curves.seed_sigma(seeds, 2, 3) == (pytest.approx(0.02), [2, 3])
    tolerance, why = curves.derive_tolerance(seeds, 2, 3)
    assert tolerance == pytest.approx(0.0565685, abs=1e-7)
    assert "3 seeds over epochs 2–3" in why
    # Only epochs every seed logged: without seed 0's epoch 3 only epoch 2 counts (σ = 0.02).
    assert curves.seed_sigma([{2: 0.50}] + seeds[1:], 2, 3) == (pytest.approx(0.02), [2])
    # One seed: the documented fallback.
    assert curves.derive_tolerance(seeds[:1], 2, 3)[0] == curves.FALLBACK_TOLERANCE == 0.014


def test_cli_derives_the_tolerance_and_checks_each_budget_against_its_baseline(tmp_path):
    # Baseline: three seeds, 5 epochs, 1 warmup epoch; --check_fraction=0.6 checks epochs
    # 2–3, where the seeds spread as in the test above: tolerance 5.66 points.
    base = [write_run(tmp_path / f"base{s}", [0.9, e2, e3, 0.3, 0.25], warmup_epochs=1, seed=s)
            for s, (e2, e3) in enumerate([(0.50, 0.42), (0.52, 0.40), (0.54, 0.38)])]
    # 5 points above seed 0 at epoch 2: inside 5.66; 6 points: outside.
    inside = write_run(tmp_path / "inside", [0.9, 0.55, 0.42, 0.3, 0.25], warmup_epochs=1,
                       global_batch=1024)
    outside = write_run(tmp_path / "outside", [0.9, 0.50, 0.48, 0.3, 0.25], warmup_epochs=1,
                        global_batch=2048)
    # A 10-epoch budget with its own baseline (one seed) and a run 1.5 points off it.
    long_base = write_run(tmp_path / "long_base", REF10, warmup_epochs=1)
    long_run = write_run(tmp_path / "long_run", CLOSE, warmup_epochs=1, global_batch=512)
    result = cli(*base, inside, outside, long_base, long_run, "--check_fraction=0.6",
                 "--out=c.png", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    out = result.stdout
    assert "≤ 5.66 points" in out and "σ = 2.000 points" in out
    assert "- kn=1024, gradual warmup: PASS: max |Δ train top-1| 5.00 points at epoch 2" in out
    assert "- kn=2048, gradual warmup: FAIL: max |Δ train top-1| 6.00 points at epoch 3" in out
    # 0.6 × 10 epochs: epochs 2–6 of the 10-epoch budget, against long_base, within 1.4.
    assert "Early check (10-epoch runs): |Δ train top-1| ≤ 1.40 points" in out
    # CLOSE is 15 points above REF10 at epoch 6 (0.60 against 0.45).
    assert ("- kn=512, gradual warmup: FAIL: max |Δ train top-1| 15.00 points at epoch 6"
            in out)
    plans = curves.plan_checks([curves.load_run(p) for p in [*base, long_run, long_base]], 0.6)
    assert [(p.epochs, p.reference.path, [r.path for r in p.runs]) for p in plans] == [
        (5, base[0], base[1:]), (10, long_base, [long_run])]


def test_cli_panels_alone_writes_no_curves_png(tmp_path):
    paths = budget_runs(tmp_path)
    result = cli(*paths.values(), "--panels=p.png", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "curves.png").exists()

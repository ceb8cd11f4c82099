"""tf_largebatch.curves on small hand-made run logs (expected values worked out by hand)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tf_largebatch import curves
from tf_largebatch.experiment import curve_check, runs

ROOT = Path(__file__).resolve().parents[1]


def write_run(path, train_errors, warmup="gradual", warmup_epochs=2, global_batch=256,
              optimizer="sgd", val_errors=None, flags=True):
    """A run directory as tf_largebatch.train leaves it: metrics.jsonl (+ flags.json)."""
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
            json.dump({"workers": global_batch // 32, "per_worker_batch": 32,
                       "global_batch": global_batch, "warmup": warmup,
                       "warmup_epochs": warmup_epochs, "optimizer": optimizer, "seed": 0,
                       "epochs": len(train_errors)}, f)
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
    result = cli(close, far, f"--reference={ref}", "--check_fraction=0.5", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "- kn=8192, gradual warmup: PASS" in result.stdout
    assert ("- kn=8192, no warmup + LARS: FAIL: max |Δ train top-1| 5.00 points at epoch 4"
            in result.stdout)
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
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

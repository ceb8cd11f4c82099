"""The trainer's command line as a user meets it, in subprocesses: `--help`, a config that
includes its base run from another directory, a URL for the run's folder, the Horovod
settings a launcher sets (`make demo` without framework noise: test_demo.py)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT, horovodrun

pytestmark = pytest.mark.integration

TINY = ["--model=cifar_resnet8", "--dataset=synthetic", "--synthetic_examples=64",
        "--per_worker_batch=8", "--steps_per_epoch=2", "--eval_steps=1", "--warmup=none",
        "--epochs=1", "--nosaved_model"]


def trainer(args, cwd, **kwargs):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "tf_largebatch.train", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, env=env, **kwargs)


def test_help_has_the_usage_line_topics_and_log_dirs_own_text():
    result = trainer(["--help"], ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert out.startswith("usage: horovodrun -np K python -m tf_largebatch.train "
                          "--flagfile=configs/X.cfg [flags]\n")
    headings = [line for line in out.splitlines() if line.endswith(":")
                and not line.startswith(" ")]
    assert headings[:3] == ["Model:", "Data:",
                            "Batch and learning rate: kn = per_worker_batch × workers, "
                            "η̂ = base_lr·kn/base_batch:"]
    assert "Outputs and resuming:" in headings and "Precision and Horovod:" in headings
    assert "--log_dir: The run's folder: flags.json, metrics.jsonl" in out
    assert "directory to write logfiles into" not in out
    assert "One program for 2 CPU processes" not in out  # train.py's developer docstring


def test_a_config_that_includes_its_base_runs_from_another_directory(tmp_path):
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "base.cfg").write_text(f"--flagfile={ROOT}/configs/demo.cfg\n--seed=7\n"
                                      + "\n".join(TINY) + "\n")
    (configs / "child.cfg").write_text("# kn = 16\n--flagfile=base.cfg\n--per_worker_batch=16\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = trainer(["--flagfile=../configs/child.cfg", f"--log_dir={tmp_path}/run"],
                     elsewhere)
    assert result.returncode == 0, result.stderr[-3000:]
    recorded = json.loads((tmp_path / "run/flags.json").read_text())
    # From demo.cfg, then base.cfg, then child.cfg: each later file wins.
    assert recorded["base_lr"] == 0.2 and recorded["log_every_step"] is True  # demo.cfg
    assert (recorded["seed"], recorded["model"], recorded["epochs"]) == (7, "cifar_resnet8", 1)
    assert recorded["per_worker_batch"] == 16


def test_a_url_for_the_runs_folder_is_refused_before_anything_is_written(tmp_path):
    result = trainer(["--flagfile", ROOT / "configs/demo.cfg", "--log_dir=gs://bucket/run"],
                     tmp_path)
    assert result.returncode == 1
    assert "--log_dir must be a file system path, not a URL" in result.stderr
    assert list(tmp_path.iterdir()) == []  # before: a local folder ./gs:/bucket/run


def test_the_launchers_horovod_settings_are_recorded_as_in_effect(tmp_path):
    # horovodrun's own options set HOROVOD_HIERARCHICAL_ALLREDUCE=1, HOROVOD_FUSION_THRESHOLD
    # (bytes: 32 MiB = 33,554,432) and HOROVOD_CYCLE_TIME for the workers; no trainer flag.
    launcher = Path(sys.executable).with_name("horovodrun")
    cmd = [str(launcher), "-np", "2", "-H", "localhost:2", "--gloo", "--hierarchical-allreduce",
           "--fusion-threshold-mb", "32", "--cycle-time-ms", "2.5", sys.executable, "-m",
           "tf_largebatch.train", *TINY, f"--log_dir={tmp_path}"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    recorded = json.loads((tmp_path / "flags.json").read_text())
    assert recorded["hierarchical_allreduce"] is True  # before: false, and "flat" in effect
    assert recorded["allreduce"] == "process-set hierarchical"  # Gloo on one host
    assert recorded["horovod_settings"] == {"HOROVOD_CYCLE_TIME": "2.5",
                                            "HOROVOD_FUSION_THRESHOLD": "33554432",
                                            "HOROVOD_HIERARCHICAL_ALLREDUCE": "1"}
    assert "HOROVOD_HIERARCHICAL_ALLREDUCE=1 (from the launcher): process-set hierarchical " \
        "allreduce in effect (1 hosts)" in result.stdout + result.stderr


def test_a_flag_overrides_the_launchers_setting_and_is_recorded(tmp_path):
    result = horovodrun(["-m", "tf_largebatch.train", *TINY, "--fusion_threshold_mb=1",
                         f"--log_dir={tmp_path}"])
    assert result.returncode == 0
    recorded = json.loads((tmp_path / "flags.json").read_text())
    assert (recorded["hierarchical_allreduce"], recorded["allreduce"]) == (False, "flat")
    assert recorded["horovod_settings"] == {"HOROVOD_FUSION_THRESHOLD": "1048576"}  # 2**20


def test_nosaved_model_writes_model_keras_only(tmp_path):
    # Under horovodrun, whose parser takes a prefix of its own options even after the
    # command: no horovodrun option starts with --saved_model or --nosaved_model.
    horovodrun(["-m", "tf_largebatch.train", *TINY, "--nosaved_model", f"--log_dir={tmp_path}"])
    assert (tmp_path / "model.keras").is_file()
    assert not (tmp_path / "saved_model").exists()
    assert json.loads((tmp_path / "flags.json").read_text())["saved_model"] is False


def test_a_run_of_one_epoch_of_one_step_says_so_and_reports_no_compile_time_speed(tmp_path):
    result = trainer([*TINY, "--steps_per_epoch=1", f"--log_dir={tmp_path}"], ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout + result.stderr
    assert "n = 8, kn = 8, η̂ = 0.003125, 1 step/epoch; horovod." in out  # before: 1 steps
    assert "Trained epoch 1: k = 1 workers (1 process)" in result.stdout  # before: epochs 1–1
    # Its only step compiled the model: no speed to report (before: a few images/s).
    assert "images/s" not in result.stdout

"""The end-of-run summary and the speed it reports, from hand-written logs, and the images/s
that RunLogger records without the first step's compilation."""

import json
import types

import keras
import numpy as np
import pytest

from tf_largebatch.experiment import run_log

pytestmark = pytest.mark.unit

FLAGS = {"workers": 2, "processes": 2, "per_worker_batch": 32, "global_batch": 64,
         "peak_lr": 0.05, "warmup": "none", "warmup_epochs": 0}


def summary_of(tmp_path, records):
    (tmp_path / "flags.json").write_text(json.dumps(FLAGS))
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return run_log.summary(str(tmp_path)).splitlines()


def speed_lines(lines):
    return [line.split() for line in lines if "images/s" in line]


def test_a_one_epoch_run_says_epoch_1_and_its_speed_leaves_out_the_first_step(tmp_path):
    # The whole epoch ran at 20 images/s (its first step compiled); the steps after, 400.
    lines = summary_of(tmp_path, [{"epoch": 1, "train_top1_error": 0.5, "val_top1_error": 0.4,
                                   "images_per_sec": 20.0, "steady_images_per_sec": 400.0}])
    assert lines[0] == "Trained epoch 1: k = 2 workers (2 processes), n = 32, kn = 64, " \
        "η̂ = 0.05, no warmup."  # before: "Trained epochs 1–1"
    assert lines[1].split()[-2:] == ["(epoch", "1)"]
    assert speed_lines(lines) == [["speed", "400", "images/s"]]  # before: 20


def test_one_epoch_of_one_step_has_no_speed_to_report(tmp_path):
    lines = summary_of(tmp_path, [{"epoch": 1, "train_top1_error": 0.5, "images_per_sec": 2.0,
                                   "steady_images_per_sec": None}])
    assert lines[0].startswith("Trained epoch 1: ")
    assert speed_lines(lines) == []  # before: 2 images/s, the compilation's


def test_the_speed_leaves_out_the_compiling_step_of_a_resumed_epoch_too(tmp_path):
    # Epoch 3 was the first of a resumed process: 100 images/s with its compilation.
    records = [{"epoch": e, "train_top1_error": 0.5, "images_per_sec": whole,
                "steady_images_per_sec": steady}
               for e, whole, steady in ((1, 50.0, 300.0), (2, 280.0, 290.0), (3, 100.0, 310.0))]
    lines = summary_of(tmp_path, records)
    assert lines[0].startswith("Trained epochs 1–3: ")
    assert speed_lines(lines) == [["speed", "300", "images/s"]]  # (300 + 290 + 310) / 3


def test_logs_from_before_the_steady_speed_count_the_epochs_after_the_first(tmp_path):
    old = [{"epoch": e, "train_top1_error": 0.5, "images_per_sec": v}
           for e, v in ((1, 50.0), (2, 100.0), (3, 300.0))]
    assert speed_lines(summary_of(tmp_path, old)) == [["speed", "200", "images/s"]]
    # One old epoch: its only figure includes the compilation, so none is shown.
    assert speed_lines(summary_of(tmp_path, old[:1])) == []


class Clock(keras.callbacks.Callback):
    """The time RunLogger reads (`run_log.time.time`, patched), moved on by each step: 0.01 s,
    and 0.5 s more for the first step of each epoch, as its compilation takes."""

    def __init__(self):
        super().__init__()
        self.now = 1000.0

    def time(self):
        return self.now

    def on_epoch_begin(self, epoch, logs=None):
        self.first = True

    def on_train_batch_end(self, batch, logs=None):
        self.now += 0.51 if self.first else 0.01
        self.first = False


def test_run_logger_records_the_speed_after_the_first_step(tmp_path, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(run_log, "time", types.SimpleNamespace(time=clock.time))
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.01), "mse")
    x, y = np.ones((40, 3), "float32"), np.zeros((40, 1), "float32")
    logger = run_log.RunLogger(str(tmp_path), lambda step: 0.01, images_per_step=4)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False,
              callbacks=[clock, logger])  # 10 steps of 4 images; the clock moves first
    (record,) = run_log.read_jsonl(str(tmp_path / "metrics.jsonl"))
    # The whole epoch: 40 images in 0.51 + 9 × 0.01 = 0.6 s; after the first step: 36 in 0.09.
    assert record["images_per_sec"] == pytest.approx(40 / 0.6)
    assert record["steady_images_per_sec"] == pytest.approx(36 / 0.09)


def test_summary_reads_the_run_folder(tmp_path):
    flags = {"workers": 8, "processes": 2, "per_worker_batch": 32, "global_batch": 256,
             "peak_lr": 0.1, "warmup": "gradual", "warmup_epochs": 5}
    (tmp_path / "flags.json").write_text(json.dumps(flags))
    records = [{"epoch": 1, "train_top1_error": 0.9, "val_top1_error": 0.8,
                "images_per_sec": 50.0},
               {"epoch": 2, "train_top1_error": 0.5, "val_top1_error": 0.45,
                "images_per_sec": 100.0},
               {"epoch": 3, "train_top1_error": 0.25, "val_top1_error": 0.304,
                "images_per_sec": 300.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    lines = run_log.summary(str(tmp_path)).splitlines()
    assert lines[0] == ("Trained epochs 1–3: k = 8 workers (2 processes), n = 32, kn = 256, "
                        "η̂ = 0.1, gradual warmup over 5 epochs.")
    assert lines[1].split() == ["training", "error", "90.0%", "(epoch", "1)", "→", "25.0%",
                                "(epoch", "3)"]
    assert lines[2].split() == ["validation", "error", "80.0%", "(epoch", "1)", "→", "30.4%",
                                "(epoch", "3)"]
    # The first epoch (compilation) is left out of the speed: (100 + 300) / 2.
    assert lines[3].split() == ["speed", "200", "images/s"]
    assert lines[4] == (f"Curves: python -m tf_largebatch.curves {tmp_path} "
                        f"--out={tmp_path}/curves.png")


@pytest.mark.parametrize("warmup, epochs, text", [("none", 5, "no warmup"),
                                                   ("constant", 1, "constant warmup over 1 epoch")])
def test_summary_names_the_warmup(tmp_path, warmup, epochs, text):
    flags = {"workers": 1, "processes": 1, "per_worker_batch": 32, "global_batch": 32,
             "peak_lr": 0.0125, "warmup": warmup, "warmup_epochs": epochs}
    (tmp_path / "flags.json").write_text(json.dumps(flags))
    (tmp_path / "metrics.jsonl").write_text(json.dumps(
        {"epoch": 1, "train_top1_error": 0.5, "val_top1_error": None, "images_per_sec": 9.0}))
    lines = run_log.summary(str(tmp_path)).splitlines()
    assert lines[0].endswith(f"η̂ = 0.0125, {text}.")
    assert not any("validation" in line for line in lines)  # no evaluation: no line for it

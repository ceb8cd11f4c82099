"""The README's main job: configs/demo.cfg under real `horovodrun -np 2` learns, and says so."""

import colorsys
import json

import numpy as np
import pytest
from helpers import ROOT, horovodrun

from tf_largebatch.data import sources
from tf_largebatch.experiment import run_log

pytestmark = pytest.mark.integration


def test_demo_learns_and_ends_with_its_summary(tmp_path):
    result = horovodrun(["-m", "tf_largebatch.train", f"--flagfile={ROOT}/configs/demo.cfg",
                         f"--log_dir={tmp_path}"])
    epochs = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == [1, 2, 3, 4]
    train = [e["train_top1_error"] for e in epochs]
    val = [e["val_top1_error"] for e in epochs]
    # Chance is 90% error on 10 classes. While developing, seeds 0-3 went from 75-80% training
    # error in epoch 1 to 1.6-3.8% in epoch 4, and validation from 34-59% to 0.0-1.2%.
    assert train[0] - train[-1] >= 0.50, train
    assert val[-1] <= 0.10 and val[0] - val[-1] >= 0.25, val
    out = result.stdout
    assert "k = 2 workers (2 processes), n = 32, kn = 64, η̂ = 0.05, gradual warmup" in out
    assert "validation error" in out and "images/s" in out
    assert f"python -m tf_largebatch.curves {tmp_path} --out={tmp_path}/curves.png" in out


def test_shapes_images_carry_their_class_in_the_hue_of_the_disc():
    import tensorflow as tf

    source = sources.get_source("shapes", None, "train", image_size=32, synthetic_examples=60)
    assert (source.num_examples, source.num_classes) == (60, 10)
    for index in range(60):
        image, label = source.read(tf.constant(index, tf.int64))
        image = image.numpy().astype(np.float64) / 255
        assert image.shape == (32, 32, 3) and int(label) == index % 10
        # The disc: pixels far from grey (grey background + noise of σ 0.1 has a channel
        # spread near 0.17; the disc's is 0.8 × 0.9 = 0.72). Its hue names the class.
        spread = image.max(axis=-1) - image.min(axis=-1)
        disc = image[spread > 0.4]
        assert len(disc) >= 30  # radius ≥ 0.15 × 32 = 4.8 pixels: ≥ 70 pixels
        hue = colorsys.rgb_to_hsv(*np.median(disc, axis=0))[0]
        assert round(hue * 10) % 10 == index % 10, (index, hue)
    again, _ = source.read(tf.constant(7, tf.int64))
    eval_image, _ = sources.get_source("shapes", None, "eval", image_size=32).read(
        tf.constant(7, tf.int64))
    np.testing.assert_array_equal(again, source.read(tf.constant(7, tf.int64))[0])
    assert not np.array_equal(again, eval_image)


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

"""The TensorFlow-free path of the GPU protocol: tf_largebatch.data.arrays and
tf_largebatch.portable_train. CI runs them on Keras's TensorFlow backend (the code is
backend-neutral); KERAS_BACKEND=jax runs the same tests where JAX is installed."""

import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
from helpers import ROOT
from PIL import Image

from tf_largebatch.data import arrays
from tf_largebatch.data.errors import DataError


def test_permutation_is_a_pure_function_of_seed_and_epoch():
    p = arrays.epoch_permutation(1000, seed=3, epoch=2)
    assert sorted(p) == list(range(1000))
    np.testing.assert_array_equal(p, arrays.epoch_permutation(1000, seed=3, epoch=2))
    assert not np.array_equal(p, arrays.epoch_permutation(1000, seed=3, epoch=3))
    assert not np.array_equal(p, arrays.epoch_permutation(1000, seed=4, epoch=2))


def test_crop_and_flip_match_a_hand_written_pad_crop_mirror():
    rng = np.random.default_rng(0)
    images = rng.integers(1, 256, size=(4, 5, 6, 3), dtype=np.uint8)  # no zeros: padding shows
    offsets = np.array([[0, 0], [4, 4], [8, 8], [1, 7]])
    flips = np.array([False, False, True, True])
    out = arrays.cifar_augment(images, offsets, flips)
    for b in range(4):
        dy, dx = offsets[b]
        for i in range(5):
            for j in range(6):
                # Pixel (i, j) of the crop is padded pixel (i + dy, j + dx), i.e. image pixel
                # (i + dy - 4, j + dx - 4) when inside the image, else 0; a flip mirrors columns.
                jj = 5 - j if flips[b] else j
                y, x = i + dy - 4, jj + dx - 4
                want = images[b, y, x] if 0 <= y < 5 and 0 <= x < 6 else 0
                np.testing.assert_array_equal(out[b, i, j], want, err_msg=f"{b} {i} {j}")
    np.testing.assert_array_equal(out[1], images[1])  # offset (4, 4), no flip: the image itself


def test_crop_offsets_cover_0_to_8_and_half_the_images_flip():
    offsets, flips = arrays.crops_and_flips(20000, seed=0, epoch=0)
    assert set(np.unique(offsets)) == set(range(9))
    assert abs(flips.mean() - 0.5) < 0.02


def test_normalize_uses_the_cifar10_channel_statistics():
    mean = np.array([0.4914, 0.4822, 0.4465]) * 255
    std = np.array([0.2470, 0.2435, 0.2616]) * 255
    x = np.array([[[np.round(mean), np.round(mean + std)]]], np.uint8)  # [1, 1, 2, 3]
    out = arrays.normalize(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0, 0, 0], (np.round(mean) - mean) / std, atol=1e-6)
    np.testing.assert_allclose(out[0, 0, 1], (np.round(mean + std) - mean) / std, atol=1e-6)


def unnormalize(x):
    mean = np.array([0.4914, 0.4822, 0.4465]) * 255
    std = np.array([0.2470, 0.2435, 0.2616]) * 255
    return np.round(x * std + mean).astype(np.int64)


def test_each_epoch_uses_its_permutation_in_global_batches_and_drops_n_mod_kn():
    n_images, kn = 23, 4
    images = np.zeros((n_images, 2, 2, 3), np.uint8)
    images[:, 0, 0, 0] = np.arange(n_images)  # the image's index, read back after normalize
    labels = np.arange(n_images, dtype=np.int32)
    batches = list(arrays.train_batches(images, labels, kn, seed=1, start_epoch=0, epochs=2,
                                        augment_off_epoch=0))
    assert len(batches) == 2 * (n_images // kn)  # 5 steps per epoch, 3 images dropped
    for epoch in range(2):
        seen = np.concatenate([y for _, y in batches[epoch * 5:(epoch + 1) * 5]])
        np.testing.assert_array_equal(seen, arrays.epoch_permutation(n_images, 1, epoch)[:20])
    x, y = batches[7]
    np.testing.assert_array_equal(unnormalize(x)[:, 0, 0, 0], y)  # images travel with labels
    # Resuming at epoch 1 gives the tail of the uninterrupted sequence.
    tail = list(arrays.train_batches(images, labels, kn, seed=1, start_epoch=1, epochs=2,
                                     augment_off_epoch=0))
    for (xa, ya), (xb, yb) in zip(tail, batches[5:], strict=True):
        np.testing.assert_array_equal(ya, yb)
        np.testing.assert_array_equal(xa, xb)


def test_an_images_augmentation_does_not_depend_on_the_global_batch():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(64, 8, 8, 3), dtype=np.uint8)
    labels = np.arange(64, dtype=np.int32)

    def augmented(kn):
        out = {}
        for x, y in arrays.train_batches(images, labels, kn, seed=5, start_epoch=0, epochs=1):
            out.update(zip(y.tolist(), x, strict=True))
        return out

    small, large = augmented(4), augmented(32)
    assert small.keys() == large.keys() == set(range(64))
    for index in small:
        np.testing.assert_array_equal(small[index], large[index])
    changed = sum(not np.array_equal(unnormalize(small[i]), images[i]) for i in small)
    assert changed > 48  # 1 - P(offset (4, 4) and no flip) = 1 - 1/162 of them move


@pytest.fixture(scope="module")
def png_tree(tmp_path_factory):
    """train: 3 classes × 20 random 32×32 PNGs (lossless, so pixels are known); test: × 4."""
    root = tmp_path_factory.mktemp("pngs")
    rng = np.random.default_rng(0)
    pixels = {}
    for split, count in (("train", 20), ("test", 4)):
        for name in ("zebra", "ant", "moth"):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                path = root / split / name / f"{i:02d}.png"
                Image.fromarray(image).save(path)
                pixels[str(path)] = image
    return root, pixels


def test_load_image_folder_decodes_every_image_with_sorted_class_labels(png_tree):
    root, pixels = png_tree
    images, labels, classes = arrays.load_image_folder(root, "eval")
    assert classes == ("ant", "moth", "zebra")
    assert images.shape == (12, 32, 32, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(labels, [0] * 4 + [1] * 4 + [2] * 4)
    np.testing.assert_array_equal(images[5], pixels[str(root / "test/moth/01.png")])


def test_load_image_folder_rejects_images_of_another_size_naming_the_file(tmp_path):
    for name, size in (("a", 32), ("b", 32), ("c", 40)):
        for split in ("train", "val"):
            (tmp_path / split / name).mkdir(parents=True)
            Image.new("RGB", (size, size)).save(tmp_path / split / name / "x.png")
    with pytest.raises(DataError, match=r"c/x.png is 40x40 pixels, not 32x32.*Resize"):
        arrays.load_image_folder(tmp_path, "train")


# ----------------------------------------------------------------------------- the runner

TINY = ["--model=cifar_resnet8", "--dataset=folder", "--per_worker_batch=4",
        "--simulate_workers=4", "--seed=2", "--warmup=gradual", "--warmup_epochs=1",
        "--milestones=2", "--log_every_step"]


def portable(args, check=True):
    env = dict(os.environ, KERAS_BACKEND=os.environ.get("KERAS_BACKEND", "tensorflow"),
               TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-m", "tf_largebatch.portable_train",
                             *map(str, args)], capture_output=True, text=True, cwd=ROOT,
                            env=env, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(result.stderr[-4000:])
    return result


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def weights(path):
    out = {}
    with h5py.File(path) as f:
        f.visititems(lambda name, item: out.update(
            {name: item[()]} if isinstance(item, h5py.Dataset) else {}))
    return out


def test_runner_follows_the_schedule_and_resumes_exactly(png_tree, tmp_path):
    root, _ = png_tree
    common = [*TINY, f"--data_dir={root}"]
    # 60 images, kn = 16: 3 steps per epoch, 12 images dropped.
    portable([*common, "--epochs=3", f"--log_dir={tmp_path}/straight"])
    portable([*common, "--epochs=2", f"--log_dir={tmp_path}/resumed"])
    portable([*common, "--epochs=3", f"--log_dir={tmp_path}/resumed", "--resume"])

    # η̂ = 0.1·16/256 = 0.00625; gradual warmup from η̂/4 over the 3 steps of epoch 1; ×0.1 at 2.
    peak, start = 0.00625, 0.0015625
    want = [start + (peak - start) * t / 3 for t in range(3)] + [peak] * 3 + [peak / 10] * 3
    for run in ("straight", "resumed"):
        steps = read_jsonl(tmp_path / run / "steps.jsonl")
        assert [s["step"] for s in steps] == list(range(9))
        assert [s["lr"] for s in steps] == pytest.approx(want, rel=1e-6)
        epochs = read_jsonl(tmp_path / run / "metrics.jsonl")
        assert [e["epoch"] for e in epochs] == [1, 2, 3]
        for record in epochs:
            assert 0 <= record["val_top1_error"] <= 1 and np.isfinite(record["train_loss"])
        flags = json.loads((tmp_path / run / "flags.json").read_text())
        assert (flags["workers"], flags["global_batch"], flags["steps_per_epoch"]) == (4, 16, 3)
        assert (tmp_path / run / "model.keras").is_file()  # the finished run's model
    # Only the last 3 checkpoints are kept; the resumed run ends where the straight one does,
    # momentum buffers and step included.
    names = sorted(n for n in os.listdir(tmp_path / "straight/checkpoints")
                   if n != ".lock")  # the run's lock on its checkpoint folder
    assert names == ["ckpt-1.weights.h5", "ckpt-2.weights.h5", "ckpt-3.weights.h5", "run.json"]
    straight = weights(tmp_path / "straight/checkpoints/ckpt-3.weights.h5")
    again = weights(tmp_path / "resumed/checkpoints/ckpt-3.weights.h5")
    assert straight.keys() == again.keys() and len(straight) > 40
    for name in straight:
        np.testing.assert_allclose(again[name], straight[name], rtol=1e-5, atol=1e-7,
                                   err_msg=name)
    # The curves tool reads the runner's logs.
    curves = subprocess.run([sys.executable, "-m", "tf_largebatch.curves",
                             tmp_path / "straight", tmp_path / "resumed",
                             f"--out={tmp_path}/c.png"], capture_output=True, text=True, cwd=ROOT)
    assert curves.returncode == 0, curves.stderr
    assert (tmp_path / "c.png").stat().st_size > 0


def test_runner_refuses_what_it_cannot_do_and_what_would_lose_work(png_tree, tmp_path):
    root, _ = png_tree
    common = [*TINY, f"--data_dir={root}", f"--log_dir={tmp_path}", "--epochs=1",
              "--warmup=none"]
    result = portable([*common, "--dataset=synthetic"], check=False)
    assert result.returncode == 1 and "reads only --dataset=folder" in result.stderr
    result = portable([*common, "--fp16_allreduce"], check=False)
    assert result.returncode == 1 and "--fp16_allreduce is not supported" in result.stderr
    result = portable([*common, "--resume"], check=False)
    assert result.returncode == 1 and "no checkpoint in" in result.stderr
    portable(common)
    written = (tmp_path / "checkpoints/ckpt-1.weights.h5").read_bytes()
    result = portable(common, check=False)
    assert result.returncode == 1 and "already holds checkpoints" in result.stderr
    assert (tmp_path / "checkpoints/ckpt-1.weights.h5").read_bytes() == written
    # Another kn resumes by the policy both trainers share: rate and step count rescaled.
    result = portable([*common, "--simulate_workers=2", "--epochs=2", "--resume"])
    assert ("Resuming a run of k·n = 4×4 with 3 steps per epoch as k·n = 2×4 with 7"
            in result.stderr)
    assert (tmp_path / "checkpoints/ckpt-1.weights.h5").read_bytes() == written
    # The step count restarts at epoch 1 × 7 new steps: 14 after epoch 2.
    assert json.loads((tmp_path / "checkpoints/run.json").read_text())["step"] == 2 * 7

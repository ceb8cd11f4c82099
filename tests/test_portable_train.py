"""The TensorFlow-free path of the GPU protocol: tf_largebatch.data.arrays and
tf_largebatch.portable_train. CI runs them on Keras's TensorFlow backend (the code is
backend-neutral); KERAS_BACKEND=jax runs the same tests where JAX is installed.
The runner itself, as a subprocess: test_portable_train_runs.py."""

import numpy as np
import pytest
from PIL import Image

from tf_largebatch.data import arrays
from tf_largebatch.data.errors import DataError

pytestmark = pytest.mark.unit


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

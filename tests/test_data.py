"""Tests for tf_largebatch.data: the data rules of Goyal et al. (2017) and the input sources.

Expectations are worked out independently of the code under test: the permutation P_e is the
defining op ``tf.random.experimental.stateless_shuffle(range(N), seed=[seed, e])`` and every
worker's slice, the drop count N mod G, the eval padding and the crop geometry are computed by
hand / with numpy from the definitions in the paper (global step j uses P_e[j*G:(j+1)*G], worker
r its r-th contiguous part). Examples are identified by a test source whose label is the example
index (and whose image is the constant colour index), or by their position in P_e.
"""

import colorsys
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tf_largebatch import data
from tf_largebatch.data import convert, folders, preprocess, sources, tfrecord

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]
CIFAR_TAR = REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
CIFAR_CLASSES = (
    "airplane automobile bird cat deer dog frog horse ship truck".split()
)  # label order per the archive's README (alphabetical)


# ----------------------------------------------------------------------------- helpers


def index_source(n):
    """N examples whose label is the index and whose 1x1 image is the colour ``index``."""

    def read(i):
        return tf.fill([1, 1, 3], tf.cast(i, tf.uint8)), tf.cast(i, tf.int32)

    return data.Source(n, read, encoded=False, num_classes=n, name=f"index source N={n}")


def perm(n, seed, epoch):
    """P_e by its definition."""
    ids = tf.range(n, dtype=tf.int64)
    return tf.random.experimental.stateless_shuffle(ids, seed=[seed, epoch]).numpy()


def batches(ds):
    return [tuple(np.asarray(t) for t in b) for b in ds.as_numpy_iterator()]


def index_train(n, **kw):
    kw = {"image_size": 1, "preprocessing": None, "per_worker_batch": 2, "epochs": 3, **kw}
    return data.train_dataset(index_source(n), **kw)


def write_image(path, pixels, fmt="jpeg"):
    encode = tf.io.encode_png if fmt == "png" else tf.io.encode_jpeg
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode(pixels).numpy())


def make_tree(root, classes=("cat", "ant", "dog"), counts=(("train", 5), ("val", 3)), size=40):
    """Random-noise JPEGs ``<root>/<split>/<class>/NNN.jpg``; returns root."""
    rng = np.random.default_rng(0)
    for split, count in counts:
        for name in classes:
            for i in range(count):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                write_image(root / split / name / f"{i:03d}.jpg", pixels)
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """3 classes x (5 train, 3 val) noise JPEGs of 40x40."""
    return make_tree(tmp_path_factory.mktemp("tree"))


# ----------------------------------------------------------------------------- sharding rules


def test_epoch_permutation_is_the_seeded_shuffle():
    p = data.epoch_permutation(23, 7, 1).numpy()
    np.testing.assert_array_equal(p, perm(23, 7, 1))
    np.testing.assert_array_equal(np.sort(p), np.arange(23))
    np.testing.assert_array_equal(p, data.epoch_permutation(23, 7, 1).numpy())
    assert not np.array_equal(p, perm(23, 7, 2))
    assert not np.array_equal(p, perm(23, 8, 1))


@pytest.mark.parametrize("k", [1, 2, 3])
def test_train_partition_across_workers(k):
    n, size, seed, epochs = 2, 23, 7, 3
    g = n * k
    steps = size // g
    got = []
    for r in range(k):
        ds, info = index_train(size, num_workers=k, worker_index=r, seed=seed, epochs=epochs)
        assert (info.steps_per_epoch, info.dropped_per_epoch) == (steps, size % g)
        assert (info.global_batch, info.batch_size, info.num_examples) == (g, n, size)
        out = batches(ds)
        assert len(out) == epochs * steps
        for images, labels in out:
            assert images.dtype == np.float32 and labels.dtype == np.int32
            np.testing.assert_array_equal(images[:, 0, 0, 0], labels)
        got.append([labels for _, labels in out])
    for e in range(epochs):
        p = perm(size, seed, e)
        for j in range(steps):
            for r in range(k):
                want = p[j * g + r * n : j * g + (r + 1) * n]
                np.testing.assert_array_equal(got[r][e * steps + j], want)
        seen = np.concatenate([got[r][e * steps + j] for r in range(k) for j in range(steps)])
        assert len(set(seen.tolist())) == len(seen) == steps * g
        assert set(seen.tolist()) == set(p[: steps * g].tolist())
        assert len(set(range(size)) - set(seen.tolist())) == size % g
    first = np.concatenate(got[0][:steps])
    second = np.concatenate(got[0][steps : 2 * steps])
    assert not np.array_equal(first, second)  # epochs use different permutations


def _left_out_messages(caplog):
    return [m.getMessage() for m in caplog.records if "steps per epoch" in m.getMessage()]


def test_drop_count_logged_once_by_worker_zero(caplog):
    caplog.set_level("INFO", logger="absl")  # absl sets its own level once flags are parsed
    for r in range(3):
        index_train(23, num_workers=3, worker_index=r)
    logged = _left_out_messages(caplog)
    # 23 examples, global batch 3 × 2 = 6: 3 steps, 23 mod 6 = 5 left out.
    assert len(logged) == 1 and "3 steps per epoch; 5 examples (N mod global batch) left out" \
        in logged[0]
    assert "steps_per_epoch" not in logged[0]


def test_shorter_epochs_are_told_apart_from_the_remainder(caplog):
    caplog.set_level("INFO", logger="absl")
    index_train(23, num_workers=3, worker_index=0, steps_per_epoch=1)
    index_train(24, num_workers=3, worker_index=0, steps_per_epoch=2)
    first, second = _left_out_messages(caplog)
    # 1 of 3 full batches of 6: 12 more examples unseen, beside the 5 of the remainder.
    assert "5 examples (N mod global batch) left out" in first
    assert "steps_per_epoch = 1 of the 3 full global batches, so 12 more examples" in first
    # 24 = 4 × 6: no remainder, only the 2 skipped batches.
    assert "N mod global batch" not in second
    assert "steps_per_epoch = 2 of the 4 full global batches, so 12 more examples" in second


@pytest.mark.parametrize("k_real, k_sim", [(1, 2), (2, 2), (1, 3)])
def test_simulated_workers_equal_real_workers(k_real, k_sim):
    kw = {"per_worker_batch": 2, "seed": 3}
    real = [
        batches(index_train(23, num_workers=k_real * k_sim, worker_index=r, **kw)[0])
        for r in range(k_real * k_sim)
    ]
    for r in range(k_real):
        ds, info = index_train(23, num_workers=k_real, worker_index=r, simulate_workers=k_sim, **kw)
        assert info.batch_size == 2 * k_sim and info.global_batch == 2 * k_real * k_sim
        sim = batches(ds)
        assert len(sim) == len(real[0])
        for j, (_, labels) in enumerate(sim):
            parts = [real[r * k_sim + i][j][1] for i in range(k_sim)]
            np.testing.assert_array_equal(labels, np.concatenate(parts))


def test_simulated_workers_get_the_same_augmented_images(tree):
    kw = {"image_size": 16, "per_worker_batch": 2, "epochs": 2, "seed": 5}
    real = [
        batches(data.train_dataset("folder", tree, num_workers=2, worker_index=r, **kw)[0])
        for r in range(2)
    ]
    sim = batches(data.train_dataset("folder", tree, simulate_workers=2, **kw)[0])
    assert len(sim) == len(real[0]) == 2 * (15 // 4)
    for j, (images, labels) in enumerate(sim):
        np.testing.assert_array_equal(images, np.concatenate([real[0][j][0], real[1][j][0]]))
        np.testing.assert_array_equal(labels, np.concatenate([real[0][j][1], real[1][j][1]]))


def test_resume_reproduces_the_tail_of_a_full_run(tree):
    kw = {"image_size": 16, "per_worker_batch": 2, "num_workers": 2, "worker_index": 1}
    full, info = data.train_dataset("folder", tree, epochs=4, **kw)
    resumed, _ = data.train_dataset("folder", tree, start_epoch=2, epochs=4, **kw)
    full, resumed = batches(full), batches(resumed)
    assert len(resumed) == 2 * info.steps_per_epoch
    for (a_img, a_lab), (b_img, b_lab) in zip(
        full[2 * info.steps_per_epoch :], resumed, strict=True
    ):
        np.testing.assert_array_equal(a_img, b_img)
        np.testing.assert_array_equal(a_lab, b_lab)


def test_augment_off_epoch_switches_to_eval_preprocessing(tree):
    paths, labels, _ = folders.list_image_folder(str(tree), "train")
    _, eval_fn = preprocess.get_preprocessing("cifar", 16)
    eval_images = [eval_fn(preprocess.decode(tf.io.read_file(p))).numpy() for p in paths]
    ds, info = data.train_dataset(
        "folder",
        tree,
        image_size=16,
        per_worker_batch=3,
        epochs=3,
        seed=11,
        augment_off_epoch=1,
        preprocessing="cifar",
    )
    assert (info.steps_per_epoch, info.dropped_per_epoch) == (5, 0)
    out = batches(ds)
    for e in range(3):
        images = np.concatenate([b[0] for b in out[5 * e : 5 * (e + 1)]])
        order = perm(15, 11, e)
        np.testing.assert_array_equal(
            np.concatenate([b[1] for b in out[5 * e : 5 * e + 5]]), labels[order]
        )
        same = [np.allclose(images[i], eval_images[order[i]], atol=1e-5) for i in range(15)]
        if e == 0:
            assert sum(same) <= 3  # augmented (a crop offset of (4, 4) and no flip is possible)
        else:
            assert all(same)


def test_augmentation_is_deterministic_and_varies_by_epoch(tree):
    kw = {"image_size": 16, "per_worker_batch": 3, "seed": 2}
    one = batches(data.train_dataset("folder", tree, epochs=2, **kw)[0])
    two = batches(data.train_dataset("folder", tree, epochs=2, **kw)[0])
    for a, b in zip(one, two, strict=True):
        np.testing.assert_array_equal(a[0], b[0])
    by_example = [{}, {}]
    for e in range(2):
        images = np.concatenate([b[0] for b in one[5 * e : 5 * (e + 1)]])
        for pos, example in enumerate(perm(15, 2, e)):
            by_example[e][example] = images[pos]
    differ = [not np.allclose(by_example[0][i], by_example[1][i]) for i in range(15)]
    assert sum(differ) >= 13


@pytest.mark.parametrize("k, k_sim", [(1, 1), (2, 1), (3, 1), (1, 2), (2, 3)])
def test_eval_covers_each_example_once(k, k_sim):
    size, n = 13, 2
    g = n * k * k_sim
    steps = -(-size // g)
    per_worker = []
    for r in range(k):
        ds, info = data.eval_dataset(
            index_source(size),
            image_size=1,
            preprocessing=None,
            per_worker_batch=n,
            num_workers=k,
            worker_index=r,
            simulate_workers=k_sim,
        )
        assert (info.steps, info.padded, info.num_examples) == (steps, steps * g - size, size)
        out = batches(ds)
        assert len(out) == steps
        assert all(w.dtype == np.float32 for _, _, w in out)
        per_worker.append(out)
    total = sum(float(w.sum()) for out in per_worker for _, _, w in out)
    assert total == size
    for j in range(steps):  # worker r holds positions [j*G + r*n*k_sim, ...) of step j
        labels = np.concatenate([per_worker[r][j][1] for r in range(k)])
        weights = np.concatenate([per_worker[r][j][2] for r in range(k)])
        positions = np.arange(j * g, (j + 1) * g)
        np.testing.assert_array_equal(weights, (positions < size).astype(np.float32))
        np.testing.assert_array_equal(labels[positions < size], positions[positions < size])
    real = np.concatenate([y[w > 0] for out in per_worker for _, y, w in out])
    assert sorted(real.tolist()) == list(range(size))
    for r, out in enumerate(per_worker):  # the helper agrees with the weights actually yielded
        for s in range(steps + 1):
            want = sum(float(w.sum()) for _, _, w in out[:s])
            assert data.eval_examples_on_worker(size, s, n * k_sim, k, r) == want


def test_steps_per_epoch_takes_the_first_global_batches_of_each_epoch():
    ds, info = index_train(23, num_workers=2, worker_index=1, steps_per_epoch=3, seed=1)
    assert (info.steps_per_epoch, info.dropped_per_epoch) == (3, 23 - 12)
    out = [labels for _, labels in batches(ds)]
    assert len(out) == 9
    for e in range(3):
        p = perm(23, 1, e)
        for j in range(3):  # worker 1 of 2, n = 2: positions [j*4 + 2, j*4 + 4)
            np.testing.assert_array_equal(out[3 * e + j], p[4 * j + 2 : 4 * j + 4])
    with pytest.raises(data.DataError, match="steps_per_epoch=6"):
        index_train(23, num_workers=2, steps_per_epoch=6)


def test_too_few_examples_for_one_global_batch():
    with pytest.raises(data.DataError, match="fewer than one global batch of 8 = k·n = 2×4"):
        index_train(7, per_worker_batch=4, num_workers=2)


# ----------------------------------------------------------------------------- folder source


def test_folder_labels_sorted_and_identical_across_splits(tmp_path):
    classes = ("zebra", "apple", "mango")  # created unsorted
    colour = {}
    for split, count in (("train", 3), ("val", 2)):
        for c, name in enumerate(classes):
            for i in reversed(range(count)):
                value = 30 * c + 10 * i + (5 if split == "val" else 0)
                colour[value] = name
                write_image(
                    tmp_path / split / name / f"img{i}.JPEG", np.full((8, 8, 3), value, np.uint8)
                )
    sorted_names = ("apple", "mango", "zebra")
    for fn, kw in ((data.train_dataset, {"epochs": 1}), (data.eval_dataset, {})):
        ds, info = fn(
            "folder", tmp_path, image_size=8, per_worker_batch=1, preprocessing=None, **kw
        )
        assert info.class_names == sorted_names and info.num_classes == 3
        for images, labels, *_ in batches(ds):
            value = int(round(float(images[0].mean()) / 5) * 5)
            assert sorted_names[labels[0]] == colour[value]
    paths, labels, _ = folders.list_image_folder(str(tmp_path), "eval")
    assert [Path(p).parent.name for p in paths] == ["apple"] * 2 + ["mango"] * 2 + ["zebra"] * 2
    assert [Path(p).name for p in paths[:2]] == ["img0.JPEG", "img1.JPEG"]  # sorted file names
    np.testing.assert_array_equal(labels, [0, 0, 1, 1, 2, 2])


def test_folder_uses_test_split_and_png_when_val_is_absent(tmp_path):
    make_tree(tmp_path, counts=(("train", 2), ("test", 1)), size=8)
    write_image(tmp_path / "test" / "dog" / "extra.png", np.full((8, 8, 3), 7, np.uint8), "png")
    (tmp_path / "test" / "dog" / "notes.txt").write_text("ignored")
    ds, info = data.eval_dataset(
        "folder", tmp_path, image_size=8, per_worker_batch=2, preprocessing=None
    )
    assert info.num_examples == 4 and info.class_names == ("ant", "cat", "dog")
    images, labels, _ = batches(ds)[-1]
    assert labels.tolist() == [2, 2] and np.all(images[1] == 7)  # the PNG, last in sorted order


def test_folder_cache_gives_the_same_batches(tree):
    kw = {"image_size": 16, "per_worker_batch": 2, "epochs": 2}
    plain = batches(data.train_dataset("folder", tree, **kw)[0])
    cached = batches(data.train_dataset("folder", tree, cache=True, **kw)[0])
    for a, b in zip(plain, cached, strict=True):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])


# ----------------------------------------------------------------------------- bad input


def _small_tree(root):
    return make_tree(root, classes=("a", "b"), counts=(("train", 2), ("val", 1)), size=8)


def _expect(exc, match, **kw):
    with pytest.raises(exc, match=match):
        data.train_dataset(image_size=8, per_worker_batch=1, epochs=1, **kw)


def test_error_missing_folder(tmp_path):
    with pytest.raises(data.DataNotFoundError, match=re.escape(str(tmp_path / "nope"))) as e:
        data.train_dataset("folder", tmp_path / "nope", image_size=8, per_worker_batch=1, epochs=1)
    assert isinstance(e.value, FileNotFoundError) and isinstance(e.value, ValueError)


def test_error_missing_train_or_val(tmp_path):
    (tmp_path / "val" / "a").mkdir(parents=True)
    _expect(data.DataNotFoundError, "training split", source="folder", data_dir=tmp_path)
    (tmp_path / "val").rename(tmp_path / "train")
    _expect(data.DataNotFoundError, "neither .*val nor .*test", source="folder", data_dir=tmp_path)


def test_error_empty_class_folder(tmp_path):
    _small_tree(tmp_path)
    for f in (tmp_path / "val" / "b").iterdir():
        f.unlink()
    with pytest.raises(data.DataError, match=re.escape(str(tmp_path / "val" / "b"))):
        data.eval_dataset("folder", tmp_path, image_size=8, per_worker_batch=1)


def test_error_class_missing_from_val(tmp_path):
    _small_tree(tmp_path)
    write_image(tmp_path / "train" / "c" / "x.jpg", np.zeros((8, 8, 3), np.uint8))
    _expect(data.DataError, r"only in train \['c'\]", source="folder", data_dir=tmp_path)


@pytest.mark.parametrize("content", [b"", b"hello, not an image", b"GIF89a......"])
def test_error_not_a_jpeg(tmp_path, content):
    _small_tree(tmp_path)
    bad = tmp_path / "train" / "b" / "bad.jpg"
    bad.write_bytes(content)
    _expect(
        data.DataError, re.escape(str(bad)) + ": not a JPEG/PNG", source="folder", data_dir=tmp_path
    )


def test_error_unreadable_file(tmp_path):
    _small_tree(tmp_path)
    broken = tmp_path / "val" / "a" / "gone.jpg"
    broken.symlink_to(tmp_path / "nowhere.jpg")
    with pytest.raises(data.DataError, match=re.escape(str(broken)) + ": unreadable"):
        data.eval_dataset("folder", tmp_path, image_size=8, per_worker_batch=1)


def test_error_cache_needs_one_image_size(tmp_path):
    _small_tree(tmp_path)
    write_image(tmp_path / "train" / "a" / "big.jpg", np.zeros((10, 12, 3), np.uint8))
    _expect(
        data.DataError,
        "cache=True needs images of one size",
        source="folder",
        data_dir=tmp_path,
        cache=True,
    )


def test_truncated_jpeg_fails_instead_of_decoding_black(tmp_path):
    _small_tree(tmp_path)
    good = tmp_path / "train" / "a" / "000.jpg"
    good.write_bytes(good.read_bytes()[:40])  # valid magic bytes, truncated data
    ds, _ = data.train_dataset("folder", tmp_path, image_size=8, per_worker_batch=4, epochs=1)
    with pytest.raises(tf.errors.InvalidArgumentError):
        batches(ds)


def _write_records(path, examples):
    with tf.io.TFRecordWriter(str(path)) as w:
        for example in examples:
            w.write(example)


def test_error_tfrecord_schema_and_missing_shards(tmp_path):
    _expect(data.DataNotFoundError, "no TFRecord shards", source="tfrecord", data_dir=tmp_path)
    feature = {
        "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"x"])),
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[1])),
    }
    example = tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
    shard = tmp_path / "train-00000-of-00002"
    _write_records(shard, [example])
    _expect(data.DataError, "incomplete", source="tfrecord", data_dir=tmp_path, num_classes=2)
    _write_records(tmp_path / "train-00001-of-00002", [])
    _expect(
        data.DataError,
        re.escape(str(shard)) + ": examples lack image/class/label",
        source="tfrecord",
        data_dir=tmp_path,
        num_classes=2,
    )
    _write_records(shard, [b"not a proto \xff\xff"])
    _expect(
        data.DataError, "not tf.train.Example", source="tfrecord", data_dir=tmp_path, num_classes=2
    )


def test_one_based_tfrecord_labels_fail_the_range_check(tmp_path):
    jpeg = tf.io.encode_jpeg(np.zeros((8, 8, 3), np.uint8)).numpy()
    _write_records(
        tmp_path / "train-00000-of-00001", [tfrecord.make_example(jpeg, label) for label in (1, 2)]
    )
    (tmp_path / "labels.txt").write_text("a\nb\n")
    ds, info = data.train_dataset("tfrecord", tmp_path, image_size=8, per_worker_batch=2, epochs=1)
    assert info.num_classes == 2
    with pytest.raises(tf.errors.InvalidArgumentError, match="0-based"):
        batches(ds)


def test_error_bad_arguments():
    with pytest.raises(ValueError, match="unknown data source"):
        data.train_dataset("imagenet", image_size=8, per_worker_batch=1, epochs=1)
    with pytest.raises(ValueError, match="needs data_dir"):
        data.train_dataset("folder", image_size=8, per_worker_batch=1, epochs=1)
    with pytest.raises(ValueError, match="worker_index"):
        index_train(10, num_workers=2, worker_index=2)
    with pytest.raises(ValueError, match="unknown preprocessing"):
        index_train(10, preprocessing="inception")


# ----------------------------------------------------------------------------- TFRecords


def test_roundtrip_folder_to_tfrecord(tree, tmp_path):
    out = tmp_path / "records"
    counts = convert.convert(str(tree), str(out), shards_train=2, shards_val=2, workers=2)
    assert counts == {"train": 15, "validation": 9, "written": 4}
    assert (out / "labels.txt").read_text() == "ant\ncat\ndog\n"
    for split in ("train", "eval"):
        paths, labels, _ = folders.list_image_folder(str(tree), split)
        src = sources.get_source("tfrecord", str(out), split, image_size=16)
        got = list(tf.data.Dataset.range(src.num_examples).map(src.read).as_numpy_iterator())
        assert [g[0] for g in got] == [Path(p).read_bytes() for p in paths]  # same JPEG bytes
        np.testing.assert_array_equal([g[1] for g in got], labels)
    kw = {"image_size": 16, "per_worker_batch": 2, "num_workers": 2, "worker_index": 1}
    for fn, extra in ((data.train_dataset, {"epochs": 2, "seed": 4}), (data.eval_dataset, {})):
        a, a_info = fn("folder", tree, **kw, **extra)
        b, b_info = fn("tfrecord", out, **kw, **extra)
        assert a_info == b_info
        for x, y in zip(batches(a), batches(b), strict=True):
            for u, v in zip(x, y, strict=True):
                np.testing.assert_array_equal(u, v)


# ----------------------------------------------------------------------------- synthetic


def test_synthetic_source():
    kw = {
        "image_size": 8,
        "num_classes": 5,
        "per_worker_batch": 4,
        "synthetic_examples": 10,
        "preprocessing": None,
    }
    a, info = data.train_dataset("synthetic", epochs=2, **kw)
    b, _ = data.train_dataset("synthetic", epochs=2, **kw)
    assert (info.num_examples, info.steps_per_epoch, info.dropped_per_epoch) == (10, 2, 2)
    a, b = batches(a), batches(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x[0], y[0])
    labels = np.concatenate([x[1] for x in a])
    assert labels.min() >= 0 and labels.max() < 5 and len(set(labels.tolist())) > 1
    images = np.concatenate([x[0] for x in a])
    assert images.shape == (16, 8, 8, 3) and images.max() > 200 and images.min() < 50
    ev, ev_info = data.eval_dataset("synthetic", image_size=8, num_classes=5, per_worker_batch=4)
    assert ev_info.num_examples == 256 and ev_info.steps == 64
    for size, classes in ((32, 10), (64, 1000)):  # defaults, the same for train and eval
        for fn, kw in ((data.train_dataset, {"epochs": 1}), (data.eval_dataset, {})):
            assert fn("synthetic", image_size=size, per_worker_batch=4, **kw)[1].num_classes == (
                classes
            )


# ----------------------------------------------------------------------------- preprocessing


def test_imagenet_eval_resizes_shorter_side_and_crops_centre():
    rng = np.random.default_rng(0)
    image = tf.constant(rng.integers(0, 256, (20, 40, 3), dtype=np.uint8))
    out = preprocess.imagenet_eval(image, 16).numpy()
    # shorter side -> round(16 * 256 / 224) = 18: 18 x 36, centre 16 x 16 at rows 1.., cols 10..
    want = tf.image.resize(image, [18, 36]).numpy()[1:17, 10:26]
    mean = 255 * np.array([0.485, 0.456, 0.406])
    std = 255 * np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(out, (want - mean) / std, atol=1e-4)


def test_cifar_train_is_a_padded_crop_with_flip():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    padded = np.pad(image, ((4, 4), (4, 4), (0, 0))).astype(np.float32)
    mean = 255 * np.array([0.4914, 0.4822, 0.4465])
    std = 255 * np.array([0.2470, 0.2435, 0.2616])
    windows = {
        (dy, dx, flip): padded[dy : dy + 32, dx : dx + 32, :][:, :: -1 if flip else 1]
        for dy in range(9)
        for dx in range(9)
        for flip in (0, 1)
    }
    outcomes = set()
    for s in range(12):
        out = preprocess.cifar_train(tf.constant(image), 32, tf.constant([s, 9], tf.int64))
        raw = out.numpy() * std + mean
        found = [key for key, window in windows.items() if np.allclose(raw, window, atol=1e-3)]
        assert found, f"seed {s}: not a 32x32 window of the 4-padded image"
        outcomes.add(found[0])
    assert len(outcomes) > 6 and {f for *_, f in outcomes} == {0, 1}
    np.testing.assert_allclose(
        preprocess.cifar_eval(tf.constant(image), 32).numpy(), (image - mean) / std, atol=1e-4
    )


def test_imagenet_random_resized_crop_geometry():
    # channel 0 = row, channel 1 = column: the output's range reveals the crop window
    rows, cols = np.meshgrid(np.arange(200), np.arange(200), indexing="ij")
    image = tf.constant(np.stack([rows, cols, rows], -1).astype(np.uint8))
    areas, seen = [], set()
    for s in range(30):
        out = preprocess.random_resized_crop(image, 16, tf.constant([s, 1], tf.int64)).numpy()
        h = (out[..., 0].max() - out[..., 0].min()) * 16 / 15  # bilinear sampling of a ramp
        w = (out[..., 1].max() - out[..., 1].min()) * 16 / 15
        areas.append(h * w / 200**2)
        assert 0.07 <= areas[-1] <= 1.01, areas[-1]
        if areas[-1] < 0.99:  # not the whole-image fallback
            assert 0.7 < w / h < 1.43, (h, w)
        seen.add((round(h), round(w)))
    assert min(areas) < 0.3 and max(areas) > 0.6 and len(seen) > 20


# ----------------------------------------------------------------------------- TFDS


@pytest.fixture(scope="module")
def tfds_dirs(tmp_path_factory):
    """A tiny TFDS dataset (PNG images of colour = index), prepared offline in both formats."""
    tfds = sources._import_tfds()

    class LargebatchTinyImages(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            features = tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(8, 8, 3)),
                    "label": tfds.features.ClassLabel(names=["x", "y", "z"]),
                }
            )
            return tfds.core.DatasetInfo(
                builder=self, features=features, supervised_keys=("image", "label")
            )

        def _split_generators(self, dl_manager):
            return {
                "train": self._generate_examples(11, 0),
                "test": self._generate_examples(7, 100),
            }

        def _generate_examples(self, n, offset):
            for i in range(n):
                yield i, {"image": np.full((8, 8, 3), offset + i, np.uint8), "label": i % 3}

    dirs = {}
    for fmt in ("tfrecord", "array_record"):
        d = tmp_path_factory.mktemp(f"tfds_{fmt}")
        config = tfds.download.DownloadConfig(try_download_gcs=False, num_shards=2)
        builder = tfds.builder("largebatch_tiny_images", data_dir=d, file_format=fmt)
        builder.download_and_prepare(download_config=config)
        dirs[fmt] = d
    return dirs


@pytest.mark.parametrize("fmt", ["tfrecord", "array_record"])
def test_tfds_source(tfds_dirs, fmt):
    tfds = sources._import_tfds()

    d = tfds_dirs[fmt]
    name = "tfds:largebatch_tiny_images"
    ds, info = data.eval_dataset(name, d, image_size=8, per_worker_batch=2, preprocessing=None)
    assert info.num_examples == 7 and info.class_names == ("x", "y", "z") and info.padded == 1
    out = batches(ds)
    colours = np.concatenate([b[0][:, 0, 0, 0] for b in out])[:7].astype(int)
    builder = tfds.builder("largebatch_tiny_images", data_dir=d)
    skip = {"image": tfds.decode.SkipDecoding()}  # PIL is not installed: decode PNGs with TF
    if fmt == "tfrecord":  # TFDS's own canonical order
        reference = builder.as_dataset("test", shuffle_files=False, decoders=skip)
        reference = list(reference.as_numpy_iterator())
    else:
        reference = list(builder.as_data_source("test", decoders=skip))
    want = [int(tf.io.decode_png(x["image"])[0, 0, 0]) for x in reference]
    assert colours.tolist() == want
    assert sorted(colours.tolist()) == list(range(100, 107))
    labels = np.concatenate([b[1] for b in out])[:7]
    np.testing.assert_array_equal(labels, (colours - 100) % 3)
    train, t_info = data.train_dataset(
        name, d, image_size=8, per_worker_batch=2, epochs=1, preprocessing=None, seed=1
    )
    assert (t_info.num_examples, t_info.steps_per_epoch, t_info.dropped_per_epoch) == (11, 5, 1)
    seen = np.concatenate([b[0][:, 0, 0, 0] for b in batches(train)]).astype(int)
    assert len(set(seen.tolist())) == 10 and set(seen.tolist()) <= set(range(11))


def test_tfds_errors(tmp_path):
    with pytest.raises(data.DataError, match="unknown TFDS dataset 'no_such_dataset_xyz'"):
        data.train_dataset(
            "tfds:no_such_dataset_xyz", tmp_path, image_size=8, per_worker_batch=1, epochs=1
        )
    with pytest.raises(data.DataNotFoundError, match="'mnist' is not prepared.*download=True"):
        data.train_dataset("tfds:mnist", tmp_path, image_size=8, per_worker_batch=1, epochs=1)


# ----------------------------------------------------------------------------- real CIFAR-10


@pytest.fixture(scope="session")
def cifar_tree(tmp_path_factory):
    """The first 3 train and 2 test JPEGs of every class from the shared CIFAR-10 archive."""
    if not CIFAR_TAR.exists():
        pytest.skip(f"{CIFAR_TAR} not present")
    root = tmp_path_factory.mktemp("cifar")
    wanted = re.compile(r"cifar10/(train/[a-z]+/000[0-2]|test/[a-z]+/000[01])\.jpg")
    with tarfile.open(CIFAR_TAR) as tar:
        members = [m for m in tar if m.isfile() and wanted.fullmatch(m.name)]
        tar.extractall(root, members=members, filter="data")
    return root / "cifar10"


def test_real_cifar10_jpeg_tree(cifar_tree):
    paths, labels, classes = folders.list_image_folder(str(cifar_tree), "train")
    assert classes == tuple(CIFAR_CLASSES) and len(paths) == 30
    assert all(
        Path(p).parent.name == CIFAR_CLASSES[label] for p, label in zip(paths, labels, strict=True)
    )
    image = preprocess.decode(tf.io.read_file(paths[0]))
    assert image.shape == (32, 32, 3) and image.dtype == tf.uint8 and image.numpy().std() > 5
    ds, info = data.eval_dataset(
        "folder", cifar_tree, image_size=32, per_worker_batch=8, preprocessing="cifar"
    )
    assert info.class_names == tuple(CIFAR_CLASSES) and info.num_examples == 20
    out = batches(ds)
    assert out[0][0].shape == (8, 32, 32, 3)
    np.testing.assert_array_equal(
        np.concatenate([b[1] for b in out])[:20], np.repeat(np.arange(10), 2)
    )
    train, t_info = data.train_dataset(
        "folder",
        cifar_tree,
        image_size=32,
        per_worker_batch=8,
        epochs=1,
        preprocessing="cifar",
        cache=True,
    )
    assert t_info.steps_per_epoch == 3 and batches(train)[0][0].shape == (8, 32, 32, 3)


def test_batch_layout_is_the_papers_arithmetic():
    # CIFAR-10, n = 32, 4 simulated workers: kn = 128, 50,000 // 128 = 390, 80 left out.
    cifar = data.batch_layout(50_000, 32, simulate_workers=4)
    assert (cifar.workers, cifar.global_batch, cifar.steps_per_epoch) == (4, 128, 390)
    assert (cifar.remainder, cifar.skipped, cifar.process_batch) == (80, 0, 128)
    # ImageNet at kn = 8k: 256 workers, 1,281,167 // 8192 = 156 steps (the paper's 156).
    imagenet = data.batch_layout(1_281_167, 32, processes=32, simulate_workers=8)
    assert (imagenet.global_batch, imagenet.steps_per_epoch) == (8192, 156)
    assert imagenet.process_batch == 256
    short = data.batch_layout(50_000, 32, processes=2, simulate_workers=32, steps_per_epoch=10)
    # 24 full batches of 2,048 (848 left over); 10 taken, so 14 × 2,048 more skipped.
    assert (short.full_steps, short.remainder, short.skipped) == (24, 848, 28_672)
    assert "steps_per_epoch = 10 of the 24 full global batches" in short.describe()
    with pytest.raises(data.DataError, match="--steps_per_epoch=25 exceeds the 24 global"):
        data.batch_layout(50_000, 32, processes=2, simulate_workers=32, steps_per_epoch=25)


def test_shapes_images_carry_their_class_in_the_hue_of_the_disc():
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

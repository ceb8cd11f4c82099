"""Tests for the folder -> TFRecord converter's re-runs, and for naming undecodable images.

Expected shard contents are worked out by hand from the sorted listing (class folders, then file
names) and the contiguous cut ``[i*N//S, (i+1)*N//S)``; records are read back with TensorFlow's
own ``TFRecordDataset`` and ``tf.train.Example`` and compared by sha256 of the image bytes.
"""

import hashlib
import json
import re

import numpy as np
import pytest
import tensorflow as tf

from tf_largebatch import data
from tf_largebatch.data import convert, errors

RNG = np.random.default_rng(7)


def jpeg(size=8):
    return tf.io.encode_jpeg(RNG.integers(0, 256, (size, size, 3), dtype=np.uint8)).numpy()


def make_tree(root, train=(("a", 4), ("b", 4)), val=(("a", 1), ("b", 1))):
    for split, classes in (("train", train), ("val", val)):
        for name, count in classes:
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                (root / split / name / f"{i:03d}.jpg").write_bytes(jpeg())
    return root


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def records(shard):
    """(sha256 of image/encoded, label) of every record, read with TensorFlow's reader."""
    out = []
    for payload in tf.data.TFRecordDataset(str(shard)).as_numpy_iterator():
        feature = tf.train.Example.FromString(payload).features.feature
        image = feature["image/encoded"].bytes_list.value[0]
        label = feature["image/class/label"].int64_list.value[0]
        out.append((hashlib.sha256(image).hexdigest(), label))
    return out


def listing(out):
    return sorted(p.name for p in out.iterdir())


def test_rerun_rewrites_every_shard_whose_images_changed(tmp_path):
    tree, out = make_tree(tmp_path / "tree"), tmp_path / "out"
    convert.convert(str(tree), str(out), shards_train=2, shards_val=1, workers=2)
    # 8 images cut 0-4-8; one more in class a: 9 images cut 0-4-9. Shard 0 keeps its count (4)
    # but not its images (a/003 moves to shard 1, a/001b comes in).
    (tree / "train" / "a" / "001b.jpg").write_bytes(jpeg())
    # One validation image replaced by another of the same name (same record count).
    (tree / "val" / "b" / "000.jpg").write_bytes(jpeg())
    counts = convert.convert(str(tree), str(out), shards_train=2, shards_val=1, workers=2)

    a = [tree / "train" / "a" / n for n in ("000.jpg", "001.jpg", "001b.jpg", "002.jpg", "003.jpg")]
    b = [tree / "train" / "b" / f"{i:03d}.jpg" for i in range(4)]
    order = [(sha(p), 0) for p in a] + [(sha(p), 1) for p in b]
    assert records(out / "train-00000-of-00002") == order[0:4]
    assert records(out / "train-00001-of-00002") == order[4:9]
    val = [(sha(tree / "val" / "a" / "000.jpg"), 0), (sha(tree / "val" / "b" / "000.jpg"), 1)]
    assert records(out / "validation-00000-of-00001") == val
    assert counts == {"train": 9, "validation": 2, "written": 3}


def test_rerun_without_changes_skips_every_shard_and_manifest_lists_the_images(tmp_path):
    tree, out = make_tree(tmp_path / "tree"), tmp_path / "out"
    convert.convert(str(tree), str(out), shards_train=2, shards_val=1, workers=2)
    stats = {p.name: p.stat() for p in out.iterdir()}
    assert convert.convert(str(tree), str(out), 2, 1, workers=2)["written"] == 0
    for name in ("train-00000-of-00002", "train-00001-of-00002", "validation-00000-of-00001"):
        assert (out / name).stat().st_mtime_ns == stats[name].st_mtime_ns
        assert (out / name).stat().st_ino == stats[name].st_ino

    shards = json.loads((out / "manifest.json").read_text())["shards"]
    assert sorted(shards) == ["train-00000-of-00002", "train-00001-of-00002",
                              "validation-00000-of-00001"]
    assert shards["train-00001-of-00002"]["files"] == [
        [f"train/b/{i:03d}.jpg", 1, sha(tree / "train" / "b" / f"{i:03d}.jpg")] for i in range(4)
    ]
    assert not [name for name in listing(out) if "tmp" in name]


def test_a_shard_listed_in_the_manifest_but_truncated_on_disk_is_rewritten(tmp_path):
    tree, out = make_tree(tmp_path / "tree"), tmp_path / "out"
    convert.convert(str(tree), str(out), shards_train=2, shards_val=1, workers=2)
    shard = out / "train-00000-of-00002"
    content = shard.read_bytes()
    shard.write_bytes(content[:50])
    assert convert.convert(str(tree), str(out), 2, 1, workers=2)["written"] == 1
    assert shard.read_bytes() == content


def test_unverified_shards_are_rewritten_when_verifying(tmp_path):
    tree, out = make_tree(tmp_path / "tree"), tmp_path / "out"
    convert.convert(str(tree), str(out), 2, 1, workers=2, verify=False)
    assert convert.convert(str(tree), str(out), 2, 1, workers=2, verify=False)["written"] == 0
    assert convert.convert(str(tree), str(out), 2, 1, workers=2)["written"] == 3


def test_shards_of_another_shard_count_are_removed_and_logged(tmp_path, caplog):
    tree, out = make_tree(tmp_path / "tree"), tmp_path / "out"
    convert.convert(str(tree), str(out), shards_train=4, shards_val=1, workers=2)
    convert.convert(str(tree), str(out), shards_train=2, shards_val=1, workers=2)
    assert listing(out) == ["labels.txt", "manifest.json", "train-00000-of-00002",
                            "train-00001-of-00002", "validation-00000-of-00001"]
    for i in range(4):
        assert f"train-{i:05d}-of-00004" in caplog.text
    src = data.get_source("tfrecord", str(out), "train", image_size=8)
    assert src.num_examples == 8
    shards = json.loads((out / "manifest.json").read_text())["shards"]
    assert sorted(shards) == listing(out)[2:]


def test_more_shards_than_images_warns_with_the_flag_to_change(tmp_path, caplog):
    tree, out = make_tree(tmp_path / "tree"), tmp_path / "out"
    convert.convert(str(tree), str(out), shards_train=2, shards_val=5, workers=2)
    assert re.search(r"validation: 5 shards for 2 images.*3 .*empty.*--shards_val=2", caplog.text)
    assert "--shards_train" not in caplog.text
    src = data.get_source("tfrecord", str(out), "eval", image_size=8)
    assert src.num_examples == 2


def truncate(path):
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])


@pytest.mark.parametrize("cut", ["half", "end marker"])
def test_verify_refuses_an_image_tensorflow_cannot_decode(tmp_path, capsys, cut):
    tree, out = make_tree(tmp_path / "tree"), tmp_path / "out"
    bad = tree / "train" / "b" / "001.jpg"
    if cut == "half":
        truncate(bad)
    else:  # everything but the 2-byte end-of-image marker
        bad.write_bytes(bad.read_bytes()[:-2])
    refusal = "(?s)" + re.escape(str(bad)) + ": jpeg::Uncompress.*[Rr]emove or replace"
    with pytest.raises(data.DataError, match=refusal):
        convert.convert(str(tree), str(out), shards_train=2, shards_val=1, workers=2)
    assert not (out / "train-00001-of-00002").exists()  # the shard holding it (images 4-7)
    args = [f"--input_dir={tree}", f"--output_dir={out}", "--shards_train=2", "--shards_val=1"]
    assert convert.main(args) == 1
    assert str(bad) in capsys.readouterr().err
    assert convert.main([*args, "--noverify"]) == 0
    assert len(records(out / "train-00001-of-00002")) == 4


def test_decode_failure_while_training_names_the_file_or_the_shard_and_record(tmp_path):
    tree, out = make_tree(tmp_path / "tree"), tmp_path / "out"
    bad = tree / "train" / "b" / "001.jpg"  # example 5: shard 1 of 2 (examples 4-7), record 1
    truncate(bad)
    convert.convert(str(tree), str(out), shards_train=2, shards_val=1, workers=2, verify=False)
    kw = {"image_size": 8, "per_worker_batch": 8, "epochs": 1, "preprocessing": None}
    for dataset, data_dir, where in (
        ("folder", tree, re.escape(str(bad))),
        ("tfrecord", out, re.escape(f"{out / 'train-00001-of-00002'}, record 1 (b/001.jpg)")),
    ):
        ds, _ = data.train_dataset(dataset, data_dir, **kw)
        with pytest.raises(tf.errors.InvalidArgumentError, match="jpeg::Uncompress"):
            list(ds)
        named = where + ": jpeg::Uncompress.*[Rr]emove or replace"
        with pytest.raises(data.DataError, match=named):
            with errors.naming_undecodable_images(dataset, str(data_dir)):
                list(ds)


def test_other_errors_pass_through_unchanged(tmp_path):
    tree = make_tree(tmp_path / "tree")
    with pytest.raises(tf.errors.InvalidArgumentError, match="not a decode error"):
        with errors.naming_undecodable_images("folder", str(tree)):
            raise tf.errors.InvalidArgumentError(None, None, "not a decode error")
    with pytest.raises(KeyError):
        with errors.naming_undecodable_images("folder", str(tree)):
            raise KeyError("x")

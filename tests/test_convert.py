"""Tests for the folder -> TFRecord converter's re-runs, and for naming undecodable images.

Expected shard contents are worked out by hand from the sorted listing (class folders, then file
names) and the contiguous cut ``[i*N//S, (i+1)*N//S)``; records are read back with TensorFlow's
own ``TFRecordDataset`` and ``tf.train.Example`` and compared by sha256 of the image bytes.
"""

import builtins
import errno
import fcntl
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tf_largebatch import data
from tf_largebatch.data import convert, undecodable

pytestmark = pytest.mark.integration

RNG = np.random.default_rng(7)
REPO = Path(__file__).resolve().parents[1]


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
            with undecodable.naming_undecodable_images(dataset, str(data_dir)):
                list(ds)


def test_other_errors_pass_through_unchanged(tmp_path):
    tree = make_tree(tmp_path / "tree")
    with pytest.raises(tf.errors.InvalidArgumentError, match="not a decode error"):
        with undecodable.naming_undecodable_images("folder", str(tree)):
            raise tf.errors.InvalidArgumentError(None, None, "not a decode error")
    with pytest.raises(KeyError):
        with undecodable.naming_undecodable_images("folder", str(tree)):
            raise KeyError("x")


# ------------------------------------------------------------------- kills and I/O failures
# A 12 + 4 image tree cut into 4 + 2 shards: train shards of 3 images, validation of 2.
KILL_TREE = {"train": (("a", 6), ("b", 6)), "val": (("a", 2), ("b", 2))}
WRITE_ORDER = [*(f"train-{i:05d}-of-00004" for i in range(4)),
               *(f"validation-{i:05d}-of-00002" for i in range(2))]


def expected_records(tree):
    """Shard name -> [(sha256, label)], worked out from the tree: sorted classes and files, cut
    ``[i*N//S, (i+1)*N//S)``."""
    shards = {}
    for split, prefix, total in (("train", "train", 4), ("val", "validation", 2)):
        classes = sorted(p.name for p in (tree / split).iterdir())
        images = [(sha(f), label) for label, c in enumerate(classes)
                  for f in sorted((tree / split / c).iterdir())]
        for i in range(total):
            part = images[i * len(images) // total : (i + 1) * len(images) // total]
            shards[f"{prefix}-{i:05d}-of-{total:05d}"] = part
    return shards


def cli_args(tree, out, workers=1):
    return [f"--input_dir={tree}", f"--output_dir={out}", "--shards_train=4", "--shards_val=2",
            f"--workers={workers}"]


def run_killed(tree, out, kill_at, workers=1):
    """Runs the converter in a subprocess that SIGKILLs itself at ``kill_at``."""
    env = {**os.environ, "TF_LARGEBATCH_KILL_AT": kill_at}
    run = subprocess.run([sys.executable, "-m", "tf_largebatch.data.convert",
                          *cli_args(tree, out, workers)],
                         capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    assert run.returncode == -signal.SIGKILL, run.stderr
    return run


def rerun(tree, out, caplog, monkeypatch):
    """Re-runs in process; returns (written, already complete) as logged."""
    monkeypatch.delenv("TF_LARGEBATCH_KILL_AT", raising=False)
    caplog.clear()
    assert convert.main(cli_args(tree, out)) == 0
    found = re.findall(r"\((\d+) written, (\d+) already complete\)", caplog.text)
    assert len(found) == 1, caplog.text
    return tuple(map(int, found[0]))


def temporaries(out):
    return [p.name for p in out.iterdir() if ".tmp" in p.name]


def assert_converted(tree, out):
    expected = expected_records(tree)
    assert listing(out) == ["labels.txt", "manifest.json", *sorted(expected)]
    for name, want in expected.items():
        assert records(out / name) == want, name
    assert src_count(out) == 12


def src_count(out):
    return data.get_source("tfrecord", str(out), "train", image_size=8).num_examples


@pytest.mark.parametrize("k, workers", [(2, 1), (5, 1), (3, 2)])
def test_a_converter_killed_after_k_shards_reuses_those_k_on_the_next_run(
        tmp_path, caplog, monkeypatch, k, workers):
    tree, out = make_tree(tmp_path / "tree", **KILL_TREE), tmp_path / "out"
    run_killed(tree, out, f"shard-written@{k}", workers)
    present = [name for name in WRITE_ORDER if (out / name).exists()]
    if workers == 1:  # in order, one at a time: the kill came before shard k was begun
        assert present == WRITE_ORDER[:k]
    else:  # another thread may have renamed a shard it had no time to record
        assert k <= len(present) <= k + 1
    before = {name: (out / name).stat() for name in present}

    assert rerun(tree, out, caplog, monkeypatch) == (len(WRITE_ORDER) - k, k)
    kept = [name for name in present if (out / name).stat().st_ino == before[name].st_ino
            and (out / name).stat().st_mtime_ns == before[name].st_mtime_ns]
    assert len(kept) == k
    if workers == 1:
        assert kept == WRITE_ORDER[:k]
    assert not temporaries(out)
    assert_converted(tree, out)


@pytest.mark.parametrize("earlier", [False, True], ids=["fresh", "over an earlier conversion"])
def test_a_shard_half_written_at_a_kill_is_rewritten_and_temporaries_are_removed(
        tmp_path, caplog, monkeypatch, earlier):
    tree, out = make_tree(tmp_path / "tree", **KILL_TREE), tmp_path / "out"
    if earlier:  # converted, then image 4 (train/a/004.jpg, shard 1 of 4) replaced
        convert.convert(str(tree), str(out), 4, 2, workers=1)
        old = (out / WRITE_ORDER[1]).read_bytes()
        (tree / "train" / "a" / "004.jpg").write_bytes(jpeg())
        run_killed(tree, out, "shard-record@2")  # in the only shard to rewrite: its 2nd record
        assert (out / WRITE_ORDER[1]).read_bytes() == old
        half, complete = WRITE_ORDER[1], [n for n in WRITE_ORDER if n != WRITE_ORDER[1]]
    else:  # 3 records in each of shards 0 and 1, then 1 of shard 2
        run_killed(tree, out, "shard-record@7")
        assert [name for name in WRITE_ORDER if (out / name).exists()] == WRITE_ORDER[:2]
        half, complete = WRITE_ORDER[2], WRITE_ORDER[:2]
    assert [name.partition(".tmp-")[0] for name in temporaries(out)] == [half]
    # Left by writers that are gone (pid 1 is alive, but holds no lock on the folder).
    (out / f"{WRITE_ORDER[3]}.tmp-1").write_bytes(b"partial")
    (out / "manifest.json.tmp-4194304").write_text("{")
    before = {name: (out / name).stat() for name in complete}

    assert rerun(tree, out, caplog, monkeypatch) == (len(WRITE_ORDER) - len(complete),
                                                      len(complete))
    for name in complete:
        assert (out / name).stat().st_ino == before[name].st_ino
        assert (out / name).stat().st_mtime_ns == before[name].st_mtime_ns
    assert not temporaries(out)
    assert_converted(tree, out)


def error_lines(err):
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    return lines[0]


def test_a_second_converter_into_the_same_folder_stops_with_an_error(tmp_path, capsys):
    tree, out = make_tree(tmp_path / "tree", **KILL_TREE), tmp_path / "out"
    out.mkdir()
    holder = os.open(out, os.O_RDONLY)  # what a running converter holds
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        assert convert.main(cli_args(tree, out)) == 1
    finally:
        os.close(holder)
    line = error_lines(capsys.readouterr().err)
    assert line == (f"python -m tf_largebatch.data.convert: error: {out}: another converter is "
                    "writing to this folder; wait for it to finish or pass another --output_dir")
    assert listing(out) == []
    assert convert.main(cli_args(tree, out)) == 0
    assert_converted(tree, out)


def test_a_full_disk_ends_in_one_error_line_and_keeps_the_complete_shards(
        tmp_path, capsys, caplog, monkeypatch):
    tree, out = make_tree(tmp_path / "tree", **KILL_TREE), tmp_path / "out"
    real = tf.io.TFRecordWriter

    class FillsTheDiskOnShard2(real):
        """The disk fills up at the 2nd record of train shard 2 (TensorFlow's error for ENOSPC)."""

        def __init__(self, path, *args):
            super().__init__(path, *args)
            self.path, self.count = path, 0

        def write(self, record):
            self.count += 1
            if WRITE_ORDER[2] in self.path and self.count == 2:
                raise tf.errors.ResourceExhaustedError(
                    None, None, f"{self.path}; No space left on device")
            super().write(record)

    monkeypatch.setattr(tf.io, "TFRecordWriter", FillsTheDiskOnShard2)
    assert convert.main(cli_args(tree, out)) == 1
    line = error_lines(capsys.readouterr().err)
    assert line.startswith(f"python -m tf_largebatch.data.convert: error: cannot write "
                           f"{out / WRITE_ORDER[2]}: No space left on device; free space on the "
                           f"disk of {out} or pass another --output_dir")
    assert [name for name in WRITE_ORDER if (out / name).exists()] == WRITE_ORDER[:2]
    assert not temporaries(out)
    before = {name: (out / name).stat() for name in WRITE_ORDER[:2]}

    monkeypatch.setattr(tf.io, "TFRecordWriter", real)
    assert rerun(tree, out, caplog, monkeypatch) == (4, 2)
    for name in WRITE_ORDER[:2]:
        assert (out / name).stat().st_ino == before[name].st_ino
    assert_converted(tree, out)


def test_a_read_only_output_folder_ends_in_one_error_line_and_keeps_the_shards(
        tmp_path, capsys, caplog, monkeypatch):
    tree, out = make_tree(tmp_path / "tree", **KILL_TREE), tmp_path / "out"
    convert.convert(str(tree), str(out), 4, 2, workers=1)
    (tree / "train" / "b" / "003.jpg").write_bytes(jpeg())  # image 9: shard 3 to rewrite
    before = {name: (out / name).stat() for name in WRITE_ORDER}
    out.chmod(0o555)
    if os.geteuid() == 0:  # root writes into read-only folders: refuse as the kernel would
        def read_only_open(file, mode="r", *args, **kwargs):
            if str(file).startswith(str(out)) and set(mode) & set("wax+"):
                raise PermissionError(errno.EACCES, "Permission denied", str(file))
            return builtins.open(file, mode, *args, **kwargs)

        monkeypatch.setattr(convert, "open", read_only_open, raising=False)
    try:
        assert convert.main(cli_args(tree, out)) == 1
    finally:
        out.chmod(0o755)
        monkeypatch.delattr(convert, "open", raising=False)
    line = error_lines(capsys.readouterr().err)
    assert line == (f"python -m tf_largebatch.data.convert: error: cannot write "
                    f"{out / 'labels.txt'}: Permission denied; make {out} writable or pass "
                    "another --output_dir, then re-run (the complete shards are kept and reused)")
    for name in WRITE_ORDER:
        assert (out / name).stat().st_ino == before[name].st_ino
    assert rerun(tree, out, caplog, monkeypatch) == (1, 5)
    assert_converted(tree, out)


# The command line, into a fresh folder and over a damaged one.


def test_converter_cli_and_resume(tmp_path):
    tree = make_tree(tmp_path / "tree")
    out = tmp_path / "records"
    args = [f"--input_dir={tree}", f"--output_dir={out}", "--shards_train=3", "--shards_val=1"]
    run = subprocess.run(
        [sys.executable, "-m", "tf_largebatch.data.convert", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert run.returncode == 0, run.stderr
    shards = sorted(p.name for p in out.iterdir() if p.name not in ("labels.txt", "manifest.json"))
    assert shards == [
        "train-00000-of-00003",
        "train-00001-of-00003",
        "train-00002-of-00003",
        "validation-00000-of-00001",
    ]
    content = {s: (out / s).read_bytes() for s in shards}
    stat = {s: (out / s).stat() for s in shards}
    (out / shards[0]).unlink()  # missing
    (out / shards[1]).write_bytes(content[shards[1]][:100])  # interrupted write
    assert convert.main(args) == 0
    for s in shards:
        assert (out / s).read_bytes() == content[s]
    assert (out / shards[2]).stat().st_mtime_ns == stat[shards[2]].st_mtime_ns  # skipped
    assert (out / shards[3]).stat().st_ino == stat[shards[3]].st_ino
    assert not [p for p in out.iterdir() if ".tmp" in p.name]

"""Convert an image folder tree to TFRecord shards.

    python -m tf_largebatch.data.convert --input_dir=/data/imagenet \\
        --output_dir=/data/imagenet-tfrecord --shards_train=1024 --shards_val=128

Reads ``<input_dir>/train/<class>/*`` and ``<input_dir>/val/<class>/*`` (or ``test/``) exactly as
the "folder" source does (sorted classes and files, magic bytes checked) and writes
``train-NNNNN-of-MMMMM``, ``validation-NNNNN-of-MMMMM`` and ``labels.txt`` (class names, one per
line, in label order). Records keep the listing order, cut into contiguous shards, so record ``i``
is folder example ``i`` and both sources give identical pipelines. Images are stored as the
original file bytes (no re-encoding) with 0-based labels; see :mod:`tf_largebatch.data.tfrecord`.

With ``verify`` (``--verify``, the default) every image is first decoded by the training
pipeline's decoder, and an image it rejects (a truncated JPEG, say) stops the conversion with
its path; its shard is not written.

Re-runs: ``manifest.json`` records, per shard, its images in order as ``[path relative to
input_dir, label, sha256 of the file]``. A shard is skipped only when its manifest entry equals
what it would hold now and the file has that many records; any other shard is rewritten.
Shards are written in parallel, each to a temporary name, fsynced and renamed; the manifest is
written the same way, without the entries of the shards about to be rewritten before them and
with all entries after them, so an interrupted run never leaves an entry for a shard it changed.
Shards of the same split with another shard count (left by an earlier conversion) are removed,
with a warning naming them.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import os
import re
import sys

import tensorflow as tf
from absl import logging

from tf_largebatch.data import preprocess, tfrecord
from tf_largebatch.data.errors import DataError
from tf_largebatch.data.folders import folder_splits, list_image_folder

try:
    from tqdm import tqdm
except ImportError:  # tqdm comes with tensorflow-datasets; fall back to no progress bar
    tqdm = None

MANIFEST = "manifest.json"
SPLITS = (("train", "train", "--shards_train"), ("eval", "validation", "--shards_val"))


def shard_name(prefix: str, index: int, total: int) -> str:
    return f"{prefix}-{index:05d}-of-{total:05d}"


def _replace_durably(tmp: str, path: str) -> None:
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_manifest(output_dir: str, shards: dict[str, dict]) -> None:
    """Writes ``{"shards": {name: entry}}`` atomically (temporary name, fsync, rename)."""
    path = os.path.join(output_dir, MANIFEST)
    with open(f"{path}.tmp-{os.getpid()}", "w") as f:
        json.dump({"shards": shards}, f, sort_keys=True)
    _replace_durably(f"{path}.tmp-{os.getpid()}", path)


def read_manifest(output_dir: str) -> dict[str, dict]:
    """The manifest's shard entries; empty when there is no (readable) manifest."""
    try:
        with open(os.path.join(output_dir, MANIFEST)) as f:
            return json.load(f)["shards"]
    except (OSError, ValueError, KeyError):
        return {}


def _file_entry(file: str, label: int, input_dir: str, contents: bytes) -> list:
    return [os.path.relpath(file, input_dir), label, hashlib.sha256(contents).hexdigest()]


def _read(file: str) -> bytes:
    with open(file, "rb") as f:
        return f.read()


def is_complete(path: str, items: list[tuple[str, int]], input_dir: str, entry: dict | None,
                verify: bool) -> bool:
    """Whether the shard at ``path``, described by its manifest ``entry``, holds ``items``."""
    if entry is None or len(entry["files"]) != len(items) or (verify and not entry["verified"]):
        return False
    try:
        if len(tfrecord.index_records(path)[0]) != len(items):
            return False
    except (OSError, DataError):
        return False
    return entry["files"] == [_file_entry(f, label, input_dir, _read(f)) for f, label in items]


def write_shard(path: str, items: list[tuple[str, int]], input_dir: str, split_dir: str,
                class_names, verify: bool) -> tuple[dict | None, list[str]]:
    """Writes ``items`` (file path, label) to the TFRecord ``path``.

    Returns ``(manifest entry, [])``, or ``(None, ["<file>: <why it cannot be decoded>", ...])``
    without writing the shard when ``verify`` finds images the training pipeline cannot decode.
    """
    files, undecodable = [], []
    tmp = f"{path}.tmp-{os.getpid()}"
    with tf.io.TFRecordWriter(tmp) as writer:
        for file, label in items:
            encoded = _read(file)
            if verify and (problem := preprocess.decode_problem(encoded)):
                undecodable.append(f"{file}: {problem}")
            files.append(_file_entry(file, label, input_dir, encoded))
            relative = os.path.relpath(file, split_dir)
            writer.write(tfrecord.make_example(encoded, label, class_names[label], relative))
    if undecodable:
        os.remove(tmp)
        return None, undecodable
    _replace_durably(tmp, path)
    return {"files": files, "verified": verify}, []


def _in_parallel(fn, jobs, workers, desc):
    """``[fn(*job) for job in jobs]`` on a thread pool, with a progress bar."""
    with concurrent.futures.ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        results = pool.map(lambda job: fn(*job), jobs)
        if tqdm and jobs:
            results = tqdm(results, total=len(jobs), unit="shard", desc=desc)
        return list(results)


def remove_stale_shards(output_dir: str, prefix: str, keep) -> list[str]:
    """Deletes ``<prefix>-NNNNN-of-MMMMM`` files not in ``keep``; returns their names."""
    pattern = re.compile(rf"^{re.escape(prefix)}-\d+-of-\d+$")
    stale = sorted(f for f in os.listdir(output_dir) if pattern.match(f) and f not in keep)
    for name in stale:
        os.remove(os.path.join(output_dir, name))
    return stale


def convert(input_dir: str, output_dir: str, shards_train: int, shards_val: int,
            workers: int | None = None, verify: bool = True) -> dict[str, int]:
    """Converts both splits; returns ``{"train": N_train, "validation": N_val, "written": k}``.

    Raises DataError naming every image the training pipeline cannot decode (with ``verify``).
    """
    if min(shards_train, shards_val) < 1:
        raise ValueError("--shards_train and --shards_val must be >= 1")
    dirs = folder_splits(input_dir)
    os.makedirs(output_dir, exist_ok=True)
    shards, counts = {}, {}  # shard name -> (items, split dir)
    for (split, prefix, flag), total in zip(SPLITS, (shards_train, shards_val), strict=True):
        paths, labels, class_names = list_image_folder(input_dir, split)
        items = list(zip(paths, labels.tolist(), strict=True))
        counts[prefix] = n = len(items)
        if total > n:  # valid but wasteful: the source reads empty shards as zero records
            logging.warning("%s: %d shards for %d images leaves %d of them empty; pass %s=%d or "
                            "fewer", prefix, total, n, total - n, flag, n)
        for i in range(total):
            part = items[i * n // total : (i + 1) * n // total]
            shards[shard_name(prefix, i, total)] = (part, dirs[split])
    labels_txt = os.path.join(output_dir, "labels.txt")
    with open(labels_txt + ".tmp", "w") as f:
        f.write("".join(f"{name}\n" for name in class_names))
    _replace_durably(labels_txt + ".tmp", labels_txt)

    def path(name):
        return os.path.join(output_dir, name)

    manifest = read_manifest(output_dir)
    complete = _in_parallel(
        is_complete,
        [(path(name), items, input_dir, manifest.get(name), verify)
         for name, (items, _) in shards.items()],
        workers, "Checking",
    )
    entries = {name: manifest[name] for name, done in zip(shards, complete, strict=True) if done}
    todo = [name for name in shards if name not in entries]
    if todo:  # drop their entries first, so that an interrupted run cannot leave a stale one
        write_manifest(output_dir, entries)
    results = _in_parallel(
        write_shard,
        [(path(name), items, input_dir, split_dir, class_names, verify)
         for name, (items, split_dir) in shards.items() if name in todo],
        workers, "TFRecords",
    )
    undecodable = []
    for name, (entry, problems) in zip(todo, results, strict=True):
        if entry:
            entries[name] = entry
        undecodable += problems
    if not undecodable:
        for _, prefix, _ in SPLITS:
            if stale := remove_stale_shards(output_dir, prefix, shards):
                logging.warning("%s: removed %d shards of an earlier conversion with another shard "
                                "count: %s", output_dir, len(stale), ", ".join(stale))
    write_manifest(output_dir, entries)
    if undecodable:
        listed = "\n  ".join(undecodable[:20]) + ("\n  ..." if len(undecodable) > 20 else "")
        raise DataError(
            f"{len(undecodable)} image(s) that TensorFlow cannot decode (training would stop at "
            f"them):\n  {listed}\nRemove or replace them in {input_dir} and re-run; the "
            f"{len(entries)} complete shards are kept."
        )
    logging.info(
        "%s: %d train and %d validation images in %d shards (%d written, %d already complete)",
        output_dir, counts["train"], counts["validation"], len(shards), len(todo),
        len(shards) - len(todo),
    )
    return {**counts, "written": len(todo)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tf_largebatch.data.convert",
        description="Convert <input_dir>/{train,val}/<class>/* images to TFRecord shards.",
    )
    parser.add_argument("--input_dir", required=True, help="folder tree with train/ and val/")
    parser.add_argument("--output_dir", required=True, help="where the shards are written")
    parser.add_argument("--shards_train", type=int, default=1024)
    parser.add_argument("--shards_val", type=int, default=128)
    parser.add_argument("--workers", type=int, default=None, help="threads (default: CPUs)")
    parser.add_argument("--verify", dest="verify", action="store_true", default=True,
                        help="decode every image and refuse those training cannot (default)")
    parser.add_argument("--noverify", dest="verify", action="store_false",
                        help="skip the decoding check")
    args = parser.parse_args(argv)
    logging.set_verbosity(logging.INFO)
    try:
        convert(args.input_dir, args.output_dir, args.shards_train, args.shards_val, args.workers,
                args.verify)
    except DataError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

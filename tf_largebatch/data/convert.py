"""Convert an image folder tree to TFRecord shards.

    python -m tf_largebatch.data.convert --input_dir=/data/imagenet \\
        --output_dir=/data/imagenet-tfrecord --shards_train=1024 --shards_val=128

Reads ``<input_dir>/train/<class>/*`` and ``<input_dir>/val/<class>/*`` (or ``test/``) exactly as
the "folder" source does (sorted classes and files, magic bytes checked) and writes
``train-NNNNN-of-MMMMM``, ``validation-NNNNN-of-MMMMM`` and ``labels.txt`` (class names, one per
line, in label order). Records keep the listing order, cut into contiguous shards, so record ``i``
is folder example ``i`` and both sources give identical pipelines. Images are stored as the
original file bytes (no re-encoding) with 0-based labels; see :mod:`tf_largebatch.data.tfrecord`.

Shards are written in parallel by a thread pool, each to a temporary name and then renamed, so a
shard under its final name is complete; a re-run skips shards that exist with the expected number
of records and redoes the rest.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import sys

import tensorflow as tf
from absl import logging

from tf_largebatch.data import tfrecord
from tf_largebatch.data.errors import DataError
from tf_largebatch.data.folders import folder_splits, list_image_folder

try:
    from tqdm import tqdm
except ImportError:  # tqdm comes with tensorflow-datasets; fall back to a silent counter
    tqdm = None


def shard_name(prefix: str, index: int, total: int) -> str:
    return f"{prefix}-{index:05d}-of-{total:05d}"


def write_shard(path: str, items: list[tuple[str, int]], root: str, class_names) -> bool:
    """Writes ``items`` (file path, label) to the TFRecord ``path``; returns False when a complete
    shard was already there."""
    if os.path.exists(path):
        try:
            if len(tfrecord.index_records(path)[0]) == len(items):
                return False
        except ValueError:
            pass  # corrupt: rewrite
    tmp = f"{path}.tmp-{os.getpid()}"
    with tf.io.TFRecordWriter(tmp) as writer:
        for file, label in items:
            with open(file, "rb") as f:
                encoded = f.read()
            writer.write(
                tfrecord.make_example(
                    encoded, label, class_names[label], os.path.relpath(file, root)
                )
            )
    os.replace(tmp, path)
    return True


def convert(
    input_dir: str, output_dir: str, shards_train: int, shards_val: int, workers: int | None = None
) -> dict[str, int]:
    """Converts both splits; returns ``{"train": N_train, "validation": N_val, "written": k}``."""
    if min(shards_train, shards_val) < 1:
        raise ValueError("--shards_train and --shards_val must be >= 1")
    dirs = folder_splits(input_dir)
    os.makedirs(output_dir, exist_ok=True)
    jobs, counts = [], {}
    for split, prefix, shards in (
        ("train", "train", shards_train),
        ("eval", "validation", shards_val),
    ):
        paths, labels, class_names = list_image_folder(input_dir, split)
        items = list(zip(paths, labels.tolist(), strict=True))
        counts[prefix] = len(items)
        for i in range(shards):
            part = items[i * len(items) // shards : (i + 1) * len(items) // shards]
            path = os.path.join(output_dir, shard_name(prefix, i, shards))
            jobs.append((path, part, dirs[split], class_names))
    labels_txt = os.path.join(output_dir, "labels.txt")
    with open(labels_txt + ".tmp", "w") as f:
        f.write("".join(f"{name}\n" for name in class_names))
    os.replace(labels_txt + ".tmp", labels_txt)

    written = 0
    bar = tqdm(total=len(jobs), unit="shard", desc="TFRecords") if tqdm else None
    with concurrent.futures.ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        futures = [pool.submit(write_shard, *job) for job in jobs]
        for future in concurrent.futures.as_completed(futures):
            written += future.result()
            if bar:
                bar.update()
    if bar:
        bar.close()
    logging.info(
        "%s: %d train and %d validation images in %d shards (%d written, %d already " "complete)",
        output_dir,
        counts["train"],
        counts["validation"],
        len(jobs),
        written,
        len(jobs) - written,
    )
    return {**counts, "written": written}


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
    args = parser.parse_args(argv)
    logging.set_verbosity(logging.INFO)
    try:
        convert(args.input_dir, args.output_dir, args.shards_train, args.shards_val, args.workers)
    except DataError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

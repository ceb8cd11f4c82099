"""Listing an image folder tree ``<data_dir>/{train,val|test}/<class>/*.jpg`` (no TensorFlow).

Labels are the positions of the class-folder names of ``train/`` in sorted order, and the eval
split must have the same set (without ``train/``, the eval split alone can be listed, labelled by
its own class folders); files ``.jpg/.jpeg/.png`` (any case) sorted by name, other files skipped
with a warning; every file's magic bytes are checked while listing (a thread pool reads 8 bytes
per file), so a non-image fails up front with its path.
"""

import concurrent.futures
import os
from collections.abc import Sequence

import numpy as np
from absl import logging

from tf_largebatch.data.errors import DataError, DataNotFoundError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")  # JPEG, PNG


def require_dir(path: str, what: str) -> None:
    if not os.path.isdir(path):
        raise DataNotFoundError(f"{what} not found: {path}")


def _class_dirs(split_dir: str) -> list[str]:
    with os.scandir(split_dir) as it:
        return sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))


def folder_splits(data_dir: str, need_train: bool = True) -> dict[str, str]:
    """Returns ``{"train": <data_dir>/train, "eval": <data_dir>/val or /test}``, checked; without
    ``need_train``, no "train" when ``train/`` is absent."""
    layout = "expected <data_dir>/train/<class>/*.jpg and <data_dir>/val/<class>/*.jpg"
    require_dir(data_dir, f"image folder ({layout})")
    train = os.path.join(data_dir, "train")
    if need_train:
        require_dir(train, f"training split ({layout})")
    splits = {"train": train} if os.path.isdir(train) else {}
    for name in ("val", "test"):
        if os.path.isdir(os.path.join(data_dir, name)):
            return {**splits, "eval": os.path.join(data_dir, name)}
    raise DataNotFoundError(
        f"validation split not found: neither {os.path.join(data_dir, 'val')} nor "
        f"{os.path.join(data_dir, 'test')} exists ({layout})"
    )


def _has_image_magic(path: str) -> str | None:
    """Returns None when ``path`` starts like a JPEG or PNG file, else the reason it does not."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        return f"unreadable ({e.strerror or e})"
    return None if head.startswith(_MAGIC) else f"not a JPEG/PNG file (starts with {head[:4]!r})"


def check_image_files(paths: Sequence[str], threads: int = 16) -> None:
    """Raises DataError naming the first file that is unreadable or not a JPEG/PNG."""

    def check(chunk):
        return [(p, r) for p in chunk if (r := _has_image_magic(p)) is not None]

    chunks = [paths[i::threads] for i in range(threads)]
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        problems = sorted(sum(pool.map(check, chunks), []))
    if problems:
        path, reason = problems[0]
        raise DataError(
            f"{path}: {reason}; {len(problems)} bad image file(s) in all. Delete or replace them "
            "(only JPEG and PNG images are read)."
        )


def list_image_folder(data_dir: str, split: str, check_files: bool = True):
    """Lists one split of an image folder tree.

    Returns ``(paths, labels, class_names)``: sorted file paths (class by class), int32 labels and
    the sorted class-folder names of ``train/``, which must equal those of the eval split (of the
    eval split when "eval" is listed from a tree without ``train/``).
    """
    dirs = folder_splits(data_dir, need_train=split == "train")
    eval_classes = _class_dirs(dirs["eval"])
    labels_from = dirs.get("train", dirs["eval"])
    classes = _class_dirs(labels_from)
    if not classes:
        raise DataError(f"{labels_from} has no class folders; expected "
                        f"{os.path.basename(labels_from)}/<class>/*.jpg")
    if classes != eval_classes:
        only_train = sorted(set(classes) - set(eval_classes))
        only_eval = sorted(set(eval_classes) - set(classes))
        raise DataError(
            f"class folders differ between {dirs['train']} and {dirs['eval']}: only in train "
            f"{only_train}, only in {os.path.basename(dirs['eval'])} {only_eval}. Every class "
            "needs a folder (with images) in both splits so that labels agree."
        )
    paths, labels, skipped = [], [], []
    for label, name in enumerate(classes):
        class_dir = os.path.join(dirs[split], name)
        with os.scandir(class_dir) as it:
            files = sorted(e.name for e in it if not e.is_dir() and e.name[0] != ".")
        images = [f for f in files if os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS]
        if len(images) < len(files):
            skipped += [os.path.join(class_dir, f) for f in sorted(set(files) - set(images))]
        if not images:
            raise DataError(
                f"class folder {class_dir} has no images (.jpg/.jpeg/.png); add images or remove "
                "the class from every split"
            )
        paths += [os.path.join(class_dir, f) for f in images]
        labels += [label] * len(images)
    if skipped:
        logging.warning("Skipped %d non-image files, e.g. %s", len(skipped), skipped[0])
    if check_files:
        check_image_files(paths)
    return paths, np.asarray(labels, np.int32), tuple(classes)

"""Data sources: N examples with random access by index.

A :class:`Source` maps an int64 example index in ``[0, num_examples)`` to ``(image, label)`` inside
the tf.data graph. The index order is fixed and identical on every worker (sorted file lists,
shard order), so the sharding code can work on indices alone:

* ``"folder"``: ``<data_dir>/train/<class>/*`` and ``<data_dir>/val/<class>/*`` (``test/`` when
  ``val/`` is absent); labels = position of the class folder name in sorted order, taken from
  ``train/`` and required to be the same set in both splits (the eval split of a tree without
  ``train/`` is labelled by its own class folders). Files ``.jpg/.jpeg/.png`` (any
  case), sorted by name; other files are skipped with a warning. Every file's magic bytes are
  checked while listing (a thread pool reads 8 bytes per file), so a non-image fails up front; a
  truncated JPEG fails at decode time (``tf.errors.InvalidArgumentError``), never as a black image.
* ``"tfrecord"``: ``<data_dir>/train-*-of-*`` / ``validation-*-of-*`` in the schema of
  :mod:`tf_largebatch.data.tfrecord` (0-based labels); class names from ``<data_dir>/labels.txt``
  (written by the converter) when present. Records are indexed once (headers only) at start-up.
* ``"tfds:<name>"``: a prepared TFDS dataset (``tfds.builder(name, data_dir=data_dir)``), read in
  TFDS's canonical order (shard files in order, records in file order, i.e. the order of
  ``as_dataset(shuffle_files=False)``); splits ``train`` and ``validation`` (else ``test``).
* ``"synthetic"``: uniform random uint8 images and labels, a pure function of the index;
  N = ``synthetic_examples`` (default 1024 train / 256 eval), ``num_classes`` default 10 for
  images up to 32 pixels, else 1000. Nothing to learn: for speed and shape checks.
* ``"shapes"``: generated images a network can learn (the demo's data): a disc whose hue
  names the class, at a random place and size, on a grey background under pixel noise; a pure
  function of the index, N and classes as for ``"synthetic"``.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import os
import re
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from tf_largebatch.data import tfrecord
from tf_largebatch.data.errors import DataError, DataNotFoundError
from tf_largebatch.data.folders import list_image_folder, require_dir

_SYNTHETIC_SEED = 0x5EED
DEFAULT_SYNTHETIC_EXAMPLES = {"train": 1024, "eval": 256}


@dataclasses.dataclass(frozen=True)
class Source:
    """A fixed, indexable list of examples.

    Attributes:
      num_examples: N.
      read: graph function, int64 scalar index -> ``(image, int32 label)``; the image is an
        encoded JPEG/PNG string when ``encoded`` else a uint8 ``[H, W, 3]`` tensor.
      encoded: whether ``read`` returns encoded images that still need decoding.
      num_classes: number of classes, when known.
      class_names: class names in label order, when known.
      name: human-readable description, for messages.
      fingerprint: sha256 of what identifies the examples (file names, labels and sizes;
        shard names and sizes; a generator's parameters), so that a resume can tell another
        data set of the same size and classes apart.
    """

    num_examples: int
    read: Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]]
    encoded: bool = True
    num_classes: int | None = None
    class_names: tuple[str, ...] | None = None
    name: str = ""
    fingerprint: str | None = None


def fingerprint(*parts) -> str:
    """sha256 (hex, 16 digits) of `parts`, each written with repr on its own line."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(repr(part).encode() + b"\n")
    return digest.hexdigest()[:16]


def _files_fingerprint(paths, labels=None, root=""):
    """Fingerprint of a file list: relative names, labels and sizes in bytes."""
    labels = [None] * len(paths) if labels is None else [int(x) for x in labels]
    return fingerprint(*((os.path.relpath(p, root) if root else os.path.basename(p), label,
                          os.path.getsize(p)) for p, label in zip(paths, labels, strict=True)))


def get_source(
    source: str | Source,
    data_dir: str | os.PathLike | None,
    split: str,
    *,
    image_size: int,
    num_classes: int | None = None,
    download: bool = False,
    synthetic_examples: int | None = None,
) -> Source:
    """Opens ``source`` ("synthetic", "folder", "tfrecord", "tfds:<name>" or a Source) for
    ``split`` ("train" or "eval")."""
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', not {split!r}")
    if isinstance(source, Source):
        src = source
    elif source in ("synthetic", "shapes"):
        n = synthetic_examples or DEFAULT_SYNTHETIC_EXAMPLES[split]
        make = synthetic_source if source == "synthetic" else shapes_source
        src = make(n, image_size, num_classes or synthetic_classes(image_size), split)
    elif source in ("folder", "tfrecord"):
        if not data_dir:
            raise ValueError(f"source={source!r} needs data_dir")
        data_dir = os.fspath(data_dir)
        if source == "folder":
            src = folder_source(data_dir, split)
        else:
            src = tfrecord_source(data_dir, split, num_classes)
    elif isinstance(source, str) and source.startswith("tfds:"):
        src = tfds_source(source[len("tfds:") :], data_dir, split, download=download)
    else:
        raise ValueError(
            f"unknown data source {source!r}; use 'synthetic', 'shapes', 'folder', 'tfrecord' or "
            "'tfds:<name>' (e.g. 'tfds:cifar10')"
        )
    if num_classes is not None and src.num_classes is not None and num_classes != src.num_classes:
        raise DataError(f"{src.name} has {src.num_classes} classes but num_classes={num_classes}")
    if src.num_classes is None and num_classes is not None:
        src = dataclasses.replace(src, num_classes=num_classes)
    if src.num_examples == 0:
        raise DataError(f"{src.name} ({split}) has no examples")
    return src


# ----------------------------------------------------------------------------- folder


def folder_source(data_dir: str, split: str) -> Source:
    """Source over an image folder tree (see the module docstring)."""
    paths, labels, classes = list_image_folder(data_dir, split)
    paths_t, labels_t = tf.constant(paths), tf.constant(labels)

    def read(index):
        return tf.io.read_file(tf.gather(paths_t, index)), tf.gather(labels_t, index)

    return Source(len(paths), read, True, len(classes), classes, f"image folder {data_dir}",
                  _files_fingerprint(paths, labels, data_dir))


# ----------------------------------------------------------------------------- records


def _indexed_records(files: Sequence[str], parse, name: str, check=None) -> Source:
    """Source over the records of ``files`` in order; ``parse`` maps a payload to (image, label)."""
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        index = list(pool.map(tfrecord.index_records, files))
    if check is not None:
        for path, (offsets, lengths) in zip(files, index, strict=True):
            if len(offsets):
                check(path, tfrecord.read_record(path, offsets[0], lengths[0]))
    file_ids = np.concatenate([np.full(len(o), i, np.int64) for i, (o, _) in enumerate(index)])
    offsets = np.concatenate([o for o, _ in index])
    lengths = np.concatenate([n for _, n in index])
    files = list(files)

    def fetch(i):
        return tfrecord.read_record(files[file_ids[i]], offsets[i], lengths[i])

    def read(i):
        payload = tf.numpy_function(fetch, [i], tf.string, stateful=False)
        payload.set_shape([])
        return parse(payload)

    return Source(len(offsets), read, True, name=name, fingerprint=_files_fingerprint(files))


def _read_labels_txt(data_dir: str) -> tuple[str, ...] | None:
    path = os.path.join(data_dir, "labels.txt")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return tuple(line.rstrip("\n") for line in f if line.strip())


def shard_files(data_dir: str, prefix: str) -> list[str]:
    """Sorted ``<data_dir>/<prefix>-NNNNN-of-MMMMM`` files; all M of them must be present."""
    require_dir(data_dir, "TFRecord folder")
    pattern = re.compile(rf"^{re.escape(prefix)}-(\d+)-of-(\d+)$")
    found = sorted(
        (m.group(2), m.group(1), m.string) for f in os.listdir(data_dir) if (m := pattern.match(f))
    )
    if not found:
        raise DataNotFoundError(
            f"no TFRecord shards {data_dir}/{prefix}-*-of-*; create them with python -m "
            f"tf_largebatch.data.convert --input_dir=<image folder> --output_dir={data_dir}"
        )
    totals = {int(t) for t, _, _ in found}
    if len(totals) != 1 or len(found) != totals.pop():
        raise DataError(
            f"{data_dir}: incomplete or mixed shard sets for {prefix} ({len(found)} files: "
            f"{found[0][2]} ... {found[-1][2]}); re-run the converter or remove stale shards"
        )
    return [os.path.join(data_dir, f) for _, _, f in found]


def tfrecord_source(data_dir: str, split: str, num_classes: int | None = None) -> Source:
    """Source over ImageNet-schema TFRecord shards (see :mod:`tf_largebatch.data.tfrecord`)."""
    files = shard_files(data_dir, "train" if split == "train" else "validation")
    src = _indexed_records(
        files, tfrecord.parse_example, f"TFRecords {data_dir}", tfrecord.check_schema
    )
    names = _read_labels_txt(data_dir)
    if names is None and num_classes is None:
        raise DataError(
            f"{data_dir} has no labels.txt (one class name per line, label order); add one or "
            "pass num_classes"
        )
    return dataclasses.replace(
        src, class_names=names, num_classes=len(names) if names else num_classes
    )


# ----------------------------------------------------------------------------- TFDS


def _import_tfds():
    """Imports tensorflow_datasets, turning a broken installation into one clear ImportError."""
    try:
        import tensorflow_datasets as tfds

        _ = tfds.core.registered  # a failed first import leaves a half-initialised module
    except Exception as e:
        raise ImportError(
            f"tensorflow_datasets is not usable ({type(e).__name__}: {e}). A known cause: "
            "tensorflow-metadata>=1.21 needs protobuf>=6, which TensorFlow 2.18 does not allow; "
            "install 'tensorflow-metadata<1.18'."
        ) from e
    return tfds


def tfds_source(name: str, data_dir: str | None, split: str, download: bool = False) -> Source:
    """Source over a TFDS image-classification dataset (``supervised_keys`` image, label)."""
    tfds = _import_tfds()
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as e:
        raise DataError(f"unknown TFDS dataset {name!r}; see tfds.list_builders()") from e
    if not builder.is_prepared():
        if not download:
            raise DataNotFoundError(
                f"TFDS dataset {name!r} is not prepared in {builder.data_dir}; pass "
                "download=True (--download) or run `tfds build` first"
            )
        builder.download_and_prepare()
    info = builder.info
    tfds_split = (
        "train" if split == "train" else ("validation" if "validation" in info.splits else "test")
    )
    if tfds_split not in info.splits:
        raise DataError(f"TFDS dataset {name!r} has no {tfds_split!r} split ({list(info.splits)})")
    if not info.supervised_keys:
        raise DataError(f"TFDS dataset {name!r} has no supervised (image, label) keys")
    image_key, label_key = info.supervised_keys[:2]
    decoders = {image_key: tfds.decode.SkipDecoding()}
    label_names = getattr(info.features[label_key], "names", None)
    desc = f"TFDS {name} {tfds_split}"
    if (info.file_format or tfds.core.FileFormat.TFRECORD) == tfds.core.FileFormat.TFRECORD:

        def parse(payload):
            example = info.features.deserialize_example(payload, decoders=decoders)
            return example[image_key], tf.cast(example[label_key], tf.int32)

        files = [os.fspath(p) for p in info.splits[tfds_split].filepaths]
        src = _indexed_records(files, parse, desc)
    else:  # random-access formats such as array_record
        data = builder.as_data_source(tfds_split, decoders=decoders)

        def fetch(i):
            example = data[int(i)]
            return np.asarray(example[image_key]), np.asarray(example[label_key], np.int32)

        def read(i):
            image, label = tf.numpy_function(fetch, [i], (tf.string, tf.int32), stateful=False)
            return tf.ensure_shape(image, []), tf.ensure_shape(label, [])

        src = Source(len(data), read, True, name=desc,
                     fingerprint=fingerprint(name, str(info.version), tfds_split, len(data)))
    return dataclasses.replace(
        src,
        num_classes=len(label_names) if label_names else None,
        class_names=tuple(label_names) if label_names else None,
    )


# ----------------------------------------------------------------------------- synthetic


def synthetic_classes(image_size: int) -> int:
    """Default class count of synthetic data: 10 (CIFAR-like) up to 32 pixels, else 1000."""
    return 10 if image_size <= 32 else 1000


def synthetic_source(num_examples: int, image_size: int, num_classes: int, split: str) -> Source:
    """Uniform random ``image_size``² uint8 images with uniform labels, a function of the index
    (and of the split: train and eval differ). Fixed across runs and independent of the seed."""
    salt = 0 if split == "train" else 1

    def read(index):
        key = tf.random.experimental.stateless_fold_in(
            tf.constant([_SYNTHETIC_SEED, salt], tf.int64), index
        )
        image_key, label_key = tf.unstack(tf.random.experimental.stateless_split(key, 2))
        image = tf.random.stateless_uniform(
            [image_size, image_size, 3], image_key, minval=0, maxval=256, dtype=tf.int32
        )
        label = tf.random.stateless_uniform([], label_key, 0, num_classes, dtype=tf.int32)
        return tf.cast(image, tf.uint8), label

    return Source(num_examples, read, False, num_classes, None, f"synthetic {split} data",
                  fingerprint("synthetic", _SYNTHETIC_SEED, split, num_examples, image_size,
                              num_classes))


def shapes_source(num_examples: int, image_size: int, num_classes: int, split: str) -> Source:
    """Learnable generated images: example i has label ``i mod C`` and shows a disc of hue
    ``label / C`` (HSV saturation 0.8, value 0.9) with a random centre in the middle half of
    the image and radius 0.15–0.35 of its side, on a uniform grey in [0.2, 0.6], plus Gaussian
    pixel noise of σ = 0.1. Hue survives the CIFAR crop and flip; noise, position and size
    make every image different. Train and eval differ; fixed across runs and seeds."""
    salt = 0 if split == "train" else 1
    size = float(image_size)
    grid = tf.range(image_size, dtype=tf.float32) + 0.5

    def read(index):
        key = tf.random.experimental.stateless_fold_in(
            tf.constant([_SYNTHETIC_SEED + 1, salt], tf.int64), index
        )
        keys = tf.unstack(tf.random.experimental.stateless_split(key, 4))
        label = tf.cast(index % num_classes, tf.int32)
        hue = tf.cast(label, tf.float32) / num_classes
        color = tf.image.hsv_to_rgb(tf.stack([hue, 0.8, 0.9]))
        center = tf.random.stateless_uniform([2], keys[0], 0.25 * size, 0.75 * size)
        radius = tf.random.stateless_uniform([], keys[1], 0.15 * size, 0.35 * size)
        grey = tf.random.stateless_uniform([], keys[2], 0.2, 0.6)
        distance = tf.sqrt((grid[:, None] - center[0]) ** 2 + (grid[None, :] - center[1]) ** 2)
        disc = tf.sigmoid(radius - distance)[..., None]  # soft edge, about one pixel wide
        image = grey * (1.0 - disc) + color * disc
        image += 0.1 * tf.random.stateless_normal([image_size, image_size, 3], keys[3])
        image = tf.clip_by_value(image, 0.0, 1.0) * 255.0
        return tf.cast(tf.round(image), tf.uint8), label

    return Source(num_examples, read, False, num_classes, None, f"shapes {split} data",
                  fingerprint("shapes", _SYNTHETIC_SEED + 1, split, num_examples, image_size,
                              num_classes))


# ----------------------------------------------------------------------------- cache


def cache_decoded(source: Source, decode: Callable[[tf.Tensor], tf.Tensor]) -> Source:
    """Decodes every image once into host memory (for small datasets such as CIFAR-10).

    All images must have the same shape. The result reads by ``tf.gather``.
    """

    def load(index):
        image, label = source.read(index)
        image = decode(image) if source.encoded else image
        return image, label, tf.shape(image)

    ds = tf.data.Dataset.range(source.num_examples).map(load, tf.data.AUTOTUNE, deterministic=True)
    images, labels, shapes = zip(*ds.padded_batch(1024).as_numpy_iterator(), strict=True)
    sizes = np.unique(np.concatenate(shapes), axis=0)
    if len(sizes) > 1:
        raise DataError(
            f"cache=True needs images of one size; {source.name} has {len(sizes)} sizes "
            f"({sizes[0].tolist()}, {sizes[-1].tolist()}, ...). Use cache=False."
        )
    images = tf.constant(np.concatenate(images))
    labels = tf.constant(np.concatenate(labels))

    def read(index):
        return tf.gather(images, index), tf.gather(labels, index)

    return dataclasses.replace(source, read=read, encoded=False)

"""``train_dataset`` and ``eval_dataset``: the tf.data input pipelines the trainer calls."""

from __future__ import annotations

import dataclasses

import tensorflow as tf
from absl import logging

from tf_largebatch.data import preprocess, sharding
from tf_largebatch.data.layout import BatchLayout, batch_layout
from tf_largebatch.data.sources import Source, cache_decoded, get_source


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a pipeline yields.

    Attributes:
      num_examples: N, examples in the split (before dropping or padding).
      num_classes: number of classes (None if unknown).
      class_names: class names in label order, when known.
      global_batch: per_worker_batch * num_workers * simulate_workers.
      batch_size: images per yielded batch in this process, per_worker_batch * simulate_workers.
      steps_per_epoch: training steps per epoch, N // global_batch or fewer (train only).
      dropped_per_epoch: examples left out of each epoch, N - steps * global_batch (train only).
      steps: evaluation steps, ceil(N / global_batch), the same on every worker (eval only).
      padded: weight-0 padding elements over all workers, steps * global_batch - N (eval only).
      layout: the :class:`~tf_largebatch.data.layout.BatchLayout` of the epoch (train only).
    """

    num_examples: int
    num_classes: int | None
    class_names: tuple[str, ...] | None
    global_batch: int
    batch_size: int
    steps_per_epoch: int | None = None
    dropped_per_epoch: int | None = None
    steps: int | None = None
    padded: int | None = None
    layout: BatchLayout | None = None


def _check_layout(per_worker_batch, num_workers, worker_index, simulate_workers):
    if min(per_worker_batch, num_workers, simulate_workers) < 1:
        raise ValueError("per_worker_batch, num_workers and simulate_workers must be >= 1")
    if not 0 <= worker_index < num_workers:
        raise ValueError(f"worker_index={worker_index} is not in [0, num_workers={num_workers})")


def _open(source, data_dir, split, image_size, num_classes, download, cache, synthetic_examples):
    src = get_source(
        source,
        data_dir,
        split,
        image_size=image_size,
        num_classes=num_classes,
        download=download,
        synthetic_examples=synthetic_examples,
    )
    return cache_decoded(src, preprocess.decode) if cache else src


def _load(src: Source, index):
    """Reads and decodes one example: (uint8 image, int32 label), label range checked."""
    image, label = src.read(index)
    if src.encoded:
        image = preprocess.decode(image)
    if src.num_classes is not None:
        tf.debugging.assert_less(
            tf.cast(label, tf.uint32),  # negative labels wrap around and fail too
            tf.cast(src.num_classes, tf.uint32),
            message=f"{src.name}: labels must be 0-based class ids below {src.num_classes}",
        )
    return image, tf.cast(label, tf.int32)


def _finish(ds: tf.data.Dataset, batch_size: int) -> tf.data.Dataset:
    ds = ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = True
    return ds.with_options(options)


def train_dataset(
    source: str | Source,
    data_dir: str | None = None,
    *,
    image_size: int,
    num_classes: int | None = None,
    per_worker_batch: int,
    num_workers: int = 1,
    worker_index: int = 0,
    simulate_workers: int = 1,
    seed: int = 0,
    start_epoch: int = 0,
    start_step: int = 0,
    epochs: int,
    augment_off_epoch: int | None = None,
    preprocessing: str | None = "imagenet",
    download: bool = False,
    cache: bool = False,
    synthetic_examples: int | None = None,
    steps_per_epoch: int | None = None,
) -> tuple[tf.data.Dataset, DatasetInfo]:
    """Training batches of this worker: one random shuffle per epoch split among the k workers.

    Yields ``(images float32 [b, S, S, 3], labels int32 [b])`` with ``b = per_worker_batch *
    simulate_workers``, for epochs ``start_epoch .. epochs-1`` back to back, ``steps_per_epoch``
    batches each, following the rules in :mod:`tf_largebatch.data.sharding` (epoch e uses the
    permutation P_e of (seed, e); N mod kn examples are left out of each epoch). Augmentation is
    a function of ``(seed, epoch, example index)``, so a resumed run sees the same images.

    Args:
      source: "synthetic", "shapes", "folder", "tfrecord", "tfds:<name>" or a ``Source``.
      data_dir: the folder tree, TFRecord directory or TFDS data_dir (not for generated data).
      image_size: S, the side of the square images yielded.
      per_worker_batch: n, images per worker per step.
      num_workers: Horovod processes (``hvd.size()``); worker_index: this one (``hvd.rank()``).
      simulate_workers: workers simulated in this process (its batch holds their n each).
      num_classes: needed for TFRecords without labels.txt; checked against the source.
      seed: seed of the permutations and the augmentation.
      start_epoch: the first epoch to yield (the epoch a resumed run restarts at).
      start_step: the step of ``start_epoch`` to begin at (a run resumed mid-epoch).
      epochs: one past the last epoch, ``fit``'s ``epochs``.
      augment_off_epoch: from this epoch on, the eval preprocessing instead of augmentation
        (``schedules.augmentation_off_epoch(epochs, E)``; None: always augment).
      preprocessing: "imagenet", "cifar" or None (images as decoded, float32).
      download: let TFDS download the dataset.
      cache: decode every image once into memory (small datasets such as CIFAR-10).
      synthetic_examples: N for generated data (default 1024).
      steps_per_epoch: fewer global batches per epoch than N // kn (smoke runs); pass the
        same value to ``fit``.

    Returns:
      ``(dataset, DatasetInfo)``; ``info.steps_per_epoch`` is ``fit``'s ``steps_per_epoch``.

    Example:
      >>> ds, info = train_dataset("folder", "/data/cifar10", image_size=32,
      ...     per_worker_batch=32, simulate_workers=8, epochs=90, preprocessing="cifar")
      >>> model.fit(ds, epochs=90, steps_per_epoch=info.steps_per_epoch)
    """
    _check_layout(per_worker_batch, num_workers, worker_index, simulate_workers)
    train_fn, eval_fn = preprocess.get_preprocessing(preprocessing, image_size)
    src = _open(
        source, data_dir, "train", image_size, num_classes, download, cache, synthetic_examples
    )
    layout = batch_layout(src.num_examples, per_worker_batch, num_workers, simulate_workers,
                          steps_per_epoch, src.name)
    n, global_batch, batch_size = src.num_examples, layout.global_batch, layout.process_batch
    steps = layout.steps_per_epoch
    if worker_index == 0:
        logging.info("%s: %s", src.name, layout.describe())

    def example(epoch, index):
        image, label = _load(src, index)
        key = tf.random.experimental.stateless_fold_in(
            tf.stack([tf.cast(seed, tf.int64), epoch]), index
        )
        if augment_off_epoch is None:
            return train_fn(image, key), label
        image = tf.cond(
            epoch < augment_off_epoch, lambda: train_fn(image, key), lambda: eval_fn(image)
        )
        return image, label

    indices = sharding.train_indices(
        n, global_batch, num_workers, worker_index, seed, start_epoch, epochs, steps, start_step
    )
    ds = indices.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    info = DatasetInfo(
        n,
        src.num_classes,
        src.class_names,
        global_batch,
        batch_size,
        steps_per_epoch=steps,
        dropped_per_epoch=layout.remainder + layout.skipped,
        layout=layout,
    )
    return _finish(ds, batch_size), info


def eval_dataset(
    source: str | Source,
    data_dir: str | None = None,
    *,
    image_size: int,
    per_worker_batch: int,
    num_workers: int = 1,
    worker_index: int = 0,
    simulate_workers: int = 1,
    preprocessing: str | None = "imagenet",
    download: bool = False,
    cache: bool = False,
    num_classes: int | None = None,
    synthetic_examples: int | None = None,
) -> tuple[tf.data.Dataset, DatasetInfo]:
    """Evaluation batches of this worker, each validation image exactly once over all workers.

    Yields ``(images, labels, sample_weight float32)``: every worker yields ``info.steps``
    batches; the padding up to a multiple of the global batch has weight 0.0 and the real
    images 1.0, so compile metrics as ``weighted_metrics`` (plain ``metrics`` ignore the
    weight) or sum the weights to count. No shuffling, no augmentation.

    Args:
      source, data_dir, image_size, per_worker_batch, num_workers, worker_index,
      simulate_workers, preprocessing, download, cache, num_classes: as in ``train_dataset``.
      synthetic_examples: N for generated data (default 256).

    Returns:
      ``(dataset, DatasetInfo)``; ``info.steps`` is ``fit``'s / ``evaluate``'s
      ``validation_steps`` / ``steps``.

    Example:
      >>> val, info = eval_dataset("folder", "/data/cifar10", image_size=32,
      ...     per_worker_batch=32, simulate_workers=8, preprocessing="cifar")
      >>> model.fit(ds, ..., validation_data=val, validation_steps=info.steps)
    """
    _check_layout(per_worker_batch, num_workers, worker_index, simulate_workers)
    _, eval_fn = preprocess.get_preprocessing(preprocessing, image_size)
    src = _open(
        source, data_dir, "eval", image_size, num_classes, download, cache, synthetic_examples
    )
    batch_size = per_worker_batch * simulate_workers
    global_batch = batch_size * num_workers
    n = src.num_examples

    def example(index, weight):
        image, label = _load(src, index)
        return eval_fn(image), label, weight

    indices = sharding.eval_indices(n, global_batch, num_workers, worker_index)
    ds = indices.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    steps = -(-n // global_batch)
    info = DatasetInfo(
        n,
        src.num_classes,
        src.class_names,
        global_batch,
        batch_size,
        steps=steps,
        padded=steps * global_batch - n,
    )
    return _finish(ds, batch_size), info

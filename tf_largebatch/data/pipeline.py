"""``train_dataset`` and ``eval_dataset``: the tf.data input pipelines the trainer calls."""

from __future__ import annotations

import dataclasses

import tensorflow as tf
from absl import logging

from tf_largebatch.data import preprocess, sharding
from tf_largebatch.data.errors import DataError
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
      steps_per_epoch: training steps per epoch, N // global_batch (train only).
      dropped_per_epoch: N mod global_batch examples left out of each epoch (train only).
      steps: evaluation steps, ceil(N / global_batch), the same on every worker (eval only).
      padded: weight-0 padding elements over all workers, steps * global_batch - N (eval only).
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


def _left_out(n, global_batch, natural_steps, steps):
    """Says which examples an epoch leaves out, and why: N mod kn that cannot fill a global
    batch (a different random subset each epoch), and whole batches that a shorter
    --steps_per_epoch skips."""
    parts = []
    if n % global_batch:
        parts.append(f"{n % global_batch} examples (N mod global batch) left out of each epoch, "
                     "a different random subset each time")
    if steps < natural_steps:
        parts.append(f"steps_per_epoch = {steps} of the {natural_steps} full global batches, so "
                     f"{(natural_steps - steps) * global_batch} more examples are not seen in "
                     "each epoch")
    return "; " + "; ".join(parts) if parts else ""


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
    epochs: int,
    augment_off_epoch: int | None = None,
    preprocessing: str | None = "imagenet",
    download: bool = False,
    cache: bool = False,
    synthetic_examples: int | None = None,
    steps_per_epoch: int | None = None,
) -> tuple[tf.data.Dataset, DatasetInfo]:
    """Training batches ``(images float32 [b, S, S, 3], labels int32 [b])`` of this worker, for
    epochs ``start_epoch .. epochs-1`` back to back (``steps_per_epoch`` batches each), with
    ``b = per_worker_batch * simulate_workers``.

    Follows the rules in :mod:`tf_largebatch.data.sharding`. Augmentation is seeded by
    ``(seed, epoch, example index)``; from epoch ``augment_off_epoch`` on, the eval preprocessing is
    used instead. ``cache`` decodes all images into memory once (small datasets only);
    ``synthetic_examples`` sets N for ``source="synthetic"`` (default 1024). ``steps_per_epoch``
    shortens epochs to their first ``steps_per_epoch`` global batches (at most ``N // G``).
    """
    _check_layout(per_worker_batch, num_workers, worker_index, simulate_workers)
    train_fn, eval_fn = preprocess.get_preprocessing(preprocessing, image_size)
    src = _open(
        source, data_dir, "train", image_size, num_classes, download, cache, synthetic_examples
    )
    batch_size = per_worker_batch * simulate_workers
    global_batch = batch_size * num_workers
    n = src.num_examples
    steps = n // global_batch
    if steps == 0:
        raise DataError(f"{src.name}: {n} examples cannot fill one global batch of {global_batch}")
    natural_steps = steps
    if steps_per_epoch is not None:
        if not 0 < steps_per_epoch <= steps:
            raise DataError(
                f"{src.name}: steps_per_epoch={steps_per_epoch} is not in [1, N // global batch "
                f"= {n} // {global_batch} = {steps}]"
            )
        steps = steps_per_epoch
    dropped = n - steps * global_batch
    if worker_index == 0:
        logging.info(
            "%s: %d examples, global batch %d, %d steps per epoch%s",
            src.name,
            n,
            global_batch,
            steps,
            _left_out(n, global_batch, natural_steps, steps),
        )

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
        n, global_batch, num_workers, worker_index, seed, start_epoch, epochs, steps
    )
    ds = indices.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    info = DatasetInfo(
        n,
        src.num_classes,
        src.class_names,
        global_batch,
        batch_size,
        steps_per_epoch=steps,
        dropped_per_epoch=dropped,
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
    """Evaluation batches ``(images, labels, sample_weight float32)`` of this worker.

    Every worker yields ``info.steps`` batches; over all workers each validation image appears
    exactly once with weight 1.0, and the padding up to a multiple of the global batch has weight
    0.0 (pass the weights to metrics, or sum them to count). No shuffling, no augmentation.
    ``num_classes`` is needed for TFRecords without labels.txt (see
    :mod:`~tf_largebatch.data.sources` for the synthetic defaults).
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

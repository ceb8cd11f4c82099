"""Which example indices each worker reads: the data rules of Goyal et al. (2017), section 3.

With ``k`` workers of ``n`` images each, the global batch is ``G = n * k``. Epoch ``e`` uses one
permutation ``P_e`` of the N examples, seeded by ``(seed, e)`` and therefore identical on every
worker; global step ``j`` of the epoch uses ``P_e[j*G : (j+1)*G]``, and worker ``r`` takes the
contiguous slice ``[r*n, (r+1)*n)`` of it. ``N // G`` steps are taken and the last ``N mod G``
examples of ``P_e`` are dropped. A process simulating ``s`` workers is handed the ``s`` adjacent
slices at once (``n*s`` images), which is exactly the concatenation the ``s`` workers would get.

Evaluation reads ``0..N-1`` in order, padded to a multiple of ``G`` with weight-0 copies of the
last example, with the same worker layout; the weights of all workers sum to N.
"""

import tensorflow as tf


def epoch_permutation(num_examples: int, seed, epoch) -> tf.Tensor:
    """``P_e``: int64 permutation of ``range(num_examples)``, a pure function of (seed, epoch)."""
    key = tf.cast(tf.stack([seed, epoch]), tf.int64)
    return tf.random.experimental.stateless_shuffle(tf.range(num_examples, dtype=tf.int64), key)


def worker_slice(global_order: tf.Tensor, steps: int, num_workers: int, worker_index: int):
    """Worker ``worker_index``'s part of ``global_order`` (``steps`` global batches, each split
    into ``num_workers`` contiguous parts), in step order."""
    per_step = tf.reshape(global_order, [steps, num_workers, -1])
    return tf.reshape(per_step[:, worker_index], [-1])


def train_indices(
    num_examples: int,
    global_batch: int,
    num_workers: int,
    worker_index: int,
    seed: int,
    start_epoch: int,
    epochs: int,
    steps: int,
    start_step: int = 0,
) -> tf.data.Dataset:
    """Dataset of ``(epoch, index)`` int64 pairs this worker reads for epochs
    ``start_epoch .. epochs-1``: ``steps * G / num_workers`` per epoch, from the first
    ``steps * G`` of ``P_e`` (``steps`` ≤ N // G, as
    :func:`tf_largebatch.data.layout.batch_layout` checks); the first epoch begins at its step
    ``start_step`` (a run resumed mid-epoch)."""

    def one_epoch(epoch):
        used = epoch_permutation(num_examples, seed, epoch)[: steps * global_batch]
        mine = worker_slice(used, steps, num_workers, worker_index)
        return tf.data.Dataset.from_tensor_slices((tf.fill(tf.shape(mine), epoch), mine))

    indices = tf.data.Dataset.range(start_epoch, epochs).flat_map(one_epoch)
    return indices.skip(start_step * (global_batch // num_workers))


def eval_indices(
    num_examples: int, global_batch: int, num_workers: int, worker_index: int
) -> tf.data.Dataset:
    """Dataset of ``(index, weight)`` this worker reads: ``ceil(N / G)`` steps, padding weight 0."""
    steps = -(-num_examples // global_batch)
    position = tf.range(steps * global_batch, dtype=tf.int64)
    mine = worker_slice(position, steps, num_workers, worker_index)
    weight = tf.cast(mine < num_examples, tf.float32)
    return tf.data.Dataset.from_tensor_slices((tf.minimum(mine, num_examples - 1), weight))


def eval_examples_on_worker(
    num_examples: int, steps: int, batch_size: int, num_workers: int, worker_index: int
) -> int:
    """Real (weight 1) examples among the first ``steps`` eval batches of ``batch_size`` (= the
    per-process batch, per_worker_batch * simulate_workers) of worker ``worker_index``."""
    global_batch = batch_size * num_workers
    first = [j * global_batch + worker_index * batch_size for j in range(steps)]
    return sum(min(max(num_examples - start, 0), batch_size) for start in first)

"""The data rules of :mod:`~tf_largebatch.data.sharding` on NumPy arrays, without TensorFlow.

For one process with Keras's JAX (or any) backend at CIFAR scale, where a whole split fits in
memory (CIFAR-10: 184 MB of uint8). tf.data needs TensorFlow, which the GPU hosts of the
full-length protocol lack, hence this second, small pipeline.

* Epoch e uses one permutation P_e of the N images, a pure function of (seed, e); NumPy's
  generator draws it, so the order differs from the tf.data pipeline's, the rule does not.
* Global step j takes P_e[j·kn, (j+1)·kn): the k workers' contiguous slices of n in order, which
  the model's ghost BN (``virtual_batch_size=n``) normalises separately. N mod kn are dropped.
* CIFAR augmentation: zero-pad 4, random 32×32 crop, horizontal flip with probability 1/2, keyed
  by (seed, epoch, image index), then the CIFAR mean/std normalisation; from
  ``augment_off_epoch`` on, normalisation only. Evaluation: normalisation only.
* Images are decoded with Pillow (a libjpeg, like TensorFlow's; pixels may differ by one unit).
"""

import concurrent.futures
import os

import numpy as np

from tf_largebatch.data.constants import CIFAR_MEAN, CIFAR_PAD, CIFAR_STD
from tf_largebatch.data.errors import DataError
from tf_largebatch.data.folders import list_image_folder
from tf_largebatch.data.layout import batch_layout


def load_image_folder(data_dir, split, threads=None):
    """Decodes one split of ``<data_dir>/{train,val|test}/<class>/*`` into memory.

    Returns ``(images, labels, class_names)``: uint8 ``[N, H, W, 3]``, int32 ``[N]``, names in
    label order (sorted class folders, as tf_largebatch.data.sources reads them).
    """
    from PIL import Image  # Pillow comes with matplotlib, a dependency of the curves tool.

    paths, labels, class_names = list_image_folder(os.fspath(data_dir), split)

    def decode(path):
        try:
            with Image.open(path) as image:
                return np.asarray(image.convert("RGB"))
        except OSError as e:
            raise DataError(f"{path}: cannot decode ({e}); delete or replace the file") from e

    with concurrent.futures.ThreadPoolExecutor(threads or os.cpu_count()) as pool:
        images = list(pool.map(decode, paths, chunksize=256))
    first = images[0].shape
    for path, image in zip(paths, images, strict=True):
        if image.shape != first:
            raise DataError(f"{path} is {image.shape[1]}x{image.shape[0]} pixels, not "
                            f"{first[1]}x{first[0]} like {paths[0]}: the in-memory pipeline needs "
                            "images of one size. Resize the folder, or use tf_largebatch.train, "
                            "which resizes.")
    return np.stack(images), labels, class_names


def epoch_permutation(num_examples, seed, epoch):
    """P_e: a permutation of range(num_examples), a pure function of (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(num_examples)


def normalize(images):
    """uint8 ``[..., 3]`` → float32 (x − mean) / std with the CIFAR-10 channel statistics."""
    return (images.astype(np.float32) - np.float32(CIFAR_MEAN)) / np.float32(CIFAR_STD)


def crops_and_flips(num_examples, seed, epoch):
    """Each image's random crop offset (row, col) in [0, 2·pad] and flip bit in ``epoch``: a pure
    function of (seed, epoch), indexed by the image's index."""
    rng = np.random.default_rng([seed, epoch, 1])
    offsets = rng.integers(0, 2 * CIFAR_PAD + 1, size=(num_examples, 2))
    return offsets, rng.random(num_examples) < 0.5


def cifar_augment(images, offsets, flips):
    """Zero-pads uint8 ``images [B, H, W, 3]`` by 4, crops ``H×W`` at ``offsets [B, 2]`` and
    mirrors the images where ``flips [B]``."""
    height, width = images.shape[1:3]
    padded = np.pad(images, [(0, 0), (CIFAR_PAD, CIFAR_PAD), (CIFAR_PAD, CIFAR_PAD), (0, 0)])
    rows = offsets[:, :1] + np.arange(height)  # [B, H]
    cols = offsets[:, 1:] + np.arange(width)  # [B, W]
    cols = np.where(flips[:, None], cols[:, ::-1], cols)
    batch = np.arange(len(images))[:, None, None]
    return padded[batch, rows[:, :, None], cols[:, None, :]]


def train_batches(images, labels, global_batch, seed, start_epoch, epochs, steps_per_epoch=None,
                  augment_off_epoch=None, start_step=0):
    """Yields ``(float32 images, int32 labels)`` of kn = ``global_batch`` for epochs
    ``start_epoch .. epochs-1``, ``steps_per_epoch`` (default and at most N // kn) per epoch,
    the first from its step ``start_step``."""
    num_examples = len(images)
    # The whole global batch comes from this one process: k·n = 1 × kn here.
    steps = batch_layout(num_examples, global_batch,
                         steps_per_epoch=steps_per_epoch).steps_per_epoch
    for epoch in range(start_epoch, epochs):
        order = epoch_permutation(num_examples, seed, epoch)
        augment = augment_off_epoch is None or epoch < augment_off_epoch
        offsets, flips = crops_and_flips(num_examples, seed, epoch)
        for step in range(start_step if epoch == start_epoch else 0, steps):
            chosen = order[step * global_batch:(step + 1) * global_batch]
            batch = images[chosen]
            if augment:
                batch = cifar_augment(batch, offsets[chosen], flips[chosen])
            yield normalize(batch), labels[chosen]

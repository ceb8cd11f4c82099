"""Image decoding, augmentation and normalisation (one image at a time, float32 output).

Randomness is stateless: every random op takes a ``[2]`` int64 seed that the pipeline derives
from ``(seed, epoch, example index)``, so the augmented image of an example in an epoch is the same
whichever worker reads it and however often the run is resumed.

* ``"imagenet"``: train = random-resized crop (8%-100% of the area, aspect ratio 3/4-4/3, whole
  image if 10 attempts fail) resized to ``image_size``, random horizontal flip; eval = resize the
  shorter side to ``round(image_size * 256 / 224)`` and take the central ``image_size`` square.
  Both normalise with the ImageNet per-channel mean/std.
* ``"cifar"``: train = zero-pad 4 pixels, random ``image_size`` crop, random flip; eval = the
  image itself. Both normalise with the CIFAR-10 mean/std. Images not already
  ``image_size`` square are first resized to it.
* ``None``: resize to ``image_size`` square, float32 in [0, 255], no augmentation or
  normalisation (for models that normalise themselves, and for tests).
"""

import concurrent.futures
import re
from collections.abc import Callable

import tensorflow as tf

from tf_largebatch.data import tfrecord
from tf_largebatch.data.constants import (
    CIFAR_MEAN,
    CIFAR_PAD,
    CIFAR_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
)
from tf_largebatch.data.folders import folder_splits, list_image_folder
from tf_largebatch.data.sources import shard_files

EVAL_RESIZE_RATIO = 256 / 224

TrainFn = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]  # (uint8 image, seed) -> float32 image
EvalFn = Callable[[tf.Tensor], tf.Tensor]  # uint8 image -> float32 image


def decode(contents: tf.Tensor) -> tf.Tensor:
    """Decodes a JPEG/PNG string to uint8 ``[H, W, 3]``; corrupt data raises, never zeros."""
    return tf.io.decode_image(contents, channels=3, expand_animations=False)


def decode_problem(contents: bytes) -> str | None:
    """Why :func:`decode` rejects ``contents`` (TensorFlow's message), or None if it decodes."""
    try:
        decode(contents)
    except tf.errors.InvalidArgumentError as e:
        return re.sub(r"\{\{.*?\}\}\s*|\s*\[Op:\w+\]", "", e.message)
    return None


def find_undecodable(dataset: str, data_dir: str, threads: int = 8) -> str | None:
    """Finds the first image of a "folder" or "tfrecord" source that :func:`decode` rejects.

    Scans the training split (a folder's when it has one), then the evaluation split, decoding
    eagerly on ``threads`` threads. Returns ``"<file>: <reason>"`` (folder) or ``"<shard>,
    record <i> (<image/filename>): <reason>"`` (tfrecord), or None when every image decodes or
    the source is another kind.
    """
    if dataset == "folder":
        splits = folder_splits(data_dir, need_train=False)  # the splits it has
        jobs = [p for split in splits for p in list_image_folder(data_dir, split)[0]]

        def check(path):
            with open(path, "rb") as f:
                problem = decode_problem(f.read())
            return problem and f"{path}: {problem}"

    elif dataset == "tfrecord":
        jobs = shard_files(data_dir, "train") + shard_files(data_dir, "validation")

        def check(shard):
            for i, (filename, image) in enumerate(tfrecord.read_images(shard)):
                if problem := decode_problem(image):
                    name = f" ({filename.decode()})" if filename else ""
                    return f"{shard}, record {i}{name}: {problem}"
            return None

    else:
        return None
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        found = next(filter(None, pool.map(check, jobs)), None)
        pool.shutdown(cancel_futures=True)
    return found


def normalize(image: tf.Tensor, mean, std) -> tf.Tensor:
    return (tf.cast(image, tf.float32) - tf.constant(mean)) / tf.constant(std)


def _resize_square(image: tf.Tensor, size: int) -> tf.Tensor:
    """float32 ``[size, size, 3]``; images already that size are only cast."""
    image = tf.cast(image, tf.float32)
    same = tf.reduce_all(tf.shape(image)[:2] == size)
    image = tf.cond(same, lambda: image, lambda: tf.image.resize(image, [size, size]))
    return tf.ensure_shape(image, [size, size, 3])


def random_resized_crop(image: tf.Tensor, size: int, seed: tf.Tensor) -> tf.Tensor:
    """Inception-style crop: area 8%-100%, aspect 3/4-4/3, resized (bilinear) to ``size``²."""
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=seed,
        min_object_covered=0.0,
        aspect_ratio_range=(3 / 4, 4 / 3),
        area_range=(0.08, 1.0),
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    crop = tf.slice(image, begin, crop_size)
    return tf.ensure_shape(tf.image.resize(crop, [size, size]), [size, size, 3])


def resize_and_center_crop(image: tf.Tensor, size: int) -> tf.Tensor:
    """Resizes the shorter side to ``round(size * 256 / 224)``, then crops the centre ``size``²."""
    target = round(size * EVAL_RESIZE_RATIO)
    hw = tf.cast(tf.shape(image)[:2], tf.float32)
    new_hw = tf.cast(tf.round(hw * target / tf.reduce_min(hw)), tf.int32)
    image = tf.image.resize(image, new_hw)
    top, left = (new_hw[0] - size) // 2, (new_hw[1] - size) // 2
    return tf.ensure_shape(image[top : top + size, left : left + size], [size, size, 3])


def imagenet_train(image, size, seed):
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    image = random_resized_crop(image, size, crop_seed)
    image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    return normalize(image, IMAGENET_MEAN, IMAGENET_STD)


def imagenet_eval(image, size):
    return normalize(resize_and_center_crop(image, size), IMAGENET_MEAN, IMAGENET_STD)


def cifar_train(image, size, seed):
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    image = _resize_square(image, size)
    image = tf.pad(image, [[CIFAR_PAD, CIFAR_PAD], [CIFAR_PAD, CIFAR_PAD], [0, 0]])
    image = tf.image.stateless_random_crop(image, [size, size, 3], crop_seed)
    image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    return normalize(image, CIFAR_MEAN, CIFAR_STD)


def cifar_eval(image, size):
    return normalize(_resize_square(image, size), CIFAR_MEAN, CIFAR_STD)


def get_preprocessing(name: str | None, image_size: int) -> tuple[TrainFn, EvalFn]:
    """Returns ``(train_fn(image, seed), eval_fn(image))`` for "imagenet", "cifar" or None."""
    choices = {
        "imagenet": (imagenet_train, imagenet_eval),
        "cifar": (cifar_train, cifar_eval),
        None: (lambda x, size, seed: _resize_square(x, size), _resize_square),
    }
    if name not in choices:
        raise ValueError(f"unknown preprocessing {name!r}; use 'imagenet', 'cifar' or None")
    train_fn, eval_fn = choices[name]
    return (lambda x, seed: train_fn(x, image_size, seed)), (lambda x: eval_fn(x, image_size))

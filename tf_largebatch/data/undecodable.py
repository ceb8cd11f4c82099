"""Naming the image TensorFlow cannot decode: its error names no file.

Apart from `errors` so that the error classes stay a leaf of the data package (this module
reads the data to find the file, through `preprocess`, which imports `errors`).
"""

import contextlib
import sys

from absl import logging

from tf_largebatch.data.errors import DataError


@contextlib.contextmanager
def naming_undecodable_images(dataset: str, data_dir: str | None):
    """Turns TensorFlow's error for an image it cannot decode, which names no file, into a
    DataError naming the file ("folder") or the shard and record ("tfrecord").

    Other errors, and decode errors of other sources, pass through unchanged. Imports TensorFlow
    only once a TensorFlow error is raised.

    Example:
      >>> with naming_undecodable_images("folder", "/data/cifar10"):
      ...     model.fit(train_dataset("folder", "/data/cifar10", ...)[0], ...)
    """
    try:
        yield
    except Exception as err:
        tf = sys.modules.get("tensorflow")  # a TensorFlow error means it is imported
        if not (tf and isinstance(err, tf.errors.InvalidArgumentError)
                and "DecodeImage" in str(err)):
            raise
        from tf_largebatch.data.preprocess import find_undecodable

        logging.error("An image cannot be decoded; looking for it in %s", data_dir)
        found = find_undecodable(dataset, data_dir) if data_dir else None
        if found is None:
            raise
        fix = (
            "Remove or replace the file"
            if dataset == "folder"
            else "Remove or replace that image in the image folder and re-run python -m "
            "tf_largebatch.data.convert (its --verify decodes every image)"
        )
        error = DataError(f"{found.rstrip('.')}. {fix}.")
        error.raised_by_this_worker_only = True  # the other workers never read that file
        raise error from err

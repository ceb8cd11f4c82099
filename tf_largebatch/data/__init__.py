"""Input pipelines with the data rules of Goyal et al. (2017), "Accurate, Large Minibatch SGD".

* :func:`train_dataset` / :func:`eval_dataset`: per-worker tf.data pipelines (see
  :mod:`~tf_largebatch.data.sharding` for which examples each worker reads).
* :func:`batch_layout`: k, kn, steps per epoch and what an epoch leaves out, computed once
  (:mod:`~tf_largebatch.data.layout`).
* Sources ("synthetic", "shapes", "folder", "tfrecord", "tfds:<name>"):
  :mod:`~tf_largebatch.data.sources`.
* Augmentation: :mod:`~tf_largebatch.data.preprocess`.
* Folder -> TFRecord converter: ``python -m tf_largebatch.data.convert``.
* Without TensorFlow (Keras's JAX backend): :mod:`~tf_largebatch.data.arrays`, the same rules on
  NumPy arrays held in memory, for CIFAR-sized folders.
"""

import importlib

# Names resolve on first use, so that the TensorFlow-free modules (arrays, folders, errors)
# import on hosts without TensorFlow.
_HOMES = {
    "BatchLayout": "layout",
    "batch_layout": "layout",
    "DataError": "errors",
    "DataNotFoundError": "errors",
    "DatasetInfo": "pipeline",
    "eval_dataset": "pipeline",
    "train_dataset": "pipeline",
    "epoch_permutation": "sharding",
    "eval_examples_on_worker": "sharding",
    "Source": "sources",
    "get_source": "sources",
}
__all__ = sorted(_HOMES)


def __getattr__(name):
    if name not in _HOMES:
        raise AttributeError(f"module 'tf_largebatch.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"tf_largebatch.data.{_HOMES[name]}"), name)

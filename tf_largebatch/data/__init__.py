"""Input pipelines with the data rules of Goyal et al. (2017), "Accurate, Large Minibatch SGD".

* :func:`train_dataset` / :func:`eval_dataset`: per-worker tf.data pipelines (see
  :mod:`~tf_largebatch.data.sharding` for which examples each worker reads).
* Sources ("synthetic", "folder", "tfrecord", "tfds:<name>"): :mod:`~tf_largebatch.data.sources`.
* Augmentation: :mod:`~tf_largebatch.data.preprocess`.
* Folder -> TFRecord converter: ``python -m tf_largebatch.data.convert``.
"""

from tf_largebatch.data.errors import DataError, DataNotFoundError
from tf_largebatch.data.pipeline import DatasetInfo, eval_dataset, train_dataset
from tf_largebatch.data.sharding import epoch_permutation, eval_examples_on_worker
from tf_largebatch.data.sources import Source, get_source

__all__ = [
    "DataError",
    "DataNotFoundError",
    "DatasetInfo",
    "Source",
    "epoch_permutation",
    "eval_examples_on_worker",
    "eval_dataset",
    "get_source",
    "train_dataset",
]

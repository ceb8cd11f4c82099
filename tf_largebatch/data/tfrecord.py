"""Random access to TFRecord files, and the ImageNet-style example schema.

The training pipeline reads examples in the order of one global permutation per epoch, so it needs
random access. A TFRecord file is a sequence of records ``uint64 length, uint32 crc(length),
payload, uint32 crc(payload)``: :func:`index_records` reads only the 12-byte headers to find every
payload, and :func:`read_record` then fetches one payload with a single positioned read. Only
uncompressed TFRecords on a local or mounted file system are supported.

Schema (as written by :mod:`tf_largebatch.data.convert`):

* ``image/encoded``: bytes, the original JPEG/PNG file (never re-encoded),
* ``image/class/label``: int64, the **0-based** class id (sorted class-folder order). Note that the
  TF-slim / tensorflow/models ImageNet TFRecords store 1-based labels (0 = background); such
  records fail the pipeline's label-range check and must be rewritten or relabelled,
* ``image/class/text``: bytes, optional, the class name,
* ``image/filename``, ``image/format``: bytes, optional, informational.
"""

import os
import struct

import numpy as np
import tensorflow as tf
from google.protobuf.message import DecodeError

from tf_largebatch.data.errors import DataError

ENCODED_KEY = "image/encoded"
LABEL_KEY = "image/class/label"
TEXT_KEY = "image/class/text"
FILENAME_KEY = "image/filename"
FORMAT_KEY = "image/format"

_HEADER = 12  # uint64 length + uint32 masked crc of the length
_FOOTER = 4  # uint32 masked crc of the payload


def index_records(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Returns ``(offsets, lengths)`` (int64 arrays) of every record payload in a TFRecord file."""
    offsets, lengths = [], []
    with open(path, "rb", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size
        pos = 0
        while pos < size:
            header = os.pread(f.fileno(), _HEADER, pos)
            (length,) = struct.unpack("<Q", header[:8]) if len(header) == _HEADER else (size,)
            end = pos + _HEADER + length + _FOOTER
            if end > size:
                raise DataError(
                    f"{path}: truncated or corrupt TFRecord at byte {pos} (a compressed file, or "
                    "an interrupted write?); delete it and re-run tf_largebatch.data.convert"
                )
            offsets.append(pos + _HEADER)
            lengths.append(length)
            pos = end
    return np.asarray(offsets, np.int64), np.asarray(lengths, np.int64)


def read_record(path: str, offset: int, length: int) -> bytes:
    """Reads one record payload located by :func:`index_records`."""
    with open(path, "rb", buffering=0) as f:
        data = os.pread(f.fileno(), int(length), int(offset))
    if len(data) != length:
        raise DataError(f"{path}: short read at byte {offset}; the file changed after indexing")
    return data


def make_example(encoded: bytes, label: int, text: str = "", filename: str = "") -> bytes:
    """Serializes one image as a ``tf.train.Example`` in the schema above."""
    fmt = b"PNG" if encoded.startswith(b"\x89PNG") else b"JPEG"

    def _bytes(value: bytes) -> tf.train.Feature:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    feature = {
        ENCODED_KEY: _bytes(encoded),
        LABEL_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
        TEXT_KEY: _bytes(text.encode()),
        FILENAME_KEY: _bytes(filename.encode()),
        FORMAT_KEY: _bytes(fmt),
    }
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    return example.SerializeToString(deterministic=True)


def check_schema(path: str, payload: bytes) -> None:
    """Raises DataError unless ``payload`` is an Example with an image and an int64 label."""
    try:
        feature = tf.train.Example.FromString(payload).features.feature
    except DecodeError as e:
        raise DataError(f"{path}: records are not tf.train.Example protos ({e})") from e
    found = sorted(feature)
    wanted = {ENCODED_KEY: "bytes_list", LABEL_KEY: "int64_list"}
    bad = [
        k for k, kind in wanted.items() if k not in found or feature[k].WhichOneof("kind") != kind
    ]
    if bad:
        raise DataError(
            f"{path}: examples lack {', '.join(bad)} (found {found}); expected "
            f"'{ENCODED_KEY}' (bytes) and '{LABEL_KEY}' (int64, 0-based). Write the shards with "
            "python -m tf_largebatch.data.convert"
        )


def read_images(path: str):
    """Yields ``(image/filename, image/encoded)`` bytes of every record of ``path``, in order."""
    for payload in tf.data.TFRecordDataset(path).as_numpy_iterator():
        feature = tf.train.Example.FromString(payload).features.feature
        yield (b"".join(feature[FILENAME_KEY].bytes_list.value),
               b"".join(feature[ENCODED_KEY].bytes_list.value))


def parse_example(payload: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Graph-side parse of one serialized Example: ``(encoded image string, int32 label)``."""
    parsed = tf.io.parse_single_example(
        payload,
        {
            ENCODED_KEY: tf.io.FixedLenFeature([], tf.string),
            LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
        },
    )
    return parsed[ENCODED_KEY], tf.cast(parsed[LABEL_KEY], tf.int32)

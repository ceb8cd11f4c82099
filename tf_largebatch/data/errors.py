"""Errors raised for bad input data.

Every message names the offending path or dataset and says what to do about it.
"""


class DataError(ValueError):
    """The input data is malformed: wrong layout, schema, class set or file contents."""


class DataNotFoundError(FileNotFoundError, DataError):
    """Input data is missing: a folder, a split, TFRecord shards or an unprepared TFDS dataset.

    Subclasses both FileNotFoundError and DataError (hence ValueError).
    """

"""The experiment core's error for a problem the user must fix (`runner.TrainError`).

Its own module, below everything that raises it (`position`'s resume policy, `runner`, the
trainers), so that none of them imports another only for it.
"""


class TrainError(RuntimeError):
    """A problem the user must fix, reported without a traceback."""

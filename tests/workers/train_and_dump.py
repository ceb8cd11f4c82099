"""Runs the trainer with the given flags, then writes this rank's weights to <dump>/rank<r>.npz."""

import os

import numpy as np
from absl import app, flags

from tf_largebatch import train

flags.DEFINE_string("dump", None, "Where to write rank<r>.npz.")


def main(argv):
    run = train.train()
    weights = {v.path: np.asarray(v) for v in run.model.variables}
    np.savez(os.path.join(flags.FLAGS.dump, f"rank{run.context.rank}.npz"), **weights)


if __name__ == "__main__":
    app.run(main)

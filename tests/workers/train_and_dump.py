"""Runs the trainer with the given flags, then writes this rank's weights to <dump>/rank<r>.npz.

With --eval_check, rank 0 also evaluates the trained model on the whole evaluation split by
itself (one worker's view, NumPy arithmetic on the logits) and writes <dump>/eval_check.json,
to compare with what the trainer logged.
"""

import json
import os
import sys

import numpy as np
from absl import app, flags

from tf_largebatch import train

flags.DEFINE_string("dump", None, "Where to write rank<r>.npz.")
flags.DEFINE_bool("eval_check", False, "Also write eval_check.json (rank 0).")
FLAGS = flags.FLAGS


def evaluate_alone(model):
    from tf_largebatch import data

    ds, _ = data.eval_dataset(FLAGS.dataset, FLAGS.data_dir, image_size=32, per_worker_batch=64,
                              num_workers=1, worker_index=0, preprocessing="cifar")
    wrong1 = wrong5 = xent = count = 0.0
    for images, labels, weights in ds.as_numpy_iterator():
        logits = np.asarray(model(images, training=False), np.float64)
        true = logits[np.arange(len(labels)), labels]
        rank = (logits > true[:, None]).sum(axis=1)  # classes scored above the true one
        log_z = logits.max(1) + np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1))
        wrong1 += (weights * (rank >= 1)).sum()
        wrong5 += (weights * (rank >= 5)).sum()
        xent += (weights * (log_z - true)).sum()
        count += weights.sum()
    return {key: float(value) for key, value in dict(
        top1_error=wrong1 / count, top5_error=wrong5 / count, xent=xent / count,
        count=count).items()}


def main(argv):
    from tf_largebatch.experiment.preemption import PREEMPTED_EXIT_CODE, Preempted

    try:
        run = train.train()
    except Preempted as stop:  # as the trainer's own main does
        print(f"preempted: {stop}", file=sys.stderr)
        sys.exit(PREEMPTED_EXIT_CODE)
    weights = {v.path: np.asarray(v) for v in run.model.variables}
    np.savez(os.path.join(FLAGS.dump, f"rank{run.rank}.npz"), **weights)
    if FLAGS.eval_check and run.is_chief:
        with open(os.path.join(FLAGS.dump, "eval_check.json"), "w") as f:
            json.dump(evaluate_alone(run.model), f)


if __name__ == "__main__":
    app.run(main)

"""Run under horovodrun -np 2: fit with the bridge, save on rank 0, resume on both ranks.

Each rank trains on its own data (so the ranks stay equal only if the gradients are
averaged). Rank 0 saves <out_dir>/model.keras after two steps; then every rank loads it with
`distributed.load_model` and takes two more steps, and the in-memory model takes the same two
steps. Writes <out_dir>/rank<r>.json: both continuations' weights and optimizer variables,
and facts about the loaded optimizer.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
import keras  # noqa: E402
import numpy as np  # noqa: E402

from tf_largebatch import distributed, optimizers  # noqa: E402

context = distributed.init()
out_dir = sys.argv[1]
path = os.path.join(out_dir, "model.keras")
keras.utils.set_random_seed(0)  # the same initial weights on both ranks
rng = np.random.default_rng(100 + context.rank)  # but each rank's own data
x = rng.normal(size=(8, 3)).astype("float32")
y = rng.normal(size=(8, 2)).astype("float32")


def fit_two_steps(model):
    model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0,
              callbacks=[distributed.BroadcastInitialState()])


model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="tanh"),
                          keras.layers.Dense(2)])
model.compile(distributed.distributed_optimizer(optimizers.MomentumSGD(0.1, l2=1e-2)), "mse")
fit_two_steps(model)
if context.is_chief:
    model.save(path)
distributed.any_worker(False)  # a collective: rank 1 waits here until rank 0 has saved

loaded = distributed.load_model(path)
saved_iterations = int(loaded.optimizer.iterations)
fit_two_steps(loaded)
fit_two_steps(model)


def state(m):
    return {"weights": [w.tolist() for w in m.get_weights()],
            "optimizer": [np.asarray(v).tolist() for v in m.optimizer.variables]}


with open(os.path.join(out_dir, f"rank{context.rank}.json"), "w") as f:
    json.dump({"loaded": state(loaded), "in_memory": state(model),
               "saved_iterations": saved_iterations,
               "class": type(loaded.optimizer).__name__,
               "bridged": distributed.is_distributed(loaded.optimizer)}, f)

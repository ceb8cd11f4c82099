"""Run under horovodrun -np 2: `callbacks.MetricAverage` on unequal validation shards.

All ranks hold the same 16 validation examples and a fixed linear model (learning rate 0,
so it does not change); rank 0 validates on the first 5, rank 1 on the other 11. Labels:
the model's top class on the first 5 (all right), its bottom class on the other 11 (all
wrong). Writes <out_dir>/rank<r>.json with the fit's History (after MetricAverage) and
<out_dir>/data.json (rank 0) with the model and the data, for the test's own arithmetic.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
import keras  # noqa: E402
import numpy as np  # noqa: E402

from tf_largebatch import callbacks, distributed  # noqa: E402

context = distributed.init()
out_dir = sys.argv[1]
rng = np.random.default_rng(3)
kernel = rng.normal(size=(4, 3)).astype("float32")
bias = rng.normal(size=(3,)).astype("float32")
x = rng.normal(size=(16, 4)).astype("float32")
logits = x @ kernel + bias
y = np.where(np.arange(16) < 5, logits.argmax(1), logits.argmin(1)).astype("int32")
shard = slice(0, 5) if context.rank == 0 else slice(5, 16)

model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
model.set_weights([kernel, bias])
model.compile(keras.optimizers.SGD(0.0),
              keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              metrics=["accuracy"])
history = model.fit(x[:8], y[:8], batch_size=4, epochs=1, shuffle=False, verbose=0,
                    validation_data=(x[shard], y[shard]), validation_batch_size=4,
                    callbacks=[callbacks.MetricAverage(train_examples=8,
                                                       val_examples=len(y[shard]))])
with open(os.path.join(out_dir, f"rank{context.rank}.json"), "w") as f:
    json.dump(history.history, f)
if context.is_chief:
    with open(os.path.join(out_dir, "data.json"), "w") as f:
        json.dump({"kernel": kernel.tolist(), "bias": bias.tolist(), "x": x.tolist(),
                   "y": y.tolist()}, f)

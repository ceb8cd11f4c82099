"""tf_largebatch: accurate, large-minibatch SGD (Goyal et al. 2017) for Keras 3 + Horovod.

Saved models (a run's `model.keras`) name the package's Keras objects (`MomentumSGD`,
`WarmupDecay`, `GhostBatchNormalization`, ...), which `keras.models.load_model` finds once
their modules are imported: `import keras` then `import tf_largebatch` imports them. The
package alone does not import Keras (its command-line tools and the portable trainer choose
the Keras backend first). In any import order,
`keras.models.load_model(path, custom_objects=tf_largebatch.custom_objects())` loads them (as
`hvd.load_model` does for Horovod's objects).
"""

import sys

__version__ = "0.1.0"

if "keras" in sys.modules:  # Keras and its backend are already chosen: register our objects
    from tf_largebatch import layers, losses, optimizers, schedules  # noqa: F401


def custom_objects() -> dict:
    """{registered name: class} of the package's Keras objects, for `load_model`'s
    `custom_objects` (imports Keras, with the backend chosen by then, and the modules)."""
    from tf_largebatch import layers, losses, optimizers, schedules

    classes = (layers.GhostBatchNormalization, losses.SparseSmoothedCrossentropy,
               optimizers.MomentumSGD, optimizers.LARS, schedules.WarmupDecay,
               schedules.WeightDecaySchedule)
    objects = {cls.__name__: cls for cls in classes}
    objects.update({f"tf_largebatch>{cls.__name__}": cls for cls in classes})
    return objects

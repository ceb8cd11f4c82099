"""tf_largebatch: accurate, large-minibatch SGD (Goyal et al. 2017) for Keras 3 + Horovod.

Saved models (a run's `model.keras`) name the package's Keras objects (`MomentumSGD`,
`WarmupDecay`, `GhostBatchNormalization`, ...), which `keras.models.load_model` finds once
their modules are imported: `import keras` then `import tf_largebatch` imports them. The
package alone does not import Keras (its command-line tools and the portable trainer choose
the Keras backend first), so where the package was imported before Keras,
`from tf_largebatch import layers, losses, optimizers, schedules` before loading does the same.
"""

import sys

__version__ = "0.1.0"

if "keras" in sys.modules:  # Keras and its backend are already chosen: register our objects
    from tf_largebatch import layers, losses, optimizers, schedules  # noqa: F401

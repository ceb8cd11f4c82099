"""Cross-entropy with label smoothing on integer labels, as a registered Keras loss, so that a
model compiled with it saves and loads (`keras.models.load_model`) like any other.

Keras 3's `SparseCategoricalCrossentropy` has no `label_smoothing`, and its
`CategoricalCrossentropy` wants one-hot labels; a plain function closing over ε would not
load back from a `.keras` file.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="tf_largebatch")
class SparseSmoothedCrossentropy(keras.losses.Loss):
    """Cross-entropy of logits z against the smoothed target of integer label y:

        q_c = (1 − ε)·[c = y] + ε / C,    loss = − Σ_c q_c · log softmax(z)_c

    over C classes (Szegedy et al. 2016), i.e. Keras's
    `categorical_crossentropy(one_hot(y), z, from_logits=True, label_smoothing=ε)`.

    Example:
        >>> model.compile(optimizer, loss=SparseSmoothedCrossentropy(label_smoothing=0.1))
    """

    def __init__(self, label_smoothing: float = 0.1, name="smoothed_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        labels = ops.cast(ops.reshape(y_true, (-1,)), "int32")
        one_hot = ops.one_hot(labels, ops.shape(y_pred)[-1], dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(
            one_hot, y_pred, from_logits=True, label_smoothing=self.label_smoothing)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}

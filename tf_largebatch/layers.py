"""Layers for large-minibatch training (Goyal et al. 2017).

Written with `keras` and `keras.ops` only, so they run on any Keras 3 backend.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="tf_largebatch")
class GhostBatchNormalization(keras.layers.BatchNormalization):
    """Batch normalization whose training statistics come from groups of `virtual_batch_size`.

    Goyal et al. (2017, §5.1) keep the BN batch size n fixed per worker when the minibatch
    grows: with k Horovod workers each normalises its own n samples. This layer reproduces
    that in one process. In training, a batch of k·n samples is split into k consecutive
    groups of n, and each group g is normalised with its own statistics::

        mu_g      = mean over group g (and all non-channel axes) of x
        sigma2_g  = mean over the same axes of (x - mu_g)^2        (biased, as in Keras)
        y         = gamma * (x - mu_g) / sqrt(sigma2_g + epsilon) + beta

    The moving statistics take one step with the averages over the k groups, which is what
    averaging the k workers' moving statistics gives::

        moving_mean     = momentum * moving_mean     + (1 - momentum) * mean_g(mu_g)
        moving_variance = momentum * moving_variance + (1 - momentum) * mean_g(sigma2_g)

    Inference (or `trainable=False`) uses the moving statistics, exactly as
    `keras.layers.BatchNormalization`; so does `virtual_batch_size=None` throughout.

    In training the batch size must be a multiple of `virtual_batch_size` (use
    `drop_remainder=True` in the input pipeline); otherwise a ValueError is raised where the
    batch size is known when the layer is traced, and the reshape fails where it is not.

    Args:
        virtual_batch_size: Samples per normalisation group n, or None for ordinary BN.
        **kwargs: Everything `keras.layers.BatchNormalization` takes (masks, `renorm` and
            `synchronized` are not supported together with a `virtual_batch_size`).
    """

    def __init__(self, virtual_batch_size=None, **kwargs):
        super().__init__(**kwargs)
        if virtual_batch_size is not None:
            if int(virtual_batch_size) != virtual_batch_size or virtual_batch_size < 1:
                raise ValueError(
                    f"virtual_batch_size must be a positive integer or None, "
                    f"got {virtual_batch_size!r}."
                )
            if self.renorm or self.synchronized:
                raise ValueError(
                    "virtual_batch_size cannot be combined with renorm or synchronized."
                )
            virtual_batch_size = int(virtual_batch_size)
        self.virtual_batch_size = virtual_batch_size

    def call(self, inputs, training=None, mask=None):
        if self.virtual_batch_size is None or not (training and self.trainable):
            return super().call(inputs, training=training, mask=mask)
        if mask is not None:
            raise ValueError("GhostBatchNormalization with a virtual_batch_size takes no mask.")

        n = self.virtual_batch_size
        batch = inputs.shape[0]
        if batch is not None and batch % n:
            raise ValueError(
                f"{self.name}: the batch size {batch} is not a multiple of "
                f"virtual_batch_size={n}."
            )
        # Normalise in float32 (at least) like BatchNormalization, whatever the policy.
        x = ops.cast(inputs, keras.backend.result_type(inputs.dtype, "float32"))
        rank = len(inputs.shape)
        channel_axis = self.axis % rank
        rest = tuple(ops.shape(x)[1:])
        groups = ops.reshape(x, (-1, n, *rest))  # (k, n, ...)

        # Statistics per group: reduce over every axis except the group axis 0 and the
        # channel axis, which is shifted by one by the new leading group axis.
        axes = [a for a in range(1, rank + 1) if a != channel_axis + 1]
        mean, variance = ops.moments(groups, axes=axes, keepdims=True)

        # Broadcast gamma and beta (shape (C,)) along the channel axis of `groups`.
        param_shape = [1] * (rank + 1)
        param_shape[channel_axis + 1] = -1
        inv = ops.rsqrt(variance + self.epsilon)
        if self.scale:
            inv = inv * ops.reshape(ops.cast(self.gamma, x.dtype), param_shape)
        outputs = groups * inv - mean * inv
        if self.center:
            outputs = outputs + ops.reshape(ops.cast(self.beta, x.dtype), param_shape)
        outputs = ops.reshape(outputs, (-1, *rest))

        # Moving statistics: one step with the averages over the groups.
        group_mean = ops.reshape(ops.mean(mean, axis=0), (-1,))
        group_variance = ops.reshape(ops.mean(variance, axis=0), (-1,))
        for var, value in ((self.moving_mean, group_mean), (self.moving_variance, group_variance)):
            old = ops.cast(var, x.dtype)
            var.assign(ops.cast(old * self.momentum + value * (1.0 - self.momentum), var.dtype))
        return ops.cast(outputs, self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "virtual_batch_size": self.virtual_batch_size}

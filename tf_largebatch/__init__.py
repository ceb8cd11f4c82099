"""tf_largebatch: accurate, large-minibatch SGD (Goyal et al. 2017) for Keras 3 + Horovod."""

__version__ = "0.1.0"

"""Numbers shared by the tf.data pipeline (preprocess) and the NumPy one (arrays): per-channel
mean and standard deviation in 0..255 units, and the CIFAR crop padding."""

IMAGENET_MEAN = tuple(255 * m for m in (0.485, 0.456, 0.406))
IMAGENET_STD = tuple(255 * s for s in (0.229, 0.224, 0.225))
CIFAR_MEAN = tuple(255 * m for m in (0.4914, 0.4822, 0.4465))
CIFAR_STD = tuple(255 * s for s in (0.2470, 0.2435, 0.2616))
CIFAR_PAD = 4

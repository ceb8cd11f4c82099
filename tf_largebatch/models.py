"""ResNets for ImageNet (He et al. 2016, torchvision layout) and CIFAR, in Keras 3.

Settings follow Goyal et al. 2017: He (fan-out) initialisation, zero-initialised gamma in the
last BN of every residual block (§5.1), BN momentum 0.9 (torch's 0.1) and epsilon 1e-5, and
every BN a `GhostBatchNormalization` so per-worker BN statistics can be reproduced.

Layer names are readable and every BN layer name contains "bn" (e.g. "stage2_block1_conv1",
"stage2_block1_bn1", "stage2_block1_shortcut_bn"), so its gamma/beta variable paths do too:
the optimizer excludes those from weight decay by name. ImageNet stages are numbered 2-5
(He et al.'s conv2_x-conv5_x, torchvision's layer1-layer4), CIFAR stages 1-3.
"""

import keras
from keras import layers

from tf_largebatch.layers import GhostBatchNormalization

# depth -> (block type, blocks per stage); torchvision's configurations.
RESNET_SPECS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
BOTTLENECK_EXPANSION = 4


def he_normal_fan_out():
    """He et al. 2015 initialisation, fan-out mode (torch's kaiming_normal_(mode="fan_out"))."""
    return keras.initializers.VarianceScaling(
        2.0, mode="fan_out", distribution="untruncated_normal"
    )


class _ResNetBuilder:
    """Creates the layers of one network with shared BN, initialiser and dtype settings."""

    def __init__(self, zero_gamma, bn_momentum, bn_epsilon, virtual_batch_size, dtype_policy):
        self.zero_gamma = zero_gamma
        self.bn_momentum = bn_momentum
        self.bn_epsilon = bn_epsilon
        self.virtual_batch_size = virtual_batch_size
        self.dtype = dtype_policy
        self.channel_axis = 1 if keras.config.image_data_format() == "channels_first" else -1

    def conv_bn(self, x, filters, kernel, stride, name, bn_name, relu=True, last=False):
        """Conv (no bias) + BN (+ ReLU). `last`: the block's final BN, gamma zero if zero_gamma.

        Strided convolutions pad explicitly like torch (kernel // 2 on every side), so the
        sampled positions, not just the shapes, match torchvision's.
        """
        padding = "same"
        if stride > 1 and kernel > 1:
            x = layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad", dtype=self.dtype)(x)
            padding = "valid"
        x = layers.Conv2D(
            filters,
            kernel,
            strides=stride,
            padding=padding,
            use_bias=False,
            kernel_initializer=he_normal_fan_out(),
            name=name,
            dtype=self.dtype,
        )(x)
        x = GhostBatchNormalization(
            virtual_batch_size=self.virtual_batch_size,
            axis=self.channel_axis,
            momentum=self.bn_momentum,
            epsilon=self.bn_epsilon,
            gamma_initializer="zeros" if (last and self.zero_gamma) else "ones",
            name=bn_name,
            dtype=self.dtype,
        )(x)
        if relu:
            x = layers.ReLU(name=f"{name}_relu", dtype=self.dtype)(x)
        return x

    def residual(self, x, y, filters, stride, name):
        """Adds the shortcut of `x` (1x1 conv + BN projection where the shape changes) to y."""
        if stride != 1 or x.shape[self.channel_axis] != filters:
            x = self.conv_bn(
                x, filters, 1, stride, f"{name}_shortcut_conv", f"{name}_shortcut_bn", relu=False
            )
        y = layers.Add(name=f"{name}_add", dtype=self.dtype)([x, y])
        return layers.ReLU(name=f"{name}_out", dtype=self.dtype)(y)

    def basic_block(self, x, filters, stride, name):
        """Two 3x3 convs (ResNet-18/34 and the CIFAR ResNets)."""
        y = self.conv_bn(x, filters, 3, stride, f"{name}_conv1", f"{name}_bn1")
        y = self.conv_bn(y, filters, 3, 1, f"{name}_conv2", f"{name}_bn2", relu=False, last=True)
        return self.residual(x, y, filters, stride, name)

    def bottleneck_block(self, x, filters, stride, name, version="1.5"):
        """1x1 reduce, 3x3, 1x1 expand (x4). v1 strides the first 1x1, v1.5 the 3x3."""
        stride1, stride3 = (stride, 1) if version == "1" else (1, stride)
        y = self.conv_bn(x, filters, 1, stride1, f"{name}_conv1", f"{name}_bn1")
        y = self.conv_bn(y, filters, 3, stride3, f"{name}_conv2", f"{name}_bn2")
        out = filters * BOTTLENECK_EXPANSION
        y = self.conv_bn(y, out, 1, 1, f"{name}_conv3", f"{name}_bn3", relu=False, last=True)
        return self.residual(x, y, out, stride, name)

    def head(self, x, num_classes):
        """Global average pool and the float32 logits layer (N(0, 0.01) kernel, zero bias)."""
        x = layers.GlobalAveragePooling2D(name="avg_pool", dtype=self.dtype)(x)
        return layers.Dense(
            num_classes,
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
            bias_initializer="zeros",
            name="fc",
            dtype="float32",
        )(x)


def resnet(
    depth: int = 50,
    version: str = "1.5",
    zero_gamma: bool = True,
    num_classes: int = 1000,
    input_shape: tuple[int, int, int] = (224, 224, 3),
    bn_momentum: float = 0.9,
    bn_epsilon: float = 1e-5,
    virtual_batch_size: int | None = None,
    dtype_policy: str | None = None,
    name: str | None = None,
) -> keras.Model:
    """ImageNet ResNet-18/34/50/101/152 with torchvision's layout.

    Stem: 7x7/2 conv, BN, ReLU, 3x3/2 max-pool; four stages of 64/128/256/512 filters
    (x4 output channels for bottlenecks), the first block of stages 3-5 striding by 2;
    global average pool and Dense(num_classes) logits (always float32).

    Args:
        depth: 18 or 34 (basic blocks), 50, 101 or 152 (bottleneck blocks).
        version: "1" (stride in the bottleneck's first 1x1, He et al.) or "1.5" (stride in
            the 3x3, torchvision's). Same parameters; no effect on basic blocks.
        zero_gamma: Zero-initialise gamma of the last BN in every residual block.
        num_classes: Outputs of the final Dense layer (logits, no softmax).
        input_shape: (height, width, 3) of the images, channels last.
        bn_momentum: Keras moving-average decay (torch momentum 0.1 == Keras 0.9).
        bn_epsilon: BN's ε (torch's 1e-5).
        virtual_batch_size: Samples per BN statistics group (the per-worker n when k
            workers are simulated in one batch); None for ordinary BN.
        dtype_policy: Keras dtype policy for the layers, e.g. "mixed_float16"; None keeps
            the global policy (which is never changed).
        name: Model name (default "resnet50_v1_5" and the like).

    Returns:
        A `keras.Model` from images to float32 logits.

    Example:
        >>> model = resnet(50)  # 25,557,032 parameters
        >>> model.compile(optimizer=optimizers.MomentumSGD(0.1), loss=...)
    """
    if depth not in RESNET_SPECS:
        raise ValueError(f"ResNet depth must be one of {sorted(RESNET_SPECS)}, got {depth}.")
    version = str(version)
    if version not in ("1", "1.5"):
        raise ValueError(f'version must be "1" or "1.5", got {version!r}.')
    block_type, blocks = RESNET_SPECS[depth]
    b = _ResNetBuilder(zero_gamma, bn_momentum, bn_epsilon, virtual_batch_size, dtype_policy)

    inputs = keras.Input(shape=input_shape, name="images")
    x = b.conv_bn(inputs, 64, 7, 2, "stem_conv", "stem_bn")
    # Zero padding equals torch's -inf padding here: the inputs are >= 0 after the ReLU.
    x = layers.ZeroPadding2D(1, name="stem_pool_pad", dtype=b.dtype)(x)
    x = layers.MaxPooling2D(3, strides=2, name="stem_pool", dtype=b.dtype)(x)

    for stage, (filters, num_blocks) in enumerate(zip((64, 128, 256, 512), blocks, strict=True)):
        for block in range(num_blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            block_name = f"stage{stage + 2}_block{block + 1}"
            if block_type == "basic":
                x = b.basic_block(x, filters, stride, block_name)
            else:
                x = b.bottleneck_block(x, filters, stride, block_name, version)
    outputs = b.head(x, num_classes)
    default_name = f"resnet{depth}" + ("_v1_5" if version == "1.5" else "_v1")
    return keras.Model(inputs, outputs, name=name or default_name)


def cifar_resnet(
    depth: int = 20,
    num_classes: int = 10,
    input_shape: tuple[int, int, int] = (32, 32, 3),
    zero_gamma: bool = True,
    bn_momentum: float = 0.9,
    bn_epsilon: float = 1e-5,
    virtual_batch_size: int | None = None,
    dtype_policy: str | None = None,
    name: str | None = None,
) -> keras.Model:
    """CIFAR ResNet of He et al. 2016 (§4.2): depth 6n+2, e.g. 20, 32, 44, 56, 110.

    3x3 conv with 16 filters, BN, ReLU; three stages of n basic blocks with 16/32/64 filters,
    stages 2 and 3 starting with stride 2; global average pool, Dense logits (float32).
    Where the shape changes the shortcut is a strided 1x1 conv + BN (option B; the paper's
    CIFAR models use parameter-free option A).

    Args:
        depth: 6m+2 for m ≥ 1 basic blocks per stage: 8, 14, 20, 32, 44, 56, 110.
        num_classes: Outputs of the final Dense layer (logits).
        input_shape: (height, width, 3), channels last.
        zero_gamma, bn_momentum, bn_epsilon, virtual_batch_size, dtype_policy, name: as in
            `resnet`.

    Returns:
        A `keras.Model` from images to float32 logits.

    Example:
        >>> model = cifar_resnet(20, virtual_batch_size=32)  # BN over each worker's 32 images
    """
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(
            f"CIFAR ResNet depth must be 6n+2 with n >= 1 (8, 14, 20, 32, 44, 56, 110, ...), "
            f"got {depth}."
        )
    n = (depth - 2) // 6
    b = _ResNetBuilder(zero_gamma, bn_momentum, bn_epsilon, virtual_batch_size, dtype_policy)

    inputs = keras.Input(shape=input_shape, name="images")
    x = b.conv_bn(inputs, 16, 3, 1, "stem_conv", "stem_bn")
    for stage, filters in enumerate((16, 32, 64)):
        for block in range(n):
            stride = 2 if stage > 0 and block == 0 else 1
            x = b.basic_block(x, filters, stride, f"stage{stage + 1}_block{block + 1}")
    outputs = b.head(x, num_classes)
    return keras.Model(inputs, outputs, name=name or f"cifar_resnet{depth}")

"""Tests for tf_largebatch.layers.GhostBatchNormalization and tf_largebatch.models.

Reference numbers are independent of the code under test:

* Trainable parameters: torchvision's counts, ResNet-50 25,557,032 (v1 and v1.5 alike: the
  stride moves, no weight changes), ResNet-18 11,689,512, ResNet-34 21,797,672 and
  ResNet-101 44,549,160.
* CIFAR ResNet-20 (n=3), option-B shortcuts, 10 classes, counted by hand:
    stem      conv 3*3*3*16 = 432                         + BN 2*16 = 32       ->     464
    stage 1   6 convs 3*3*16*16 = 6*2,304 = 13,824        + 6 BN*32 = 192      ->  14,016
    stage 2   3*3*16*32 = 4,608, 5 convs 3*3*32*32 = 46,080 + 6 BN*64 = 384
              projection 1*1*16*32 = 512 + BN 64                               ->  51,648
    stage 3   3*3*32*64 = 18,432, 5 convs 3*3*64*64 = 184,320 + 6 BN*128 = 768
              projection 1*1*32*64 = 2,048 + BN 128                            -> 205,696
    dense     64*10 + 10                                                       ->     650
    total                                                                        272,474
  He et al.'s "0.27M" (and e.g. the common PyTorch CIFAR ResNet-20, 269,722) use the
  parameter-free option-A shortcuts: 272,474 - (512 + 64) - (2,048 + 128) = 269,722.
* Multiply-accumulates at 224x224 (conv + dense), summed by hand layer by layer:
  ResNet-50 v1.5 4,089,184,256 (torchvision: 4.09 GFLOPS), v1 3,857,973,248 (He et al.
  Table 1: 3.8e9), ResNet-18 1,814,073,344 (1.8e9). Checked within 3% of 4.1e9 / 3.8e9 / 1.8e9.
"""

import keras
import numpy as np
import pytest
from keras import ops

from tf_largebatch.layers import GhostBatchNormalization
from tf_largebatch.models import cifar_resnet, resnet

pytestmark = pytest.mark.unit

RESNET50_BLOCKS = (3, 4, 6, 3)


@pytest.fixture(scope="module")
def resnet50_v15():
    return resnet(50, version="1.5")


@pytest.fixture(scope="module")
def resnet50_v1():
    return resnet(50, version="1")


def trainable_params(model):
    return sum(int(np.prod(v.shape)) for v in model.trainable_weights)


def multiply_adds(model):
    """Conv and dense multiply-accumulates of one sample, from the built layers' shapes."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            height, width = layer.output.shape[1:3]
            total += height * width * int(np.prod(layer.kernel.shape))
        elif isinstance(layer, keras.layers.Dense):
            total += int(np.prod(layer.kernel.shape))
    return total


def bn_layers(model):
    return [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


def zero_gamma_names(model):
    return [bn.name for bn in bn_layers(model) if not np.any(ops.convert_to_numpy(bn.gamma))]


# --- GhostBatchNormalization -------------------------------------------------------------


def _bn_pair(axis, virtual_batch_size, x_shape, seed=0):
    """A ghost BN and `plain` factory sharing random gamma/beta, all built for `x_shape`."""
    rng = np.random.default_rng(seed)
    channels = x_shape[axis]
    gamma = rng.uniform(0.5, 2.0, channels).astype("float32")
    beta = rng.normal(size=channels).astype("float32")
    kwargs = dict(axis=axis, momentum=0.9, epsilon=1e-5)
    ghost = GhostBatchNormalization(virtual_batch_size=virtual_batch_size, **kwargs)
    ghost.build(x_shape)
    ghost.gamma.assign(gamma)
    ghost.beta.assign(beta)

    def plain():
        bn = keras.layers.BatchNormalization(**kwargs)
        bn.build(x_shape)
        bn.gamma.assign(gamma)
        bn.beta.assign(beta)
        return bn

    return ghost, plain


@pytest.mark.parametrize("axis", [-1, 1])
def test_ghost_bn_equals_separate_bns_on_the_groups(axis):
    n = 4
    x = np.random.default_rng(1).normal(2.0, 3.0, size=(2 * n, 3, 5, 6)).astype("float32")
    x[n:] = 4.0 * x[n:] - 5.0  # groups with clearly different statistics
    ghost, plain = _bn_pair(axis, n, x.shape)
    bn_a, bn_b = plain(), plain()

    out = ops.convert_to_numpy(ghost(x, training=True))
    expected = np.concatenate(
        [
            ops.convert_to_numpy(bn_a(x[:n], training=True)),
            ops.convert_to_numpy(bn_b(x[n:], training=True)),
        ]
    )
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
    for name in ("moving_mean", "moving_variance"):
        average = (getattr(bn_a, name).numpy() + getattr(bn_b, name).numpy()) / 2
        np.testing.assert_allclose(getattr(ghost, name).numpy(), average, rtol=1e-5, atol=1e-6)

    # Inference uses the moving statistics, as plain BN does, whatever the batch size.
    reference = plain()
    reference.moving_mean.assign(ghost.moving_mean)
    reference.moving_variance.assign(ghost.moving_variance)
    np.testing.assert_allclose(
        ops.convert_to_numpy(ghost(x[:3], training=False)),
        ops.convert_to_numpy(reference(x[:3], training=False)),
        rtol=1e-5,
        atol=1e-5,
    )


def test_ghost_bn_without_virtual_batch_size_is_plain_bn():
    x = np.random.default_rng(2).normal(size=(6, 2, 2, 4)).astype("float32")
    ghost, plain = _bn_pair(-1, None, x.shape)
    bn = plain()
    np.testing.assert_allclose(
        ops.convert_to_numpy(ghost(x, training=True)),
        ops.convert_to_numpy(bn(x, training=True)),
        rtol=1e-6,
        atol=1e-6,
    )
    np.testing.assert_allclose(ghost.moving_mean.numpy(), bn.moving_mean.numpy(), atol=1e-7)
    np.testing.assert_allclose(ghost.moving_variance.numpy(), bn.moving_variance.numpy(), atol=1e-7)


def test_ghost_bn_batch_not_divisible_raises():
    layer = GhostBatchNormalization(virtual_batch_size=4)
    x = np.zeros((6, 2, 2, 3), "float32")
    with pytest.raises(ValueError, match="not a multiple of virtual_batch_size=4"):
        layer(x, training=True)
    with pytest.raises(ValueError, match="positive integer"):
        GhostBatchNormalization(virtual_batch_size=0)


def test_ghost_bn_serialises():
    layer = GhostBatchNormalization(virtual_batch_size=32, momentum=0.9, epsilon=1e-5, name="bn")
    clone = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(clone) is GhostBatchNormalization
    assert clone.virtual_batch_size == 32
    assert clone.momentum == 0.9 and clone.epsilon == 1e-5


def test_model_with_ghost_bn_trains_in_a_compiled_step():
    """fit() traces the model with an unknown batch size; two groups of 2 per batch of 4."""
    model = cifar_resnet(8, num_classes=3, input_shape=(8, 8, 3), virtual_batch_size=2)
    bns = bn_layers(model)
    assert bns and all(
        type(bn) is GhostBatchNormalization and bn.virtual_batch_size == 2 for bn in bns
    )
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", jit_compile=False)
    x = np.random.default_rng(3).normal(size=(8, 8, 8, 3)).astype("float32")
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert not np.allclose(model.get_layer("stem_bn").moving_mean.numpy(), 0.0)


# --- ImageNet ResNets --------------------------------------------------------------------


def test_resnet50_parameter_count(resnet50_v15, resnet50_v1):
    assert trainable_params(resnet50_v15) == 25_557_032
    assert trainable_params(resnet50_v1) == 25_557_032


def test_resnet50_multiply_adds(resnet50_v15, resnet50_v1):
    assert multiply_adds(resnet50_v15) == pytest.approx(4.1e9, rel=0.03)
    assert multiply_adds(resnet50_v1) == pytest.approx(3.8e9, rel=0.03)


def test_resnet50_shapes(resnet50_v15):
    model = resnet50_v15
    assert model.output_shape == (None, 1000)
    expected = {
        "stem_pool": (56, 56, 64),
        "stage2_block3_out": (56, 56, 256),
        "stage3_block4_out": (28, 28, 512),
        "stage4_block6_out": (14, 14, 1024),
        "stage5_block3_out": (7, 7, 2048),
    }
    for name, shape in expected.items():
        assert tuple(model.get_layer(name).output.shape[1:]) == shape, name


def test_resnet50_zero_gamma_once_per_block(resnet50_v15):
    names = zero_gamma_names(resnet50_v15)
    blocks = [
        f"stage{stage + 2}_block{block + 1}"
        for stage, count in enumerate(RESNET50_BLOCKS)
        for block in range(count)
    ]
    assert len(blocks) == 16
    assert sorted(names) == sorted(f"{b}_bn3" for b in blocks)
    # Stem and shortcut BNs start at one.
    for layer in bn_layers(resnet50_v15):
        if "stem" in layer.name or "shortcut" in layer.name:
            np.testing.assert_array_equal(ops.convert_to_numpy(layer.gamma), 1.0)


def test_resnet50_layer_settings(resnet50_v15):
    bns = bn_layers(resnet50_v15)
    assert len(bns) == 1 + 16 * 3 + 4  # stem, three per block, four shortcuts
    for layer in bns:
        assert type(layer) is GhostBatchNormalization and layer.virtual_batch_size is None
        assert layer.momentum == 0.9 and layer.epsilon == 1e-5
        # The optimizer finds BN parameters by name to exclude them from weight decay.
        assert "bn" in layer.gamma.path and "bn" in layer.beta.path
    convs = [layer for layer in resnet50_v15.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 53
    for layer in convs:
        assert not layer.use_bias
        init = layer.kernel_initializer.get_config()
        assert (init["scale"], init["mode"], init["distribution"]) == (
            2.0,
            "fan_out",
            "untruncated_normal",
        )
    fc = resnet50_v15.get_layer("fc")
    assert fc.kernel_initializer.get_config()["stddev"] == 0.01
    assert not np.any(ops.convert_to_numpy(fc.bias))


def test_resnet_v1_strides_first_1x1_v15_strides_3x3(resnet50_v15, resnet50_v1):
    for stage in (3, 4, 5):  # the first block of every downsampling stage
        block = f"stage{stage}_block1"
        assert resnet50_v1.get_layer(f"{block}_conv1").strides == (2, 2)
        assert resnet50_v1.get_layer(f"{block}_conv2").strides == (1, 1)
        assert resnet50_v15.get_layer(f"{block}_conv1").strides == (1, 1)
        assert resnet50_v15.get_layer(f"{block}_conv2").strides == (2, 2)
        for model in (resnet50_v1, resnet50_v15):
            assert model.get_layer(f"{block}_shortcut_conv").strides == (2, 2)


def test_resnet18_counts_and_no_zero_gamma_when_disabled():
    model = resnet(18, zero_gamma=False)
    assert trainable_params(model) == 11_689_512
    assert multiply_adds(model) == pytest.approx(1.8e9, rel=0.03)
    assert zero_gamma_names(model) == []
    assert model.output_shape == (None, 1000)


@pytest.mark.parametrize(("depth", "count"), [(34, 21_797_672), (101, 44_549_160)])
def test_resnet_parameter_counts(depth, count):
    """torchvision's counts."""
    assert trainable_params(resnet(depth)) == count


def test_resnet_rejects_unknown_depth_and_version():
    with pytest.raises(ValueError, match="depth"):
        resnet(42)
    with pytest.raises(ValueError, match="version"):
        resnet(50, version="2")


# --- CIFAR ResNets -----------------------------------------------------------------------


def test_cifar_resnet20_parameters_shapes_zero_gamma():
    model = cifar_resnet(20)
    assert trainable_params(model) == 272_474
    assert model.output_shape == (None, 10)
    assert tuple(model.get_layer("stage3_block3_out").output.shape[1:]) == (8, 8, 64)
    names = zero_gamma_names(model)
    assert sorted(names) == sorted(f"stage{s}_block{b}_bn2" for s in (1, 2, 3) for b in (1, 2, 3))
    assert zero_gamma_names(cifar_resnet(20, zero_gamma=False)) == []


@pytest.mark.parametrize("depth", [7, 19, 21, 2])
def test_cifar_resnet_invalid_depth(depth):
    with pytest.raises(ValueError, match="6n\\+2"):
        cifar_resnet(depth)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_logits_are_float32(policy):
    model = cifar_resnet(8, dtype_policy=policy, input_shape=(8, 8, 3), virtual_batch_size=1)
    half = policy.removeprefix("mixed_")
    assert model.get_layer("stem_conv").compute_dtype == half
    assert model.get_layer("stem_conv").variable_dtype == "float32"
    assert model.output.dtype == "float32"
    logits = model(np.ones((2, 8, 8, 3), "float32"), training=True)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    assert keras.config.dtype_policy().name == "float32"  # the global policy is untouched

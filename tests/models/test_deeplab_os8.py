"""Seed-003 networks: ASPP, output-stride-8 backbones, DeepLabV3 builders, parameter parity.

``TORCHVISION_PARAMS`` are the counts printed by ``benchmarks/param_parity_torchvision.py`` run with
torch 2.14.1 / torchvision 0.29.1 (the python in ``TFMEDSEG_TORCH_PYTHON``): each torchvision backbone with the seed's
1-channel stem and ``DeepLabHead(C, 1)``. Our count is Keras' trainable parameters (conv kernels and
biases, BN gamma and beta; the moving statistics are buffers in torch).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tfmedseg.errors import ConfigError, InvalidInputError
from tfmedseg.models import registry
from tfmedseg.models.backbones.os8 import OS8_BACKBONES, build_os8_backbone
from tfmedseg.models.blocks.aspp import (
    SEED_RATES,
    TORCHVISION_RATES,
    apply_aspp,
    apply_deeplab_head,
)

TORCHVISION_PARAMS = {
    "resnet152": 74_263_233,
    "resnext101_32x8d": 102_861_761,
    "densenet201": 33_262_081,
    "inception_v3": 37_910_689,
}
#: Feature map side at 256 x 256 input (InceptionV3: valid-padding stem and reductions, thesis' 32 is 30).
FEATURE_SIDE = {"resnet152": 32, "resnext101_32x8d": 32, "densenet201": 32, "inception_v3": 30}


def _trainable(model: keras.Model) -> int:
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def _feature_shape(model: keras.Model) -> tuple:
    return tuple(model.get_layer("head_aspp_b0_conv").input.shape)


@pytest.mark.parametrize("rates", [SEED_RATES, TORCHVISION_RATES])
def test_aspp_branches_have_the_rates_and_keep_the_shape(rates):
    x = keras.Input((8, 8, 6))
    y = apply_aspp(x, rates=rates, channels=4, name="aspp")
    model = keras.Model(x, y)
    assert tuple(y.shape) == (None, 8, 8, 4)
    dilations = [model.get_layer(f"aspp_b{i}_conv").dilation_rate for i in range(1, 4)]
    assert dilations == [(r, r) for r in rates]
    assert model.get_layer("aspp_b0_conv").kernel_size == (1, 1)
    assert model.get_layer("aspp_dropout").rate == 0.5


def test_aspp_dilated_branch_sees_exactly_its_rate():
    """A 3x3 conv with dilation r only reads pixels at offsets {-r, 0, r}: probe with an impulse."""
    x = keras.Input((32, 32, 1))
    model = keras.Model(x, apply_aspp(x, rates=(4, 8, 12), channels=1, name="aspp"))
    conv = model.get_layer("aspp_b2_conv")  # rate 8
    conv.set_weights([np.ones_like(conv.get_weights()[0])])
    probe = keras.Model(x, conv.output)
    impulse = np.zeros((1, 32, 32, 1), np.float32)
    impulse[0, 16, 16, 0] = 1.0
    hit = np.argwhere(probe.predict(impulse, verbose=0)[0, ..., 0] != 0)
    assert sorted({int(r) for r, _ in hit}) == [8, 16, 24]
    assert sorted({int(c) for _, c in hit}) == [8, 16, 24]


def test_deeplab_head_gives_one_logit_per_feature_pixel():
    y = apply_deeplab_head(keras.Input((5, 7, 3)), num_classes=1, channels=4)
    assert tuple(y.shape) == (None, 5, 7, 1)


@pytest.fixture(scope="module")
def small_models():
    return {b: registry.build(f"deeplabv3_{b}", input_shape=(64, 64, 1), size="small", head_channels=8)
            for b in OS8_BACKBONES}


@pytest.mark.parametrize("backbone", OS8_BACKBONES)
def test_small_variants_are_output_stride_8_and_upsample_to_the_input(small_models, backbone):
    model = small_models[backbone]
    out = model(np.random.default_rng(0).normal(size=(2, 64, 64, 1)).astype("float32"), training=False)
    assert tuple(out.shape) == (2, 64, 64, 1)
    assert np.all(np.isfinite(out))
    side = _feature_shape(model)[1]
    assert side == (6 if backbone == "inception_v3" else 8)  # 64 / 8; Inception's valid padding: 6


@pytest.mark.slow
def test_small_variant_trains(small_models):
    model = small_models["resnext101_32x8d"]  # grouped convolutions: gradients on CPU
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), keras.losses.BinaryCrossentropy(from_logits=True),
                  jit_compile=False)
    x = np.random.default_rng(1).normal(size=(4, 64, 64, 1)).astype("float32")
    y = (x > 0).astype("float32")
    losses = model.fit(x, y, epochs=3, batch_size=4, verbose=0).history["loss"]
    assert losses[-1] < losses[0]


def test_weights_options_fail_clearly(tmp_path):
    if not _cached("resnet152"):  # with Keras' cached ImageNet file present the load is legitimate
        with pytest.raises(InvalidInputError, match="offline|not downloaded"):
            build_os8_backbone("resnet152", weights="imagenet")
    with pytest.raises(InvalidInputError, match="no ImageNet weights"):
        build_os8_backbone("resnext101_32x8d", weights="imagenet")
    with pytest.raises(InvalidInputError):
        build_os8_backbone("densenet201", weights=str(tmp_path / "missing.h5"))
    with pytest.raises(ConfigError):
        build_os8_backbone("vgg16")
    with pytest.raises(ConfigError):
        build_os8_backbone("resnet152", size="small", weights=str(tmp_path))


def _cached(backbone):
    import os

    from tfmedseg.models.backbones.os8 import _APP_FILES

    return os.path.isfile(os.path.join(os.path.expanduser("~/.keras/models"), _APP_FILES[backbone]))


@pytest.fixture(scope="module")
def resnext_paper():
    return registry.build("deeplabv3_resnext101_32x8d", input_shape=(256, 256, 1))


def test_resnext101_32x8d_matches_torchvision(resnext_paper):
    """Our own ResNeXt builder: exactly torchvision's parameter count, 32 x 32 x 2048 features."""
    assert _trainable(resnext_paper) == TORCHVISION_PARAMS["resnext101_32x8d"]
    assert _feature_shape(resnext_paper) == (None, 32, 32, 2048)
    grouped = resnext_paper.get_layer("conv4_block2_2_conv")
    assert grouped.groups == 32 and grouped.filters == 1024 and grouped.dilation_rate == (2, 2)
    assert resnext_paper.get_layer("conv4_block1_2_conv").dilation_rate == (1, 1)
    assert resnext_paper.get_layer("conv5_block2_2_conv").dilation_rate == (4, 4)
    assert resnext_paper.get_layer("conv1_conv").kernel.shape == (7, 7, 1, 64)


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["resnet152", "densenet201", "inception_v3"])
def test_keras_applications_backbones_match_torchvision(backbone):
    """Paper-depth clones of keras.applications (~20-45 s each on 2 cores): count within 1 %, OS 8."""
    model = registry.build(f"deeplabv3_{backbone}", input_shape=(256, 256, 1))
    assert abs(_trainable(model) - TORCHVISION_PARAMS[backbone]) / TORCHVISION_PARAMS[backbone] < 0.01
    assert _feature_shape(model)[1:3] == (FEATURE_SIDE[backbone],) * 2
    assert model.layers[1].kernel.shape[2] == 1  # the 1-channel stem (layer 0 is the input)
    if backbone == "resnet152":
        assert model.get_layer("conv4_block1_1_conv").strides == (1, 1)
        assert model.get_layer("conv5_block3_2_conv").dilation_rate == (4, 4)


@pytest.mark.slow
def test_local_keras_applications_weights_load_except_the_stem(tmp_path):
    reference = keras.applications.DenseNet201(include_top=False, weights=None, input_shape=(None, None, 3))
    path = tmp_path / "densenet201.weights.h5"
    reference.save_weights(path)
    model = build_os8_backbone("densenet201", (64, 64, 1), weights=str(path))
    ours = [l for l in model.layers if l.weights]
    theirs = [l for l in reference.layers if l.weights]
    np.testing.assert_array_equal(ours[-1].get_weights()[0], theirs[-1].get_weights()[0])
    np.testing.assert_array_equal(ours[5].get_weights()[0], theirs[5].get_weights()[0])
    assert ours[0].get_weights()[0].shape == (7, 7, 1, 64)

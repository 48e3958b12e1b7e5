"""Efficient blocks: output shapes, weight counts against hand calculations, exact operations."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tfmedseg.models.blocks import common
from tfmedseg.models.blocks.mobilenet import apply_mbconv, apply_mobilenetv3_block
from tfmedseg.models.blocks.separable3d import DepthwiseConv3D, apply_dsts_block, with_depthwise3d_implementation
from tfmedseg.models.blocks.shufflenet import ChannelShuffle, ChannelSplit, apply_shufflenet_v2_unit


def _trainable(model: keras.Model) -> int:
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def _model(shape, fn):
    x = keras.Input(shape)
    return keras.Model(x, fn(x))


def test_mbconv_2d_shape_and_weights():
    # E = 16*6 = 96, S = int(16*0.25) = 4: expand 1536 + BN 192, depthwise 9*96 + BN 192,
    # SE 96*4+4 + 4*96+96, project 96*24 + BN 48.
    m = _model((8, 8, 16), lambda x: apply_mbconv(x, 24, 3, 2, expand_ratio=6, se_ratio=0.25, name="b"))
    assert tuple(m.output.shape) == (None, 4, 4, 24)
    assert _trainable(m) == 1536 + 192 + 864 + 192 + 388 + 480 + 2304 + 48
    assert m.get_layer("b_expand_conv") is not None and m.get_layer("b_se_excite") is not None


def test_mbconv_3d_uses_cubic_depthwise_kernel():
    m = _model((4, 8, 8, 16), lambda x: apply_mbconv(x, 24, 3, (1, 2, 2), expand_ratio=6, name="b"))
    assert tuple(m.output.shape) == (None, 4, 4, 4, 24)
    assert _trainable(m) == 6004 - 9 * 96 + 27 * 96
    assert isinstance(m.get_layer("b_dwconv"), DepthwiseConv3D)


def test_mobilenetv3_block_residual_and_hard_gate(rng):
    m = _model((8, 8, 16), lambda x: apply_mobilenetv3_block(x, 16, 3, 1, expand_ratio=3, se_ratio=0.25,
                                                             activation="relu", name="v3"))
    assert m.get_layer("v3_add") is not None
    assert m.get_layer("v3_se_gate").activation.__name__ == "hard_sigmoid"
    # E = 48, S = 4: 768+96 + 432+96 + 196+240 + 768+32
    assert _trainable(m) == 768 + 96 + 432 + 96 + 196 + 240 + 768 + 32
    # e = 1 skips the expansion: no expand layer, residual still applies
    m1 = _model((8, 8, 16), lambda x: apply_mobilenetv3_block(x, 16, 3, 1, expand_ratio=1, se_ratio=0, name="u"))
    assert not any(layer.name.startswith("u_expand") for layer in m1.layers)
    assert _trainable(m1) == 9 * 16 + 32 + 256 + 32


def test_shufflenet_basic_unit_weights_and_split_identity(rng):
    m = _model((8, 8, 24), lambda x: apply_shufflenet_v2_unit(x, 24, 3, 1, se_ratio=0.25, name="s"))
    b = 12  # 2b^2 + 9b + 6b + SE(2b*3 + 3 + b)
    assert _trainable(m) == 2 * b * b + 9 * b + 6 * b + (2 * b * 3 + 3 + b)
    x = rng.standard_normal((2, 8, 8, 24)).astype("float32")
    y = np.asarray(m(x))
    # the untouched half lands on the even output channels after the shuffle
    np.testing.assert_array_equal(y[..., 0::2], x[..., :12])


def test_shufflenet_downsampling_unit_shape():
    m = _model((8, 8, 16), lambda x: apply_shufflenet_v2_unit(x, 24, 3, 2, expand_ratio=2, name="d"))
    assert tuple(m.output.shape) == (None, 4, 4, 24)
    # branch1: dw 9*16 + BN 32 + pw 16*12 + BN 24; branch2: pw 16*24 + BN 48, dw 9*24 + BN 48,
    # pw 24*12 + BN 24, SE (S=3): 12*3+3 + 3*12+12
    assert _trainable(m) == 144 + 32 + 192 + 24 + 384 + 48 + 216 + 48 + 288 + 24 + 39 + 48
    m3 = _model((4, 8, 8, 16), lambda x: apply_shufflenet_v2_unit(x, 24, 3, (2, 2, 2), name="d3"))
    assert tuple(m3.output.shape) == (None, 2, 4, 4, 24)
    with pytest.raises(ValueError, match="even"):
        _model((8, 8, 16), lambda x: apply_shufflenet_v2_unit(x, 25, 3, 2, name="odd"))


def test_channel_shuffle_permutation_is_exact():
    x = np.arange(2 * 3 * 6, dtype="float32").reshape(1, 2, 3, 6) % 6
    y = np.asarray(ChannelShuffle(2)(x))
    np.testing.assert_array_equal(y[0, 0, 0], [0, 3, 1, 4, 2, 5])
    y3 = np.asarray(ChannelShuffle(3)(x))
    np.testing.assert_array_equal(y3[0, 1, 2], [0, 2, 4, 1, 3, 5])
    a, b = ChannelSplit()(x)
    np.testing.assert_array_equal(np.concatenate([a, b], -1), x)
    assert ChannelShuffle.from_config(ChannelShuffle(3).get_config()).groups == 3


def test_dsts_block_weights_and_residual():
    m = _model((4, 8, 8, 8), lambda x: apply_dsts_block(x, 8, 3, 1, expand_ratio=1, se_ratio=0.25, name="t"))
    # temporal 3*8, spatial 9*8, BN(16) 32, SE (S=2) 16*2+2 + 2*16+16, project 16*8 + BN 16
    assert _trainable(m) == 24 + 72 + 32 + 82 + 128 + 16
    assert m.get_layer("t_temporal_dwconv").kernel_size == (3, 1, 1)
    assert m.get_layer("t_spatial_dwconv").kernel_size == (1, 3, 3)
    assert m.get_layer("t_add") is not None
    m2 = _model((4, 8, 8, 8), lambda x: apply_dsts_block(x, 16, 5, (2, 2, 2), expand_ratio=2, name="u"))
    assert tuple(m2.output.shape) == (None, 2, 4, 4, 16)


def _numpy_depthwise3d(x, kernel, strides):
    """Reference: TF 'same' padding, one filter per channel."""
    out_shape, pads = [], []
    for size, k, s in zip(x.shape[1:4], kernel.shape[:3], strides):
        out = -(-size // s)
        total = max((out - 1) * s + k - size, 0)
        out_shape.append(out)
        pads.append((total // 2, total - total // 2))
    xp = np.pad(x, [(0, 0), *pads, (0, 0)])
    y = np.zeros((x.shape[0], *out_shape, x.shape[-1]), "float64")
    for d in range(out_shape[0]):
        for h in range(out_shape[1]):
            for w in range(out_shape[2]):
                patch = xp[:, d * strides[0]: d * strides[0] + kernel.shape[0],
                           h * strides[1]: h * strides[1] + kernel.shape[1],
                           w * strides[2]: w * strides[2] + kernel.shape[2]]
                y[:, d, h, w] = np.einsum("bijkc,ijkc->bc", patch, kernel[..., 0, :])
    return y


@pytest.mark.parametrize("kernel_size,strides", [((3, 3, 3), (2, 2, 2)), ((5, 1, 1), (1, 2, 2)), ((1, 3, 3), 1)])
def test_depthwise3d_implementations_match_reference(rng, kernel_size, strides):
    x = rng.standard_normal((2, 5, 6, 7, 3)).astype("float32")
    layers = {impl: DepthwiseConv3D(kernel_size, strides=strides, implementation=impl) for impl in ("grouped", "unrolled")}
    ref = None
    for layer in layers.values():
        layer.build(x.shape)
        if ref is None:
            kernel = rng.standard_normal(layer.kernel.shape).astype("float32")
            ref = _numpy_depthwise3d(x.astype("float64"), kernel.astype("float64"), common.as_tuple(strides, 3, "s"))
        layer.kernel.assign(kernel)
        y = np.asarray(layer(x))
        assert y.shape == ref.shape
        np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


def test_depthwise3d_config_round_trip_and_switch(rng):
    layer = DepthwiseConv3D((3, 1, 1), strides=(2, 1, 1), use_bias=True, name="dw")
    clone = DepthwiseConv3D.from_config(layer.get_config())
    assert (clone.kernel_size, clone.strides, clone.use_bias, clone.implementation) == ((3, 1, 1), (2, 1, 1), True, "grouped")
    with pytest.raises(ValueError, match="implementation"):
        DepthwiseConv3D(3, implementation="fast")
    x = keras.Input((4, 6, 6, 2))
    m = keras.Model(x, DepthwiseConv3D(3, use_bias=True, name="dw")(x))
    m.get_layer("dw").bias.assign([0.5, -1.0])
    unrolled = with_depthwise3d_implementation(m, "unrolled")
    assert unrolled.get_layer("dw").implementation == "unrolled"
    data = rng.standard_normal((1, 4, 6, 6, 2)).astype("float32")
    np.testing.assert_allclose(np.asarray(unrolled(data)), np.asarray(m(data)), atol=1e-5)


def test_common_helpers_reject_bad_options():
    x = keras.Input((8, 8, 4))
    with pytest.raises(ValueError, match="activation must be one of"):
        common.apply_activation(x, "mish", name="a")
    with pytest.raises(ValueError, match="kernel_size"):
        common.apply_conv(x, 4, (3, 3, 3), name="c")
    y = common.apply_squeeze_excite(x, 2, name="se")
    assert tuple(y.shape) == (None, 8, 8, 4)

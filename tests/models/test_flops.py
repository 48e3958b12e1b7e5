"""ptflops-style MAC counting: per-layer rules by hand, and the seed-002 fidelity check."""

from __future__ import annotations

import importlib.util
import pathlib

import keras
import pytest

from tfmedseg.models.blocks.separable3d import DepthwiseConv3D
from tfmedseg.models.flops import model_complexity

_BENCH = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "bench_efficient_fidelity.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_efficient_fidelity", _BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rules_2d_by_hand():
    x = keras.Input((8, 8, 3))
    y = keras.layers.Conv2D(4, 3, padding="same", use_bias=True, name="conv")(x)  # 64*27*4 + 64*4
    y = keras.layers.BatchNormalization(name="bn")(y)  # 2 * 256
    y = keras.layers.ReLU(name="relu")(y)  # 256
    y = keras.layers.Activation("sigmoid", name="sig")(y)  # not counted
    y = keras.layers.DepthwiseConv2D(3, strides=2, padding="same", use_bias=False, name="dw")(y)  # 16*9*4
    y = keras.layers.MaxPooling2D(2, name="pool")(y)  # numel(in) = 64
    y = keras.layers.UpSampling2D(4, name="up")(y)  # numel(out) = 256
    y = keras.layers.GlobalAveragePooling2D(name="gap")(y)  # 256
    y = keras.layers.Dense(5, activation="relu", name="fc")(y)  # 4*5 + 5 + relu 5
    report = model_complexity(keras.Model(x, y))
    per_layer = {lc.name: lc.macs for lc in report.layers}
    assert per_layer == {"conv": 7168, "bn": 512, "relu": 256, "sig": 0, "dw": 576, "pool": 64, "up": 256,
                         "gap": 256, "fc": 30}
    assert report.macs == sum(per_layer.values())
    # trainable only: conv 112, BN gamma/beta 8 (moving statistics excluded), dw 36, fc 25
    assert report.params == 112 + 8 + 36 + 25
    assert report.by_prefix("c") == (7168, 112)


def test_rules_3d_grouped_and_depthwise():
    x = keras.Input((4, 8, 8, 4))
    y = keras.layers.Conv3D(8, (1, 2, 2), strides=(1, 2, 2), groups=2, use_bias=False, name="g")(x)
    y = DepthwiseConv3D((3, 3, 3), strides=(2, 1, 1), name="dw")(y)
    report = model_complexity(keras.Model(x, y))
    per_layer = {lc.name: lc.macs for lc in report.layers}
    # grouped: positions 4*4*4=64, kernel 4, C_in 4, C_out/groups 4 -> 64*4*4*4
    # depthwise: positions 2*4*4=32, kernel 27, one input channel per filter, 8 channels
    assert per_layer == {"g": 64 * 4 * 4 * 4, "dw": 32 * 27 * 8}
    assert report.params == 4 * 2 * 8 + 27 * 8


def test_dynamic_shapes_are_rejected():
    x = keras.Input((None, None, 3))
    with pytest.raises(ValueError, match="static"):
        model_complexity(keras.Model(x, keras.layers.Conv2D(2, 1)(x)))


def test_default_configurations_match_tables_4_2_and_4_3():
    """The 7 default networks at the paper's input size: 3 % params, 5 % MACs."""
    bench = _bench()
    rows = {}
    for network in bench.NETWORKS:
        macs, params = bench.measure(network, "default")
        t_macs, t_params = bench.THESIS[(network, "default")]
        rows[network] = (macs / t_macs, params / t_params)
    bad = {k: v for k, v in rows.items()
           if abs(v[0] - 1) > bench.MAC_TOLERANCE or abs(v[1] - 1) > bench.PARAM_TOLERANCE}
    assert not bad, f"(MAC ratio, param ratio) outside tolerance: {bad}"
    # the 2D MobileNetV2 encoder is EfficientNet-B0's stages: 3,594,460 trainable weights
    assert rows["mobilenetv2_2d"][1] * 3.76 == pytest.approx(3.692, abs=0.001)


@pytest.mark.slow
def test_3d_mobilenet_top_and_bottom_parameters_follow_table_4_3():
    """With the default's head/decoder, the 3D MobileNet top/bottom tables reproduce Table 4.3's
    parameter counts (the encoder tables alone set them), a check of our 3D reading of Appendix A."""
    bench = _bench()
    for network in ("mobilenetv2_3d", "mobilenetv3_3d"):
        for variant in ("top", "bottom"):
            _, params = bench.measure(network, variant)
            assert params == pytest.approx(bench.THESIS[(network, variant)][1], rel=0.03)

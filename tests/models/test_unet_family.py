"""U-Net / UNet++ / MA-Net (seed 000): attention blocks against numpy, shapes, smp parameter parity, weights."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tfmedseg.errors import ModelBuildError
from tfmedseg.models import registry
from tfmedseg.models.backbones.encoders import build_encoder
from tfmedseg.models.backbones.resnet34 import build_basic_resnet
from tfmedseg.models.blocks.attention import PositionAttention, apply_mfab
from tfmedseg.models.segmentation.unet_family import decoder_parameter_count

# Parameters smp 0.6.0's forward pass uses (3 input channels, 1 class, encoder_weights=None),
# printed by `benchmarks/param_parity_smp.py --smp` (torch 2.x, benchmarks/smp_param_counts.json,
# second number of each entry).
SMP_FORWARD_PARAMS = {
    ("unet", "resnet34"): 24_436_369,
    ("unet_plus_plus", "resnet34"): 26_078_609,
    ("manet", "resnet34"): 31_783_633,
    ("unet", "efficientnet-b0"): 5_839_309,
    ("unet_plus_plus", "efficientnet-b0"): 6_157_421,
    ("manet", "efficientnet-b0"): 8_680_197,
    ("unet", "timm-efficientnet-b6"): 42_493_481,
    ("unet_plus_plus", "timm-efficientnet-b6"): 43_333_417,
    ("manet", "timm-efficientnet-b6"): 51_326_963,
}


def _trainable(model) -> int:
    return int(sum(int(np.prod(w.shape)) for w in model.trainable_weights))


def _bn_np(x, gamma, beta, mean, var, eps=1e-5):
    return gamma * (x - mean) / np.sqrt(var + eps) + beta


def _conv_np(x, kernel, bias=None):
    """'same' conv, NHWC, odd kernel, stride 1."""
    kh, kw = kernel.shape[:2]
    ph, pw = kh // 2, kw // 2
    xp = np.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
    out = np.zeros(x.shape[:3] + (kernel.shape[-1],))
    for i in range(kh):
        for j in range(kw):
            out += np.einsum("bhwc,cd->bhwd", xp[:, i:i + x.shape[1], j:j + x.shape[2]], kernel[i, j])
    return out + (0 if bias is None else bias)


def _randomize(model, rng):
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        new = [rng.uniform(0.5, 1.5, w.shape) if "variance" in v.path or "gamma" in v.path else rng.normal(0, 0.3, w.shape)
               for w, v in zip(weights, layer.weights)]
        layer.set_weights([n.astype("float32") for n in new])


def test_position_attention_matches_smp_numpy_reference(rng):
    x = rng.normal(size=(2, 3, 4, 5)).astype("float32")  # [B, H, W, C]
    layer = PositionAttention(pab_channels=4)
    y = keras.ops.convert_to_numpy(layer(x))
    for w in layer.weights:
        w.assign(rng.normal(0, 0.4, w.shape).astype("float32"))
    y = keras.ops.convert_to_numpy(layer(x))
    # smp's PABBlock.forward in NCHW, transcribed to numpy
    b, h, wd, c = x.shape
    top = _conv_np(x, *[keras.ops.convert_to_numpy(t) for t in layer.top_conv.weights]).transpose(0, 3, 1, 2)
    center = _conv_np(x, *[keras.ops.convert_to_numpy(t) for t in layer.center_conv.weights]).transpose(0, 3, 1, 2)
    bottom = _conv_np(x, *[keras.ops.convert_to_numpy(t) for t in layer.bottom_conv.weights]).transpose(0, 3, 1, 2)
    top = top.reshape(b, 4, h * wd)
    center = center.reshape(b, 4, h * wd).transpose(0, 2, 1)
    bottom = bottom.reshape(b, c, h * wd).transpose(0, 2, 1)
    sp = center @ top
    flat = sp.reshape(b, -1)
    flat = np.exp(flat - flat.max(1, keepdims=True))
    sp = (flat / flat.sum(1, keepdims=True)).reshape(b, h * wd, h * wd)
    sp = np.ascontiguousarray(sp @ bottom).reshape(b, c, h, wd)  # smp's reshape without transpose
    out = x + sp.transpose(0, 2, 3, 1)
    expected = _conv_np(out, *[keras.ops.convert_to_numpy(t) for t in layer.out_conv.weights])
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)
    # the softmax runs over the whole map: a per-row softmax would give a different result
    assert PositionAttention.from_config(layer.get_config()).pab_channels == 4


def test_mfab_matches_numpy_reference(rng):
    xin, skin = keras.Input((2, 2, 6)), keras.Input((4, 4, 32))
    model = keras.Model([xin, skin], apply_mfab(xin, skin, 3, reduction=16, name="m"))
    _randomize(model, rng)
    x = rng.normal(size=(2, 2, 2, 6)).astype("float32")
    s = rng.normal(size=(2, 4, 4, 32)).astype("float32")
    y = keras.ops.convert_to_numpy(model([x, s]))
    get = lambda n: [np.asarray(w) for w in model.get_layer(n).get_weights()]
    relu = lambda a: np.maximum(a, 0)
    sigmoid = lambda a: 1 / (1 + np.exp(-a))

    def cbr(a, n):
        return relu(_bn_np(_conv_np(a, get(f"{n}_conv")[0]), *get(f"{n}_bn")))

    def se(a, n):
        g = a.mean(axis=(1, 2), keepdims=True)
        g = relu(_conv_np(g, *get(f"{n}_reduce")))
        return sigmoid(_conv_np(g, *get(f"{n}_expand")))

    h = cbr(cbr(x, "m_hl1"), "m_hl2").repeat(2, axis=1).repeat(2, axis=2)
    h = h * (se(h, "m_se_hl") + se(s, "m_se_ll"))
    expected = cbr(cbr(np.concatenate([h, s], -1), "m_conv1"), "m_conv2")
    assert get("m_se_hl_reduce")[0].shape == (1, 1, 32, 2)  # max(1, 32 // 16)
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def tiny_models():
    """The three architectures on a ResNet-18 encoder, one grey input channel, 32x32, 2 classes."""
    kw = {"encoder": "resnet18", "input_shape": (32, 32, 1), "classes": 2, "decoder_channels": (16, 8, 8, 8, 4)}
    return {
        "unet": registry.build("unet", **kw),
        "unet_plus_plus": registry.build("unet_plus_plus", deep_supervision=True, **kw),
        "manet": registry.build("manet", activation="sigmoid", **kw),
    }


def test_builders_output_full_resolution(tiny_models, rng):
    x = rng.random((2, 32, 32, 1)).astype("float32")
    assert tiny_models["unet"](x).shape == (2, 32, 32, 2)
    y = keras.ops.convert_to_numpy(tiny_models["manet"](x))
    assert y.shape == (2, 32, 32, 2) and 0 <= y.min() and y.max() <= 1


def test_unet_plus_plus_deep_supervision_outputs(tiny_models, rng):
    model = tiny_models["unet_plus_plus"]
    ys = [keras.ops.convert_to_numpy(y) for y in model(rng.random((1, 32, 32, 1)).astype("float32"))]
    assert len(ys) == 4 and all(y.shape == (1, 32, 32, 2) for y in ys)
    names = model.output_names
    assert "deep_supervision1" in names[0] and "segmentation_head" in names[-1]
    # each side head reads a different nested node: outputs differ
    assert not np.allclose(ys[0], ys[1]) and not np.allclose(ys[2], ys[3])


def test_full_count_is_encoder_plus_decoder(tiny_models):
    enc = build_encoder("resnet18", (32, 32, 1))
    for arch, model in tiny_models.items():
        kw = {"deep_supervision": True} if arch == "unet_plus_plus" else {}
        decoder = decoder_parameter_count(arch, "resnet18", classes=2, decoder_channels=(16, 8, 8, 8, 4), **kw)
        assert _trainable(model) == _trainable(enc) + decoder


@pytest.mark.parametrize("encoder", ["resnet34", "efficientnet-b0", "timm-efficientnet-b6"])
def test_parameter_counts_match_smp(encoder):
    n_enc = _trainable(build_encoder(encoder, (32, 32, 3)))
    for arch in ("unet", "unet_plus_plus", "manet"):
        smp = SMP_FORWARD_PARAMS[(arch, encoder)]
        ours = n_enc + decoder_parameter_count(arch, encoder, classes=1)
        assert abs(ours - smp) / smp < 0.02, (arch, encoder, ours, smp)


def test_bad_arguments_raise_model_build_errors():
    with pytest.raises(ModelBuildError, match="download"):
        build_encoder("resnet34", (32, 32, 3), weights="imagenet")
    with pytest.raises(ModelBuildError, match="does not exist"):
        build_encoder("resnet34", (32, 32, 3), weights="/nonexistent/r34.weights.h5")
    with pytest.raises(ModelBuildError, match="unknown encoder"):
        build_encoder("resnet35", (32, 32, 3))
    with pytest.raises(ModelBuildError, match="divisible"):
        build_encoder("resnet34", (48, 48, 3))
    with pytest.raises(ModelBuildError, match="decoder_channels"):
        registry.build("unet", encoder="resnet34", decoder_channels=(8, 8))


def test_local_weights_files_load(tmp_path, rng):
    core = build_basic_resnet((32, 32, 3), blocks=(2, 2, 2, 2), name="resnet18")
    _randomize(core, rng)
    path = tmp_path / "r18.weights.h5"
    core.save_weights(path)
    enc = build_encoder("resnet18", (32, 32, 3), weights=path)
    for a, b in zip(enc.get_weights(), core.get_weights()):
        np.testing.assert_array_equal(a, b)
    # a keras.applications file (RGB) into a grey-input encoder: first kernel summed over RGB
    app = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(32, 32, 3))
    first = app.get_layer("Conv1")
    first.set_weights([rng.normal(size=first.get_weights()[0].shape).astype("float32")])
    app_path = tmp_path / "mobilenet_v2.weights.h5"
    app.save_weights(app_path)
    enc = build_encoder("mobilenet_v2", (32, 32, 1), weights=app_path)
    np.testing.assert_allclose(enc.get_layer("Conv1").get_weights()[0], first.get_weights()[0].sum(2, keepdims=True), rtol=1e-6)

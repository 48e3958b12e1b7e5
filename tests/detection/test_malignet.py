"""MaligNet pieces: ladder FPN (shared weights, clean = sigma 0, decoders off the inference path),
per-sample supervised masking, C6 tiling, semi-supervised training under MirroredStrategy,
SSD backbone weights option."""

import importlib.util
import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmedseg.errors import ConfigError
from tfmedseg.models.backbones.resnet import build_resnet_backbone
from tfmedseg.models.detection.fpn import build_fpn
from tfmedseg.models.detection.global_features import (
    GlobalFeatureBoxHead,
    tile_global_features,
)
from tfmedseg.models.detection.ladder_fpn import LEVELS, LadderFPN, build_ladder_fpn
from tfmedseg.models.detection.malignet import (
    MaligNetConfig,
    build_malignet,
    variant_name,
)
from tfmedseg.models.detection.mask_rcnn import (
    LOSS_NAMES,
    MaskRCNN,
    MaskRCNNConfig,
    prepare_ground_truth,
)
from tfmedseg.models.detection.ssd import SSDConfig, build_ssd

_spec = importlib.util.spec_from_file_location("_synthetic", pathlib.Path(__file__).with_name("_synthetic.py"))
_synthetic = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_synthetic)


@pytest.fixture(scope="module")
def lfpn_parts():
    keras.utils.set_random_seed(0)
    bb = build_resnet_backbone((64, 64, 1), 4, (4, 4, 8, 8), (1, 1, 1, 1))
    lfpn = build_ladder_fpn(bb, filters=8, noise_stddev=0.03)
    feats = bb(np.random.default_rng(0).random((2, 64, 64, 1), np.float32))
    return bb, lfpn, feats


def _ids(variables):
    """Ids of the backing tf.Variables (what a GradientTape watches) of Keras variables."""
    return {id(getattr(v, "value", v)) for v in variables}


def _watched(fn):
    with tf.GradientTape(persistent=True) as tape:
        out = fn()
    return {id(v) for v in tape.watched_variables()}, out


def test_noisy_and_clean_paths_share_every_weight(lfpn_parts):
    _, lfpn, feats = lfpn_parts
    clean_vars, clean = _watched(lambda: lfpn(feats, training=False))
    noisy_vars, noisy = _watched(lambda: lfpn(feats, training=True))
    encoder = _ids(lfpn.encoder_variables)
    assert clean_vars == noisy_vars == encoder and len(encoder) == 2 * 2 * len(LEVELS)  # kernel + bias, 2 convs
    assert not encoder & _ids(lfpn.decoder_variables)
    for k in ("P2", "P3", "P4", "P5", "P6"):
        assert clean[k].shape == noisy[k].shape
        assert not np.allclose(clean[k].numpy(), noisy[k].numpy())  # the noise is really there


def test_clean_path_equals_sigma_zero_path_and_bicubic_fpn(lfpn_parts):
    bb, lfpn, feats = lfpn_parts
    quiet = LadderFPN.from_config({**lfpn.get_config(), "noise_stddev": 0.0})
    quiet.build()
    quiet.set_weights(lfpn.get_weights())
    clean = lfpn(feats, training=False)
    sigma0 = quiet(feats, training=True)
    sigma0_ladder = quiet.ladder(feats, training=True)
    fpn = build_fpn(bb, filters=8, upsampling="bicubic")
    for i, level in enumerate(LEVELS):
        fpn.get_layer(f"fpn_c{level}p{level}").set_weights(lfpn.lateral[i].get_weights())
        fpn.get_layer(f"fpn_p{level}").set_weights(lfpn.smooth[i].get_weights())
    plain = fpn(feats)
    for k in ("P2", "P3", "P4", "P5", "P6"):
        np.testing.assert_allclose(sigma0[k].numpy(), clean[k].numpy(), atol=1e-6, err_msg=k)
        np.testing.assert_allclose(sigma0_ladder["pyramid"][k].numpy(), clean[k].numpy(), atol=1e-6, err_msg=k)
        np.testing.assert_allclose(plain[k].numpy(), clean[k].numpy(), atol=1e-5, err_msg=k)


def test_denoising_cost_is_the_mean_of_twelve_mses(lfpn_parts):
    _, lfpn, feats = lfpn_parts
    clean = lfpn.encode(feats, None)
    noisy = lfpn.encode(feats, 0.03)
    rec = lfpn.decode(noisy)
    assert len(clean) == len(rec) == 12
    expected = np.mean([np.mean((clean[k].numpy() - rec[k].numpy()) ** 2) for k in clean])
    np.testing.assert_allclose(float(lfpn.denoising_cost(clean, rec)), expected, rtol=1e-5)
    assert rec[(2, 0)].shape == feats["C2"].shape  # z^0 reconstructs the backbone map


def test_c6_tiling_shape_and_values():
    g = np.arange(6, dtype=np.float32).reshape(2, 3)
    tiled = tile_global_features(g, 200, 7).numpy()
    assert tiled.shape == (2, 200, 7, 7, 3)
    np.testing.assert_array_equal(tiled[1, 199, 6, 0], g[1])
    np.testing.assert_array_equal(tiled[0, 17, 3, 3], g[0])
    head = GlobalFeatureBoxHead(5, fc_filters=8, pool_size=7, global_filters=4)
    logits, deltas = head(np.zeros((2, 200, 7, 7, 6), np.float32), context=np.ones((2, 2, 2, 16), np.float32))
    assert logits.shape == (2, 200, 5) and deltas.shape == (2, 200, 5, 4)
    assert head.conv1.kernel.shape == (7, 7, 6 + 4, 8)  # ROI features + E tiled channels
    assert head.global_features(np.ones((2, 2, 2, 16), np.float32)).shape == (2, 4)


def test_global_head_without_the_tile_equals_the_tiled_concat():
    """The head's per-image global term equals the seed's tile + concat (same weights), in both BN modes."""
    rng = np.random.default_rng(0)
    head = GlobalFeatureBoxHead(5, fc_filters=8, pool_size=7, global_filters=4)
    rois = rng.normal(size=(2, 30, 7, 7, 6)).astype(np.float32)
    c5 = rng.normal(size=(2, 3, 3, 16)).astype(np.float32)
    head(rois, context=c5)
    for w in head.bn1.weights + head.c6_bn.weights:  # non-trivial BN statistics
        w.assign(rng.uniform(0.5, 1.5, size=w.shape).astype(np.float32))
    for training in (False, True):
        fused, tiled = head(rois, context=c5, training=training), head.tiled_call(rois, c5, training=training)
        for a, b in zip(fused, tiled):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-4)
    assert np.abs(fused[0].numpy()).max() > 1e-2  # not trivially zero


@pytest.fixture(scope="module")
def malignet():
    keras.utils.set_random_seed(0)
    cfg = MaskRCNNConfig.tiny()
    images, boxes, classes, masks = _synthetic.rectangles(4, 64, 2, 2, seed=0)
    gt = prepare_ground_truth(boxes, classes, masks, cfg)
    labeled = np.array([True, False, True, False])
    data = {"images": images, "boxes": gt["boxes"] * labeled[:, None, None], "classes": gt["classes"] * labeled[:, None],
            "masks": gt["masks"] * labeled[:, None, None, None], "labeled": labeled.astype(np.float32)}
    # one device (tf.distribute of the shared train_step is covered by test_mask_rcnn.py)
    model = build_malignet(cfg, MaligNetConfig(global_filters=8))
    model.compile(optimizer=keras.optimizers.Adam(1e-3, global_clipnorm=5.0), jit_compile=False)
    hist = model.fit(data, batch_size=4, epochs=4, verbose=0, shuffle=False)
    return model, data, hist.history


def test_unlabeled_only_batch_gives_zero_supervised_and_positive_denoising_loss(malignet):
    model, data, _ = malignet
    unl = np.array([False, False, False, False])
    # ground truth present but flagged unlabeled: it must be ignored
    real = prepare_ground_truth(*_synthetic.rectangles(4, 64, 2, 2, seed=3)[1:], model.config)
    out = model.compute_losses(data["images"], real["boxes"], real["classes"], real["masks"], training=True, labeled=unl)
    for name in LOSS_NAMES:
        assert float(out[name]) == 0.0, name
    assert float(out["denoising_loss"]) > 0.0
    assert float(out["unlabeled_views"]) == 4.0 and float(out["labeled_views"]) == 0.0
    mixed = model.compute_losses(data["images"], real["boxes"], real["classes"], real["masks"], training=True,
                                 labeled=np.array([True, False, True, False]))
    assert float(mixed["rpn_class_loss"]) > 0.0 and float(mixed["mrcnn_class_loss"]) > 0.0


def test_semi_supervised_training(malignet):
    _, _, hist = malignet
    assert hist["unlabeled_views"] == [2.0] * 4 and hist["labeled_views"] == [2.0] * 4
    assert hist["denoising_loss"][-1] < hist["denoising_loss"][0]
    assert hist["loss"][-1] < hist["loss"][0]
    for name in LOSS_NAMES + ("denoising_loss",):
        assert np.all(np.isfinite(hist[name])), name


def test_inference_skips_the_decoders(malignet):
    model, data, _ = malignet
    cfg = MaskRCNNConfig.tiny(detection_min_confidence=0.0)
    clone = MaskRCNN.from_config({**model.get_config(), "config": cfg.__dict__})
    clone.set_weights(model.get_weights())
    used, out = _watched(lambda: clone(data["images"][:2]))
    assert not used & _ids(clone.decoder.decoder_variables)
    assert used & _ids(clone.decoder.encoder_variables)
    assert used & _ids(clone.box_head.c6_conv.weights)
    assert int(out["num_detections"].numpy().min()) > 0
    # the SavedModel round trip of MaligNet is in test_whole_body.py (inside the two-stage model)


def test_variants_and_config_checks():
    assert variant_name(MaligNetConfig(ladder_fpn=False, global_features=False)) == "ResNet50 + FPN (Mask R-CNN)"
    assert variant_name(MaligNetConfig(ladder_fpn=False)) == "ResNet50 + FPN w/ global features"
    assert variant_name(MaligNetConfig(global_features=False)) == "ResNet50 + LFPN w/o global features"
    with pytest.raises(ConfigError, match="noise_stddev"):
        MaligNetConfig(noise_stddev=-1)
    plain = build_malignet(MaskRCNNConfig.tiny(), MaligNetConfig(ladder_fpn=False, global_features=False))
    assert plain.loss_names == LOSS_NAMES and not plain.has_unsupervised_loss


def test_ssd_backbone_weights_option(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty_keras_home"))
    with pytest.raises(ConfigError, match=r"ssd\.backbone_weights.*imagenet.*local"):
        build_ssd(SSDConfig.tiny(backbone_weights="imagenet"))
    with pytest.raises(ConfigError, match=r"ssd\.backbone_weights.*does not exist"):
        build_ssd(SSDConfig.tiny(backbone_weights=str(tmp_path / "missing.h5")))
    assert build_ssd(SSDConfig.tiny(backbone_weights="none")).config.backbone_weights == "none"

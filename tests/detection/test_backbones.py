"""Backbones: feature dicts, config round trip, default sizes, keras.applications weight files."""

import keras
import numpy as np
import pytest

from tfmedseg.errors import InvalidInputError, ModelBuildError
from tfmedseg.models.backbones.resnet import build_resnet_backbone
from tfmedseg.models.backbones.vgg import build_vgg16_backbone
from tfmedseg.models.detection.fpn import build_fpn


def test_resnet_tiny_features_fpn_and_config_round_trip(rng):
    bb = build_resnet_backbone((64, 64, 1), 4, (4, 4, 8, 8), (1, 1, 1, 1))
    assert {k: tuple(v.shape[1:]) for k, v in bb.output.items()} == {
        "C2": (16, 16, 16), "C3": (8, 8, 16), "C4": (4, 4, 32), "C5": (2, 2, 32)
    }
    x = rng.normal(size=(1, 64, 64, 1)).astype(np.float32)
    clone = keras.Model.from_config(bb.get_config())
    clone.set_weights(bb.get_weights())
    np.testing.assert_allclose(clone(x)["C5"], bb(x)["C5"], atol=1e-5)
    fpn = build_fpn(bb, filters=8, upsampling="bicubic")
    shapes = {k: tuple(v.shape[1:3]) for k, v in fpn(bb(x)).items()}
    assert shapes == {"P2": (16, 16), "P3": (8, 8), "P4": (4, 4), "P5": (2, 2), "P6": (1, 1)}


def test_backbone_errors():
    with pytest.raises(ModelBuildError, match="filters"):
        build_vgg16_backbone((32, 32, 1), filters=(4, 4))
    with pytest.raises(InvalidInputError, match="no download"):
        build_resnet_backbone((64, 64, 1), weights="imagenet")


@pytest.mark.slow
def test_default_sizes_match_keras_applications():
    assert build_resnet_backbone((320, 320, 1)).count_params() == keras.applications.ResNet50(
        include_top=False, weights=None, input_shape=(320, 320, 1)
    ).count_params()
    assert build_vgg16_backbone((512, 512, 1)).count_params() == 14_713_536  # keras.applications notop with 3 channels: 14,714,688


@pytest.mark.slow
def test_vgg_loads_local_keras_applications_weights(tmp_path):
    ref = keras.applications.VGG16(include_top=False, weights=None, input_shape=(None, None, 3))
    path = str(tmp_path / "vgg16_notop.weights.h5")
    ref.save_weights(path)
    ours = build_vgg16_backbone((64, 64, 1), weights=path)
    np.testing.assert_allclose(ours.get_layer("block1_conv1").kernel.numpy(), ref.get_layer("block1_conv1").kernel.numpy().sum(2, keepdims=True), rtol=1e-6)
    np.testing.assert_allclose(ours.get_layer("block5_conv3").kernel.numpy(), ref.get_layer("block5_conv3").kernel.numpy())

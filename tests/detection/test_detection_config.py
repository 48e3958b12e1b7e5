"""The detection configs live in a TensorFlow-free module and agree with the builders' constants."""

from __future__ import annotations

from tfmedseg.models.backbones.vgg import VGG16_FILTERS
from tfmedseg.models.detection import config, fpn, malignet, mask_rcnn, ssd


def test_builders_re_export_the_config_classes():
    assert ssd.SSDConfig is config.SSDConfig and mask_rcnn.MaskRCNNConfig is config.MaskRCNNConfig
    assert malignet.MaligNetConfig is config.MaligNetConfig and fpn.UPSAMPLING_MODES is config.UPSAMPLING_MODES


def test_ssd_default_backbone_is_vgg16():
    assert config.SSDConfig().backbone_filters == VGG16_FILTERS

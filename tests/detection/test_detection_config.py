"""The detection configs live in a TensorFlow-free module and agree with the builders' constants."""

from __future__ import annotations

import pytest

from tfmedseg.errors import ConfigError
from tfmedseg.models.backbones.vgg import VGG16_FILTERS
from tfmedseg.models.detection import config, fpn, malignet, mask_rcnn, ssd


def test_builders_re_export_the_config_classes():
    assert ssd.SSDConfig is config.SSDConfig and mask_rcnn.MaskRCNNConfig is config.MaskRCNNConfig
    assert malignet.MaligNetConfig is config.MaligNetConfig and fpn.UPSAMPLING_MODES is config.UPSAMPLING_MODES


def test_ssd_default_backbone_is_vgg16():
    assert config.SSDConfig().backbone_filters == VGG16_FILTERS


@pytest.mark.parametrize("cls, field, value, message", [
    (config.MaskRCNNConfig, "detection_min_confidence", 1.5, "mask_rcnn.detection_min_confidence: must lie in [0.0, 1.0]"),
    (config.MaskRCNNConfig, "detection_nms_threshold", -0.1, "mask_rcnn.detection_nms_threshold: must lie in"),
    (config.MaskRCNNConfig, "mask_convs", 0, "mask_rcnn.mask_convs: must lie in [1, inf]"),
    (config.MaskRCNNConfig, "max_gt_instances", 2.5, "mask_rcnn.max_gt_instances: expected an integer"),
    (config.MaskRCNNConfig, "rpn_negative_iou", 0.8, "rpn_negative_iou <= rpn_positive_iou"),
    (config.MaskRCNNConfig, "fpn_upsampling", "cubic", "mask_rcnn.fpn_upsampling: unknown fpn_upsampling 'cubic'"),
    (config.SSDConfig, "nms_iou", 2.0, "ssd.nms_iou: must lie in [0.0, 1.0]"),
    (config.SSDConfig, "max_detections", 0, "ssd.max_detections: must lie in [1, inf]"),
    (config.MaligNetConfig, "noise_stddev", -0.03, "malignet.noise_stddev: must lie in [0.0, inf]"),
    (config.MaligNetConfig, "global_filters", 0, "malignet.global_filters: must lie in [1, inf]"),
])
def test_out_of_range_settings_are_refused_naming_the_key(cls, field, value, message):
    with pytest.raises(ConfigError) as err:
        cls(**{field: value})
    assert message in str(err.value)


def test_the_tiny_and_default_configs_pass_the_checks():
    for cls in (config.MaskRCNNConfig, config.SSDConfig):
        cls(), cls.tiny()
    config.MaligNetConfig(global_filters=None)

"""Anchors and box coder against hand-computed values."""

import math

import numpy as np
import pytest

from tfmedseg.errors import ConfigError
from tfmedseg.models.detection.anchors import (
    grid_anchors,
    multilevel_anchors,
    ssd_anchor_shapes,
    ssd_anchors,
)
from tfmedseg.models.detection.box_coder import clip_boxes, decode_boxes, encode_boxes
from tfmedseg.models.detection.ssd import SSDConfig


def test_grid_anchors_hand():
    a = grid_anchors((2, 2), 4, [(2.0, 4.0)], offset=0.5)
    np.testing.assert_allclose(a, [[1, 0, 3, 4], [1, 4, 3, 8], [5, 0, 7, 4], [5, 4, 7, 8]])


def test_ssd_shapes_two_boxes_for_ar1():
    shapes = ssd_anchor_shapes(100, scales=(0.1, 0.4), aspect_ratios=((1.0, 2.0),))
    np.testing.assert_allclose(shapes[0], [(10, 10), (20, 20), (10 / math.sqrt(2), 10 * math.sqrt(2))], rtol=1e-6)


def test_ssd512_table10_anchor_count_and_first_box():
    cfg = SSDConfig()
    sizes = [(64, 64), (32, 32), (16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]
    a = ssd_anchors(512, sizes, cfg.scales, cfg.steps, cfg.offsets, cfg.aspect_ratios)
    assert a.shape == (24564, 4)  # the stock SSD512 prior count
    # first cell, ar=1: centre (4, 4), side 0.07 * 512 = 35.84
    np.testing.assert_allclose(a[0], [4 - 17.92, 4 - 17.92, 4 + 17.92, 4 + 17.92], rtol=1e-5)
    # last anchor: 1x1 map, centre 256, ar 0.5 (w = 0.9 * 512 / sqrt 2, h = 0.9 * 512 * sqrt 2)
    h, w = 0.9 * 512 * math.sqrt(2), 0.9 * 512 / math.sqrt(2)
    np.testing.assert_allclose(a[-1], [256 - h / 2, 256 - w / 2, 256 + h / 2, 256 + w / 2], rtol=1e-5)


def test_multilevel_anchors_hand():
    a = multilevel_anchors(64, strides=(4, 8), sizes=(8, 16), ratios=(0.5, 1.0, 2.0))
    assert a.shape == (16 * 16 * 3 + 8 * 8 * 3, 4)
    h, w = 8 / math.sqrt(0.5), 8 * math.sqrt(0.5)
    np.testing.assert_allclose(a[0], [2 - h / 2, 2 - w / 2, 2 + h / 2, 2 + w / 2], rtol=1e-5)
    np.testing.assert_allclose(a[16 * 16 * 3 + 1], [4 - 8, 4 - 8, 4 + 8, 4 + 8])  # level 2, ratio 1


def test_anchor_config_errors():
    with pytest.raises(ConfigError, match="scales"):
        ssd_anchor_shapes(100, scales=(0.1,), aspect_ratios=((1.0,),))
    with pytest.raises(ConfigError, match="sizes"):
        multilevel_anchors(64, strides=(4, 8), sizes=(8,))
    with pytest.raises(ConfigError, match="steps"):
        SSDConfig(steps=(8, 16))


def test_encode_hand_and_round_trip(rng):
    anchors = np.array([[0, 0, 10, 10]], np.float32)
    t = encode_boxes(np.array([[1, 1, 11, 11], [0, 0, 20, 20]], np.float32), anchors, (0.1, 0.1, 0.2, 0.2))
    np.testing.assert_allclose(t, [[1, 1, 0, 0], [5, 5, math.log(2) / 0.2, math.log(2) / 0.2]], rtol=1e-5)
    y0x0 = rng.uniform(0, 50, (20, 2))
    boxes = np.concatenate([y0x0, y0x0 + rng.uniform(1, 40, (20, 2))], 1).astype(np.float32)
    anc = np.concatenate([y0x0 + 3, y0x0 + rng.uniform(5, 30, (20, 2))], 1).astype(np.float32)
    for var in ((0.1, 0.1, 0.2, 0.2), (1.0, 1.0, 1.0, 1.0)):
        back = decode_boxes(encode_boxes(boxes, anc, var), anc, var)
        np.testing.assert_allclose(back, boxes, atol=1e-3)


def test_clip_boxes():
    np.testing.assert_allclose(clip_boxes([[-3.0, 2.0, 70.0, 50.0]], (64, 48)), [[0, 2, 64, 48]])

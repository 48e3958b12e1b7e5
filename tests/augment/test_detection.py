"""Boxes and instance masks follow RandomGeometric; padded entries stay padded."""

from __future__ import annotations

import numpy as np

from tfmedseg.augment import RandomGeometric


def _sample(batch=2):
    """32x32 images with one masked instance, one box-only instance and two padding slots."""
    masks = np.zeros((batch, 4, 32, 32), np.uint8)
    masks[:, 0, 8:14, 10:20] = 1
    boxes = np.zeros((batch, 4, 4), np.float32)
    boxes[:, 0] = (8, 10, 14, 20)  # (y0, x0, y1, x1), y1 / x1 exclusive
    boxes[:, 1] = (20, 4, 26, 9)  # box-only object: empty mask
    classes = np.zeros((batch, 4), np.int32)
    classes[:, :2] = (3, 1)
    image = masks[:, 0, :, :, None].astype(np.float32)
    return {"image": image, "boxes": boxes, "masks": masks, "classes": classes,
            "num_valid": np.full((batch,), 2, np.int32)}


def _mask_box(mask):
    ys, xs = np.nonzero(mask)
    return np.array([ys.min(), xs.min(), ys.max() + 1, xs.max() + 1], np.float32)


def test_box_follows_translated_mask():
    data = _sample(batch=3)
    out = RandomGeometric(ndim=2, translation=6.0, seed=2, jit_compile=False)(data, training=True)
    masks, boxes = out["masks"].numpy(), out["boxes"].numpy()
    np.testing.assert_array_equal(out["num_valid"].numpy(), 2)
    np.testing.assert_array_equal(out["classes"].numpy()[:, :2], [[3, 1]] * 3)
    shifts = []
    for b in range(3):
        np.testing.assert_array_equal(boxes[b, 0], _mask_box(masks[b, 0]))
        np.testing.assert_array_equal(masks[b, 0].sum(), 60)  # a translated rectangle keeps its area
        img = out["image"].numpy()[b, ..., 0]
        clear = (img < 0.2) | (img > 0.8)  # not a mask corner blended by the sub-pixel shift
        np.testing.assert_array_equal((img > 0.5)[clear], (masks[b, 0] == 1)[clear])
        shift = boxes[b, 0, :2] - (8, 10)
        shifts.append(shift)
        # the box-only object moved by the same (sub-pixel) shift, up to the mask's rounding
        np.testing.assert_allclose(boxes[b, 1], np.array([20, 4, 26, 9]) + np.tile(shift, 2), atol=0.5 + 1e-4)
        np.testing.assert_array_equal(boxes[b, 2:], 0)  # padding stays zero
        np.testing.assert_array_equal(masks[b, 2:], 0)
        assert masks[b, 1].sum() == 0
    assert np.abs(np.array(shifts)).max() >= 1  # something moved


def test_box_only_corners_follow_a_flip():
    data = _sample(batch=1)
    out = RandomGeometric(ndim=2, flip_axes=(1,), flip_probability=1.0, seed=0, jit_compile=False)(data, training=True)
    np.testing.assert_allclose(out["boxes"].numpy()[0, :2], [[8, 12, 14, 22], [20, 23, 26, 28]], atol=1e-4)


def test_instances_that_leave_the_image_are_dropped_and_compacted():
    data = _sample(batch=8)
    data["masks"][:, 2, 28:31, 1:4] = 1  # a third, masked instance near a corner
    data["boxes"][:, 2] = (28, 1, 31, 4)
    data["classes"][:, 2] = 2
    data["num_valid"][:] = 3
    out = RandomGeometric(ndim=2, translation=(14.0, 14.0), rotation=30, seed=9, jit_compile=False)(data, training=True)
    masks, boxes = out["masks"].numpy(), out["boxes"].numpy()
    classes, count = out["classes"].numpy(), out["num_valid"].numpy()
    assert count.min() < 3  # some instance left the image in this batch
    for b in range(8):
        n = count[b]
        for i in range(n):
            assert boxes[b, i, 2] > boxes[b, i, 0] and boxes[b, i, 3] > boxes[b, i, 1]
            if masks[b, i].any():
                np.testing.assert_array_equal(boxes[b, i], _mask_box(masks[b, i]))
        np.testing.assert_array_equal(boxes[b, n:], 0)
        np.testing.assert_array_equal(masks[b, n:], 0)
        np.testing.assert_array_equal(classes[b, n:], 0)
        assert set(classes[b, :n]) <= {1, 2, 3}
        # the original order of the survivors is kept
        order = [list((3, 1, 2)).index(c) for c in classes[b, :n]]
        assert order == sorted(order)
    assert np.all(boxes[..., [0, 2]] <= 32) and np.all(boxes >= 0)

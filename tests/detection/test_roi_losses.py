"""ROIAlign, mask cropping/pasting and the detection losses against hand-computed values."""

import numpy as np
import tensorflow as tf

from tfmedseg.models.detection import losses
from tfmedseg.models.detection.roi import (
    MultilevelROIAlign,
    aligned_crop,
    assign_levels,
    crop_mask_targets,
    paste_masks,
)


def _ramp(size, channels=1):
    y, x = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    return np.repeat((10.0 * y + x)[None, :, :, None], channels, axis=-1).astype(np.float32)


def _expected(box, stride, n):
    """Bin-centre values of the ramp 10 * y + x in pixel-centre (index) coordinates."""
    y0, x0, y1, x1 = np.asarray(box, np.float64) / stride
    cy = y0 + (np.arange(n) + 0.5) * (y1 - y0) / n - 0.5
    cx = x0 + (np.arange(n) + 0.5) * (x1 - x0) / n - 0.5
    return 10 * cy[:, None] + cx[None, :]


def test_aligned_crop_is_exact_on_linear_map():
    out = aligned_crop(_ramp(8), np.array([[1.0, 2.0, 5.0, 7.0]], np.float32), [0], 2, sampling_ratio=2)
    np.testing.assert_allclose(out[0, :, :, 0], _expected([1, 2, 5, 7], 1, 2), atol=1e-4)
    np.testing.assert_allclose(out[0, :, :, 0], [[17.75, 20.25], [37.75, 40.25]], atol=1e-4)


def test_level_assignment_fpn_rule():
    boxes = np.array([[0, 0, 224, 224], [0, 0, 112, 112], [0, 0, 111, 111], [0, 0, 8, 8], [0, 0, 900, 900]], np.float32)
    np.testing.assert_array_equal(assign_levels(boxes, 2, 5), [4, 3, 2, 2, 5])


def test_multilevel_roi_align_picks_level():
    # P3 (stride 8) ramp and P4 (stride 16) = ramp + 1000: values tell which level was read
    p3 = _ramp(64)
    p4 = _ramp(32) + 1000.0
    layer = MultilevelROIAlign(output_size=3, min_level=3, max_level=4)
    boxes = np.array([[[16, 24, 128, 136], [32, 40, 256, 264]]], np.float32)  # side 112 -> P3, 224 -> P4
    out = np.asarray(layer([p3, p4], boxes))
    assert out.shape == (1, 2, 3, 3, 1)
    np.testing.assert_allclose(out[0, 0, :, :, 0], _expected(boxes[0, 0], 8, 3), atol=1e-3)
    np.testing.assert_allclose(out[0, 1, :, :, 0], _expected(boxes[0, 1], 16, 3) + 1000, atol=1e-3)
    clone = MultilevelROIAlign.from_config(layer.get_config())
    np.testing.assert_allclose(clone([p3, p4], boxes), out)


def _dense_multilevel(features, boxes, n, min_level):
    """Reference: crop every box from every level, keep its assigned level's crop."""
    flat = tf.reshape(boxes, [-1, 4])
    idx = tf.repeat(tf.range(tf.shape(boxes)[0]), tf.shape(boxes)[1])
    levels = assign_levels(flat, min_level, min_level + len(features) - 1)
    out = 0.0
    for i, f in enumerate(features):
        crop = aligned_crop(f, flat / float(2 ** (min_level + i)), idx, n)
        out += crop * tf.cast(levels == min_level + i, tf.float32)[:, None, None, None]
    return tf.reshape(out, [tf.shape(boxes)[0], tf.shape(boxes)[1], n, n, features[0].shape[-1]])


def test_multilevel_roi_align_partitioned_equals_all_levels_reference():
    rng = np.random.default_rng(0)
    feats = [tf.constant(rng.normal(size=(2, 64 // 2**i, 64 // 2**i, 3)).astype(np.float32)) for i in range(4)]
    lo = rng.uniform(0, 200, (2, 7, 2))
    boxes = np.concatenate([lo, lo + rng.uniform(2, 250, (2, 7, 2))], -1).astype(np.float32)
    boxes[1, -1] = 0.0  # a zero (padding) box
    layer = MultilevelROIAlign(output_size=4, min_level=2, max_level=5)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(feats)
        got = layer(feats, boxes)
        want = _dense_multilevel(feats, boxes, 4, 2)
        w = tf.constant(rng.normal(size=got.shape).astype(np.float32))
        loss_got, loss_want = tf.reduce_sum(got * w), tf.reduce_sum(want * w)
    np.testing.assert_allclose(got, want, atol=1e-6)
    for g, h in zip(tape.gradient(loss_got, feats), tape.gradient(loss_want, feats)):
        np.testing.assert_allclose(g, h, atol=1e-5)
    # flat boxes with explicit image indices give the same rows
    flat = layer(feats, boxes.reshape(-1, 4)[[3, 9]], np.array([0, 1], np.int32))
    np.testing.assert_allclose(flat, np.asarray(got).reshape(-1, 4, 4, 3)[[3, 9]], atol=1e-6)


def test_paste_masks_hand():
    ones = np.ones((1, 1, 4, 4), np.float32)
    full = np.asarray(paste_masks(ones, np.array([[[2, 3, 6, 8]]], np.float32), (10, 10)))[0, 0]
    expected = np.zeros((10, 10))
    expected[2:6, 3:8] = 1
    np.testing.assert_allclose(full, expected, atol=1e-6)
    half = np.array([[[[1, 0], [1, 0]]]], np.float32)
    row = np.asarray(paste_masks(half, np.array([[[0, 0, 4, 8]]], np.float32), (4, 8)))[0, 0, 1]
    np.testing.assert_allclose(row, [1, 1, 0.875, 0.625, 0.375, 0.125, 0, 0], atol=1e-5)


def test_crop_mask_targets():
    mini = np.zeros((1, 1, 4, 4), np.float32)
    mini[..., :, :2] = 1  # left half of the object is foreground
    gt = np.array([[[10, 10, 30, 30]]], np.float32)
    rois = np.array([[[10, 10, 30, 30], [10, 10, 30, 20], [10, 20, 30, 30]]], np.float32)
    t = np.asarray(crop_mask_targets(mini, gt, rois, np.zeros((1, 3), np.int32), 2))
    np.testing.assert_allclose(t[0, 0], [[1, 0], [1, 0]], atol=1e-6)
    np.testing.assert_allclose(t[0, 1], 1, atol=1e-6)
    np.testing.assert_allclose(t[0, 2], 0, atol=1e-6)


def test_losses_hand():
    assert float(losses.smooth_l1([[0.5, 2.0], [9, 9]], np.zeros((2, 2)), weights=[1, 0])) == 1.625
    logits = np.log(np.array([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]], np.float32))
    ce = float(losses.softmax_cross_entropy([1, -1], logits, [1, 0]))
    np.testing.assert_allclose(ce, -np.log(0.25), rtol=1e-5)
    bce = float(losses.binary_cross_entropy(np.ones((1, 2, 1, 1)), np.full((1, 2, 1, 1), 0.5), [[1, 0]]))
    np.testing.assert_allclose(bce, np.log(2), rtol=1e-5)
    assert float(losses.smooth_l1(np.ones((3, 4)), np.zeros((3, 4)), weights=np.zeros(3))) == 0.0


def test_ssd_hard_negative_mining_keeps_hardest():
    # 1 positive and 5 negatives; per-anchor CE = -log p(label)
    p_true = np.array([0.5, 0.9, 0.2, 0.6, 0.1, 0.95], np.float32)
    labels = np.array([[1, 0, 0, 0, 0, 0]], np.int32)
    probs = np.stack([1 - p_true, p_true], -1)
    probs[1:] = probs[1:, ::-1]  # negatives: p(background) = p_true
    loss = float(losses.ssd_hard_negative_loss(labels, np.log(probs)[None], neg_pos_ratio=3))
    ce = -np.log(p_true)
    np.testing.assert_allclose(loss, ce[0] + ce[4] + ce[2] + ce[3], rtol=1e-5)  # 3 hardest negatives
    assert tf.rank(losses.scale_for_replicas(tf.constant(2.0))) == 0


def test_mask_head_upsamples_with_the_shared_matmul_gradient_transposed_conv(tmp_path, monkeypatch):
    """MaskHead's x2 deconvolution is the library's MatmulGradConv2DTranspose (it carried its own matmul +
    depth_to_space form): output ``(2i + a, 2j + b)`` is ``relu(x[i, j] @ K[a, b]^T + bias)`` (the former form,
    in numpy), outputs and gradients match Keras' ``Conv2DTranspose`` with the same weights, and a weight file
    of a head built with Keras' layer (as before) loads into it with the same masks."""
    import keras
    from layer_parity import assert_close_scaled, outputs_and_gradients, with_same_weights

    from tfmedseg.models.blocks.matmul_grad_conv_transpose import MatmulGradConv2DTranspose
    from tfmedseg.models.detection import heads

    head = heads.MaskHead(3, filters=8, num_convs=1, upsample=True)
    assert type(head.deconv) is MatmulGradConv2DTranspose and head.deconv.name == "mrcnn_mask_deconv"
    rng = np.random.default_rng(0)
    head(tf.constant(rng.normal(size=(1, 1, 5, 5, 6)).astype(np.float32)))
    head.deconv.bias.assign(rng.normal(size=8).astype(np.float32))
    x = rng.normal(size=(4, 5, 5, 8)).astype(np.float32)
    kernel, bias = (w.numpy() for w in (head.deconv.kernel, head.deconv.bias))  # [a, b, out, in], [out]
    want = np.einsum("nijc,aboc->niajbo", x, kernel).reshape(4, 10, 10, 8) + bias
    np.testing.assert_allclose(head.deconv(x).numpy(), np.maximum(want, 0), atol=1e-5)

    keras_layer, ours = with_same_weights(keras.layers.Conv2DTranspose(8, 2, strides=2, activation="relu"),
                                          heads.conv_transpose(2, 8, 2, strides=2, activation="relu"), (None, 5, 5, 8))
    got, ref = outputs_and_gradients([ours, keras_layer], tf.constant(x))
    assert_close_scaled(got, ref)

    def wrapped(head):
        inputs = keras.Input((2, 5, 5, 6))
        return keras.Model(inputs, head(inputs))

    keras.utils.set_random_seed(1)
    with monkeypatch.context() as patch:  # the head as it was built before: Keras' own Conv2DTranspose
        patch.setattr(heads, "conv_transpose", lambda rank, *args, **kwargs: keras.layers.Conv2DTranspose(*args, **kwargs))
        before = wrapped(heads.MaskHead(3, filters=8, num_convs=1, upsample=True, name="mask_head"))
    assert type(before.layers[1].deconv) is keras.layers.Conv2DTranspose
    before.save_weights(tmp_path / "before.weights.h5")
    after = wrapped(heads.MaskHead(3, filters=8, num_convs=1, upsample=True, name="mask_head"))
    after.load_weights(tmp_path / "before.weights.h5")
    rois = rng.normal(size=(2, 2, 5, 5, 6)).astype(np.float32)
    np.testing.assert_allclose(after(rois).numpy(), before(rois).numpy(), atol=1e-6)

"""RandomGeometric: alignment of image and label, identities, seeds, flips, rotation sense, volume."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tfmedseg.augment import RandomGeometric, _grid
from tfmedseg.errors import ConfigError, InvalidInputError

LOW, HIGH = 0.2, 0.8  # the two grey values of the block images; label = image > 0.5


def _block_image(rng, batch, spatial, block):
    """Piecewise-constant image of random LOW/HIGH blocks, [B, *S, 1], and its label image > 0.5."""
    coarse = rng.random((batch, *[s // block for s in spatial])) > 0.5
    for axis in range(1, len(spatial) + 1):
        coarse = np.repeat(coarse, block, axis=axis)
    image = np.where(coarse, HIGH, LOW).astype(np.float32)[..., None]
    return image, coarse.astype(np.int32)


TRANSFORMS = {
    "rotation": dict(rotation=40.0),
    "shear": dict(shear=20.0),
    "scale": dict(scale=(0.7, 1.4), anisotropic_scale=True),
    "translation": dict(translation=5.5),
    "flips": dict(flip_axes=(0, 1), flip_probability=0.5),
    "elastic": dict(elastic_probability=1.0, elastic_magnitude=3.0, elastic_control_points=4),
    "all": dict(rotation=20.0, shear=8.0, scale=(0.8, 1.2), translation=4.0, flip_axes=(1,),
                elastic_probability=0.5, elastic_magnitude=2.0),
}


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("kind", sorted(TRANSFORMS))
def test_label_stays_aligned_with_image(rng, ndim, kind):
    spatial = [32, 32] if ndim == 2 else [16, 16, 16]
    image, label = _block_image(rng, 4, spatial, 8 if ndim == 2 else 4)
    layer = RandomGeometric(ndim=ndim, seed=3, jit_compile=False, **TRANSFORMS[kind])
    out = layer({"image": image, "label": label}, training=True)
    img, lab = out["image"].numpy()[..., 0], out["label"].numpy()
    assert lab.shape == label.shape and lab.dtype == np.int32
    pure = (np.abs(img - LOW) < 1e-4) | (np.abs(img - HIGH) < 1e-4)  # away from block edges / fill
    assert pure.mean() > 0.25
    np.testing.assert_array_equal(lab[pure], (img[pure] > 0.5).astype(np.int32))
    fill = np.abs(img) < 1e-6  # entirely outside the source: image fill 0 and label fill 0
    assert np.all(lab[fill] == 0)
    if kind != "flips":  # the transform did something
        assert not np.array_equal(img, image[..., 0])


def test_labels_stay_in_their_set(rng):
    label = rng.choice([0, 3, 7], size=(3, 24, 24)).astype(np.int64)
    layer = RandomGeometric(ndim=2, rotation=30, shear=10, scale=(0.8, 1.2), elastic_probability=1.0,
                            elastic_magnitude=3.0, label_fill_value=0, seed=0, jit_compile=False)
    out = layer({"image": rng.random((3, 24, 24, 2), np.float32), "label": label}, training=True)
    assert set(np.unique(out["label"].numpy())) <= {0, 3, 7}
    assert out["label"].dtype == tf.int64

    onehot = np.eye(4, dtype=np.float32)[rng.integers(0, 4, size=(2, 12, 12, 12))]
    layer3 = RandomGeometric(ndim=3, rotation=30, translation=4, one_hot_label=True, label_fill_value=0, seed=0,
                             jit_compile=False)
    out3 = layer3({"image": np.zeros((2, 12, 12, 12, 1), np.float32), "label": onehot}, training=True)["label"].numpy()
    np.testing.assert_array_equal(out3.sum(-1), 1.0)
    assert set(np.unique(out3)) == {0.0, 1.0}
    assert (out3[..., 0] == 1).sum() > (onehot[..., 0] == 1).sum()  # fill is background one-hot


@pytest.mark.parametrize("ndim", [2, 3])
def test_zero_magnitude_is_identity(rng, ndim):
    shape = (2, 9, 10, 3) if ndim == 2 else (2, 6, 7, 8, 2)
    image = rng.normal(size=shape).astype(np.float32)
    label = rng.integers(0, 5, size=shape[:-1]).astype(np.int32)
    for layer in (RandomGeometric(ndim=ndim, seed=1, jit_compile=False),
                  RandomGeometric(ndim=ndim, flip_axes=(0,), flip_probability=0.0, elastic_probability=1.0,
                                  elastic_magnitude=0.0, fill_value="min", seed=1, jit_compile=True)):
        out = layer({"image": image, "label": label}, training=True)
        np.testing.assert_array_equal(out["image"].numpy(), image)
        np.testing.assert_array_equal(out["label"].numpy(), label)


def test_training_false_is_identity(rng):
    image = rng.random((2, 8, 8, 1)).astype(np.float32)
    layer = RandomGeometric(ndim=2, rotation=45, seed=1, jit_compile=False)
    np.testing.assert_array_equal(layer(image).numpy(), image)
    np.testing.assert_array_equal(layer(image, training=False).numpy(), image)


def test_seed_makes_it_deterministic(rng):
    image, label = _block_image(rng, 3, [16, 16], 4)
    kwargs = dict(ndim=2, rotation=30, translation=3, elastic_probability=0.5, elastic_magnitude=2, jit_compile=False)
    a, b, c = (RandomGeometric(seed=s, **kwargs) for s in (7, 7, 8))
    out_a1, out_b1, out_c1 = (l({"image": image, "label": label}, training=True) for l in (a, b, c))
    out_a2 = a({"image": image, "label": label}, training=True)
    np.testing.assert_array_equal(out_a1["image"].numpy(), out_b1["image"].numpy())
    np.testing.assert_array_equal(out_a1["label"].numpy(), out_b1["label"].numpy())
    assert not np.allclose(out_a1["image"].numpy(), out_c1["image"].numpy())
    assert not np.allclose(out_a1["image"].numpy(), out_a2["image"].numpy())  # next call, new draw


def test_xla_core_matches_eager(rng):
    image = rng.random((2, 12, 12, 12, 2)).astype(np.float32)
    label = rng.integers(0, 4, (2, 12, 12, 12)).astype(np.int32)
    kwargs = dict(ndim=3, rotation=20, shear=5, scale=(0.9, 1.1), elastic_probability=1.0, elastic_magnitude=2, seed=4)
    eager = RandomGeometric(jit_compile=False, **kwargs)({"image": image, "label": label}, training=True)
    xla = RandomGeometric(jit_compile=True, **kwargs)({"image": image, "label": label}, training=True)
    np.testing.assert_allclose(xla["image"].numpy(), eager["image"].numpy(), atol=1e-5)
    # nearest by corner selection (XLA) == nearest by index (eager), except at exact .5 ties of float error
    assert (xla["label"].numpy() != eager["label"].numpy()).mean() < 1e-3


@pytest.mark.parametrize("ndim", [2, 3])
def test_flips_exactly_flip(rng, ndim):
    shape = (1, 5, 6, 2) if ndim == 2 else (1, 4, 5, 6, 1)
    image = rng.random(shape).astype(np.float32)
    for axis in range(ndim):
        layer = RandomGeometric(ndim=ndim, flip_axes=(axis,), flip_probability=1.0, seed=0, jit_compile=False)
        out = layer({"image": image, "label": image[..., 0] > 0.5}, training=True)
        np.testing.assert_array_equal(out["image"].numpy(), np.flip(image, axis=1 + axis))
        np.testing.assert_array_equal(out["label"].numpy(), np.flip(image[..., 0] > 0.5, axis=1 + axis))


@pytest.mark.parametrize("plane", [(0, 1), (0, 2), (1, 2)])
def test_rotation_by_90_degrees_equals_rot90(rng, plane):
    """+90 degrees in the plane of array axes (a, b) turns b towards a, like np.rot90(axes=(a, b))."""
    x = rng.random((1, 6, 6, 6, 1)).astype(np.float32)
    # angle order of _rotation in 3D: about D (plane (1, 2)), about H (plane (0, 2)), about W (plane (0, 1))
    angles = np.zeros((1, 3), np.float32)
    angles[0, {(1, 2): 0, (0, 2): 1, (0, 1): 2}[plane]] = np.pi / 2
    forward = _grid._rotation(tf.constant(angles), 3)
    coords = _grid.sampling_coords(forward, tf.zeros([1, 3]), [6, 6, 6])
    out = _grid.resample_linear(tf.constant(x), coords, tf.zeros([1, 1])).numpy()
    np.testing.assert_allclose(out, np.rot90(x, axes=(1 + plane[0], 1 + plane[1])), atol=1e-5)
    if plane == (1, 2):  # the 2D layer convention on [H, W]: counter-clockwise on screen = np.rot90(img)
        img = x[:, 0]
        out2 = _grid.resample_linear(tf.constant(img), _grid.sampling_coords(
            _grid._rotation(tf.constant([[np.pi / 2]]), 2), tf.zeros([1, 2]), [6, 6]), tf.zeros([1, 1])).numpy()
        np.testing.assert_allclose(out2[0, ..., 0], np.rot90(img[0, ..., 0]), atol=1e-5)


def test_rotation_draws_respect_the_range():
    layer = RandomGeometric(ndim=2, rotation=15, seed=0, jit_compile=False)
    forward, translation, ctrl = layer._draw(tf.constant([3, 4], tf.int64), 256)
    angles = np.degrees(np.arctan2(forward[:, 1, 0].numpy(), forward[:, 0, 0].numpy()))
    assert np.abs(angles).max() <= 15.0 and np.abs(angles).max() > 13.0 and angles.min() < -13.0
    np.testing.assert_array_equal(translation.numpy(), 0.0)
    assert ctrl is None


def test_3d_elastic_preserves_volume():
    """A mild field (1.5 voxels max at a 5.2-voxel control spacing) keeps a sphere's volume within 4 %."""
    z, y, x = np.mgrid[:32, :32, :32]
    sphere = ((z - 15.5) ** 2 + (y - 15.5) ** 2 + (x - 15.5) ** 2 <= 10.0**2).astype(np.int32)
    labels = np.repeat(sphere[None], 4, axis=0)
    layer = RandomGeometric(ndim=3, elastic_probability=1.0, elastic_magnitude=1.5, elastic_control_points=7,
                            seed=11, jit_compile=False)
    out = layer({"image": labels[..., None].astype(np.float32), "label": labels}, training=True)
    lab = out["label"].numpy()
    assert (lab != labels).mean() > 0.002  # the field moved the surface
    volumes = lab.reshape(4, -1).sum(1) / sphere.sum()
    np.testing.assert_allclose(volumes, 1.0, atol=0.04)
    # the linear image keeps the volume too (sum of the partial-volume values)
    np.testing.assert_allclose(out["image"].numpy().reshape(4, -1).sum(1) / sphere.sum(), 1.0, atol=0.04)


def test_in_plane_3d_moves_every_slice_alike(rng):
    slab = np.repeat(rng.random((2, 1, 16, 16, 1)).astype(np.float32), 4, axis=1)
    layer = RandomGeometric(ndim=3, in_plane=True, rotation=20, shear=10, translation=3, scale=(0.9, 1.1),
                            elastic_probability=1.0, elastic_magnitude=2, seed=2, jit_compile=False)
    out = layer(slab, training=True).numpy()
    assert not np.allclose(out, slab)
    for d in range(1, 4):
        np.testing.assert_allclose(out[:, d], out[:, 0], atol=1e-6)


def test_tuple_and_tensor_inputs(rng):
    image, label = _block_image(rng, 2, [16, 16], 4)
    layer = RandomGeometric(ndim=2, rotation=30, seed=5, jit_compile=False)
    ref = RandomGeometric(ndim=2, rotation=30, seed=5, jit_compile=False)({"image": image, "label": label}, training=True)
    out = layer((image, label, np.ones(2, np.float32)), training=True)
    assert isinstance(out, tuple) and len(out) == 3
    np.testing.assert_array_equal(out[0].numpy(), ref["image"].numpy())
    np.testing.assert_array_equal(out[1].numpy(), ref["label"].numpy())
    np.testing.assert_array_equal(out[2], np.ones(2))


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ConfigError, match="ndim"):
        RandomGeometric(ndim=4)
    with pytest.raises(ConfigError, match="interpolation"):
        RandomGeometric(interpolation="cubic")
    with pytest.raises(ConfigError, match="flip_axes"):
        RandomGeometric(ndim=2, flip_axes=(2,))
    with pytest.raises(ConfigError, match="scale"):
        RandomGeometric(scale=(0.0, 1.0))
    with pytest.raises(ConfigError, match="in_plane"):
        RandomGeometric(ndim=2, in_plane=True)
    with pytest.raises(InvalidInputError, match="rank-4"):
        RandomGeometric(ndim=2, rotation=5)(np.zeros((1, 4, 4, 4, 1), np.float32), training=True)


@pytest.mark.parametrize("ndim", [2, 3])
def test_xla_core_matches_the_element_gathers(rng, ndim):
    """The XLA core (materialised index, row-window gathers) equals the graph path (element gathers):
    multi-channel image, uint8 label, one-hot label, per-sample 'min' fill, detection masks."""
    spatial = (20, 24) if ndim == 2 else (10, 12, 14)
    image = rng.normal(size=(3, *spatial, 2)).astype(np.float32)
    label = rng.integers(0, 5, size=(3, *spatial)).astype(np.uint8)
    kwargs = dict(ndim=ndim, rotation=25, shear=8, translation=4, scale=(0.8, 1.2), flip_axes=(0,),
                  elastic_probability=1.0, elastic_magnitude=2.0, fill_value="min", label_fill_value=3, seed=9)
    eager = RandomGeometric(jit_compile=False, **kwargs)({"image": image, "label": label}, training=True)
    xla = RandomGeometric(jit_compile=True, **kwargs)({"image": image, "label": label}, training=True)
    # coordinates differ in the last float bits (XLA fuses multiply-adds): ~1e-5 px x gradients of ~3 / px
    np.testing.assert_allclose(xla["image"].numpy(), eager["image"].numpy(), atol=1e-4)
    assert xla["label"].dtype == tf.uint8
    assert (xla["label"].numpy() != eager["label"].numpy()).mean() < 1e-3  # only float ties of .5 may differ
    assert (xla["label"].numpy() == 3).any()  # the fill reached the output

    onehot = np.eye(4, dtype=np.float32)[rng.integers(0, 4, size=(3, *spatial))]
    kw = dict(ndim=ndim, rotation=30, translation=5, one_hot_label=True, label_fill_value=2, seed=1)
    a = RandomGeometric(jit_compile=False, **kw)({"image": image, "label": onehot}, training=True)["label"].numpy()
    b = RandomGeometric(jit_compile=True, **kw)({"image": image, "label": onehot}, training=True)["label"].numpy()
    assert (a != b).any(axis=-1).mean() < 1e-3
    np.testing.assert_array_equal(b.sum(-1), 1.0)

    if ndim == 2:
        masks = rng.random((3, 2, *spatial)) > 0.5
        boxes = np.tile(np.array([[0, 0, 20, 24]], np.float32), (3, 2, 1))
        kw = dict(ndim=2, rotation=20, seed=4)
        data = {"image": image, "masks": masks, "boxes": boxes, "num_valid": np.array([2, 2, 2], np.int32)}
        a = RandomGeometric(jit_compile=False, **kw)(dict(data), training=True)["masks"].numpy()
        b = RandomGeometric(jit_compile=True, **kw)(dict(data), training=True)["masks"].numpy()
        assert b.dtype == bool and (a != b).mean() < 1e-3


@pytest.fixture
def without_the_xla_bridge(monkeypatch):
    """``_grid`` as imported where ``tensorflow.compiler.tf2xla.python.xla`` (a private module) fails to import:
    reloaded with that import blocked, and reloaded again with the real module after the test."""
    import importlib
    import sys

    import tensorflow.compiler.tf2xla.python as bridge

    real = (_grid._xla, _grid._xla_data)
    monkeypatch.delattr(bridge, "xla", raising=False)
    monkeypatch.setitem(sys.modules, "tensorflow.compiler.tf2xla.python.xla", None)  # -> ImportError
    importlib.reload(_grid)
    try:
        yield real
    finally:
        monkeypatch.undo()
        importlib.reload(_grid)
        assert _grid.xla_gather_available()


@pytest.mark.parametrize("ndim", [2, 3])
def test_without_the_xla_bridge_jit_layers_fall_back_to_the_same_results(rng, ndim, without_the_xla_bridge,
                                                                         monkeypatch):
    """A ``jit_compile=True`` layer without the private XLA gather module takes the element-gather path
    (compiled) and gives what the eager layer and the XLA core give."""
    spatial = (16, 20) if ndim == 2 else (8, 10, 12)
    image = rng.normal(size=(2, *spatial, 2)).astype(np.float32)
    label = rng.integers(0, 4, size=(2, *spatial)).astype(np.uint8)
    kwargs = dict(ndim=ndim, rotation=25, shear=8, translation=3, scale=(0.8, 1.2), flip_axes=(0,),
                  elastic_probability=1.0, elastic_magnitude=2.0, fill_value="min", label_fill_value=3, seed=9)
    assert not _grid.xla_gather_available()

    def no_xla_core(*args, **kw):
        raise AssertionError("the XLA core needs tf2xla's gather")

    with monkeypatch.context() as patch:
        patch.setattr(RandomGeometric, "_resample_xla", no_xla_core)
        fallback = RandomGeometric(jit_compile=True, **kwargs)({"image": image, "label": label}, training=True)
    eager = RandomGeometric(jit_compile=False, **kwargs)({"image": image, "label": label}, training=True)
    np.testing.assert_allclose(fallback["image"].numpy(), eager["image"].numpy(), atol=1e-4)
    assert fallback["label"].dtype == tf.uint8
    assert (fallback["label"].numpy() != eager["label"].numpy()).mean() < 1e-3  # only float ties of .5 may differ
    # the XLA core (the real modules put back) on the same draw
    monkeypatch.setattr(_grid, "_xla", without_the_xla_bridge[0])
    monkeypatch.setattr(_grid, "_xla_data", without_the_xla_bridge[1])
    core = RandomGeometric(jit_compile=True, **kwargs)({"image": image, "label": label}, training=True)
    np.testing.assert_allclose(fallback["image"].numpy(), core["image"].numpy(), atol=1e-4)
    assert (fallback["label"].numpy() != core["label"].numpy()).mean() < 1e-3


def test_batches_without_an_elastic_draw_skip_the_field(rng):
    """elastic_probability > 0 but no sample of the batch drew a field: the XLA core takes the
    affine-only branch and returns exactly what a layer without elastic returns."""
    image, label = _block_image(rng, 4, [32, 32], 8)
    base = dict(ndim=2, rotation=15, shear=10, translation=6, scale=(0.875, 1.125), seed=5)
    rare = RandomGeometric(elastic_probability=1e-9, elastic_magnitude=8.0, **base)
    none = RandomGeometric(**base)
    a = rare({"image": image, "label": label}, training=True)
    b = none({"image": image, "label": label}, training=True)
    np.testing.assert_array_equal(a["image"].numpy(), b["image"].numpy())
    np.testing.assert_array_equal(a["label"].numpy(), b["label"].numpy())
    always = RandomGeometric(elastic_probability=1.0, elastic_magnitude=8.0, **base)
    c = always({"image": image, "label": label}, training=True)
    assert not np.array_equal(c["image"].numpy(), b["image"].numpy())


def test_xla_core_with_an_unknown_batch_size(rng):
    """Inside tf.data / Keras fit the batch axis is None: the windowed gathers keep static shapes."""
    layer = RandomGeometric(ndim=2, rotation=20, elastic_probability=0.5, elastic_magnitude=2.0, seed=1)

    @tf.function(input_signature=[tf.TensorSpec([None, 16, 16, 2], tf.float32), tf.TensorSpec([None, 16, 16], tf.uint8)])
    def augment(image, label):
        out = layer({"image": image, "label": label}, training=True)
        assert out["image"].shape.as_list() == [None, 16, 16, 2] and out["label"].shape.as_list() == [None, 16, 16]
        return out["image"], out["label"]

    image, label = augment(rng.random((3, 16, 16, 2)).astype(np.float32), rng.integers(0, 3, (3, 16, 16)).astype(np.uint8))
    assert image.shape == (3, 16, 16, 2) and label.dtype == tf.uint8


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("channels", [1, 3])
def test_row_window_gathers_equal_the_element_gathers_exactly(rng, ndim, channels):
    """Same coordinates, both compiled with XLA: ``gather_linear`` on the padded table and
    ``gather_nearest`` on the unpadded array at a ``PaddedIndex`` return exactly what
    ``SamplingIndex.linear`` / ``nearest`` return, including points outside (fill), on the border
    and at exact .5 ties."""
    spatial = (9, 11) if ndim == 2 else (5, 6, 7)
    x = rng.normal(size=(2, *spatial, channels)).astype(np.float32)
    lab = rng.integers(0, 7, size=(2, *spatial, 1)).astype(np.uint8)
    coords = [rng.uniform(-3.0, s + 2.0, size=(2, *spatial)).astype(np.float32) for s in spatial]
    coords[0][0, 0, 0] = 2.5  # a tie
    coords[-1][1, 1, 1] = -1.0  # on the clamp edge

    @tf.function(jit_compile=True)
    def both(x, lab, *coords):
        coords = list(coords)
        ref = _grid.SamplingIndex(coords, list(spatial))
        new = _grid.PaddedIndex(coords, list(spatial))
        return (ref.linear(x, 0.25), ref.nearest(lab, 3),
                _grid.gather_linear(_grid.padded_table(x, 0.25), new.base, new.frac),
                _grid.gather_nearest(lab, new.nearest, 3))

    a, b, c, d = (t.numpy() for t in both(x, lab, *coords))
    np.testing.assert_array_equal(c, a)
    np.testing.assert_array_equal(d, b)
    assert (d == 3).any() and (c == 0.25).any()  # fill reached the output

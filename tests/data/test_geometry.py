"""SliceGeometry / PatchGeometry: shapes, sample counts, datasets and serving fields agree."""

from __future__ import annotations

import numpy as np
import pytest

from tfmedseg.config import from_dict
from tfmedseg.data.geometry import PatchGeometry, SliceGeometry
from tfmedseg.data.source import CaseArrays
from tfmedseg.errors import ConfigError


@pytest.fixture(scope="module")
def cases():
    rng = np.random.default_rng(0)
    out = []
    for i, depth in enumerate((6, 9)):
        label = np.zeros((depth, 16, 16), np.uint8)
        label[2:4, 4:10, 4:10] = 1
        out.append(CaseArrays(f"c{i}", rng.random((depth, 16, 16), np.float32), label))
    return out


@pytest.mark.parametrize("geometry, shape, units, mode", [
    (SliceGeometry(2, 1, 1), (16, 16, 1), 15, "2d"),
    (SliceGeometry(2, 9, 1), (16, 16, 9), 15, "2.5d"),
    (SliceGeometry(3, 8, 4), (8, 16, 16, 1), 2 + 3, "3d_slab"),
])
def test_slice_geometry_shapes_units_and_batches(cases, geometry, shape, units, mode):
    assert geometry.input_shape(16) == shape and geometry.mode == mode
    assert geometry.units(cases) == units
    x, y = next(iter(geometry.dataset(cases, 2, seed=1)))
    assert tuple(x.shape[1:]) == shape
    out = (geometry.output_slices, 16, 16, 1) if geometry.rank == 3 else (16, 16, 1)
    assert tuple(y.shape[1:]) == out
    fields = geometry.serving_fields()
    assert fields["context_slices"] == geometry.context_slices and fields["output_slices"] == geometry.output_slices


def test_two_channel_slices_and_rectangular_inplane():
    assert SliceGeometry(2, 3, 1, channels=2).input_shape((32, 48)) == (32, 48, 6)
    assert SliceGeometry(3, 8, 4, channels=2).input_shape((32, 48)) == (8, 32, 48, 2)


def test_patch_geometry(cases):
    g = PatchGeometry((4, 8, 8), samples_per_epoch=6)
    assert g.input_shape() == (4, 8, 8, 1) and g.rank == 3 and g.units(cases) == 6
    x, y = next(iter(g.dataset(cases, 3, seed=0)))
    assert tuple(x.shape) == (3, 4, 8, 8, 1) and tuple(y.shape) == (3, 4, 8, 8, 1)
    assert g.serving_fields()["mode"] == "3d_patch"


@pytest.mark.parametrize("kwargs, key", [
    (dict(rank=4), "rank"), (dict(rank=2, context_slices=9, output_slices=3), "output_slices"),
    (dict(rank=3, context_slices=8, output_slices=3), "context_slices"),
    (dict(rank=3, context_slices=4, output_slices=8), "context_slices"),
])
def test_bad_geometry_names_the_field(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        SliceGeometry(**kwargs)
    with pytest.raises(ConfigError, match="patch_size"):
        PatchGeometry((8, 8))


def test_geometry_loads_from_a_config_mapping():
    g = from_dict(SliceGeometry, {"rank": 3, "context_slices": 8, "output_slices": 4})
    assert g == SliceGeometry(3, 8, 4) and g.mode == "3d_slab"

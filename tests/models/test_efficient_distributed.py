"""Seed-002 2D and 3D networks train under MirroredStrategy on two logical CPU devices."""

from __future__ import annotations

import numpy as np
import pytest

from tfmedseg.data.pipelines import slab3d_dataset, stack25d_dataset
from tfmedseg.losses import get_loss
from tfmedseg.models import registry


def _case(rng, depth, size):
    image = rng.random((depth, size, size)).astype(np.float32)
    label = (image > 0.6).astype(np.int32)
    return ("c0", image, label)


@pytest.mark.parametrize("name, shape", [
    ("mobilenetv2_2d", (64, 64, 9)),
    pytest.param("dsts_3d", (8, 128, 128, 1), marks=pytest.mark.slow),  # ~2-6 min of tracing on 2 cores
])
def test_trains_under_mirrored_strategy(name, shape, two_cpu_strategy, rng):
    size = shape[1]
    case = _case(rng, 10, size)
    if len(shape) == 3:
        ds = stack25d_dataset([case], batch_size=4, seed=0)
    else:
        ds = slab3d_dataset([case], batch_size=2, seed=0)
    with two_cpu_strategy.scope():
        model = registry.build(name, variant="default", input_shape=shape, classes=2)
        model.compile(optimizer="adam", loss=get_loss("dice_ce", from_logits=False))
    history = model.fit(ds, steps_per_epoch=2, epochs=1, verbose=0)
    loss = history.history["loss"][-1]
    assert np.isfinite(loss) and 0.0 < loss < 3.0
    x, _ = next(iter(ds))
    p = np.asarray(model(x, training=False))  # a direct call: no second (predict) function to trace
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-4)
    expected = (x.shape[0], *shape[:2], 2) if len(shape) == 3 else (x.shape[0], 4, size, size, 2)
    assert p.shape == expected

"""Segmentation outputs stay float32 under a mixed policy (the Keras mixed-precision rule for the last layer).

Under ``mixed_bfloat16`` (what ``Trainer(mixed_precision=...)`` sets while it builds) every layer computes in
bfloat16 unless told otherwise; a softmax there rounds the probabilities to 8 significant bits (0.5 +- 0.002 all
read 0.5) and the exported model's output would be bfloat16, against the builders' documented float32 output.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tfmedseg.models import registry


BUILDS = {
    "mobilenetv2_2d": dict(variant="default", input_shape=(64, 64, 9)),
    "basic_unet": dict(input_shape=(16, 16, 16, 2), base_filters=2),
    "se_unet": dict(input_shape=(16, 16, 16, 2), base_filters=2),
    "deeplabv3_resnet152": dict(input_shape=(32, 32, 1), size="small", head_channels=8),
}


@pytest.mark.parametrize("name", sorted(BUILDS))
def test_output_is_float32_under_mixed_bfloat16(name, mixed_bfloat16):
    model = registry.build(name, **BUILDS[name])
    assert any(layer.compute_dtype == "bfloat16" for layer in model.layers)  # the policy took
    x = np.random.default_rng(0).uniform(size=(1,) + tuple(model.input_shape[1:])).astype("float32")
    y = model(x, training=False)
    assert keras.backend.standardize_dtype(y.dtype) == "float32", f"{name}: output {y.dtype}"
    if name != "deeplabv3_resnet152":  # probabilities; DeepLabV3 gives logits
        np.testing.assert_allclose(np.asarray(y).sum(-1), 1.0, atol=1e-5)

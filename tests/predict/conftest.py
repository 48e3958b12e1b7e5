"""Fixtures for ``tfmedseg.predict``: a deterministic HU-threshold model and a phantom CT.

The model is a 2.5D (3-slice) Keras model with one hand-set 1x1 convolution + softmax that only
looks at the middle slice. With the default intensity mapping ``x = (clip(HU, -200, 200) + 200) / 400``
its logits are ``(0, 10x - 4, 20x - 12)``, so a voxel is background for ``HU < -40``, liver for
``-40 < HU < 120`` and tumour for ``HU > 120``. The serving spec keeps the largest liver component.

The phantom (canonical ``[D, H, W] = [6, 16, 20]``, 2.5 x 0.8 x 0.8 mm) is air (-1000 HU) with a
liver block at 70 HU holding a 180 HU tumour, and a small 70 HU blob that is not connected to the
liver (the largest-component post-processing removes it). Every region starts at an even index and
has an even size, so halving the resolution (the ``spacing_mm`` test) averages constant 2x2x2 blocks
and the labels are unchanged.
"""

from __future__ import annotations

import numpy as np
import pytest

import tfmedseg  # noqa: F401  (before TensorFlow)
from tfmedseg.inference.spec import ServingSpec

LIVER_HU, TUMOUR_HU, AIR_HU = 70.0, 180.0, -1000.0
SPACING = (2.5, 0.8, 0.8)
LIVER = (slice(2, 6), slice(2, 12), slice(2, 14))
TUMOUR = (slice(2, 4), slice(4, 8), slice(4, 8))
BLOB = (slice(0, 2), slice(14, 16), slice(16, 20))
LABELS = ("background", "liver", "tumour")
SPEC = ServingSpec(mode="2.5d", context_slices=3, labels=LABELS, largest_component_labels=(1,), batch_size=4)


def phantom_ct() -> np.ndarray:
    ct = np.full((6, 16, 20), AIR_HU, np.float32)
    ct[LIVER] = LIVER_HU
    ct[TUMOUR] = TUMOUR_HU
    ct[BLOB] = LIVER_HU
    return ct


def expected_labels(keep_blob: bool = False) -> np.ndarray:
    labels = np.zeros((6, 16, 20), np.uint8)
    labels[LIVER] = 1
    labels[TUMOUR] = 2
    if keep_blob:
        labels[BLOB] = 1
    return labels


def threshold_model():
    import keras

    inp = keras.Input((None, None, 3), name="image")
    conv = keras.layers.Conv2D(3, 1, activation="softmax", name="probabilities")
    model = keras.Model(inp, conv(inp))
    kernel = np.zeros((1, 1, 3, 3), np.float32)
    kernel[0, 0, 1] = [0.0, 10.0, 20.0]  # middle slice only
    conv.set_weights([kernel, np.array([0.0, -4.0, -12.0], np.float32)])
    return model


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    """Paths of the same model as a SavedModel, a run dir, a run dir with spacing_mm, and a bare .keras file."""
    import dataclasses

    from tfmedseg.export.run_dir import save_for_export
    from tfmedseg.export.savedmodel import export_savedmodel

    root = tmp_path_factory.mktemp("models")
    model = threshold_model()
    paths = {
        "savedmodel": export_savedmodel(model, root / "saved" / "liver_threshold" / "1", spec=SPEC, model_name="liver_threshold"),
        "run_dir": save_for_export(model, root / "run", SPEC, info={"model_name": "liver_run"}),
        "run_dir_spacing": save_for_export(model, root / "run_spacing", dataclasses.replace(SPEC, spacing_mm=(5.0, 1.6, 1.6))),
    }
    (root / "bare").mkdir()
    model.save(root / "bare" / "threshold.keras")
    paths["keras_file"] = root / "bare" / "threshold.keras"
    return paths


@pytest.fixture(scope="session")
def phantom():
    """The phantom's constants and builders (test modules cannot import conftest under importlib mode)."""
    import types

    return types.SimpleNamespace(
        ct=phantom_ct, expected=expected_labels, spacing=SPACING, labels=LABELS,
        liver_hu=LIVER_HU, tumour_hu=TUMOUR_HU, air_hu=AIR_HU, liver=LIVER, tumour=TUMOUR, blob=BLOB,
    )

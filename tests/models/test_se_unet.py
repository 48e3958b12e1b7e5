"""Seed-004 networks: parameter counts vs iantsen/hecktor, Table 5 variants, SavedModel and TFLite parity.

``REFERENCE_PARAMS`` were printed by ``benchmarks/hecktor_reference_params.py`` (a transcription of
``iantsen/hecktor`` ``src/layers.py`` + ``src/models.py`` run with PyTorch in the torch test
environment; torch is never imported here): ``in_channels=2, n_cls=2, n_filters=24``.
Parameter counts do not depend on the spatial size, so the networks are built at 16^3 (the
144^3 builds are ``slow``).
"""

from __future__ import annotations

import re
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmedseg.errors import ModelBuildError
from tfmedseg.models import registry
from tfmedseg.models.segmentation.se_unet import RRSE_VARIANTS

REFERENCE_PARAMS = {"se_unet": 21_751_681, "basic_unet": 3_611_665}
DOC = Path(__file__).resolve().parents[2] / "docs" / "experiments.md"
TINY = (16, 16, 16, 2)
SMALL = (32, 32, 32, 2)  # bottleneck 2^3: instance norm over a single voxel only amplifies round-off


@pytest.fixture(scope="module")
def tiny_se_unet():
    keras.utils.set_random_seed(3)
    return registry.build("se_unet", input_shape=SMALL, base_filters=2)


def _documented_params() -> dict[str, int]:
    """``| name | ... | 21,751,706 |`` rows of the seed-004 parameter table in docs/experiments.md."""
    rows = {}
    for line in DOC.read_text().splitlines():
        match = re.match(r"^\| `([a-z0-9_=:, ]+)` \|.*\| ([0-9,]+) \|\s*$", line)
        if match:
            rows[match.group(1)] = int(match.group(2).replace(",", ""))
    return rows


@pytest.mark.parametrize("name", sorted(REFERENCE_PARAMS))
def test_parameter_count_within_2_percent_of_reference(name):
    model = registry.build(name, input_shape=TINY)  # 24 filters, 2 input channels, 2 classes
    ours = model.count_params()
    assert abs(ours - REFERENCE_PARAMS[name]) / REFERENCE_PARAMS[name] < 0.02
    # the only difference: our 2-channel softmax head vs the reference's 1 sigmoid channel (F + 1)
    assert ours - REFERENCE_PARAMS[name] == 24 + 1
    assert _documented_params()[name] == ours


@pytest.mark.parametrize("variant", sorted(RRSE_VARIANTS))
def test_table5_variant_builds_with_documented_count(variant):
    model = registry.build("rrse_unet", variant=variant, input_shape=TINY)
    assert model.output_shape == (None, *TINY[:-1], 2)
    config = RRSE_VARIANTS[variant]
    n_rrcnn = sum(1 for layer in model.layers if layer.name.endswith("_rrcnn_add"))
    assert n_rrcnn == len(config["encoder_rrcnn_levels"]) + len(config["decoder_rrcnn_levels"])
    has_pathway = any(layer.name == "upsampling_pathway_add" for layer in model.layers)
    assert has_pathway == config["upsampling_pathway"]
    assert _documented_params()[f"rrse_unet {variant}"] == model.count_params()


def test_replace_vs_after_differ_by_the_replaced_units():
    after = registry.build("se_unet", input_shape=TINY, base_filters=4, encoder_rrcnn_levels=(4,))
    replace = registry.build("se_unet", input_shape=TINY, base_filters=4, encoder_rrcnn_levels=(4,),
                             rrcnn_placement="replace")
    plain = registry.build("se_unet", input_shape=TINY, base_filters=4)
    unit = plain.get_layer("enc5_3_conv1_conv").count_params() + plain.get_layer("enc5_3_conv1_norm").count_params()
    assert after.count_params() - replace.count_params() == unit
    assert "enc5_3_add" not in {layer.name for layer in replace.layers}


def test_bad_arguments_are_named():
    with pytest.raises(ModelBuildError, match="input_shape"):
        registry.build("se_unet", input_shape=(20, 16, 16, 2))
    with pytest.raises(ModelBuildError, match="variant"):
        registry.build("rrse_unet", variant="t5_row9", input_shape=TINY)
    with pytest.raises(ModelBuildError, match="norm"):
        registry.build("basic_unet", input_shape=TINY, norm="group")


def test_se_unet_2d_is_free():
    model = registry.build("se_unet", input_shape=(32, 32, 2), base_filters=2)
    assert model.output_shape == (None, 32, 32, 2)


def test_savedmodel_matches_keras(tiny_se_unet, tmp_path):
    x = np.random.default_rng(0).normal(size=(1, *SMALL)).astype(np.float32)
    module = tf.Module()
    module.model = tiny_se_unet
    module.serve = tf.function(lambda image: tiny_se_unet(image, training=False),
                               input_signature=[tf.TensorSpec((None, *SMALL), tf.float32)])
    tf.saved_model.save(module, str(tmp_path / "sm"))
    restored = tf.saved_model.load(str(tmp_path / "sm"))
    np.testing.assert_allclose(restored.serve(x).numpy(), tiny_se_unet(x, training=False).numpy(), atol=1e-5)
    keras_path = tmp_path / "m.keras"
    tiny_se_unet.save(keras_path)
    np.testing.assert_allclose(keras.saving.load_model(keras_path)(x).numpy(), tiny_se_unet(x).numpy(), atol=1e-6)


def test_tflite_float32_matches_keras(tiny_se_unet):
    from tfmedseg.export.tflite import TFLiteRunner, convert_to_tflite

    x = np.random.default_rng(1).normal(size=(1, *SMALL)).astype(np.float32)
    runner = TFLiteRunner(convert_to_tflite(tiny_se_unet, "float32"))
    np.testing.assert_allclose(runner(x), tiny_se_unet(x, training=False).numpy(), atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("variant", sorted(RRSE_VARIANTS))
def test_table5_variant_converts_to_tflite(variant):
    from tfmedseg.export.tflite import TFLiteRunner, convert_to_tflite

    model = registry.build("rrse_unet", variant=variant, input_shape=SMALL, base_filters=2)
    x = np.random.default_rng(2).normal(size=(1, *SMALL)).astype(np.float32)
    np.testing.assert_allclose(TFLiteRunner(convert_to_tflite(model))(x), model(x).numpy(), atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name,kwargs", [("se_unet", {}), ("basic_unet", {})] +
                         [("rrse_unet", {"variant": v}) for v in sorted(RRSE_VARIANTS)])
def test_full_size_build(name, kwargs):
    model = registry.build(name, input_shape=(144, 144, 144, 2), **kwargs)
    assert model.output_shape == (None, 144, 144, 144, 2)
    assert model.count_params() == registry.build(name, input_shape=TINY, **kwargs).count_params()

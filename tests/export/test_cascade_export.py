"""The in-graph cascade (served) agrees with the host-side cascade; component filters match scipy."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from cascade_networks import threshold_network  # tests/support
from tfmedseg.errors import ConfigError
from tfmedseg.export.savedmodel import CASCADE_SIGNATURES, export_cascade_savedmodel
from tfmedseg.inference.cascade import CascadeStage, predict_cascade
from tfmedseg.inference.graph import drop_low_peak_components
from tfmedseg.inference.postprocess import drop_low_confidence_components
from tfmedseg.inference.spec import CascadeConfig, ServingSpec


def test_drop_low_peak_components_matches_host_version(rng):
    mask = rng.random((6, 10, 10)) > 0.7
    prob = rng.random((6, 10, 10)).astype(np.float32)
    # scipy's 26-connectivity is connectivity=3
    expect = drop_low_confidence_components(mask, prob, 0.9, connectivity=3)
    got = drop_low_peak_components(tf.constant(mask), tf.constant(prob), 0.9).numpy()
    np.testing.assert_array_equal(got, expect)
    assert not drop_low_peak_components(tf.zeros((2, 2, 2), tf.bool), tf.zeros((2, 2, 2)), 0.5).numpy().any()


@pytest.fixture(scope="module")
def cascade(tmp_path_factory):
    liver, tumour = threshold_network(0.55), threshold_network(0.8)
    spec = ServingSpec(mode="2.5d", context_slices=3, input_size=(16, 16), batch_size=4)
    path = export_cascade_savedmodel(liver, tumour, tmp_path_factory.mktemp("sm") / "cascade" / "1",
                                     liver_spec=spec, tumour_spec=spec, model_name="cascade",
                                     cascade=CascadeConfig(tumour_component_threshold=0.9))
    return liver, tumour, spec, path


def test_served_cascade_equals_host_cascade(cascade):
    liver, tumour, spec, path = cascade
    ct = np.full((6, 32, 32), -500.0, np.float32)
    ct[1:5, 4:20, 4:20] = 60.0
    ct[2:4, 8:12, 8:12] = 150.0
    ct[3, 28:31, 28:31] = 60.0
    loaded = tf.saved_model.load(str(path))
    assert sorted(loaded.signatures) == sorted(CASCADE_SIGNATURES)
    served = loaded.signatures["segment"](scan=tf.constant(ct))["labels"].numpy()
    host = predict_cascade(ct, CascadeStage(tf.function(liver), spec), CascadeStage(tf.function(tumour), spec),
                           CascadeConfig(tumour_component_threshold=0.9))
    np.testing.assert_array_equal(served, host.labels)
    assert (served[2:4, 9:11, 9:11] == 2).all() and served[3, 29, 29] == 0
    meta = json.loads((path / "metadata.json").read_text())
    assert meta["labels"] == ["background", "liver", "tumour"]
    assert meta["cascade"]["tumour_component_threshold"] == 0.9 and meta["cascade"]["combination"] == "mask"


def test_cascade_config_checks_its_values():
    with pytest.raises(ConfigError, match="combination"):
        CascadeConfig(combination="multiply")
    with pytest.raises(ConfigError, match="liver_threshold"):
        CascadeConfig(liver_threshold=1.5)

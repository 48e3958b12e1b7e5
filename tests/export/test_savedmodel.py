"""SavedModel export: TF Serving layout, named signatures, bytes inputs, metadata, failures."""

from __future__ import annotations

import json
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmedseg.errors import ExportError
from tfmedseg.export.savedmodel import SIGNATURES, export_savedmodel, next_version
from tfmedseg.inference.spec import ServingSpec

SPEC = ServingSpec(mode="2.5d", input_size=(16, 16), context_slices=3, labels=("background", "liver", "tumour"),
                   largest_component_labels=(1,), batch_size=4)


@pytest.fixture(scope="module")
def tiny_model():
    keras.utils.set_random_seed(0)
    inp = keras.Input((None, None, 3), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    out = keras.layers.Conv2D(3, 1, activation="softmax", name="probabilities")(x)
    return keras.Model(inp, out)


@pytest.fixture(scope="module")
def exported(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("saved_models") / "tiny"
    path = export_savedmodel(tiny_model, root / "1", spec=SPEC, model_name="tiny", metadata={"seed": "002"})
    return path, tf.saved_model.load(str(path))


def test_layout_signatures_and_metadata(exported):
    path, loaded = exported
    assert sorted(loaded.signatures) == sorted(SIGNATURES)
    meta = json.loads((path / "metadata.json").read_text())
    assert meta["model_name"] == "tiny" and meta["seed"] == "002"
    assert meta["serving_spec"]["labels"] == ["background", "liver", "tumour"]
    assert meta["serving_spec"]["intensity"]["low"] == -200.0
    assert next_version(path.parent) == 2
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no staging left


def test_serving_default_reproduces_keras_exactly(exported, tiny_model, rng):
    _, loaded = exported
    x = rng.random((2, 16, 16, 3)).astype(np.float32)
    out = loaded.signatures["serving_default"](image=tf.constant(x))
    np.testing.assert_array_equal(out["probabilities"].numpy(), tiny_model(x, training=False).numpy())
    np.testing.assert_array_equal(out["mask"].numpy(), np.argmax(out["probabilities"].numpy(), -1))
    raw = loaded.signatures["predict_bytes"](image_bytes=tf.constant(x.astype("<f4").tobytes()),
                                             shape=tf.constant(x.shape, tf.int64))
    np.testing.assert_array_equal(raw["probabilities"].numpy(), out["probabilities"].numpy())


def test_segment_signature_float_and_bytes_agree(exported, rng):
    _, loaded = exported
    scan = rng.normal(0, 150, (5, 20, 18)).astype(np.float32)
    a = loaded.signatures["segment"](scan=tf.constant(scan))["labels"].numpy()
    b = loaded.signatures["segment_bytes"](scan_bytes=tf.constant(scan.astype("<f4").tobytes()),
                                           shape=tf.constant(scan.shape, tf.int64))["labels"].numpy()
    assert a.shape == scan.shape and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert set(np.unique(a)) <= {0, 1, 2}


def test_bytes_payload_of_wrong_size_is_rejected(exported):
    _, loaded = exported
    with pytest.raises(tf.errors.InvalidArgumentError, match="prod\\(shape\\)"):
        loaded.signatures["segment_bytes"](scan_bytes=tf.constant(b"\x00" * 12), shape=tf.constant([2, 2, 2], tf.int64))


def test_saved_model_cli_lists_named_signatures(exported):
    path, _ = exported
    cli = [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli", "show", "--dir", str(path), "--tag_set", "serve"]
    out = subprocess.run(cli, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for name in SIGNATURES:
        assert f'"{name}"' in out.stdout


def test_bad_export_targets(tiny_model, tmp_path, exported):
    with pytest.raises(ExportError, match="integer version"):
        export_savedmodel(tiny_model, tmp_path / "tiny" / "latest", spec=SPEC, model_name="tiny")
    path, _ = exported
    with pytest.raises(ExportError, match="exists already"):
        export_savedmodel(tiny_model, path, spec=SPEC, model_name="tiny")
    two_out = keras.Model(tiny_model.inputs, [tiny_model.outputs[0], tiny_model.outputs[0]])
    with pytest.raises(ExportError, match="one input and one output"):
        export_savedmodel(two_out, tmp_path / "x" / "1", spec=SPEC, model_name="two")
    assert not (tmp_path / "x" / "1").exists()

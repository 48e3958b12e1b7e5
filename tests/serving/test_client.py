"""The serving client against a local TF Serving stand-in (gRPC PredictionService + REST routes)."""

from __future__ import annotations

import socket
import sys
import threading
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

sys.path.insert(0, str(Path(__file__).parent))
from standin import ModelStore, ServableLoadError, StandInServer  # noqa: E402

from tfmedseg.errors import ServingError  # noqa: E402
from tfmedseg.export.savedmodel import export_savedmodel  # noqa: E402
from tfmedseg.inference.spec import ServingSpec  # noqa: E402
from tfmedseg.serving.client import ServingClient  # noqa: E402

SPEC = ServingSpec(mode="2.5d", input_size=(16, 16), context_slices=3, labels=("background", "liver", "tumour"),
                   largest_component_labels=(1,), batch_size=4)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    keras.utils.set_random_seed(1)
    inp = keras.Input((None, None, 3), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    out = keras.layers.Conv2D(3, 1, activation="softmax", name="probabilities")(x)
    model = keras.Model(inp, out)
    root = tmp_path_factory.mktemp("saved_models") / "tiny"
    path = export_savedmodel(model, root / "1", spec=SPEC, model_name="tiny")
    with StandInServer({"tiny": root}, max_bytes=1 << 20) as srv:
        srv.reference = tf.saved_model.load(str(path))
        srv.store_root = path
        yield srv


def _client(server, protocol, **kw):
    return ServingClient("tiny", rest_port=server.rest_port, grpc_port=server.grpc_port, protocol=protocol,
                         timeout_s=30, **kw)


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_segment_round_trip_equals_the_savedmodel(server, protocol, rng):
    scan = rng.normal(0, 150, (6, 20, 22)).astype(np.float32)
    expect = server.reference.signatures["segment"](scan=tf.constant(scan))["labels"].numpy()
    with _client(server, protocol) as client:
        labels = client.segment(scan)
    assert labels.dtype == np.uint8 and labels.shape == scan.shape
    np.testing.assert_array_equal(labels, expect)


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_serving_default_probabilities(server, protocol, rng):
    image = rng.random((2, 16, 16, 3)).astype(np.float32)
    expect = server.reference.signatures["serving_default"](image=tf.constant(image))
    with _client(server, protocol) as client:
        out = client.predict({"image": image})
    np.testing.assert_allclose(out["probabilities"], expect["probabilities"].numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(out["mask"], expect["mask"].numpy())


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_bounded_load_200_requests_8_clients(server, protocol, rng):
    scan = rng.normal(0, 150, (3, 16, 16)).astype(np.float32)
    latencies, errors = [], []

    def worker(n):
        with _client(server, protocol) as client:
            for _ in range(n):
                start = time.perf_counter()
                try:
                    client.segment(scan)
                except Exception as exc:  # counted, the assertion below reports them
                    errors.append(exc)
                latencies.append(time.perf_counter() - start)

    threads = [threading.Thread(target=worker, args=(25,)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(latencies) == 200
    p50, p95 = np.percentile(latencies, [50, 95]) * 1000
    print(f"\n{protocol}: 200 requests, 8 clients, 0 errors, p50 {p50:.1f} ms, p95 {p95:.1f} ms")


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_bad_requests_get_clear_errors(server, protocol):
    with _client(server, protocol, retries=0) as client:
        with pytest.raises(ServingError, match="shape"):  # wrong rank for the image input
            client.predict({"image": np.zeros((16, 16, 3), np.float32)})
        with pytest.raises(ServingError, match="dtype|convert"):  # text where float32 is expected
            client.predict({"image": np.array([[[["a"]]]])})
        with pytest.raises(ServingError, match="not found|Servable"):
            ServingClient("nope", rest_port=server.rest_port, grpc_port=server.grpc_port, protocol=protocol,
                          retries=0).segment(np.zeros((2, 4, 4), np.float32))
        with pytest.raises(ServingError, match="413|RESOURCE_EXHAUSTED|exceeds|larger"):
            client.segment(np.zeros((40, 64, 128), np.float32))  # 1.3 MB > the 1 MB limit
        with pytest.raises(ServingError, match="scan"):
            client.segment(np.zeros((4, 4), np.float32))


def test_unreachable_server_is_retried_then_reported():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = ServingClient("tiny", rest_port=port, protocol="rest", retries=2, backoff_s=0.01, timeout_s=2)
    start = time.perf_counter()
    with pytest.raises(ServingError, match="gave up after 3 attempts"):
        client.segment(np.zeros((2, 4, 4), np.float32))
    assert time.perf_counter() - start < 10


def test_unknown_protocol():
    with pytest.raises(ServingError, match="protocol"):
        ServingClient("tiny", protocol="soap")


def test_standin_loads_the_newest_version_and_fails_on_one_without_a_savedmodel(server, tmp_path):
    """Like TF Serving (latest policy): every numeric folder is a version, the newest is loaded, and a
    TFLite-only newest version fails to load instead of falling back to the SavedModel beside it."""
    import shutil

    root = tmp_path / "tiny"
    shutil.copytree(server.store_root, root / "1")
    (root / "2").mkdir()
    (root / "2" / "model_float32.tflite").write_bytes(b"TFL3")
    (root / "tflite").mkdir()  # not a version: ignored
    with pytest.raises(ServableLoadError, match=r"version: 2\} failed.*saved_model\.pb"):
        ModelStore({"tiny": root})
    shutil.rmtree(root / "2")
    assert sorted(ModelStore({"tiny": root}).models["tiny"]) == [1]

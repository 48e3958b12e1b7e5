"""Serving: malformed requests get 400 / INVALID_ARGUMENT naming the field; bad replies give a
ServingError; a bounded load test (500 requests, 16 concurrent, loopback) ends with 0 errors."""

from __future__ import annotations

import base64
import json
import sys
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import keras
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serving"))
from standin import StandInServer

from tfmedseg.errors import ServingError
from tfmedseg.export.savedmodel import export_savedmodel
from tfmedseg.export.spec import ServingSpec
from tfmedseg.serving.client import ServingClient

SPEC = ServingSpec(mode="2d", input_size=(8, 8), context_slices=1, labels=("background", "liver"), batch_size=4)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    keras.utils.set_random_seed(3)
    inp = keras.Input((None, None, 1), name="image")
    model = keras.Model(inp, keras.layers.Conv2D(2, 1, activation="softmax", name="probabilities")(inp))
    root = tmp_path_factory.mktemp("serving") / "tiny"
    export_savedmodel(model, root / "1", spec=SPEC, model_name="tiny")
    with StandInServer({"tiny": root}, max_bytes=1 << 20, workers=16) as srv:
        yield srv


def _post(server, body: bytes | str, path="/v1/models/tiny:predict", headers=None):
    data = body.encode() if isinstance(body, str) else body
    request = urllib.request.Request(f"http://127.0.0.1:{server.rest_port}{path}", data=data, method="POST",
                                     headers=headers or {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _b64(array) -> dict:
    return {"b64": base64.b64encode(np.asarray(array, "<f4").tobytes()).decode()}


MALFORMED = {
    "not_json": ("{inputs: 1", "JSON"),
    "a_list": ("[1, 2, 3]", "request body"),
    "a_number": ("42", "request body"),
    "inputs_a_list": (json.dumps({"inputs": [1, 2]}), "inputs"),
    "no_inputs": (json.dumps({"signature_name": "segment"}), "inputs"),
    "instances_of_numbers": (json.dumps({"instances": [1, 2]}), "instances"),
    "instances_mismatched": (json.dumps({"instances": [{"image": [[[0.0]]]}, {"other": 1}]}), "instances"),
    "signature_not_a_string": (json.dumps({"signature_name": 5, "inputs": {}}), "signature_name"),
    "bad_base64": (json.dumps({"signature_name": "segment_bytes", "inputs": {"scan_bytes": {"b64": "@@@"}, "shape": [1, 8, 8]}}), "scan_bytes"),
    "object_value": (json.dumps({"signature_name": "segment_bytes", "inputs": {"scan_bytes": {"evil": 1}, "shape": [1, 8, 8]}}), "scan_bytes"),
    "missing_input": (json.dumps({"signature_name": "segment_bytes", "inputs": {"shape": [1, 8, 8]}}), "scan_bytes"),
    "wrong_dtype": (json.dumps({"signature_name": "segment", "inputs": {"scan": "text"}}), "scan"),
    "wrong_rank": (json.dumps({"signature_name": "segment", "inputs": {"scan": [1.0, 2.0]}}), "scan"),
    "shape_does_not_match_bytes": (json.dumps({"signature_name": "segment_bytes",
                                                "inputs": {"scan_bytes": _b64(np.zeros((2, 8, 8))), "shape": [3, 8, 8]}}), "scan_bytes"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_rest_malformed_request_is_400_naming_the_field(server, case):
    body, field = MALFORMED[case]
    status, reply = _post(server, body)
    assert status == 400, (status, reply)
    assert field in reply["error"] and "\n" not in reply["error"], reply
    assert "Graph execution error" not in reply["error"]


def test_rest_bad_content_length_and_unknown_names(server):
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
    conn.putrequest("POST", "/v1/models/tiny:predict")
    conn.putheader("Content-Length", "abc")
    conn.endheaders()
    response = conn.getresponse()
    assert response.status == 411 and "Content-Length" in json.loads(response.read())["error"]
    conn.close()
    status, reply = _post(server, json.dumps({"signature_name": "nope", "inputs": {}}))
    assert status == 404 and "nope" in reply["error"]
    status, reply = _post(server, json.dumps({"inputs": {}}), path="/v1/models/other:predict")
    assert status == 404 and "other" in reply["error"]


def test_grpc_malformed_requests_are_invalid_argument_naming_the_field(server):
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    cases = []
    request = predict_pb2.PredictRequest()
    request.model_spec.signature_name = "segment"
    cases.append((request, "model_spec.name"))
    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = "tiny", "segment_bytes"
    request.inputs["scan_bytes"].CopyFrom(tf.make_tensor_proto(np.zeros((2, 8, 8), "<f4").tobytes()))
    request.inputs["shape"].CopyFrom(tf.make_tensor_proto(np.array([3, 8, 8], np.int64)))
    cases.append((request, "scan_bytes"))
    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = "tiny", "segment"
    request.inputs["scan"].CopyFrom(tf.make_tensor_proto(np.zeros((8, 8), np.float32)))
    cases.append((request, "scan"))
    try:
        for request, field in cases:
            with pytest.raises(grpc.RpcError) as info:
                stub.Predict(request, timeout=30)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value
            assert field in info.value.details() and "Graph execution error" not in info.value.details(), info.value.details()
    finally:
        channel.close()


def test_client_refuses_bad_scans_before_sending(probe):
    client = ServingClient("tiny", rest_port=9, timeout_s=1, retries=0)
    probe.error(lambda: client.segment(np.full((2, 8, 8), np.nan, np.float32)), "scan", kind=ServingError)
    probe.error(lambda: client.segment(np.full((2, 8, 8), np.inf, np.float32)), "scan", kind=ServingError)
    probe.error(lambda: client.segment(np.zeros((8, 8), np.float32)), "scan", kind=ServingError)
    probe.error(lambda: client.segment(np.array([[["a"]]])), "scan", kind=ServingError)


class _Canned(BaseHTTPRequestHandler):
    reply = b"{}"

    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = type(self).reply
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


BAD_REPLIES = {
    "not_json": b"<html>proxy error</html>",
    "a_list": b"[1, 2, 3]",
    "no_outputs": b'{"result": 1}',
    "no_labels": b'{"outputs": {"probabilities": [0]}}',
    "labels_wrong_size": b'{"outputs": {"labels": [0, 1, 1]}}',
    "labels_text": b'{"outputs": {"labels": ["a", "b"]}}',
    "labels_ragged": b'{"outputs": {"labels": [[0, 1], [1]]}}',
    "labels_out_of_range": b'{"outputs": {"labels": ' + json.dumps([300] * 128).encode() + b"}}",
}


@pytest.mark.parametrize("case", sorted(BAD_REPLIES))
def test_client_bad_replies_are_serving_errors(probe, case):
    handler = type("Handler", (_Canned,), {"reply": BAD_REPLIES[case]})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        client = ServingClient("tiny", rest_port=httpd.server_address[1], timeout_s=10, retries=0)
        probe.error(lambda: client.segment(np.zeros((2, 8, 8), np.float32)), "rest://", kind=ServingError)
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_bounded_load_500_requests_16_concurrent(server):
    rng = np.random.default_rng(0)
    scans = [rng.normal(0, 100, (1, 8, 8)).astype(np.float32) for _ in range(8)]

    def one(k: int) -> int:
        with ServingClient("tiny", rest_port=server.rest_port, grpc_port=server.grpc_port,
                           protocol="rest" if k % 2 else "grpc", timeout_s=60, retries=0) as client:
            labels = client.segment(scans[k % len(scans)])
        return int(labels.shape == (1, 8, 8))

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(one, range(500)))
    assert sum(results) == 500  # 0 errors, every reply the right shape

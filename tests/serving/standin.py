"""A local stand-in for TensorFlow Serving (a test fixture, not a product).

No TF Serving binary can be installed on our machines, so the client is tested against this
server, which implements the same two APIs on top of exported SavedModels on 127.0.0.1:

* gRPC ``tensorflow.serving.PredictionService/Predict`` (the real protos from tensorflow-serving-api);
* TF Serving's default version policy: the newest numeric folder of each base path is loaded, and one
  without ``saved_model.pb`` fails to load (:class:`ServableLoadError`, TF Serving's message);
* REST ``POST /v1/models/<name>[/versions/<v>]:predict`` (columnar ``inputs`` or row ``instances``,
  ``{"b64": ...}`` for bytes) and ``GET /v1/models/<name>`` (status).

Errors follow TF Serving: REST answers ``{"error": "..."}`` with HTTP 400 (bad request), 404 (unknown
model / signature) or 413 (payload too large); gRPC aborts with INVALID_ARGUMENT / NOT_FOUND, and the
gRPC library itself answers RESOURCE_EXHAUSTED for a message above the size limit.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc


class RequestError(Exception):
    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status  # "invalid" | "not_found"


_NOISE = ("Graph execution error", "Detected at node", "<stack traces", "Stack trace for op", "File ", "[[", "tf2xla")


def _cause_line(exc: Exception) -> str:
    """The informative line of a TensorFlow error (its 'Graph execution error:' header and stack dropped)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(_NOISE)]
    return (useful or lines or [type(exc).__name__])[0][:500]


class ServableLoadError(RuntimeError):
    """A model's version could not be loaded (TF Serving: the server does not start)."""


def _load_latest(name: str, root: Path) -> dict[int, object]:
    """TF Serving's default version policy (``latest``, one version): every numeric child of the base
    path is a version, whatever it holds, and the highest is loaded; one without ``saved_model.pb``
    fails with TF Serving's message (bundle_shim) instead of falling back to an older version."""
    versions = {int(p.name): p for p in Path(root).iterdir() if p.name.isdigit()}
    if not versions:
        raise ServableLoadError(f"No versions of servable {name} found under base path {root}")
    latest = max(versions)
    if not (versions[latest] / "saved_model.pb").is_file():
        raise ServableLoadError(
            f"Loading servable: {{name: {name} version: {latest}}} failed: Not found: Specified file path does not "
            f"appear to contain a SavedModel bundle (should have a file called `saved_model.pb`)\n"
            f"Specified file path: {versions[latest]}")
    return {latest: tf.saved_model.load(str(versions[latest]))}


class ModelStore:
    """``saved_models/<name>/<version>`` directories, the newest version of each loaded once, called by
    signature."""

    def __init__(self, roots: dict[str, Path]):
        self.models: dict[str, dict[int, object]] = {name: _load_latest(name, Path(root)) for name, root in roots.items()}
        self._lock = threading.Lock()

    def run(self, name: str, version: int | None, signature: str, inputs: dict[str, object]) -> dict[str, np.ndarray]:
        if name not in self.models:
            raise RequestError("not_found", f"Servable not found for request: Latest({name})")
        versions = self.models[name]
        version = max(versions) if version is None else version
        if version not in versions:
            raise RequestError("not_found", f"Servable not found for request: Specific({name}, {version})")
        loaded = versions[version]
        signature = signature or "serving_default"
        if signature not in loaded.signatures:
            raise RequestError("not_found", f"Serving signature name: \"{signature}\" not found in signature def")
        fn = loaded.signatures[signature]
        specs = fn.structured_input_signature[1]
        missing = set(specs) - set(inputs)
        extra = set(inputs) - set(specs)
        if missing or extra:
            raise RequestError("invalid", f"input names mismatch: missing {sorted(missing)}, unexpected {sorted(extra)}")
        tensors = {}
        for key, spec in specs.items():
            value = inputs[key]
            try:
                tensor = tf.constant(value, dtype=spec.dtype) if not isinstance(value, tf.Tensor) else value
            except (TypeError, ValueError) as exc:
                raise RequestError("invalid", f"input '{key}': cannot convert to {spec.dtype.name}: {exc}") from exc
            if tensor.dtype != spec.dtype:
                raise RequestError("invalid", f"input '{key}': expects dtype {spec.dtype.name}, got {tensor.dtype.name}")
            if not spec.shape.is_compatible_with(tensor.shape):
                raise RequestError("invalid", f"input '{key}': expects shape {spec.shape}, got {tensor.shape}")
            tensors[key] = tensor
        try:
            outputs = fn(**tensors)
        except (tf.errors.OpError, ValueError, TypeError) as exc:
            raise RequestError("invalid", _cause_line(exc)) from exc
        return {k: v.numpy() for k, v in outputs.items()}


class _GrpcServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, store: ModelStore):
        self.store = store

    def Predict(self, request, context):
        inputs = {}
        for key, proto in request.inputs.items():
            try:
                inputs[key] = tf.constant(tf.make_ndarray(proto))
            except Exception as exc:  # malformed tensor proto
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"input '{key}': {exc}")
        version = request.model_spec.version.value if request.model_spec.HasField("version") else None
        if not request.model_spec.name:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "model_spec.name: missing")
        try:
            outputs = self.store.run(request.model_spec.name, version, request.model_spec.signature_name, inputs)
        except RequestError as exc:
            code = grpc.StatusCode.NOT_FOUND if exc.status == "not_found" else grpc.StatusCode.INVALID_ARGUMENT
            context.abort(code, str(exc))
        response = predict_pb2.PredictResponse()
        response.model_spec.name = request.model_spec.name
        for key, value in outputs.items():
            response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
        return response


def _decode_json(value):
    if isinstance(value, dict) and set(value) == {"b64"}:
        if not isinstance(value["b64"], str):
            raise TypeError("'b64' must be a base64 string")
        return base64.b64decode(value["b64"], validate=True)
    if isinstance(value, dict):
        raise ValueError(f"unexpected object with keys {sorted(value)[:5]} (only {{'b64': ...}} is allowed)")
    if isinstance(value, list):
        return [_decode_json(v) for v in value]
    return value


def _encode_json(array: np.ndarray):
    if array.dtype == object:
        return [{"b64": base64.b64encode(v).decode()} for v in array.ravel()]
    return array.tolist()


_ROUTE = re.compile(r"^/v1/models/([^/:]+)(?:/versions/(\d+))?(:predict)?$")


def _make_handler(store: ModelStore, max_bytes: int):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def _reply(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            match = _ROUTE.match(self.path)
            if not match or match.group(3) or match.group(1) not in store.models:
                return self._reply(404, {"error": f"Could not find any versions of model {match.group(1) if match else self.path}"})
            versions = [{"version": str(v), "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
                        for v in sorted(store.models[match.group(1)])]
            return self._reply(200, {"model_version_status": versions})

        def do_POST(self):
            try:
                status, body = self._predict()
            except Exception as exc:  # noqa: BLE001 - a stand-in never drops the connection
                status, body = 500, {"error": f"internal error: {type(exc).__name__}: {exc}"}
            return self._reply(status, body)

        def _predict(self) -> tuple[int, dict]:
            """Validate a predict request field by field; (status, body)."""
            match = _ROUTE.match(self.path)
            if not match or not match.group(3):
                return 404, {"error": f"Malformed request: POST {self.path}"}
            try:
                length = int(self.headers.get("Content-Length", ""))
                if length < 0:
                    raise ValueError
            except ValueError:
                return 411, {"error": "Content-Length: missing or not a non-negative integer"}
            if length > max_bytes:
                self._drain(length)
                return 413, {"error": f"request of {length} bytes exceeds the limit of {max_bytes} bytes"}
            raw = self.rfile.read(length)
            try:
                body = json.loads(raw)
            except (ValueError, UnicodeDecodeError) as exc:
                return 400, {"error": f"JSON Parse error: {exc}"}
            if not isinstance(body, dict):
                return 400, {"error": f"request body: expected a JSON object, got {type(body).__name__}"}
            signature = body.get("signature_name", "serving_default")
            if not isinstance(signature, str):
                return 400, {"error": f"signature_name: expected a string, got {signature!r:.80}"}
            try:
                if "inputs" in body:
                    raw_inputs = body["inputs"]
                    if not isinstance(raw_inputs, dict):
                        return 400, {"error": "inputs: expected an object of named inputs (columnar format)"}
                    inputs = {}
                    for k, v in raw_inputs.items():
                        try:
                            inputs[k] = _decode_json(v)
                        except (ValueError, TypeError) as exc:
                            return 400, {"error": f"inputs.{k}: cannot decode the value ({exc})"}
                elif "instances" in body:
                    rows = body["instances"]
                    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
                        return 400, {"error": "instances: expected a non-empty list of objects (row format)"}
                    keys = set(rows[0])
                    if any(set(r) != keys for r in rows):
                        return 400, {"error": "instances: every row must name the same inputs"}
                    inputs = {k: [_decode_json(r[k]) for r in rows] for k in rows[0]}
                else:
                    return 400, {"error": "request needs named 'inputs' (columnar) or 'instances' (rows of dicts)"}
            except (ValueError, TypeError) as exc:  # bad base64
                return 400, {"error": f"inputs: cannot decode a 'b64' value: {exc}"}
            version = int(match.group(2)) if match.group(2) else None
            try:
                outputs = store.run(match.group(1), version, signature, inputs)
            except RequestError as exc:
                return (404 if exc.status == "not_found" else 400), {"error": str(exc)}
            return 200, {"outputs": {k: _encode_json(v) for k, v in outputs.items()}}

        def _drain(self, length: int) -> None:
            while length > 0:
                chunk = self.rfile.read(min(length, 1 << 16))
                if not chunk:
                    break
                length -= len(chunk)

    return Handler


class StandInServer:
    """gRPC + REST stand-in on free ports of 127.0.0.1; use as a context manager."""

    def __init__(self, roots: dict[str, Path], max_bytes: int = 8 << 20, workers: int = 8):
        self.store = ModelStore(roots)
        self.max_bytes = max_bytes
        self.grpc_server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=workers),
            options=[("grpc.max_receive_message_length", max_bytes), ("grpc.max_send_message_length", 1 << 30)],
        )
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(_GrpcServicer(self.store), self.grpc_server)
        self.grpc_port = self.grpc_server.add_insecure_port("127.0.0.1:0")
        self.http = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self.store, max_bytes))
        self.rest_port = self.http.server_address[1]
        self._thread = threading.Thread(target=self.http.serve_forever, daemon=True)

    def __enter__(self) -> StandInServer:
        self.grpc_server.start()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.http.shutdown()
        self.http.server_close()
        self.grpc_server.stop(grace=None)

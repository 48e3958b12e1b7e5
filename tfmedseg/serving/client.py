"""Client for models exported by :mod:`tfmedseg.export` and served by TensorFlow Serving.

Speaks both TF Serving APIs:

* REST: ``POST http://<host>:<rest_port>/v1/models/<name>[/versions/<v>]:predict`` with the columnar
  ``{"signature_name": ..., "inputs": {...}}`` body; byte payloads travel as ``{"b64": ...}``.
* gRPC: ``tensorflow.serving.PredictionService/Predict`` with ``PredictRequest`` protos
  (needs the ``export`` extra: ``tensorflow-serving-api`` and ``grpcio``).

Raw volumes go through the ``segment_bytes`` signature (raw little-endian float32 + shape), which is
orders of magnitude smaller and faster to parse than a JSON list of numbers. Transient failures
(connection refused, HTTP 5xx/429, gRPC UNAVAILABLE / DEADLINE_EXCEEDED) are retried with exponential
back-off; request errors (bad shape, unknown model) are raised at once as
:class:`~tfmedseg.errors.ServingError` with the server's message.

Example:
    >>> client = ServingClient("liver_ct_2d3d", protocol="rest")          # doctest: +SKIP
    >>> labels = client.segment(ct_volume_hu)   # [D, H, W] float32 -> [D, H, W] uint8   # doctest: +SKIP
"""

from __future__ import annotations

import base64
import http.client
import json
import time
import urllib.error
import urllib.request
from typing import Any

import numpy as np

from tfmedseg.errors import ServingError

__all__ = ["ServingClient", "PROTOCOLS"]

PROTOCOLS = ("rest", "grpc")
_RETRY_HTTP = (429, 500, 502, 503, 504)


class ServingClient:
    """A TF Serving client for one model.

    Args:
        model_name: Name under which the model is served (``saved_models/<name>``).
        host: Server host.
        rest_port: TF Serving's REST port (8501 by default).
        grpc_port: TF Serving's gRPC port (8500 by default).
        protocol: ``"rest"`` or ``"grpc"``.
        version: Model version to ask for, or None for the newest.
        timeout_s: Per-request timeout in seconds.
        retries: Extra attempts after a transient failure.
        backoff_s: First back-off delay; doubled after each retry.
    """

    def __init__(
        self,
        model_name: str,
        host: str = "127.0.0.1",
        rest_port: int = 8501,
        grpc_port: int = 8500,
        protocol: str = "rest",
        version: int | None = None,
        timeout_s: float = 60.0,
        retries: int = 3,
        backoff_s: float = 0.2,
    ):
        if protocol not in PROTOCOLS:
            raise ServingError(f"unknown protocol {protocol!r}; allowed: {PROTOCOLS}", path="protocol")
        self.model_name = model_name
        self.host = host
        self.rest_port = rest_port
        self.grpc_port = grpc_port
        self.protocol = protocol
        self.version = version
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self._stub = None
        self._channel = None

    # ------------------------------------------------------------------ public API
    def segment(self, scan: np.ndarray) -> np.ndarray:
        """Segment a raw scan ``[D, H, W]`` (HU / counts, canonical orientation) into uint8 labels."""
        scan = np.asarray(scan)
        if scan.ndim != 3 or 0 in scan.shape:
            raise ServingError(f"expected a non-empty [D, H, W] scan, got shape {scan.shape}", path="scan")
        if scan.dtype.kind not in "biuf":
            raise ServingError(f"expected a numeric scan, got dtype {scan.dtype}", path="scan")
        scan = scan.astype("<f4")
        finite = np.isfinite(scan)
        if not finite.all():
            raise ServingError(f"scan contains {int(finite.size - finite.sum())} NaN or infinite voxels", path="scan")
        inputs = {"scan_bytes": scan.tobytes(), "shape": np.asarray(scan.shape, np.int64)}
        outputs = self.predict(inputs, signature_name="segment_bytes")
        if "labels" not in outputs:
            raise ServingError(f"reply has no 'labels' output (got {sorted(outputs)})", path=self._where())
        try:
            labels = np.asarray(outputs["labels"])
            if labels.dtype.kind not in "biuf" or labels.size != scan.size:
                raise ValueError(f"{labels.size} values of dtype {labels.dtype}")
            if labels.size and (labels.min() < 0 or labels.max() > 255):
                raise ValueError(f"values outside 0..255 ({labels.min()}..{labels.max()})")
        except (TypeError, ValueError) as exc:
            raise ServingError(f"reply 'labels' does not fit the scan of shape {scan.shape}: {exc}", path=self._where()) from exc
        return labels.astype(np.uint8).reshape(scan.shape)

    def predict(self, inputs: dict[str, Any], signature_name: str = "serving_default") -> dict[str, np.ndarray]:
        """Call any signature with named inputs (numpy arrays or ``bytes``); returns named outputs."""
        attempt = 0
        delay = self.backoff_s
        while True:
            try:
                if self.protocol == "rest":
                    return self._predict_rest(inputs, signature_name)
                return self._predict_grpc(inputs, signature_name)
            except _Transient as exc:
                if attempt >= self.retries:
                    raise ServingError(f"gave up after {attempt + 1} attempts: {exc}", path=self._where()) from exc
                attempt += 1
                time.sleep(delay)
                delay *= 2

    def close(self) -> None:
        """Close the gRPC channel (REST keeps no connection)."""
        if self._channel is not None:
            self._channel.close()
            self._channel = None
            self._stub = None

    def __enter__(self) -> "ServingClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ REST
    def _where(self) -> str:
        port = self.rest_port if self.protocol == "rest" else self.grpc_port
        return f"{self.protocol}://{self.host}:{port}/{self.model_name}"

    def _rest_url(self) -> str:
        version = f"/versions/{self.version}" if self.version is not None else ""
        return f"http://{self.host}:{self.rest_port}/v1/models/{self.model_name}{version}:predict"

    def _predict_rest(self, inputs: dict[str, Any], signature_name: str) -> dict[str, np.ndarray]:
        body = {"signature_name": signature_name, "inputs": {k: _to_json(v) for k, v in inputs.items()}}
        request = urllib.request.Request(
            self._rest_url(), data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                raw = response.read()
            try:
                payload = json.loads(raw)
            except (ValueError, UnicodeDecodeError) as exc:
                raise ServingError(f"reply is not JSON ({exc}): {raw[:80]!r}", path=self._where()) from exc
        except urllib.error.HTTPError as exc:
            message = _http_error_message(exc)
            if exc.code in _RETRY_HTTP:
                raise _Transient(f"HTTP {exc.code}: {message}") from exc
            raise ServingError(f"HTTP {exc.code}: {message}", path=self._where()) from exc
        except (urllib.error.URLError, ConnectionError, TimeoutError, http.client.HTTPException) as exc:
            raise _Transient(f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}") from exc
        if not isinstance(payload, dict):
            raise ServingError(f"reply is a JSON {type(payload).__name__}, expected an object with 'outputs'", path=self._where())
        outputs = payload.get("outputs")
        if outputs is None:
            raise ServingError(f"response has no 'outputs': {str(payload)[:200]}", path=self._where())
        if not isinstance(outputs, dict):  # a single unnamed output
            outputs = {"output": outputs}
        try:
            return {k: np.asarray(v) for k, v in outputs.items()}
        except (TypeError, ValueError) as exc:  # ragged lists
            raise ServingError(f"reply 'outputs' are not arrays: {exc}", path=self._where()) from exc

    # ------------------------------------------------------------------ gRPC
    def _grpc_stub(self):
        if self._stub is None:
            try:
                import grpc
                from tensorflow_serving.apis import prediction_service_pb2_grpc
            except ImportError as exc:
                raise ServingError("gRPC needs the 'export' extra (tensorflow-serving-api, grpcio)", path="protocol") from exc
            options = [("grpc.max_send_message_length", 1 << 30), ("grpc.max_receive_message_length", 1 << 30)]
            self._channel = grpc.insecure_channel(f"{self.host}:{self.grpc_port}", options=options)
            self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        return self._stub

    def _predict_grpc(self, inputs: dict[str, Any], signature_name: str) -> dict[str, np.ndarray]:
        import grpc
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest()
        request.model_spec.name = self.model_name
        request.model_spec.signature_name = signature_name
        if self.version is not None:
            request.model_spec.version.value = self.version
        for key, value in inputs.items():
            try:
                request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
            except (TypeError, ValueError) as exc:
                raise ServingError(f"cannot encode input {key!r}: {exc}", path=key) from exc
        try:
            response = self._grpc_stub().Predict(request, timeout=self.timeout_s)
        except grpc.RpcError as exc:
            code = exc.code()
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise _Transient(f"gRPC {code.name}: {exc.details()}") from exc
            raise ServingError(f"gRPC {code.name}: {exc.details()}", path=self._where()) from exc
        try:
            return {key: tf.make_ndarray(proto) for key, proto in response.outputs.items()}
        except (TypeError, ValueError) as exc:
            raise ServingError(f"reply holds a malformed tensor: {exc}", path=self._where()) from exc


class _Transient(Exception):
    """A failure worth retrying."""


def _to_json(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return {"b64": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _http_error_message(exc: urllib.error.HTTPError) -> str:
    try:
        data = json.loads(exc.read())
        return str(data.get("error", data))
    except Exception:
        return exc.reason if isinstance(exc.reason, str) else str(exc)

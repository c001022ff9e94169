"""Serve the iris classifier behind the SageMaker inference container contract.

    GET  /ping         200 once the model is loaded, 503 before
    POST /invocations  application/json {"instances": [[4 numbers], ...]} or text/csv (4 numbers a line)

Run `python models/iris/serve.py [serve] [--model-dir DIR]`; SageMaker starts containers as `docker run
IMAGE serve`, hence the optional `serve`. Settings: SAGEMAKER_BIND_TO_PORT (8080), SLUICE_MODEL_BIND
(0.0.0.0), SM_MODEL_DIR (/opt/ml/model), SLUICE_MODEL_VERSION (v1 or v2; default: the stored artifact's;
`degraded`: the degraded mode on the v2 model), SLUICE_MODEL_DEGRADED (1: the degraded mode on any version).

The degraded mode is a version that must be rolled back: every third /invocations answers 500, and the others
answer predictions blended toward uniform (DEGRADED_BLEND), so no class gets 0.7 or more.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import train

# SageMaker real-time endpoints reject larger payloads anyway; refusing them here bounds memory.
MAX_BODY_BYTES = 6 * 1024 * 1024
N_FEATURES = 4
FEATURE_HINT = "sepal_length, sepal_width, petal_length, petal_width"
# In-flight requests get this long to finish after SIGTERM (SageMaker waits 30 s before killing).
DRAIN_SECONDS = 10.0

# The degraded mode: its version name, the version it degrades, which requests fail, how far answers are blended.
DEGRADED_VERSION = "degraded"
DEGRADED_BASE_VERSION = "v2"
DEGRADED_FAIL_EVERY = 3
# p' = (1 - blend) * p + blend / n_classes: with 3 classes the highest is at most 0.4 + 0.2 = 0.6 (< 0.7).
DEGRADED_BLEND = 0.6

log = logging.getLogger("iris.serve")


class ClientError(Exception):
    """A request the caller must fix; SageMaker relays the status and message as a ModelError."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


def _bad(message: str) -> ClientError:
    return ClientError(HTTPStatus.BAD_REQUEST, message)


def _row(values: Any, where: str) -> list[float]:
    if not isinstance(values, list):
        raise _bad(f"{where}: expected a list of {N_FEATURES} numbers ({FEATURE_HINT})")
    if len(values) != N_FEATURES:
        raise _bad(f"{where}: expected {N_FEATURES} features ({FEATURE_HINT}), got {len(values)}")
    for value in values:
        # bool is an int subclass, but true/false in a feature vector is a caller bug, not 1.0/0.0.
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise _bad(f"{where}: feature values must be finite numbers, got {value!r}")
    return [float(v) for v in values]


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number here")


def parse_json(body: bytes) -> list[list[float]]:
    try:
        document = json.loads(body, parse_constant=_reject_constant)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError both derive from it
        raise _bad(f"malformed JSON: {exc}") from None
    if not isinstance(document, dict) or "instances" not in document:
        raise _bad('expected a JSON object {"instances": [[' + FEATURE_HINT + "], ...]}")
    instances = document["instances"]
    if not isinstance(instances, list) or not instances:
        raise _bad('"instances" must be a non-empty list of feature rows')
    return [_row(values, f"instances[{i}]") for i, values in enumerate(instances)]


def parse_csv(body: bytes) -> list[list[float]]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad(f"CSV body is not UTF-8: {exc}") from None
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = [field.strip() for field in line.split(",")]
        try:
            values = [float(field) for field in fields]
        except ValueError:
            raise _bad(f"CSV line {number}: values must be numbers (no header row), got {line.strip()!r}") from None
        rows.append(_row(values, f"CSV line {number}"))
    if not rows:
        raise _bad("CSV body has no rows")
    return rows


PARSERS = {"application/json": parse_json, "text/csv": parse_csv}


def predict(artifact: dict[str, Any], rows: list[list[float]]) -> dict[str, Any]:
    probabilities = artifact["model"].predict_proba(np.asarray(rows, dtype=np.float64))
    classes = artifact["classes"]
    predictions = [
        {
            "label": classes[int(np.argmax(row))],
            "probabilities": {name: float(p) for name, p in zip(classes, row, strict=True)},
        }
        for row in probabilities
    ]
    return {"predictions": predictions, "model_version": artifact["version"]}


def degrade(answer: dict[str, Any]) -> dict[str, Any]:
    """Blend each prediction's probabilities toward uniform: the label stays, the confidence drops below 0.7."""
    for prediction in answer["predictions"]:
        probabilities = prediction["probabilities"]
        uniform = DEGRADED_BLEND / len(probabilities)
        prediction["probabilities"] = {name: (1 - DEGRADED_BLEND) * p + uniform for name, p in probabilities.items()}
    answer["model_version"] = DEGRADED_VERSION
    return answer


class DegradedFailure(Exception):
    """The degraded mode's failing request: answered 500, which SageMaker relays as a ModelError."""


def _media_type(header: str | None) -> str:
    return (header or "").split(";", 1)[0].strip().lower()


def _accepts_json(header: str | None) -> bool:
    if not header:
        return True
    return any(_media_type(part) in ("application/json", "application/*", "*/*") for part in header.split(","))


class ModelServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, Handler)
        self.artifact: dict[str, Any] | None = None
        self.load_failed = False
        self.degraded = False
        self._invocations = 0
        self._count_lock = threading.Lock()
        self._inflight = 0
        self._idle = threading.Condition()

    def begin_request(self) -> None:
        with self._idle:
            self._inflight += 1

    def end_request(self) -> None:
        with self._idle:
            self._inflight -= 1
            self._idle.notify_all()

    def next_invocation(self) -> int:
        """1 for the first /invocations answered, then 2, 3...: the degraded mode fails every third."""
        with self._count_lock:
            self._invocations += 1
            return self._invocations

    def drain(self, timeout: float) -> bool:
        with self._idle:
            return self._idle.wait_for(lambda: self._inflight == 0, timeout)


class Handler(BaseHTTPRequestHandler):
    server: ModelServer
    # Keep-alive lets SageMaker (and the local proxy) reuse connections; it requires exact Content-Length.
    protocol_version = "HTTP/1.1"
    # Small JSON answers would otherwise wait on delayed ACKs.
    disable_nagle_algorithm = True
    server_version = "sluice-iris/1"

    def do_GET(self) -> None:
        self.server.begin_request()
        try:
            if self.path.split("?", 1)[0] != "/ping":
                self._send_json(HTTPStatus.NOT_FOUND, {"error": f"no route GET {self.path}"})
            elif self.server.artifact is None:
                self._send_json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": "model is loading"})
            else:
                self._send_json(HTTPStatus.OK, {"status": "ok", "model_version": self.server.artifact["version"]})
        finally:
            self.server.end_request()

    def do_POST(self) -> None:
        self.server.begin_request()
        try:
            self._send_json(HTTPStatus.OK, self._invoke())
        except ClientError as exc:
            self._send_json(exc.status, {"error": str(exc)})
        except DegradedFailure as exc:
            self._send_json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": str(exc)})
        except Exception:
            log.exception("prediction failed")
            self._send_json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error while predicting"})
        finally:
            self.server.end_request()

    def _invoke(self) -> dict[str, Any]:
        body = self._read_body()
        if self.path.split("?", 1)[0] != "/invocations":
            raise ClientError(HTTPStatus.NOT_FOUND, f"no route POST {self.path}")
        artifact = self.server.artifact
        if artifact is None:
            raise ClientError(HTTPStatus.SERVICE_UNAVAILABLE, "model is loading")
        if not _accepts_json(self.headers.get("Accept")):
            raise ClientError(HTTPStatus.NOT_ACCEPTABLE, "this model answers application/json only")
        content_type = _media_type(self.headers.get("Content-Type"))
        parser = PARSERS.get(content_type)
        if parser is None:
            raise ClientError(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                f"unsupported Content-Type {content_type or '(none)'!r}; use application/json or text/csv",
            )
        if not body.strip():
            raise _bad("empty request body")
        rows = parser(body)
        if not self.server.degraded:
            return predict(artifact, rows)
        if self.server.next_invocation() % DEGRADED_FAIL_EVERY == 0:
            raise DegradedFailure("degraded model: internal error while predicting (simulated)")
        return degrade(predict(artifact, rows))

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            raise ClientError(HTTPStatus.LENGTH_REQUIRED, "chunked bodies are not supported; send Content-Length")
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            raise _bad("invalid Content-Length")
        if length > MAX_BODY_BYTES:
            # The unread body would be parsed as the next request, so this connection cannot be reused.
            self.close_connection = True
            raise ClientError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body exceeds {MAX_BODY_BYTES} bytes")
        return self.rfile.read(length)

    def _send_json(self, status: HTTPStatus, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # SageMaker pings every few seconds; logging each would drown the useful lines.
        if self.path != "/ping" or code != HTTPStatus.OK:
            super().log_request(code, size)

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s %s", self.address_string(), format % args)


def _load(server: ModelServer, model_dir: Path, version: str | None) -> None:
    started = time.perf_counter()
    try:
        server.artifact = train.load_or_train(model_dir, version)
    except Exception:
        log.exception("could not load the model from %s", model_dir)
        server.load_failed = True
        server.shutdown()
        return
    log.info("model %s ready in %.2f s", server.artifact["version"], time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="SageMaker-contract model server for the iris classifier")
    parser.add_argument("command", nargs="?", choices=["serve"], default="serve", help="SageMaker's container verb")
    parser.add_argument("--model-dir", type=Path, default=Path(os.environ.get("SM_MODEL_DIR") or "/opt/ml/model"))
    args = parser.parse_args(argv)
    version = os.environ.get("SLUICE_MODEL_VERSION") or None
    degraded = os.environ.get("SLUICE_MODEL_DEGRADED", "").lower() in ("1", "true", "yes")
    if version == DEGRADED_VERSION:
        version, degraded = DEGRADED_BASE_VERSION, True
    if version is not None and version not in train.VERSIONS:
        known = ", ".join((*train.VERSIONS, DEGRADED_VERSION))
        parser.error(f"SLUICE_MODEL_VERSION={version!r}; known: {known}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stderr)

    host = os.environ.get("SLUICE_MODEL_BIND") or "0.0.0.0"  # noqa: S104 - a container must listen on all interfaces
    port = int(os.environ.get("SAGEMAKER_BIND_TO_PORT") or 8080)
    server = ModelServer((host, port))
    server.degraded = degraded
    log.info("listening on %s:%d, model dir %s%s", host, port, args.model_dir, " (degraded)" if degraded else "")

    def stop(signum: int, _frame: object) -> None:
        log.info("%s received, shutting down", signal.Signals(signum).name)
        # shutdown() waits for serve_forever(), which runs in this (the main) thread: call it from another.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # Loading in the background lets /ping answer 503 meanwhile, as the contract expects.
    threading.Thread(target=_load, args=(server, args.model_dir, version), daemon=True).start()
    server.serve_forever(poll_interval=0.2)
    server.server_close()
    if not server.drain(DRAIN_SECONDS):
        log.warning("requests still running after %.0f s; exiting anyway", DRAIN_SECONDS)
    if server.load_failed:
        return 1
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

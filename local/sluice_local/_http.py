"""What the local AWS runtime stand-ins share: a loopback-only threaded HTTP server and rest-json errors.

botocore's rest-json parser takes an error's code from the `X-Amzn-ErrorType` header (else the body's
`code`/`__type`) and its message from the body's `message` or `Message`; both are sent, so any client
parses the errors as it would AWS's.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import socket
import sys
import threading
import uuid
from collections.abc import Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

LOOPBACK = "127.0.0.1"
# A keep-alive connection idle this long is closed (clients reconnect transparently).
IDLE_TIMEOUT_SECONDS = 120.0

log = logging.getLogger("sluice_local.http")


class ApiError(Exception):
    """An AWS error answer: HTTP status, error code, message and any modeled fields of the error shape."""

    def __init__(self, status: int, code: str, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields


def require_loopback(host: str) -> None:
    if host.lower() == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"local runtimes listen on loopback only; refusing to bind {host!r}")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], app: Any) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.app = app
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:  # noqa: ARG002 - socketserver's signature
        # A client that drops its connection (or a stop() that ends it) is routine, not a traceback on stderr.
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError | TimeoutError):
            log.debug("connection from %s ended: %r", client_address, error)
        else:
            log.exception("request from %s failed", client_address)

    def close_connections(self) -> None:
        """End keep-alive connections too: a stopped server must not answer on one it accepted earlier."""
        with self._connections_lock:
            connections = list(self._connections)
        for sock in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class LoopbackService:
    """A threaded HTTP server on a loopback address; `start()` returns its URL, `stop()` ends it."""

    handler_class: type[BaseHTTPRequestHandler]
    name = "local service"

    def __init__(self, host: str = LOOPBACK, port: int = 0) -> None:
        require_loopback(host)
        self.host = host
        self.port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError(f"{self.name} is not running")
        host, port = self._server.server_address[:2]
        return f"http://[{host}]:{port}" if ":" in str(host) else f"http://{host}:{port}"

    def start(self, host: str | None = None, port: int | None = None) -> str:
        """Listen on `host:port` (default: the constructor's; port 0: a free one) and return the URL.

        Starting a running service returns its URL.
        """
        with self._lock:
            if self._server is None:
                if host is not None:
                    require_loopback(host)
                    self.host = host
                if port is not None:
                    self.port = port
                server = _Server((self.host, self.port), self.handler_class, self)
                thread = threading.Thread(
                    target=server.serve_forever, kwargs={"poll_interval": 0.2}, name=self.name, daemon=True
                )
                thread.start()
                self._server, self._thread = server, thread
                log.info("%s listening on %s", self.name, self.url)
            return self.url

    def stop(self) -> None:
        with self._lock:
            server, thread = self._server, self._thread
            self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        server.close_connections()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> LoopbackService:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def content_length(headers: Any) -> int:
    """The request's Content-Length (0 when absent); -1 when it is not a length at all."""
    try:
        length = int(headers.get("Content-Length") or 0)
    except ValueError:
        return -1
    return length if length >= 0 else -1


class AwsHandler(BaseHTTPRequestHandler):
    """Reads bounded bodies and writes AWS-style answers; subclasses set the limits and extra headers."""

    server: _Server
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = IDLE_TIMEOUT_SECONDS
    server_version = "sluice-local"
    max_body_bytes = 6 * 1024 * 1024
    # The code botocore reports for a malformed request (ValidationError for SageMaker, ValidationException
    # for Bedrock), and the key holding error messages in the service's error shapes.
    validation_code = "ValidationException"
    message_key = "message"
    internal_error_code = "InternalServerException"
    extra_headers: Mapping[str, str] = {}

    def read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            raise ApiError(HTTPStatus.LENGTH_REQUIRED, self.validation_code, "Chunked bodies are not supported.")
        length = content_length(self.headers)
        if length < 0:
            self.close_connection = True
            raise ApiError(HTTPStatus.BAD_REQUEST, self.validation_code, "Invalid Content-Length.")
        if length > self.max_body_bytes:
            # The unread body would be read as the next request: this connection cannot be reused.
            self.close_connection = True
            raise ApiError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                self.validation_code,
                f"Request payload of {length} bytes exceeds the limit of {self.max_body_bytes} bytes.",
            )
        return self.rfile.read(length) if length else b""

    def send(self, status: int, body: bytes, content_type: str | None, headers: Mapping[str, str] = {}) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        for name, value in {**self.extra_headers, **headers}.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def send_json(self, status: int, payload: Any, headers: Mapping[str, str] = {}) -> None:
        self.send(status, json.dumps(payload).encode(), "application/json", headers)

    def send_error_answer(self, error: ApiError) -> None:
        payload = {"__type": error.code, self.message_key: error.message, **error.fields}
        self.send_json(error.status, payload, {"X-Amzn-ErrorType": error.code})

    def unknown_operation(self) -> ApiError:
        return ApiError(
            HTTPStatus.NOT_FOUND, "UnknownOperationException", f"No operation at {self.command} {self.path}"
        )

    def do_POST(self) -> None:
        try:
            self.handle_post()
        except ApiError as error:
            self.send_error_answer(error)
        except Exception:
            log.exception("%s %s failed", self.command, self.path)
            self.send_error_answer(
                ApiError(
                    HTTPStatus.INTERNAL_SERVER_ERROR, self.internal_error_code, f"The {self.server_version} failed."
                )
            )

    def handle_post(self) -> None:
        raise self.unknown_operation()

    def do_GET(self) -> None:
        # Any body stays unread, so the connection cannot carry another request.
        self.close_connection = True
        self.send_error_answer(self.unknown_operation())

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

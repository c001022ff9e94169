"""A local SageMaker Runtime: InvokeEndpoint as botocore calls it, in front of real model processes.

Point boto3 at it with `AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME=<url>` (or `endpoint_url=`); handler code is
unchanged. `POST /endpoints/{EndpointName}/invocations` is answered as SageMaker does:

- the endpoint's production variants come from `resolve(endpoint_name)`; None (or no variants) is
  SageMaker's ValidationError "Endpoint X of account A not found." (HTTP 400);
- `X-Amzn-SageMaker-Target-Variant` pins a variant (an unknown one is a ValidationError); otherwise a
  variant is drawn at random in proportion to the variants' weights;
- the body goes to `<variant url>/invocations` with Content-Type, Accept and the custom-attributes and
  target-model headers; a 2xx answer comes back as is, with `x-Amzn-Invoked-Production-Variant`;
- a 4xx/5xx answer from the model becomes ModelError (HTTP 424) with OriginalStatusCode, OriginalMessage
  (the model's body), LogStreamArn and Message; a model slower than `model_timeout` a ModelError too;
- a model process that cannot be reached is ServiceUnavailable (HTTP 503).

Not emulated: InvokeEndpointAsync, InvokeEndpointWithResponseStream, sessions, explanations; inference
components only through the optional `resolve_component`.
"""

from __future__ import annotations

import http.client
import logging
import random
import re
import threading
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from sluice_local._http import LOOPBACK, ApiError, AwsHandler, LoopbackService

# SageMaker real-time endpoints take and return at most 6 MB.
MAX_PAYLOAD_BYTES = 6 * 1024 * 1024
# SageMaker gives a container 60 s to answer an invocation.
MODEL_TIMEOUT_SECONDS = 60.0
CONNECT_TIMEOUT_SECONDS = 2.0
ACCOUNT_ID = "123456789012"
_ENDPOINT_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
_ROUTE = re.compile(r"^/endpoints/([^/]+)/invocations$")
# Request headers passed on to the model container, as SageMaker does.
_FORWARDED = ("Content-Type", "Accept", "X-Amzn-SageMaker-Custom-Attributes", "X-Amzn-SageMaker-Target-Model")
_MAX_ORIGINAL_MESSAGE = 8192

log = logging.getLogger("sluice_local.sagemaker_runtime")


@dataclass(frozen=True)
class Variant:
    """A production variant: its name, its routing weight, and the base URL of its model server."""

    name: str
    weight: float
    url: str


Resolver = Callable[[str], Sequence[Variant] | None]
# (endpoint name, inference component name) -> the component's model server, or None if it has none.
ComponentResolver = Callable[[str, str], Variant | None]


@dataclass(frozen=True)
class _ModelAnswer:
    status: int
    body: bytes
    content_type: str | None
    custom_attributes: str | None


class _Unreachable(Exception):
    pass


class _ModelTimeout(Exception):
    pass


class _ConnectionPool:
    """Keep-alive connections to model servers, shared by the request threads."""

    def __init__(self, connect_timeout: float, read_timeout: float, max_idle: int = 8) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_idle = max_idle
        self._idle: dict[tuple[str, int], list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()
        self._closed = False

    def post(self, url: str, path: str, body: bytes, headers: dict[str, str], max_answer: int) -> _ModelAnswer:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise _Unreachable(f"model URL {url!r} is not http://host:port")
        key = (parts.hostname, parts.port or 80)
        target = (parts.path.rstrip("/") or "") + path
        with self._lock:
            idle = self._idle.get(key) or []
            reused = idle.pop() if idle else None
        if reused is not None:
            try:
                return self._exchange(key, reused, target, body, headers, max_answer)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # The server closed the idle connection before this request; a fresh one is safe to try.
                pass
        return self._exchange(key, None, target, body, headers, max_answer)

    def _exchange(
        self,
        key: tuple[str, int],
        conn: http.client.HTTPConnection | None,
        target: str,
        body: bytes,
        headers: dict[str, str],
        max_answer: int,
    ) -> _ModelAnswer:
        reused = conn is not None
        if conn is None:
            conn = http.client.HTTPConnection(key[0], key[1], timeout=self.connect_timeout)
            try:
                conn.connect()
            except OSError as exc:
                conn.close()
                raise _Unreachable(str(exc)) from exc
            assert conn.sock is not None
            conn.sock.settimeout(self.read_timeout)
        try:
            conn.request("POST", target, body=body, headers=headers)
            response = conn.getresponse()
            answer = response.read(max_answer + 1)
            if len(answer) > max_answer:
                conn.close()
                raise ValueError(f"the model's answer exceeds {max_answer} bytes")
            result = _ModelAnswer(
                response.status,
                answer,
                response.getheader("Content-Type"),
                response.getheader("X-Amzn-SageMaker-Custom-Attributes"),
            )
        except TimeoutError as exc:
            conn.close()
            raise _ModelTimeout() from exc
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            conn.close()
            if reused:
                raise
            raise _Unreachable("the model server closed the connection without answering") from None
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise _Unreachable(str(exc)) from exc
        if response.will_close:
            conn.close()
        else:
            with self._lock:
                idle = self._idle.setdefault(key, [])
                if not self._closed and len(idle) < self.max_idle:
                    idle.append(conn)
                    conn = None
            if conn is not None:
                conn.close()
        return result

    def close(self) -> None:
        with self._lock:
            connections = [conn for idle in self._idle.values() for conn in idle]
            self._idle.clear()
            self._closed = True
        for conn in connections:
            conn.close()


class LocalSageMakerRuntime(LoopbackService):
    """The local SageMaker Runtime. `start()` binds `host:port` (0: a free port) and returns the URL."""

    name = "local SageMaker runtime"

    def __init__(
        self,
        resolve: Resolver,
        *,
        host: str = LOOPBACK,
        port: int = 0,
        rng: random.Random | None = None,
        resolve_component: ComponentResolver | None = None,
        account_id: str = ACCOUNT_ID,
        region: str = "us-east-1",
        model_timeout: float = MODEL_TIMEOUT_SECONDS,
        connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
    ) -> None:
        super().__init__(host, port)
        self.resolve = resolve
        self.resolve_component = resolve_component
        self.account_id = account_id
        self.region = region
        self._rng = rng or random.Random()  # noqa: S311 - traffic splitting, not security
        self._rng_lock = threading.Lock()
        self._pool = _ConnectionPool(connect_timeout, model_timeout)

    def stop(self) -> None:
        super().stop()
        pool, self._pool = self._pool, _ConnectionPool(self._pool.connect_timeout, self._pool.read_timeout)
        pool.close()

    # The steps of one invocation, kept off the handler so they read as SageMaker's rules.

    def choose_variant(self, endpoint: str, target_variant: str | None, component: str | None) -> Variant:
        if component:
            variant = self.resolve_component(endpoint, component) if self.resolve_component else None
            if variant is None:
                raise _validation(
                    f"Inference component {component} for endpoint {endpoint} of account {self.account_id} "
                    "not found."
                    + ("" if self.resolve_component else " (inference components are not emulated locally)")
                )
            return variant
        variants = list(self.resolve(endpoint) or ())
        if not variants:
            raise _validation(f"Endpoint {endpoint} of account {self.account_id} not found.")
        if target_variant:
            for variant in variants:
                if variant.name == target_variant:
                    return variant
            names = ", ".join(v.name for v in variants)
            raise _validation(
                f"Variant {target_variant} not found for endpoint {endpoint} of account {self.account_id}; "
                f"its production variants are: {names}."
            )
        weighted = [v for v in variants if v.weight > 0]
        if not weighted:
            raise _validation(f"Endpoint {endpoint} has no production variant with a weight above 0.")
        with self._rng_lock:
            return self._rng.choices(weighted, weights=[v.weight for v in weighted])[0]

    def call_model(self, endpoint: str, variant: Variant, body: bytes, headers: dict[str, str]) -> _ModelAnswer:
        try:
            answer = self._pool.post(variant.url, "/invocations", body, headers, MAX_PAYLOAD_BYTES)
        except _Unreachable as exc:
            log.warning("variant %s of endpoint %s unreachable at %s: %s", variant.name, endpoint, variant.url, exc)
            raise ApiError(
                HTTPStatus.SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                f"The model server of variant {variant.name} of endpoint {endpoint} is not reachable "
                f"({variant.url}: {exc}).",
            ) from exc
        except _ModelTimeout:
            raise self._model_error(
                endpoint,
                "Your invocation timed out while waiting for a response from container primary. "
                "Review the latency metrics for each container in Amazon CloudWatch, resolve the issue, and try again.",
            ) from None
        except ValueError as exc:
            raise self._model_error(endpoint, f"Received an invalid response from primary: {exc}.") from None
        if 200 <= answer.status < 300:
            return answer
        original = answer.body[:_MAX_ORIGINAL_MESSAGE].decode("utf-8", errors="replace")
        kind = "client" if answer.status < 500 else "server"
        raise self._model_error(
            endpoint,
            f'Received {kind} error ({answer.status}) from primary with message "{original}". '
            f"See {self._log_console_url(endpoint)} in account {self.account_id} for more information.",
            OriginalStatusCode=answer.status,
            OriginalMessage=original,
        )

    def _log_group(self, endpoint: str) -> str:
        return f"/aws/sagemaker/Endpoints/{endpoint}"

    def _log_console_url(self, endpoint: str) -> str:
        return (
            f"https://{self.region}.console.aws.amazon.com/cloudwatch/home?region={self.region}"
            f"#logEventViewer:group={self._log_group(endpoint)}"
        )

    def _model_error(self, endpoint: str, message: str, **fields: Any) -> ApiError:
        arn = f"arn:aws:logs:{self.region}:{self.account_id}:log-group:{self._log_group(endpoint)}"
        return ApiError(HTTPStatus.FAILED_DEPENDENCY, "ModelError", message, LogStreamArn=arn, **fields)


def _validation(message: str) -> ApiError:
    return ApiError(HTTPStatus.BAD_REQUEST, "ValidationError", message)


class _Handler(AwsHandler):
    server_version = "sluice-local-sagemaker-runtime"
    max_body_bytes = MAX_PAYLOAD_BYTES
    validation_code = "ValidationError"
    message_key = "Message"
    internal_error_code = "InternalFailure"

    def handle_post(self) -> None:
        app: LocalSageMakerRuntime = self.server.app
        body = self.read_body()
        match = _ROUTE.match(urllib.parse.urlsplit(self.path).path)
        if match is None:
            raise self.unknown_operation()
        endpoint = urllib.parse.unquote(match.group(1))
        if not _ENDPOINT_NAME.match(endpoint):
            raise _validation(
                f"1 validation error detected: Value '{endpoint}' at 'endpointName' failed to satisfy constraint: "
                "Member must satisfy regular expression pattern: ^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}"
            )
        variant = app.choose_variant(
            endpoint,
            self.headers.get("X-Amzn-SageMaker-Target-Variant"),
            self.headers.get("X-Amzn-SageMaker-Inference-Component"),
        )
        forwarded = {name: value for name in _FORWARDED if (value := self.headers.get(name)) is not None}
        answer = app.call_model(endpoint, variant, body, forwarded)
        headers = {"x-Amzn-Invoked-Production-Variant": variant.name}
        if answer.custom_attributes is not None:
            headers["X-Amzn-SageMaker-Custom-Attributes"] = answer.custom_attributes
        self.send(HTTPStatus.OK, answer.body, answer.content_type or "application/octet-stream", headers)


LocalSageMakerRuntime.handler_class = _Handler

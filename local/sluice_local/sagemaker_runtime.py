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
- a model process that cannot be reached is ServiceUnavailable (HTTP 503);
- with `metrics` (runtime_metrics.RuntimeMetrics), every invocation routed to a variant is counted in SageMaker's
  per-variant metrics (Invocations, Invocation4XX/5XXErrors, ModelLatency, OverheadLatency);
- an endpoint configured for asynchronous inference is a ValidationError here (use InvokeEndpointAsync); whether
  it is async is remembered for ASYNC_CHECK_TTL_SECONDS.

`POST /endpoints/{EndpointName}/async-invocations` (InvokeEndpointAsync) needs the optional
`resolve_async(endpoint_name) -> AsyncConfig | None` (the endpoint config's AsyncInferenceConfig; None: not
an async endpoint, a ValidationError) and the embedded AWS's URL (`aws_url`). It answers 202 with the
InferenceId (the caller's, or a new UUID) and the X-Amzn-SageMaker-OutputLocation (and, when the config has an
S3FailurePath, FailureLocation) headers; then, in the background:

- reads the input from X-Amzn-SageMaker-InputLocation (s3://) in the embedded S3, or takes the inline body
  (at most 128,000 bytes; exactly one of the two);
- invokes a variant drawn by weight, with X-Amzn-SageMaker-Content-Type / Accept / Custom-Attributes as the
  model's Content-Type / Accept / custom attributes, within X-Amzn-SageMaker-InvocationTimeoutSeconds (900);
- success: writes the model's answer to `<S3OutputPath>[/<S3OutputPathExtension>]/<Filename or a new
  UUID>.out` and publishes to the NotificationConfig SuccessTopic;
- failure: writes the model's error body (a model 4xx/5xx) to `<S3FailurePath>[/<ext>]/<same stem>-error.out`
  and publishes to the ErrorTopic.

The SNS message is SageMaker's documented InferenceResult event (async-inference-check-predictions):
{"awsRegion", "eventTime", "receivedTime", "invocationStatus": "Completed" | "Failed", ["failureReason"],
"requestParameters": {["accept"], ["contentType"], ["customAttributes"], "endpointName", ["inputLocation"]},
"responseParameters": {"contentType", "outputLocation" | "failureLocation"}, "inferenceId",
"eventVersion": "1.0", "eventSource": "aws:sagemaker", "eventName": "InferenceResult"}; times are UTC ISO 8601
with milliseconds and "Z". A model error's failureReason is SageMaker's: "ClientError: Received client|server
error (<status>) from model. See the SageMaker Endpoint logs in your account for more information."; the model's
message is in the failure object.

Not emulated: InvokeEndpointWithResponseStream, sessions, explanations; for async: the queue (requests start at
once, so RequestTTLSeconds never expires one), IncludeInferenceResponseIn, https:// input locations, scaling;
inference components only through the optional `resolve_component`.
"""

from __future__ import annotations

import http.client
import json
import logging
import random
import re
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from sluice_local._http import LOOPBACK, ApiError, AwsHandler, LoopbackService
from sluice_local.runtime_metrics import RuntimeMetrics

# SageMaker real-time endpoints take and return at most 6 MB.
MAX_PAYLOAD_BYTES = 6 * 1024 * 1024
# SageMaker gives a container 60 s to answer an invocation.
MODEL_TIMEOUT_SECONDS = 60.0
CONNECT_TIMEOUT_SECONDS = 2.0
ACCOUNT_ID = "123456789012"
_ENDPOINT_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
_ROUTE = re.compile(r"^/endpoints/([^/]+)/invocations$")
_ASYNC_ROUTE = re.compile(r"^/endpoints/([^/]+)/async-invocations$")
# InvokeEndpointAsync: an inline body is at most this big; the model gets this long by default.
MAX_ASYNC_INLINE_BYTES = 128_000
ASYNC_INVOCATION_TIMEOUT_SECONDS = 900
ASYNC_WORKERS = 4
# InvokeEndpoint checks that an endpoint is not async from a memo this old at most (resolving costs two calls
# to the embedded SageMaker, which would double the local latency of every invocation).
ASYNC_CHECK_TTL_SECONDS = 5.0
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


@dataclass(frozen=True)
class AsyncConfig:
    """An endpoint config's AsyncInferenceConfig, as far as local mode uses it."""

    output_path: str
    failure_path: str | None = None
    success_topic: str | None = None
    error_topic: str | None = None

    @classmethod
    def from_api(cls, config: Mapping[str, Any] | None) -> AsyncConfig | None:
        """From DescribeEndpointConfig's AsyncInferenceConfig (None or no OutputConfig: not async)."""
        output = (config or {}).get("OutputConfig") or {}
        if not output.get("S3OutputPath"):
            return None
        notification = output.get("NotificationConfig") or {}
        return cls(
            output_path=output["S3OutputPath"],
            failure_path=output.get("S3FailurePath") or None,
            success_topic=notification.get("SuccessTopic") or None,
            error_topic=notification.get("ErrorTopic") or None,
        )


Resolver = Callable[[str], Sequence[Variant] | None]
# endpoint name -> its asynchronous inference config, or None if it is not an async endpoint.
AsyncResolver = Callable[[str], AsyncConfig | None]
# (endpoint name, inference component name) -> the component's model server, or None if it has none.
ComponentResolver = Callable[[str, str], Variant | None]


@dataclass(frozen=True)
class _ModelAnswer:
    status: int
    body: bytes
    content_type: str | None
    custom_attributes: str | None


@dataclass(frozen=True)
class _AsyncRequest:
    endpoint: str
    inference_id: str
    config: AsyncConfig
    input_location: str | None
    body: bytes | None
    model_headers: dict[str, str]
    request_parameters: dict[str, str]
    invocation_timeout: float
    output_location: str
    failure_location: str | None
    received_time: str


class _AsyncFailure(Exception):
    """An async inference failed: the failureReason, and the body written to the failure location."""

    def __init__(self, reason: str, body: bytes | None = None, content_type: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.body = body
        self.content_type = content_type


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

    def post(
        self,
        url: str,
        path: str,
        body: bytes,
        headers: dict[str, str],
        max_answer: int,
        read_timeout: float | None = None,
    ) -> _ModelAnswer:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise _Unreachable(f"model URL {url!r} is not http://host:port")
        key = (parts.hostname, parts.port or 80)
        target = (parts.path.rstrip("/") or "") + path
        with self._lock:
            idle = self._idle.get(key) or []
            reused = idle.pop() if idle else None
        timeout = read_timeout or self.read_timeout
        if reused is not None:
            try:
                return self._exchange(key, reused, target, body, headers, max_answer, timeout)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # The server closed the idle connection before this request; a fresh one is safe to try.
                pass
        return self._exchange(key, None, target, body, headers, max_answer, timeout)

    def _exchange(
        self,
        key: tuple[str, int],
        conn: http.client.HTTPConnection | None,
        target: str,
        body: bytes,
        headers: dict[str, str],
        max_answer: int,
        read_timeout: float,
    ) -> _ModelAnswer:
        reused = conn is not None
        if conn is None:
            conn = http.client.HTTPConnection(key[0], key[1], timeout=self.connect_timeout)
            try:
                conn.connect()
            except OSError as exc:
                conn.close()
                raise _Unreachable(str(exc)) from exc
        if conn.sock is not None:
            conn.sock.settimeout(read_timeout)
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
        resolve_async: AsyncResolver | None = None,
        aws_url: str | None = None,
        async_workers: int = ASYNC_WORKERS,
        metrics: RuntimeMetrics | None = None,
    ) -> None:
        super().__init__(host, port)
        self.metrics = metrics
        self.resolve = resolve
        self.resolve_component = resolve_component
        self.resolve_async = resolve_async
        self.aws_url = aws_url
        self.account_id = account_id
        self.region = region
        self._rng = rng or random.Random()  # noqa: S311 - traffic splitting, not security
        self._rng_lock = threading.Lock()
        self._pool = _ConnectionPool(connect_timeout, model_timeout)
        self._async_workers = async_workers
        self._async: ThreadPoolExecutor | None = None
        self._async_lock = threading.Lock()
        self._aws_clients: dict[str, Any] = {}
        self._async_known: dict[str, tuple[float, bool]] = {}

    def stop(self) -> None:
        super().stop()
        with self._async_lock:
            executor, self._async = self._async, None
        if executor is not None:
            # Queued inferences are dropped; running ones finish (bounded by their invocation timeout).
            executor.shutdown(wait=False, cancel_futures=True)
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

    def call_model(
        self, endpoint: str, variant: Variant, body: bytes, headers: dict[str, str], timeout: float | None = None
    ) -> _ModelAnswer:
        try:
            answer = self._pool.post(variant.url, "/invocations", body, headers, MAX_PAYLOAD_BYTES, timeout)
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

    def call_model_measured(
        self, endpoint: str, variant: Variant, body: bytes, headers: dict[str, str], started: float
    ) -> _ModelAnswer:
        """call_model, recorded in the variant's metrics (when the runtime has some) as SageMaker counts it."""
        if self.metrics is None:
            return self.call_model(endpoint, variant, body, headers)
        sent = time.perf_counter()
        status, model_seconds = 500, None
        try:
            answer = self.call_model(endpoint, variant, body, headers)
            status, model_seconds = answer.status, time.perf_counter() - sent
            return answer
        except ApiError as error:
            original = error.fields.get("OriginalStatusCode")
            if original is not None:
                status, model_seconds = int(original), time.perf_counter() - sent
            raise
        finally:
            ended = time.perf_counter()
            overhead = (ended - started) - (model_seconds or 0.0)
            self.metrics.record(
                endpoint,
                variant.name,
                status,
                None if model_seconds is None else model_seconds * 1e6,
                max(0.0, overhead) * 1e6,
            )

    def refuse_async_endpoint(self, endpoint: str) -> None:
        """InvokeEndpoint on an endpoint configured for asynchronous inference is refused, as on AWS."""
        if self.resolve_async is None:
            return
        now = time.monotonic()
        with self._async_lock:
            known = self._async_known.get(endpoint)
        if known is None or known[0] <= now:
            known = (now + ASYNC_CHECK_TTL_SECONDS, self.resolve_async(endpoint) is not None)
            with self._async_lock:
                self._async_known[endpoint] = known
        if known[1]:
            raise _validation(
                f"Endpoint {endpoint} of account {self.account_id} is configured for asynchronous inference; "
                "invoke it with InvokeEndpointAsync."
            )

    # InvokeEndpointAsync: accepted at once, run in the background.

    def accept_async(self, endpoint: str, headers: Mapping[str, str], body: bytes) -> _AsyncRequest:
        config = self.resolve_async(endpoint) if self.resolve_async is not None else None
        with self._async_lock:
            self._async_known[endpoint] = (time.monotonic() + ASYNC_CHECK_TTL_SECONDS, config is not None)
        if config is None:
            if not self.resolve(endpoint):
                raise _validation(f"Endpoint {endpoint} of account {self.account_id} not found.")
            raise _validation(
                f"Endpoint {endpoint} of account {self.account_id} is not configured for asynchronous inference "
                "(its endpoint config has no AsyncInferenceConfig)."
            )
        input_location = headers.get("X-Amzn-SageMaker-InputLocation")
        if input_location and body:
            raise _validation("Provide exactly one of InputLocation and Body, not both.")
        if not input_location and not body:
            raise _validation("Provide exactly one of InputLocation and Body.")
        if input_location and not input_location.startswith("s3://"):
            raise _validation(
                f"InputLocation {input_location} is not supported locally: use an s3:// URI of the embedded S3."
            )
        if len(body) > MAX_ASYNC_INLINE_BYTES:
            raise _validation(f"Body of {len(body)} bytes exceeds the inline limit of {MAX_ASYNC_INLINE_BYTES} bytes.")
        _int_header(headers, "X-Amzn-SageMaker-RequestTTLSeconds", "RequestTTLSeconds", 60, 21600)
        timeout = _int_header(headers, "X-Amzn-SageMaker-InvocationTimeoutSeconds", "InvocationTimeoutSeconds", 1, 3600)
        inference_id = headers.get("X-Amzn-SageMaker-Inference-Id") or str(uuid.uuid4())
        if len(inference_id) > 64 or not inference_id.isprintable() or inference_id[0].isspace():
            raise _validation("InferenceId must be 1 to 64 printable characters, not starting with whitespace.")
        extension = headers.get("X-Amzn-SageMaker-S3OutputPathExtension")
        filename = headers.get("X-Amzn-SageMaker-Filename")
        stem = filename or str(uuid.uuid4())
        content_type = headers.get("X-Amzn-SageMaker-Content-Type")
        accept = headers.get("X-Amzn-SageMaker-Accept")
        custom = headers.get("X-Amzn-SageMaker-Custom-Attributes")
        model_headers = {
            name: value
            for name, value in (
                ("Content-Type", content_type),
                ("Accept", accept),
                ("X-Amzn-SageMaker-Custom-Attributes", custom),
            )
            if value is not None
        }
        request_parameters = {
            key: value
            for key, value in (
                ("accept", accept),
                ("contentType", content_type),
                ("customAttributes", custom),
                ("endpointName", endpoint),
                ("inputLocation", input_location),
            )
            if value is not None
        }
        request = _AsyncRequest(
            endpoint=endpoint,
            inference_id=inference_id,
            config=config,
            input_location=input_location or None,
            body=None if input_location else body,
            model_headers=model_headers,
            request_parameters=request_parameters,
            invocation_timeout=float(timeout or ASYNC_INVOCATION_TIMEOUT_SECONDS),
            output_location=_s3_join(config.output_path, extension, stem if filename else f"{stem}.out"),
            failure_location=_s3_join(config.failure_path, extension, f"{stem}-error.out")
            if config.failure_path
            else None,
            received_time=_event_time(),
        )
        with self._async_lock:
            if self._async is None:
                self._async = ThreadPoolExecutor(self._async_workers, thread_name_prefix="sagemaker-async")
            self._async.submit(self._run_async, request)
        return request

    def _run_async(self, request: _AsyncRequest) -> None:
        try:
            try:
                answer = self._infer_async(request)
            except _AsyncFailure as failure:
                self._async_failed(request, failure)
                return
            bucket, key = _s3_split(request.output_location)
            content_type = answer.content_type or "application/octet-stream"
            try:
                self._aws("s3").put_object(Bucket=bucket, Key=key, Body=answer.body, ContentType=content_type)
            except (ClientError, BotoCoreError) as exc:
                self._async_failed(
                    request,
                    _AsyncFailure(f"InternalFailure: could not write the output to {request.output_location}: {exc}"),
                )
                return
            self._notify(
                request.config.success_topic,
                request,
                "Completed",
                {"contentType": content_type, "outputLocation": request.output_location},
            )
        except Exception:
            log.exception("async inference %s on endpoint %s failed", request.inference_id, request.endpoint)

    def _infer_async(self, request: _AsyncRequest) -> _ModelAnswer:
        if request.body is not None:
            payload = request.body
        else:
            assert request.input_location is not None
            bucket, key = _s3_split(request.input_location)
            try:
                payload = self._aws("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
            except (ClientError, BotoCoreError) as exc:
                raise _AsyncFailure(
                    f"ClientError: Failed to download the input from {request.input_location}: {exc}"
                ) from None
        try:
            variant = self.choose_variant(request.endpoint, None, None)
            return self.call_model(
                request.endpoint, variant, payload, request.model_headers, timeout=request.invocation_timeout
            )
        except ApiError as error:
            status = error.fields.get("OriginalStatusCode")
            if status is None:
                raise _AsyncFailure(f"{error.code}: {error.message}", error.message.encode(), "text/plain") from None
            kind = "client" if status < 500 else "server"
            raise _AsyncFailure(
                f"ClientError: Received {kind} error ({status}) from model. See the SageMaker Endpoint logs in your "
                "account for more information.",
                str(error.fields.get("OriginalMessage", "")).encode(),
            ) from None

    def _async_failed(self, request: _AsyncRequest, failure: _AsyncFailure) -> None:
        response: dict[str, str] = {}
        if request.failure_location is not None and failure.body is not None:
            bucket, key = _s3_split(request.failure_location)
            content_type = failure.content_type or "application/octet-stream"
            try:
                self._aws("s3").put_object(Bucket=bucket, Key=key, Body=failure.body, ContentType=content_type)
                response = {"contentType": content_type, "failureLocation": request.failure_location}
            except (ClientError, BotoCoreError) as exc:
                log.warning("could not write %s: %s", request.failure_location, exc)
        self._notify(request.config.error_topic, request, "Failed", response, failure.reason)

    def _notify(
        self,
        topic: str | None,
        request: _AsyncRequest,
        status: str,
        response_parameters: dict[str, str],
        failure_reason: str | None = None,
    ) -> None:
        log.info(
            "async inference %s on endpoint %s: %s %s",
            request.inference_id,
            request.endpoint,
            status,
            failure_reason or "",
        )
        if not topic:
            return
        message: dict[str, Any] = {
            "awsRegion": self.region,
            "eventTime": _event_time(),
            "receivedTime": request.received_time,
            "invocationStatus": status,
        }
        if failure_reason is not None:
            message["failureReason"] = failure_reason
        message["requestParameters"] = request.request_parameters
        if response_parameters:
            message["responseParameters"] = response_parameters
        message.update(
            inferenceId=request.inference_id,
            eventVersion="1.0",
            eventSource="aws:sagemaker",
            eventName="InferenceResult",
        )
        try:
            self._aws("sns").publish(TopicArn=topic, Message=json.dumps(message))
        except (ClientError, BotoCoreError) as exc:
            log.warning("could not publish the async inference result to %s: %s", topic, exc)

    def _aws(self, service: str) -> Any:
        with self._async_lock:
            if service not in self._aws_clients:
                self._aws_clients[service] = boto3.session.Session().client(
                    service,
                    endpoint_url=self.aws_url,
                    region_name=self.region,
                    config=Config(retries={"max_attempts": 2}, s3={"addressing_style": "path"}),
                )
            return self._aws_clients[service]

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


def _int_header(headers: Mapping[str, str], header: str, member: str, low: int, high: int) -> int | None:
    raw = headers.get(header)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise _validation(
            f"1 validation error detected: Value '{raw}' at '{member[0].lower()}{member[1:]}' failed to satisfy "
            f"constraint: Member must have value between {low} and {high}"
        )
    return value


def _s3_join(base: str, *parts: str | None) -> str:
    return "/".join([base.rstrip("/"), *(part.strip("/") for part in parts if part)])


def _s3_split(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def _event_time() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Handler(AwsHandler):
    server_version = "sluice-local-sagemaker-runtime"
    max_body_bytes = MAX_PAYLOAD_BYTES
    validation_code = "ValidationError"
    message_key = "Message"
    internal_error_code = "InternalFailure"

    def handle_post(self) -> None:
        started = time.perf_counter()
        app: LocalSageMakerRuntime = self.server.app
        body = self.read_body()
        path = urllib.parse.urlsplit(self.path).path
        match = _ROUTE.match(path) or _ASYNC_ROUTE.match(path)
        if match is None:
            raise self.unknown_operation()
        endpoint = urllib.parse.unquote(match.group(1))
        if not _ENDPOINT_NAME.match(endpoint):
            raise _validation(
                f"1 validation error detected: Value '{endpoint}' at 'endpointName' failed to satisfy constraint: "
                "Member must satisfy regular expression pattern: ^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}"
            )
        if match.re is _ASYNC_ROUTE:
            request = app.accept_async(endpoint, self.headers, body)
            headers = {"X-Amzn-SageMaker-OutputLocation": request.output_location}
            if request.failure_location is not None:
                headers["X-Amzn-SageMaker-FailureLocation"] = request.failure_location
            self.send_json(HTTPStatus.ACCEPTED, {"InferenceId": request.inference_id}, headers)
            return
        app.refuse_async_endpoint(endpoint)
        variant = app.choose_variant(
            endpoint,
            self.headers.get("X-Amzn-SageMaker-Target-Variant"),
            self.headers.get("X-Amzn-SageMaker-Inference-Component"),
        )
        forwarded = {name: value for name in _FORWARDED if (value := self.headers.get(name)) is not None}
        answer = app.call_model_measured(endpoint, variant, body, forwarded, started)
        headers = {"x-Amzn-Invoked-Production-Variant": variant.name}
        if answer.custom_attributes is not None:
            headers["X-Amzn-SageMaker-Custom-Attributes"] = answer.custom_attributes
        self.send(HTTPStatus.OK, answer.body, answer.content_type or "application/octet-stream", headers)


LocalSageMakerRuntime.handler_class = _Handler

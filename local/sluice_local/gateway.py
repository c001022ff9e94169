"""A local API Gateway (REST, Lambda proxy): HTTP in, the template's authorizer, then the function.

Does what `sam local start-api` would: builds the proxy event API Gateway sends, runs the Lambda
REQUEST authorizer first (with its cache TTL) and passes its context on, renders the template's
gateway responses for 401/403/404, and turns the proxy response back into HTTP. Usage plans
(throttling, quotas) are not enforced locally.
"""

from __future__ import annotations

import base64
import fnmatch
import json
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sluice_local._http import content_length
from sluice_local.api_routes import ApiDefinition, Authorizer, Route

ACCOUNT = "123456789012"
MAX_BODY = 10 * 1024 * 1024  # API Gateway's own limit
Invoke = Callable[[str, dict[str, Any]], Any]

_DEFAULT_STATUS = {
    "UNAUTHORIZED": 401,
    "ACCESS_DENIED": 403,
    "MISSING_AUTHENTICATION_TOKEN": 403,
    "REQUEST_TOO_LARGE": 413,
    "BAD_REQUEST_BODY": 400,
    "AUTHORIZER_FAILURE": 500,
    "INTEGRATION_FAILURE": 502,
}
_DEFAULT_MESSAGE = {
    "UNAUTHORIZED": "Unauthorized",
    "ACCESS_DENIED": "User is not authorized to access this resource",
    "MISSING_AUTHENTICATION_TOKEN": "Missing Authentication Token",
    "REQUEST_TOO_LARGE": "Request Too Long",
    "BAD_REQUEST_BODY": "Invalid request body",
    "AUTHORIZER_FAILURE": "Authorizer error",
    "INTEGRATION_FAILURE": "Internal server error",
}


class LocalApiGateway:
    def __init__(self, api: ApiDefinition, invoke: Invoke, *, region: str, api_id: str = "local") -> None:
        self.api = api
        self._invoke = invoke
        self.region = region
        self.api_id = api_id
        self._cache: dict[tuple, tuple[float, dict | None]] = {}
        # One request at a time per function, as one Lambda container would (the resolver keeps
        # per-request state in module globals).
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    # ------------------------------------------------------------------ request handling
    def handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes, source_ip: str) -> tuple:
        """Returns (status, headers, body bytes)."""
        request_id = str(uuid.uuid4())
        split = urlsplit(raw_path)
        if len(body) > MAX_BODY:
            return self._gateway_response("REQUEST_TOO_LARGE", request_id)
        found = self.api.find(method, split.path)
        if found is None:
            return self._gateway_response("MISSING_AUTHENTICATION_TOKEN", request_id)
        route, path_params = found
        event = self._proxy_event(route, method, split, headers, body, path_params, request_id, source_ip)
        if route.authorizer is not None:
            outcome = self._authorize(route.authorizer, event)
            if isinstance(outcome, str):
                return self._gateway_response(outcome, request_id)
            event["requestContext"]["authorizer"] = outcome
        try:
            result = self._call(route.function, event)
        except Exception:  # noqa: BLE001 - a function error is a 502, as on API Gateway
            return self._gateway_response("INTEGRATION_FAILURE", request_id)
        if not isinstance(result, dict) or "statusCode" not in result:
            return self._gateway_response("INTEGRATION_FAILURE", request_id)
        return self._http_response(result)

    def _call(self, function: str, event: dict[str, Any]) -> Any:
        with self._locks_guard:
            lock = self._locks.setdefault(function, threading.Lock())
        with lock:
            result = self._invoke(function, event)
        if isinstance(result, dict) and "errorType" in result and "statusCode" not in result:
            raise RuntimeError(result.get("errorMessage", "function error"))
        return result

    def _authorize(self, authorizer: Authorizer, event: dict[str, Any]) -> dict[str, Any] | str:
        lowered = {name.lower(): value for name, value in event["headers"].items()}
        identity = tuple(lowered.get(name.lower()) for name in authorizer.identity_headers)
        if any(value is None or value == "" for value in identity):
            # API Gateway answers without calling the authorizer when the identity source is missing.
            return "UNAUTHORIZED"
        cached = self._cache.get((authorizer.function, identity))
        if cached and cached[0] > time.monotonic():
            decision = cached[1]
        else:
            decision = self._run_authorizer(authorizer, event)
            if authorizer.cache_ttl_seconds > 0:
                self._cache[(authorizer.function, identity)] = (
                    time.monotonic() + authorizer.cache_ttl_seconds,
                    decision,
                )
        if decision is None:
            return "UNAUTHORIZED"
        if not _allows(decision.get("policyDocument") or {}, event["methodArn"]):
            return "ACCESS_DENIED"
        context = dict((decision.get("context") or {}).items())
        context["principalId"] = decision.get("principalId")
        return context

    def _run_authorizer(self, authorizer: Authorizer, event: dict[str, Any]) -> dict[str, Any] | None:
        request = {
            "type": "REQUEST",
            "methodArn": event["methodArn"],
            **{key: event[key] for key in ("resource", "path", "httpMethod", "headers", "multiValueHeaders")},
            **{key: event[key] for key in ("queryStringParameters", "multiValueQueryStringParameters")},
            "pathParameters": event["pathParameters"],
            "stageVariables": None,
            "requestContext": {k: v for k, v in event["requestContext"].items() if k != "authorizer"},
        }
        try:
            return self._call(authorizer.function, request)
        except Exception:  # noqa: BLE001 - "Unauthorized" or any failure: no access
            return None

    # ------------------------------------------------------------------ shapes
    def _proxy_event(
        self,
        route: Route,
        method: str,
        split: Any,
        headers: dict[str, str],
        body: bytes,
        path_params: dict[str, str],
        request_id: str,
        source_ip: str,
    ) -> dict[str, Any]:
        multi_query = dict(parse_qs(split.query, keep_blank_values=True).items())
        content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
        binary = any(fnmatch.fnmatch(content_type.split(";")[0].strip(), t) for t in self.api.binary_media_types)
        if binary:
            text, encoded = base64.b64encode(body).decode(), True
        else:
            try:
                text, encoded = body.decode("utf-8"), False
            except UnicodeDecodeError:
                text, encoded = base64.b64encode(body).decode(), True
        stage = self.api.stage
        now = datetime.now(UTC)
        return {
            "resource": route.path,
            "path": split.path,
            "httpMethod": method,
            "headers": dict(headers),
            "multiValueHeaders": {key: [value] for key, value in headers.items()},
            "queryStringParameters": {k: v[-1] for k, v in multi_query.items()} or None,
            "multiValueQueryStringParameters": multi_query or None,
            "pathParameters": path_params or None,
            "stageVariables": None,
            "methodArn": f"arn:aws:execute-api:{self.region}:{ACCOUNT}:{self.api_id}/{stage}/{method}{split.path}",
            "requestContext": {
                "resourceId": "local",
                "resourcePath": route.path,
                "httpMethod": method,
                "extendedRequestId": request_id,
                "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
                "requestTimeEpoch": int(now.timestamp() * 1000),
                "path": f"/{stage}{split.path}",
                "accountId": ACCOUNT,
                "protocol": "HTTP/1.1",
                "stage": stage,
                "domainPrefix": "localhost",
                "domainName": "localhost",
                "requestId": request_id,
                "apiId": self.api_id,
                "identity": {
                    "sourceIp": source_ip,
                    "userAgent": next((v for k, v in headers.items() if k.lower() == "user-agent"), None),
                    "userArn": None,
                    "caller": None,
                    "accountId": None,
                    "accessKey": None,
                },
            },
            "body": text if body else None,
            "isBase64Encoded": encoded,
        }

    def _gateway_response(self, kind: str, request_id: str) -> tuple:
        status, template = self.api.gateway_responses.get(kind, (None, ""))
        family = "DEFAULT_4XX" if _DEFAULT_STATUS.get(kind, 500) < 500 else "DEFAULT_5XX"
        if not template:
            status = status or self.api.gateway_responses.get(family, (None, ""))[0]
            template = self.api.gateway_responses.get(family, (None, ""))[1]
        message = _DEFAULT_MESSAGE.get(kind, "Error")
        body = (
            template.replace("$context.requestId", request_id).replace(
                "$context.error.messageString", json.dumps(message)
            )
            if template
            else json.dumps({"message": message})
        )
        headers = {"Content-Type": "application/json", "x-amzn-RequestId": request_id}
        if kind == "UNAUTHORIZED":
            headers["WWW-Authenticate"] = "Bearer"
        return status or _DEFAULT_STATUS.get(kind, 500), headers, body.encode()

    def _http_response(self, result: dict[str, Any]) -> tuple:
        headers: dict[str, str] = {}
        for key, values in (result.get("multiValueHeaders") or {}).items():
            headers[key] = ", ".join(str(v) for v in values)
        headers.update({key: str(value) for key, value in (result.get("headers") or {}).items()})
        body = result.get("body") or ""
        payload = base64.b64decode(body) if result.get("isBase64Encoded") else str(body).encode()
        return int(result["statusCode"]), headers, payload

    # ------------------------------------------------------------------ HTTP
    def serve(self, host: str, port: int) -> ThreadingHTTPServer:
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def _handle(self) -> None:
                length = content_length(self.headers)
                if length < 0:
                    # The connection cannot be trusted past a bad length: answer in API Gateway's shape and close.
                    self.close_connection = True
                    status, out_headers, payload = gateway._gateway_response("BAD_REQUEST_BODY", str(uuid.uuid4()))
                else:
                    body = self.rfile.read(length) if length else b""
                    headers = dict(self.headers.items())
                    status, out_headers, payload = gateway.handle(
                        self.command, self.path, headers, body, self.client_address[0]
                    )
                self.send_response(status)
                for key, value in out_headers.items():
                    if key.lower() not in ("content-length", "connection", "transfer-encoding"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            def __getattr__(self, name: str) -> Any:
                # http.server answers a method without a do_<METHOD> with its own 501 HTML page; API Gateway
                # answers every method, an unknown one with its missing-route 403, so every method is routed.
                if name.startswith("do_"):
                    return self._handle
                raise AttributeError(name)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = _ApiServer((host, port), Handler)
        threading.Thread(target=server.serve_forever, name="sluice-local-api", daemon=True).start()
        return server


class _ApiServer(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's backlog of 5 resets connections under a burst of concurrent clients (make bench-jobs).
    request_queue_size = 128


def _allows(policy: dict[str, Any], method_arn: str) -> bool:
    allowed = False
    statements = policy.get("Statement") or []
    for statement in statements if isinstance(statements, list) else [statements]:
        resources = statement.get("Resource") or []
        resources = resources if isinstance(resources, list) else [resources]
        if any(fnmatch.fnmatchcase(method_arn, pattern) for pattern in resources):
            if statement.get("Effect") == "Deny":
                return False
            allowed = allowed or statement.get("Effect") == "Allow"
    return allowed

"""Amazon Bedrock runtime: Converse for chat, InvokeModel for embeddings and native bodies."""

from __future__ import annotations

import time
from typing import Any

from sluice import clients
from sluice.catalog.models import BedrockBackend
from sluice.providers.errors import translate_errors
from sluice.providers.result import BackendResult

SERVICE = "bedrock-runtime"


def converse(backend: BedrockBackend, request: dict[str, Any], timeout_seconds: float) -> BackendResult:
    client = clients.get(SERVICE, timeout_seconds)
    started = time.perf_counter()
    with translate_errors("bedrock"):
        response = client.converse(modelId=backend.model_id, **request)
    elapsed_ms = (time.perf_counter() - started) * 1000
    usage = response.get("usage", {})
    return BackendResult(
        body=response,
        content_type="application/json",
        backend_latency_ms=response.get("metrics", {}).get("latencyMs", elapsed_ms),
        input_tokens=usage.get("inputTokens"),
        output_tokens=usage.get("outputTokens"),
    )


def invoke_model(
    backend: BedrockBackend, body: bytes, content_type: str, accept: str, timeout_seconds: float
) -> BackendResult:
    client = clients.get(SERVICE, timeout_seconds)
    started = time.perf_counter()
    with translate_errors("bedrock"):
        response = client.invoke_model(modelId=backend.model_id, body=body, contentType=content_type, accept=accept)
        payload = response["body"].read()
    elapsed_ms = (time.perf_counter() - started) * 1000
    # Bedrock reports token counts in headers for every InvokeModel body format.
    headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    return BackendResult(
        body=payload,
        content_type=response.get("contentType", accept),
        backend_latency_ms=elapsed_ms,
        input_tokens=_int_or_none(headers.get("x-amzn-bedrock-input-token-count")),
        output_tokens=_int_or_none(headers.get("x-amzn-bedrock-output-token-count")),
    )


def _int_or_none(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None

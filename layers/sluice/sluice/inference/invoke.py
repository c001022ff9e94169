"""POST /v1/models/{model}/invoke: the body goes to the model's backend as it is."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from sluice.catalog.models import BedrockBackend, ModelEntry
from sluice.errors import InvalidRequest
from sluice.inference import limits
from sluice.inference.accounting import account
from sluice.inference.confidence import count_answer
from sluice.inference.converse import ConverseRequest
from sluice.providers import bedrock, sagemaker
from sluice.providers.result import BackendResult
from sluice.request.access import resolve_model
from sluice.request.body import Encoding, check_json_body, choose_content_type, decode_output
from sluice.request.context import RequestContext
from sluice.request.validation import parse_json_body


class TokenUsage(BaseModel):
    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None

    @classmethod
    def of(cls, result: BackendResult) -> TokenUsage:
        total = None
        if result.input_tokens is not None or result.output_tokens is not None:
            total = (result.input_tokens or 0) + (result.output_tokens or 0)
        return cls(input_tokens=result.input_tokens, output_tokens=result.output_tokens, total_tokens=total)


class InvokeResponse(BaseModel):
    id: str
    model: str
    provider: str
    target: dict[str, Any]
    variant: str | None = None
    content_type: str
    output_encoding: Encoding
    output: Any
    usage: TokenUsage
    latency_ms: float
    backend_latency_ms: float
    estimated_cost_usd: float


def invoke(
    ctx: RequestContext, name: str, body: bytes, content_type: str | None, target_variant: str | None = None
) -> InvokeResponse:
    entry = resolve_model(ctx, name)
    limits.check_payload(name, entry, len(body))
    if isinstance(entry.backend, BedrockBackend):
        if target_variant:
            raise InvalidRequest("Target variants exist only on SageMaker endpoints.", param="X-Sluice-Target-Variant")
        result = _call_bedrock(name, entry, entry.backend, body, content_type)
    else:
        backend = entry.backend
        chosen = choose_content_type(content_type, (backend.content_type, *backend.extra_content_types))
        check_json_body(body, chosen)
        if entry.limits.max_input_tokens or entry.limits.max_output_tokens:
            _check_native_tokens(name, entry, body)
        result = sagemaker.invoke_endpoint(backend, body, chosen, limits.timeout_seconds(entry), target_variant)
    if isinstance(result.body, dict):
        output, encoding = {k: v for k, v in result.body.items() if k != "ResponseMetadata"}, "json"
    else:
        output, encoding = decode_output(result.body, result.content_type)
    # The answer is parsed once, above; its confidence is read from that (only JSON answers carry one).
    counted = count_answer(entry.confidence, output) if encoding == "json" else None
    accounted = account(ctx, name, entry, result, counted)
    return InvokeResponse(
        id=ctx.request_id,
        model=name,
        provider=entry.backend.provider,
        target=entry.backend.target,
        variant=result.variant,
        content_type=result.content_type,
        output_encoding=encoding,
        output=output,
        usage=TokenUsage.of(result),
        latency_ms=accounted.latency_ms,
        backend_latency_ms=accounted.backend_latency_ms,
        estimated_cost_usd=accounted.estimated_cost_usd,
    )


def _call_bedrock(
    name: str, entry: ModelEntry, backend: BedrockBackend, body: bytes, content_type: str | None
) -> BackendResult:
    chosen = choose_content_type(content_type, ("application/json",))
    timeout = limits.timeout_seconds(entry)
    if entry.task == "chat":
        request = parse_json_body(ConverseRequest, body)
        limits.check_input_tokens(name, entry, request.text_chars())
        params = request.to_params()
        config = params.setdefault("inferenceConfig", {})
        requested = config.get("maxTokens")
        cap = limits.output_token_cap(name, entry, requested, "inferenceConfig.maxTokens")
        if cap is not None:
            config["maxTokens"] = cap
        return bedrock.converse(backend, params, timeout)
    check_json_body(body, chosen)
    _check_native_tokens(name, entry, body)
    return bedrock.invoke_model(backend, body, "application/json", "application/json", timeout)


def _check_native_tokens(name: str, entry: ModelEntry, body: bytes) -> None:
    """Native bodies have no common schema: size the whole body, and look where families put max tokens."""
    limits.check_input_tokens(name, entry, len(body), param="body")
    try:
        parsed = json.loads(body)
    except ValueError:
        return
    found = limits.requested_output_tokens(parsed)
    if found:
        limits.output_token_cap(name, entry, found[1], found[0])
